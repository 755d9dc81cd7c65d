import 'reflect-metadata';
import { writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { tenantMigrations } from '../../migrations';
import type { TenantDataSourceManager } from '../../src';
import { CATALOG_CHECK_QUERY } from '../../src/migration/migration-guard';
import { startScratchDatabase } from '../../support/database';
import { cpuShareBetween, snapshotCpu } from '../cpu-share';
import { describeEnvironment, round2 } from '../environment';
import { ExampleManagers } from '../example-managers';
import { collectGarbage, median, percentile } from '../measure';
import { generatedModelMigrations } from '../fleet/generated-model';

/**
 * `node build/bench/migration-guard/run.js [--quick]` (part of `npm run
 * bench`): what the manager option `migrationGuard` costs per tenant.
 * `createTenant` of the example model and of a generated 100-table model (10
 * migrations) under 'off', 'catalog' and 'event-trigger', each mode with its
 * own manager (own registry table) on one scratch database, the modes
 * alternating round by round; then the catalog check query alone, with the
 * size of pg_class. Writes bench/results/migration-guard.json and .md
 * (migration-guard-quick.* with --quick: 2 rounds, example model only).
 */

type Mode = 'off' | 'catalog' | 'event-trigger';
const MODES: readonly Mode[] = ['off', 'catalog', 'event-trigger'];
const SLUG_OF_MODE: Record<Mode, string> = { off: 'off', catalog: 'cat', 'event-trigger': 'evt' };

interface Model {
  readonly key: string;
  readonly label: string;
  readonly tables: number;
  readonly migrations: readonly Function[];
}

const CATALOG_REPEATS = 20;
const RESULTS_DIR = join(__dirname, '..', '..', '..', 'bench', 'results');
const log = (line: string): void => console.error(`[bench:migration-guard] ${line}`);

interface ModeStats {
  readonly samples: number;
  readonly medianMs: number;
  readonly p90Ms: number;
  readonly minMs: number;
  readonly maxMs: number;
  /** Median of this mode minus median of 'off'. */
  readonly medianDiffToOffMs: number;
  readonly medianDiffToOffPct: number;
  /** Median over rounds of (this mode's createTenant - 'off''s createTenant) in the same round. */
  readonly pairedDiffToOffMs: number;
  readonly allMs: readonly number[];
}

interface CatalogQueryStats {
  readonly when: string;
  readonly pgClassRows: number;
  readonly tenantSchemas: number;
  readonly repeats: number;
  readonly firstMs: number;
  readonly medianMs: number;
  readonly p90Ms: number;
  readonly minMs: number;
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const rounds = quick ? 2 : 15;
  const models: Model[] = [{ key: 'example', label: 'example model (2 tenant migrations)', tables: 2, migrations: tenantMigrations }];
  if (!quick) {
    models.push({ key: 'gen100', label: 'generated model (100 tables, 10 migrations)', tables: 100, migrations: generatedModelMigrations(100, 10) });
  }
  const database = await startScratchDatabase({ settings: { max_locks_per_transaction: 256 } });
  const managers = new ExampleManagers(database.url, { poolSize: 4, logging: false });
  const created: Array<{ manager: TenantDataSourceManager; slug: string }> = [];
  try {
    log(`database: ${database.description}`);
    const environment = await describeEnvironment(database.url, database.embedded, database.description);

    // One manager per mode and model, each on its own registry table. The
    // 'event-trigger' manager installs the triggers at initialize(): from then
    // on they exist for every manager's DDL on this database ('off' included).
    const byModel = new Map<string, Map<Mode, TenantDataSourceManager>>();
    for (const model of models) {
      const perMode = new Map<Mode, TenantDataSourceManager>();
      for (const mode of MODES) {
        perMode.set(
          mode,
          await managers.open({ registryTable: `mg_${SLUG_OF_MODE[mode]}_${model.key}`, migrationGuard: mode, tenantMigrations: [...model.migrations] }),
        );
      }
      byModel.set(model.key, perMode);
    }

    const catalogBefore = await timeCatalogQuery(database.url, 'before the rounds (no tenant yet)', 'mg_probe_none');
    log(`catalog query, ${catalogBefore.pgClassRows} pg_class rows: median ${catalogBefore.medianMs} ms`);

    // Round -1 is the warm-up. Even rounds run the modes in order, odd ones reversed.
    const samples = new Map<string, Map<Mode, number[]>>(models.map((m) => [m.key, new Map(MODES.map((mode) => [mode, [] as number[]]))]));
    // pg_class rows when each round starts (the catalog grows with every tenant; read outside the timing).
    const pgClassRowsByRound: number[] = [];
    const cpuStart = snapshotCpu();
    for (let round = -1; round < rounds; round += 1) {
      if (round >= 0) pgClassRowsByRound.push(await countPgClass(database.url));
      const order = (round + 1) % 2 === 0 ? MODES : [...MODES].reverse();
      for (const model of models) {
        for (const mode of order) {
          const manager = byModel.get(model.key)!.get(mode)!;
          const slug = `mg-${SLUG_OF_MODE[mode]}-${model.key}-${round + 1}`;
          collectGarbage();
          const start = performance.now();
          await manager.createTenant(slug);
          const ms = performance.now() - start;
          created.push({ manager, slug });
          if (round >= 0) samples.get(model.key)!.get(mode)!.push(ms);
        }
      }
      log(`round ${round < 0 ? 'warm-up' : round + 1} of ${rounds} done (${order.join(', ')})`);
    }
    const cpu = cpuShareBetween(cpuStart, snapshotCpu());

    const lastSchema = (await byModel.get(models[0]!.key)!.get('catalog')!.listTenants()).at(-1)?.schemaName ?? 'mg_probe_none';
    const catalogAfter = await timeCatalogQuery(database.url, `after the rounds (${created.length} tenants)`, lastSchema);
    log(`catalog query, ${catalogAfter.pgClassRows} pg_class rows: median ${catalogAfter.medianMs} ms`);

    const createTenant: Record<string, { label: string; tables: number; migrations: number; modes: Record<Mode, ModeStats> }> = {};
    for (const model of models) {
      const perMode = samples.get(model.key)!;
      const off = perMode.get('off')!;
      const offMedian = median(off);
      const modes = {} as Record<Mode, ModeStats>;
      for (const mode of MODES) {
        const values = perMode.get(mode)!;
        const sorted = [...values].sort((a, b) => a - b);
        const med = median(values);
        modes[mode] = {
          samples: values.length,
          medianMs: round2(med),
          p90Ms: round2(percentile(sorted, 90)),
          minMs: round2(sorted[0]!),
          maxMs: round2(sorted[sorted.length - 1]!),
          medianDiffToOffMs: round2(med - offMedian),
          medianDiffToOffPct: round2(offMedian > 0 ? ((med - offMedian) / offMedian) * 100 : 0),
          pairedDiffToOffMs: round2(median(values.map((v, r) => v - off[r]!))),
          allMs: values.map(round2),
        };
        log(`${model.key} ${mode}: median ${modes[mode].medianMs} ms, p90 ${modes[mode].p90Ms} ms, vs off ${modes[mode].medianDiffToOffMs} ms`);
      }
      createTenant[model.key] = { label: model.label, tables: model.tables, migrations: model.migrations.length, modes };
    }

    environment.machine.loadAverageEnd = loadavg().map(round2);
    if (cpu !== undefined) environment.machine.cpuWhileMeasuring = cpu;

    const dropStart = performance.now();
    for (const { manager, slug } of created.splice(0)) await manager.dropTenant(slug, { force: true });
    log(`dropped the tenants in ${((performance.now() - dropStart) / 1000).toFixed(1)} s`);

    const report = {
      benchmark: 'migration-guard',
      generatedAt: new Date().toISOString(),
      quick,
      environment,
      settings: { rounds, warmupRounds: 1, tenantsPerModeAndRound: 1, catalogRepeats: CATALOG_REPEATS, poolSize: 4 },
      createTenant,
      pgClassRowsByRound,
      catalogQuery: [catalogBefore, catalogAfter],
    };
    const name = quick ? 'migration-guard-quick' : 'migration-guard';
    await writeFile(join(RESULTS_DIR, `${name}.json`), `${JSON.stringify(report, null, 2)}\n`);
    const markdown = renderMarkdown(report);
    await writeFile(join(RESULTS_DIR, `${name}.md`), markdown);
    console.log(markdown);
  } finally {
    // On failure, drop what was created (the scratch database goes anyway).
    for (const { manager, slug } of created) await manager.dropTenant(slug, { force: true }).catch(() => undefined);
    await managers.closeAll();
    await database.stop();
  }
}

/**
 * Runs the 'catalog' guard's check query `CATALOG_REPEATS` times in one
 * transaction with JIT off and the tenant's search path, as the library does
 * after each tenant migration (each run parsed and planned anew, as an
 * unnamed statement), and counts pg_class rows in the same transaction.
 */
async function countPgClass(url: string): Promise<number> {
  const client = new Client({ connectionString: url, application_name: 'bench-migration-guard' });
  await client.connect();
  try {
    return (await client.query<{ rows: number }>('SELECT count(*)::int AS rows FROM pg_class')).rows[0]!.rows;
  } finally {
    await client.end();
  }
}

async function timeCatalogQuery(url: string, when: string, schemaName: string): Promise<CatalogQueryStats> {
  const client = new Client({ connectionString: url, application_name: 'bench-migration-guard' });
  await client.connect();
  try {
    await client.query('BEGIN');
    await client.query(`SELECT set_config('search_path', $1, true), set_config('jit', 'off', true)`, [`"${schemaName}", public`]);
    const [{ rows: pgClassRows }] = (await client.query<{ rows: number }>('SELECT count(*)::int AS rows FROM pg_class')).rows;
    const [{ schemas }] = (await client.query<{ schemas: number }>(`SELECT count(*)::int AS schemas FROM pg_namespace WHERE nspname LIKE 'mg\\_%'`)).rows;
    const times: number[] = [];
    for (let i = 0; i < CATALOG_REPEATS; i += 1) {
      const start = performance.now();
      const result = await client.query(CATALOG_CHECK_QUERY, [schemaName]);
      times.push(performance.now() - start);
      if (result.rows.length !== 0) throw new Error(`The catalog check found objects outside ${schemaName}: ${JSON.stringify(result.rows)}`);
    }
    await client.query('ROLLBACK');
    const sorted = [...times].sort((a, b) => a - b);
    return {
      when,
      pgClassRows: pgClassRows!,
      tenantSchemas: schemas!,
      repeats: CATALOG_REPEATS,
      firstMs: round2(times[0]!),
      medianMs: round2(median(times)),
      p90Ms: round2(percentile(sorted, 90)),
      minMs: round2(sorted[0]!),
    };
  } finally {
    await client.end();
  }
}

function renderMarkdown(report: {
  generatedAt: string;
  quick: boolean;
  environment: Awaited<ReturnType<typeof describeEnvironment>>;
  settings: { rounds: number };
  createTenant: Record<string, { label: string; migrations: number; modes: Record<Mode, ModeStats> }>;
  pgClassRowsByRound: readonly number[];
  catalogQuery: CatalogQueryStats[];
}): string {
  const env = report.environment;
  const signed = (v: number): string => (v > 0 ? `+${v}` : String(v));
  const lines = [
    `<!-- generated by bench/migration-guard/run.ts on ${report.generatedAt}; do not edit by hand -->`,
    '',
    `Measured on ${env.machine.cpuModel}, ${env.machine.cores} cores, Node ${env.node}, PostgreSQL ${env.postgres.version}${env.postgres.embedded ? ' (embedded, same machine)' : ''}` +
      `${report.quick ? ' (--quick)' : ''}.` +
      (env.machine.cpuWhileMeasuring === undefined ? '' : ` Other processes used ${env.machine.cpuWhileMeasuring.otherCores} of ${env.machine.cpuWhileMeasuring.cores} cores meanwhile.`),
    '',
    '| createTenant | migrationGuard | median | p90 | median − off | paired − off |',
    '|---|---|---:|---:|---:|---:|',
  ];
  for (const model of Object.values(report.createTenant)) {
    for (const mode of MODES) {
      const s = model.modes[mode];
      const diff = mode === 'off' ? '' : `${signed(s.medianDiffToOffMs)} ms (${signed(Math.round(s.medianDiffToOffPct))} %)`;
      const paired = mode === 'off' ? '' : `${signed(s.pairedDiffToOffMs)} ms`;
      lines.push(`| ${model.label} | '${mode}' | ${s.medianMs} ms | ${s.p90Ms} ms | ${diff} | ${paired} |`);
    }
  }
  const first = 0;
  const last = report.pgClassRowsByRound.length - 1;
  lines.push(
    '',
    `| 'catalog' − 'off', same round | round 1 (${report.pgClassRowsByRound[first]} pg_class rows) | round ${last + 1} (${report.pgClassRowsByRound[last]} pg_class rows) |`,
    '|---|---:|---:|',
  );
  for (const model of Object.values(report.createTenant)) {
    const gap = (r: number): string => `${round2(model.modes.catalog.allMs[r]! - model.modes.off.allMs[r]!)} ms`;
    lines.push(`| ${model.label} | ${gap(first)} | ${gap(last)} |`);
  }
  lines.push('', '| catalog check query alone | pg_class rows | first | median | p90 |', '|---|---:|---:|---:|---:|');
  for (const q of report.catalogQuery) lines.push(`| ${q.when} | ${q.pgClassRows} | ${q.firstMs} ms | ${q.medianMs} ms | ${q.p90Ms} ms |`);
  lines.push(
    '',
    `Method: one scratch database; for each model and mode a manager of its own (own registry table, pool of 4), so all three share one catalog. ` +
      `After one warm-up round, ${report.settings.rounds} rounds each create one tenant per model and mode, the modes in order in even rounds and reversed in odd ones; ` +
      `each figure is the wall time of one \`createTenant()\` (a full GC before it, not timed), "paired" is the median over rounds of the difference to the 'off' tenant of the same round. ` +
      `'catalog' runs its check query once per tenant migration; 'event-trigger' arms two event triggers per tenant. ` +
      `Once the 'event-trigger' manager has installed them, the triggers fire on every DDL in the database, so 'off' here is 'off' on a database where they exist (each of its DDL statements pays one \`current_setting()\`). ` +
      `The catalog query alone: ${CATALOG_REPEATS} runs in one transaction with JIT off and the tenant's search path (as the library runs it), before the rounds and after them with every created tenant in place; ` +
      `its cost grows with pg_class, which grows with every tenant created here, so the 'catalog' medians mix catalog sizes (see the by-round table). ` +
      `The tenants are dropped at the end.`,
    '',
  );
  return lines.join('\n');
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
