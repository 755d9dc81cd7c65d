import 'reflect-metadata';
import { writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { Client as PgClient } from 'pg';
import { Client } from '../../entities';
import { tenantContext, type NodeMoveResult, type TenantDataSourceManager } from '../../src';
import { createScratchDatabase } from '../../src/testing/scratch-database';
import type { TestDatabase } from '../../src/testing/test-database';
import { describeEnvironment, round2, type Environment } from '../environment';
import { ExampleManagers } from '../example-managers';
import { alternate, percentile, summarize, type SeriesStats } from '../measure';

/**
 * `node build/bench/citus/run.js [--quick]` (part of `npm run bench`; needs
 * CITUS_URL, a Citus coordinator with its workers registered, and does
 * nothing without it): the same operations on a single PostgreSQL server (a
 * scratch database on DATABASE_URL, default the local 5432) and on a Citus
 * cluster (a scratch database of the cluster of CITUS_URL, Citus mode),
 * side by side, the two targets alternating so that machine noise reaches
 * both: createTenant and dropTenant (after suspendTenant) of 20 tenants (5
 * with --quick), a client read by id (`findOneBy`) and a `save` at
 * concurrency 1 over those tenants, 2,000 of each (200 with --quick); then,
 * on Citus only, an online moveTenant to the other worker of a tenant of
 * 10,000 clients (1,000 with --quick) while a writer saves in a loop, 3
 * moves (1 with --quick), checking afterwards that every acknowledged write
 * is there. Writes bench/results/citus.json and citus.md (citus-quick.*
 * with --quick).
 */

const RESULTS_DIR = join(__dirname, '..', '..', '..', 'bench', 'results');
const log = (line: string): void => console.error(`[bench:citus] ${line}`);

interface Sizes {
  readonly tenants: number;
  readonly clientsPerTenant: number;
  readonly rounds: number;
  readonly opsPerRound: number;
  readonly warmupOps: number;
  readonly moverRows: number;
  readonly moves: number;
}

const DEFAULT_SIZES: Sizes = { tenants: 20, clientsPerTenant: 50, rounds: 10, opsPerRound: 200, warmupOps: 100, moverRows: 10_000, moves: 3 };
const QUICK_SIZES: Sizes = { tenants: 5, clientsPerTenant: 50, rounds: 4, opsPerRound: 50, warmupOps: 20, moverRows: 1_000, moves: 1 };
const POOL_SIZE = 10;

type TargetName = 'single' | 'citus';

interface Target {
  readonly name: TargetName;
  readonly database: TestDatabase;
  readonly manager: TenantDataSourceManager;
}

/** p50 and p90 of a list of milliseconds, and the list (rounded). */
interface MsFigures {
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly samples: number;
  readonly all: readonly number[];
}

interface LatencyFigures {
  readonly ops: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly opsPerSec: number;
  readonly roundSpreadPct: number;
}

interface MoveFigures {
  readonly from: string;
  readonly to: string;
  readonly ms: number;
  readonly writesAcknowledgedDuringMove: number;
  readonly writesAcknowledgedInAll: number;
  readonly writeErrors: number;
  readonly firstWriteError?: string;
  readonly writeP50Ms: number;
  readonly writeMaxMs: number;
  readonly rowsBefore: number;
  readonly rowsAfter: number;
  readonly rowsAsExpected: boolean;
}

async function main(): Promise<void> {
  const citusUrl = process.env.CITUS_URL === '' ? undefined : process.env.CITUS_URL;
  if (citusUrl === undefined) {
    log('the Citus benchmark did not run: CITUS_URL is unset (set it to a Citus coordinator, its workers registered, to run it)');
    return;
  }
  const singleUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const quick = process.argv.includes('--quick');
  const sizes = quick ? QUICK_SIZES : DEFAULT_SIZES;
  const started = performance.now();
  const databases: TestDatabase[] = [];
  const opened: ExampleManagers[] = [];
  try {
    const singleDb = await createScratchDatabase(singleUrl);
    databases.push(singleDb);
    log(`single server: ${singleDb.description}`);
    const citusDb = await createScratchDatabase(citusUrl);
    databases.push(citusDb);
    log(`Citus: ${citusDb.description}`);
    const singleEnvironment = await describeEnvironment(singleDb.url, false, singleDb.description);
    const citusEnvironment = await describeEnvironment(citusDb.url, false, citusDb.description);
    const citusVersion = await citusVersionOf(citusDb.url);
    const workers = await workerNodes(citusDb.url);
    const walRetrieveRetryInterval = await settingOn(citusDb.url, workers[0], 'wal_retrieve_retry_interval');
    log(`${citusVersion}; workers ${workers.join(', ')}`);
    if (workers.length < 2) throw new Error(`The Citus cluster needs 2 workers for the move; it has ${workers.length}: ${workers.join(', ')}`);

    const singleManagers = new ExampleManagers(singleDb.url, { poolSize: POOL_SIZE, logging: false });
    const citusManagers = new ExampleManagers(citusDb.url, { poolSize: POOL_SIZE, logging: false });
    opened.push(singleManagers, citusManagers);
    const targets: Target[] = [
      { name: 'single', database: singleDb, manager: await singleManagers.open({ maxDataSources: sizes.tenants + 10 }) },
      { name: 'citus', database: citusDb, manager: await citusManagers.open({ maxDataSources: sizes.tenants + 10 }) },
    ];
    const byName = (name: TargetName): Target => targets.find((t) => t.name === name)!;
    const slugs = Array.from({ length: sizes.tenants }, (_, i) => `bench-${String(i).padStart(3, '0')}`);

    // 1. createTenant, alternating the target that goes first.
    const createMs: Record<TargetName, number[]> = { single: [], citus: [] };
    for (const [i, slug] of slugs.entries()) {
      for (const target of rotated(targets, i)) {
        const t0 = performance.now();
        await target.manager.createTenant(slug);
        createMs[target.name].push(performance.now() - t0);
      }
    }
    log(`createTenant x${sizes.tenants}: single p50 ${fmt(percentile(sorted(createMs.single), 50))} ms, Citus p50 ${fmt(percentile(sorted(createMs.citus), 50))} ms`);

    // Citus mode must be on for one and off for the other, or the comparison means nothing.
    const citusNode = (await byName('citus').manager.getTenant(slugs[0]!))?.node;
    const singleNode = (await byName('single').manager.getTenant(slugs[0]!))?.node;
    if (citusNode === undefined) throw new Error('The manager on the Citus database is not in Citus mode (getTenant().node is unset).');
    if (singleNode !== undefined) throw new Error(`The manager on the single server is in Citus mode (node ${singleNode}); DATABASE_URL must be a plain PostgreSQL.`);
    const placement = countBy((await byName('citus').manager.listTenants()).map((t) => t.node ?? 'none'));
    log(`Citus placement: ${Object.entries(placement).map(([node, n]) => `${n} on ${node}`).join(', ')}`);

    // Seed: clientsPerTenant clients per tenant (ids 1..clientsPerTenant).
    for (const target of targets) {
      for (const slug of slugs) {
        await target.manager.run(slug, () =>
          tenantContext.query(`INSERT INTO client (name, email) SELECT 'c' || n, 'c' || n || '@bench.test' FROM generate_series(1, $1) n`, [sizes.clientsPerTenant]),
        );
      }
    }

    // 2. Reads and saves at concurrency 1, alternating rounds (alternate() warms every tenant's DataSource up first).
    const loadStart = loadavg().map(round2);
    const readSeries = await alternate(
      targets.map((target) => ({
        name: target.name,
        op: (i: number) =>
          target.manager.run(slugs[i % slugs.length]!, async () => {
            const id = (Math.floor(i / slugs.length) % sizes.clientsPerTenant) + 1;
            const row = await tenantContext.getRepository(Client).findOneBy({ id });
            if (row === null) throw new Error(`${target.name}: client ${id} of ${slugs[i % slugs.length]} not found`);
          }),
      })),
      { rounds: sizes.rounds, opsPerRound: sizes.opsPerRound, warmupOps: sizes.warmupOps, concurrency: 1 },
    );
    const reads = Object.fromEntries(readSeries.map((s) => [s.name, latencyOf(summarize(s))])) as Record<TargetName, LatencyFigures>;
    log(`findOneBy x${reads.single.ops}: single p50 ${reads.single.p50Ms} / p90 ${reads.single.p90Ms} ms, Citus p50 ${reads.citus.p50Ms} / p90 ${reads.citus.p90Ms} ms`);
    const saveSeries = await alternate(
      targets.map((target) => ({
        name: target.name,
        op: (i: number) =>
          target.manager.run(slugs[i % slugs.length]!, () => tenantContext.getRepository(Client).save({ name: `s${i}`, email: `s${i}@bench.test` })),
      })),
      { rounds: sizes.rounds, opsPerRound: sizes.opsPerRound, warmupOps: sizes.warmupOps, concurrency: 1 },
    );
    const saves = Object.fromEntries(saveSeries.map((s) => [s.name, latencyOf(summarize(s))])) as Record<TargetName, LatencyFigures>;
    log(`save x${saves.single.ops}: single p50 ${saves.single.p50Ms} / p90 ${saves.single.p90Ms} ms, Citus p50 ${saves.citus.p50Ms} / p90 ${saves.citus.p90Ms} ms`);
    const loadEnd = loadavg().map(round2);

    // 3. Citus only: online moves of a tenant of moverRows clients, a writer saving all along.
    const citus = byName('citus').manager;
    await citus.createTenant('bench-mover');
    await citus.run('bench-mover', () =>
      tenantContext.query(`INSERT INTO client (name, email) SELECT 'm' || n, 'm' || n || '@bench.test' FROM generate_series(1, $1) n`, [sizes.moverRows]),
    );
    const moves: MoveFigures[] = [];
    for (let m = 0; m < sizes.moves; m += 1) {
      const from = (await citus.getTenant('bench-mover'))!.node!;
      const to = workers.find((node) => node !== from)!;
      const move = await moveUnderWrites(citus, 'bench-mover', to, m);
      moves.push(move);
      log(
        `move ${m + 1}/${sizes.moves} ${move.from} -> ${move.to}: ${fmt(move.ms)} ms, ${move.writesAcknowledgedDuringMove} writes acknowledged during it ` +
          `(save p50 ${move.writeP50Ms} ms, max ${move.writeMaxMs} ms), ${move.writeErrors} errors; rows ${move.rowsBefore} + ${move.writesAcknowledgedInAll} = ${move.rowsAfter}` +
          `${move.rowsAsExpected ? '' : ' (MISMATCH)'}`,
      );
    }

    // 4. dropTenant after suspendTenant, alternating the target that goes first.
    const suspendMs: Record<TargetName, number[]> = { single: [], citus: [] };
    const dropMs: Record<TargetName, number[]> = { single: [], citus: [] };
    for (const [i, slug] of slugs.entries()) {
      for (const target of rotated(targets, i)) {
        let t0 = performance.now();
        await target.manager.suspendTenant(slug);
        suspendMs[target.name].push(performance.now() - t0);
        t0 = performance.now();
        await target.manager.dropTenant(slug);
        dropMs[target.name].push(performance.now() - t0);
      }
    }
    log(`dropTenant x${sizes.tenants}: single p50 ${fmt(percentile(sorted(dropMs.single), 50))} ms, Citus p50 ${fmt(percentile(sorted(dropMs.citus), 50))} ms`);

    const create = { single: msFigures(createMs.single), citus: msFigures(createMs.citus) };
    const suspend = { single: msFigures(suspendMs.single), citus: msFigures(suspendMs.citus) };
    const drop = { single: msFigures(dropMs.single), citus: msFigures(dropMs.citus) };
    const rows: ReportRow[] = [
      { operation: 'createTenant', unit: 'p50', single: create.single.p50Ms, citus: create.citus.p50Ms },
      { operation: 'suspendTenant', unit: 'p50', single: suspend.single.p50Ms, citus: suspend.citus.p50Ms },
      { operation: 'dropTenant (after suspendTenant)', unit: 'p50', single: drop.single.p50Ms, citus: drop.citus.p50Ms },
      { operation: 'read: run + findOneBy({ id })', unit: 'p50', single: reads.single.p50Ms, citus: reads.citus.p50Ms },
      { operation: 'read: run + findOneBy({ id })', unit: 'p90', single: reads.single.p90Ms, citus: reads.citus.p90Ms },
      { operation: 'insert: run + save', unit: 'p50', single: saves.single.p50Ms, citus: saves.citus.p50Ms },
      { operation: 'insert: run + save', unit: 'p90', single: saves.single.p90Ms, citus: saves.citus.p90Ms },
    ].map((row) => ({ ...row, ratio: row.single > 0 ? round2(row.citus / row.single) : 0 }));

    singleEnvironment.machine.loadAverageEnd = loadavg().map(round2);
    const report = {
      benchmark: 'citus',
      generatedAt: new Date().toISOString(),
      quick,
      sizes,
      poolSize: POOL_SIZE,
      environment: singleEnvironment,
      citus: { version: citusVersion, coordinator: citusEnvironment.postgres, workers, placement, workerWalRetrieveRetryInterval: walRetrieveRetryInterval },
      loadAverageDuringReadsAndSaves: { start: loadStart, end: loadEnd },
      rows,
      createTenant: create,
      suspendTenant: suspend,
      dropTenant: drop,
      reads,
      saves,
      moves,
      durationSeconds: 0,
    };
    report.durationSeconds = round2((performance.now() - started) / 1000);
    const name = quick ? 'citus-quick' : 'citus';
    await writeFile(join(RESULTS_DIR, `${name}.json`), `${JSON.stringify(report, null, 2)}\n`);
    const markdown = renderMarkdown(report);
    await writeFile(join(RESULTS_DIR, `${name}.md`), markdown);
    console.log(markdown);
  } finally {
    for (const managers of opened) await managers.closeAll();
    // A failed online move leaves a subscription and a replication slot on the workers until Citus's maintenance daemon
    // cleans them up, and a database with a subscription cannot be dropped: clean up now, before the drop.
    if (databases[1] !== undefined) await cleanUpCitusLeftovers(databases[1].url).catch((error: unknown) => log(`cleaning up Citus's leftovers failed: ${String(error)}`));
    for (const database of databases.reverse()) await database.stop().catch((error: unknown) => console.error(error));
  }
}

/**
 * One online move of `slug` to `to` while a writer saves clients in a loop
 * (started just before the move, stopped once it returns): the move's wall
 * time, the writes acknowledged meanwhile and their latency, errors, and
 * whether the client count afterwards is the count before plus every
 * acknowledged write.
 */
async function moveUnderWrites(manager: TenantDataSourceManager, slug: string, to: string, round: number): Promise<MoveFigures> {
  const count = (): Promise<number> => manager.run(slug, () => tenantContext.getRepository(Client).count());
  const rowsBefore = await count();
  let writing = true;
  let moveEnd = Number.POSITIVE_INFINITY;
  let acknowledged = 0;
  let acknowledgedDuring = 0;
  let errors = 0;
  let firstError: string | undefined;
  const latencies: number[] = [];
  const writer = (async () => {
    for (let i = 0; writing; i += 1) {
      const t0 = performance.now();
      try {
        await manager.run(slug, () => tenantContext.getRepository(Client).save({ name: `move${round}-${i}`, email: 'w@bench.test' }));
        const t1 = performance.now();
        acknowledged += 1;
        if (t1 <= moveEnd) {
          acknowledgedDuring += 1;
          latencies.push(t1 - t0);
        }
      } catch (error) {
        errors += 1;
        firstError ??= error instanceof Error ? error.message : String(error);
        if (errors >= 100) return;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
  })();
  let result: NodeMoveResult;
  try {
    result = await manager.moveTenant(slug, { node: to, transfer: 'online' });
    moveEnd = performance.now();
  } finally {
    writing = false;
    await writer;
  }
  if (!result.moved || result.to !== to) throw new Error(`moveTenant(${slug}, { node: ${to} }) did not move: ${JSON.stringify(result)}`);
  const now = (await manager.getTenant(slug))?.node;
  if (now !== to) throw new Error(`After the move ${slug} is on ${now}, not ${to}`);
  const rowsAfter = await count();
  latencies.sort((a, b) => a - b);
  return {
    from: result.from,
    to,
    ms: Math.round(result.ms),
    writesAcknowledgedDuringMove: acknowledgedDuring,
    writesAcknowledgedInAll: acknowledged,
    writeErrors: errors,
    ...(firstError === undefined ? {} : { firstWriteError: firstError }),
    writeP50Ms: round2(percentile(latencies, 50)),
    writeMaxMs: round2(latencies.at(-1) ?? 0),
    rowsBefore,
    rowsAfter,
    rowsAsExpected: rowsAfter === rowsBefore + acknowledged,
  };
}

/** Runs Citus's cleanup of what failed operations left (`pg_dist_cleanup`: shards, subscriptions, slots, publications). */
async function cleanUpCitusLeftovers(url: string): Promise<void> {
  const client = new PgClient({ connectionString: url, application_name: 'bench-setup' });
  await client.connect();
  try {
    await client.query('CALL citus_cleanup_orphaned_resources()');
  } finally {
    await client.end();
  }
}

/** The targets starting from the `i`-th (mod their count), so neither always goes first. */
function rotated<T>(items: readonly T[], i: number): T[] {
  return items.map((_, j) => items[(i + j) % items.length]!);
}

async function citusVersionOf(url: string): Promise<string> {
  const client = new PgClient({ connectionString: url, application_name: 'bench-setup' });
  await client.connect();
  try {
    return (await client.query<{ v: string }>('SELECT citus_version() AS v')).rows[0]!.v;
  } finally {
    await client.end();
  }
}

/** A setting of the node `'host:port'` (default: the server of `url`), in the database of `url`. */
async function settingOn(url: string, node: string | undefined, name: string): Promise<string> {
  const target = new URL(url);
  if (node !== undefined) {
    target.hostname = node.slice(0, node.lastIndexOf(':'));
    target.port = node.slice(node.lastIndexOf(':') + 1);
  }
  const client = new PgClient({ connectionString: target.toString(), application_name: 'bench-setup' });
  await client.connect();
  try {
    return (await client.query<{ setting: string }>('SELECT current_setting($1) AS setting', [name])).rows[0]!.setting;
  } finally {
    await client.end();
  }
}

async function workerNodes(url: string): Promise<string[]> {
  const client = new PgClient({ connectionString: url, application_name: 'bench-setup' });
  await client.connect();
  try {
    const { rows } = await client.query<{ node: string }>(`SELECT node_name || ':' || node_port AS node FROM citus_get_active_worker_nodes() ORDER BY 1`);
    return rows.map((row) => row.node);
  } finally {
    await client.end();
  }
}

function latencyOf(stats: SeriesStats): LatencyFigures {
  return {
    ops: stats.ops,
    p50Ms: round3(stats.p50Us / 1000),
    p90Ms: round3(stats.p90Us / 1000),
    p99Ms: round3(stats.p99Us / 1000),
    opsPerSec: Math.round(stats.opsPerSec),
    roundSpreadPct: Math.round(stats.roundSpreadPct),
  };
}

function msFigures(values: readonly number[]): MsFigures {
  const s = sorted(values);
  return { p50Ms: round2(percentile(s, 50)), p90Ms: round2(percentile(s, 90)), samples: values.length, all: values.map(round2) };
}

function sorted(values: readonly number[]): number[] {
  return [...values].sort((a, b) => a - b);
}

function countBy(values: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of values) out[v] = (out[v] ?? 0) + 1;
  return out;
}

function round3(value: number): number {
  return Math.round(value * 1000) / 1000;
}

function fmt(ms: number): string {
  return ms >= 100 ? String(Math.round(ms)) : ms.toFixed(2);
}

interface ReportRow {
  readonly operation: string;
  readonly unit: string;
  readonly single: number;
  readonly citus: number;
  readonly ratio: number;
}

function renderMarkdown(report: {
  generatedAt: string;
  quick: boolean;
  sizes: Sizes;
  poolSize: number;
  environment: Environment;
  citus: { version: string; coordinator: Environment['postgres']; workers: string[]; placement: Record<string, number>; workerWalRetrieveRetryInterval: string };
  rows: ReportRow[];
  reads: Record<TargetName, LatencyFigures>;
  saves: Record<TargetName, LatencyFigures>;
  moves: MoveFigures[];
  durationSeconds: number;
}): string {
  const env = report.environment;
  const sizes = report.sizes;
  const moveMs = sorted(report.moves.map((m) => m.ms));
  const during = report.moves.reduce((s, m) => s + m.writesAcknowledgedDuringMove, 0);
  const errors = report.moves.reduce((s, m) => s + m.writeErrors, 0);
  const allThere = report.moves.every((m) => m.rowsAsExpected);
  return [
    `<!-- generated by bench/citus/run.ts on ${report.generatedAt}; do not edit by hand -->`,
    '',
    `A single PostgreSQL server against a Citus cluster (${report.citus.version.replace(/ on .*/, '')}, Citus mode: tenant schemas distributed, shared tables reference tables), ` +
      `the same operations through the library side by side; ${env.machine.cpuModel}, ${env.machine.cores} cores, Node ${env.node}, PostgreSQL ${env.postgres.version} on both` +
      `${report.quick ? ' (--quick sizes)' : ''}.`,
    '',
    '| operation | statistic | single server | Citus | Citus / single |',
    '|---|---|---:|---:|---:|',
    ...report.rows.map((row) => `| ${row.operation} | ${row.unit} | ${fmt(row.single)} ms | ${fmt(row.citus)} ms | ${row.ratio.toFixed(2)}× |`),
    '',
    `Reads and saves: ${report.reads.single.ops.toLocaleString('en')} of each per target at concurrency 1, over ${sizes.tenants} tenants of ${sizes.clientsPerTenant} clients ` +
      `(single ${report.reads.single.opsPerSec} / Citus ${report.reads.citus.opsPerSec} reads/s, single ${report.saves.single.opsPerSec} / Citus ${report.saves.citus.opsPerSec} saves/s). ` +
      `Tenants on Citus: ${Object.entries(report.citus.placement).map(([node, n]) => `${n} on ${node}`).join(', ')}.`,
    '',
    `moveTenant(slug, { node: <the other worker>, transfer: 'online' }) on Citus of a tenant of ${sizes.moverRows.toLocaleString('en')} clients, ` +
      `a writer saving clients in a loop during the move, ${report.moves.length} move${report.moves.length === 1 ? '' : 's'}${report.moves.length > 1 ? ' (to and fro between the workers)' : ''}: ` +
      `${report.moves.length > 1 ? `median ${percentile(moveMs, 50)} ms; ` : ''}${during} writes acknowledged during the moves, ${errors} errors; ` +
      `row count afterwards = before + acknowledged: ${allThere ? 'yes, every move' : 'NO'}.`,
    '',
    '| move | ms | writes acknowledged during it | save p50 / max during it | errors | rows before → after |',
    '|---|---:|---:|---:|---:|---|',
    ...report.moves.map(
      (m) =>
        `| ${m.from} → ${m.to} | ${m.ms} | ${m.writesAcknowledgedDuringMove} | ${m.writeP50Ms} / ${m.writeMaxMs} ms | ${m.writeErrors} | ` +
        `${m.rowsBefore} → ${m.rowsAfter}${m.rowsAsExpected ? '' : ' (expected ' + String(m.rowsBefore + m.writesAcknowledgedInAll) + ')'} |`,
    ),
    '',
    'Method:',
    '',
    `- Both targets run on one ${env.machine.cores}-core machine: the single server, and the Citus coordinator with its ${report.citus.workers.length} workers ` +
      `(${report.citus.workers.join(', ')}), all PostgreSQL ${env.postgres.version} from the same binaries, plus this process. ` +
      "Citus's figures therefore include its extra hop (the client talks to the coordinator, which routes each statement to the worker holding the tenant's shards), " +
      'and the workers and the coordinator compete for the same cores; on separate machines the hop would cost a network round trip instead, and the nodes would not share CPUs. ' +
      `The machine was shared with other work while this ran (load average ${env.machine.loadAverageStart[0]} at the start, ${env.machine.loadAverageEnd?.[0] ?? '?'} at the end, on ${env.machine.cores} cores), so expect noise.`,
    `- Each target is a fresh scratch database (on Citus: created on every node with the extension and the nodes registered), a manager over the example model ` +
      `(entities/, migrations/), pool ${report.poolSize}, no warm pool. The targets alternate: createTenant, suspendTenant and dropTenant tenant by tenant with the first target swapped each time; ` +
      `reads and saves in ${sizes.rounds} rounds of ${sizes.opsPerRound} per target, rotated, after a warm-up of ${sizes.warmupOps} each that opens every tenant's DataSource (bench/measure.ts).`,
    '- Latency is the wall time of one call as the application sees it: `manager.run(slug, ...)` with the repository call inside, one call after another (concurrency 1). ' +
      'The save inserts one client. dropTenant is timed after a (separately timed) suspendTenant.',
    "- The move: `getTenant(slug).node` before and after, Citus's `citus_schema_move` with `force_logical` (the library's `'online'`). The writer starts just before the move and stops once it returns; " +
      '"during it" counts the saves acknowledged before moveTenant returned (the one in flight then is counted in the row check). ' +
      'The max save latency during a move shows how long writes waited at Citus\'s switch. ' +
      `The moves run back to back. An online move creates a logical-replication subscription on the target worker, and PostgreSQL 15's launcher starts apply workers ` +
      `at most once per wal_retrieve_retry_interval (${report.citus.workerWalRetrieveRetryInterval} on the workers), so a move to a node whose launcher started one a moment before can wait up to that long ` +
      'for its apply worker, before the catch-up and the switch (PostgreSQL 16 throttles per subscription instead); writes go on meanwhile. A move that takes seconds longer than the others is most likely that wait.',
    `- A single run; ${report.quick ? 'the --quick sizes are too small for more than a smoke test' : 'percentiles of small samples (createTenant, dropTenant) move by several ms between runs'}. Whole benchmark: ${report.durationSeconds} s.`,
    '',
  ].join('\n');
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
