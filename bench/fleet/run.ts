import 'reflect-metadata';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tenantMigrations } from '../../migrations';
import type { TenantDataSourceManager, TenantDataSourceManagerOptions } from '../../src';
import { startScratchDatabase } from '../../support/database';
import { describeEnvironment } from '../environment';
import { ExampleManagers } from '../example-managers';
import { median, percentile } from '../measure';
import { inParallel } from '../routing/fixture';
import { addColumnMigration, generatedModelMigrations } from './generated-model';

/**
 * `node build/bench/fleet/run.js [--quick]` (part of `npm run bench`):
 * provisioning and fleet-migration figures. Writes bench/results/fleet.json
 * and fleet.md (fleet-quick.* with --quick).
 */

interface Sizes {
  readonly createCount: number;
  readonly signups: number;
  readonly generatedTables: number;
  readonly fleet: number;
  readonly bigFleet: number;
  readonly noopRepeats: number;
}

const DEFAULT_SIZES: Sizes = { createCount: 300, signups: 20, generatedTables: 100, fleet: 1000, bigFleet: 10_000, noopRepeats: 5 };
const QUICK_SIZES: Sizes = { createCount: 20, signups: 3, generatedTables: 20, fleet: 30, bigFleet: 60, noopRepeats: 2 };
const RESULTS_DIR = join(__dirname, '..', '..', '..', 'bench', 'results');
const log = (line: string): void => console.error(`[bench:fleet] ${line}`);

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const sizes = quick ? QUICK_SIZES : DEFAULT_SIZES;
  const database = await startScratchDatabase({ settings: { max_connections: 200, max_locks_per_transaction: 256 } });
  const managers = new ExampleManagers(database.url, { poolSize: 10, logging: false });
  const open = (overrides: Partial<TenantDataSourceManagerOptions>): Promise<TenantDataSourceManager> => managers.open(overrides);
  try {
    log(`database: ${database.description}`);
    const environment = await describeEnvironment(database.url, database.embedded, database.description);

    // 1. Provisioning throughput on the example model.
    const provisioning: Record<string, number> = {};
    for (const concurrency of [1, 4]) {
      const manager = await open({ registryTable: `prov_c${concurrency}` });
      const slugs = Array.from({ length: sizes.createCount }, (_, i) => `prov-c${concurrency}-${i}`);
      const seconds = await timed(() => inParallel(slugs, concurrency, (slug) => manager.createTenant(slug).then(() => undefined)));
      provisioning[`concurrency${concurrency}PerSecond`] = Math.round(sizes.createCount / seconds);
      log(`createTenant at concurrency ${concurrency}: ${provisioning[`concurrency${concurrency}PerSecond`]}/s`);
    }

    // 2. Signup latency on a generated model: inline vs warm pool.
    const generated = generatedModelMigrations(sizes.generatedTables);
    const signup: Record<string, unknown> = { tables: sizes.generatedTables + 2, signups: sizes.signups };
    const inline = await open({ registryTable: 'signup_inline', tenantMigrations: [...tenantMigrations, ...generated] });
    signup.inlineMs = await latencies(sizes.signups, (i) => inline.createTenant(`inline-${i}`));
    const warm = await open({ registryTable: 'signup_warm', tenantMigrations: [...tenantMigrations, ...generated], warmPool: { size: sizes.signups } });
    const refillSeconds = await timed(() => warm.refillWarmPool());
    signup.warmPoolFillSeconds = round(refillSeconds);
    // Signups claim spares while the pool refills in the background, as in production.
    signup.warmMs = await latencies(sizes.signups, (i) => warm.createTenant(`warm-${i}`));
    log(`signup p50 inline ${(signup.inlineMs as Latency).p50} ms, warm ${(signup.warmMs as Latency).p50} ms`);
    await Promise.all([inline.destroy(), warm.destroy()]);

    // 3. Fleet migrations: one new migration over the fleet, at concurrency 1, 4, 8.
    const registryTable = 'fleet';
    const base = await open({ registryTable });
    const fleetSlugs = Array.from({ length: sizes.fleet }, (_, i) => `fleet-${i}`);
    const createSeconds = await timed(() => inParallel(fleetSlugs, 4, (slug) => base.createTenant(slug).then(() => undefined)));
    log(`fleet of ${sizes.fleet} created in ${createSeconds.toFixed(1)} s`);
    const migrate: Record<string, number> = {};
    const added: Function[] = [];
    for (const [index, concurrency] of [1, 4, 8].entries()) {
      added.push(addColumnMigration(1900000000000 + index));
      const manager = await open({ registryTable, tenantMigrations: [...tenantMigrations, ...added] });
      let report: Awaited<ReturnType<TenantDataSourceManager['migrateTenants']>> | undefined;
      const seconds = await timed(async () => {
        report = await manager.migrateTenants({ concurrency });
      });
      if (report!.totals.migrated !== sizes.fleet) throw new Error(`Expected ${sizes.fleet} tenants migrated, got ${JSON.stringify(report!.totals)}`);
      migrate[`concurrency${concurrency}Seconds`] = round(seconds);
      log(`migrateTenants of ${sizes.fleet} tenants at concurrency ${concurrency}: ${seconds.toFixed(2)} s`);
    }
    const current = await open({ registryTable, tenantMigrations: [...tenantMigrations, ...added] });
    const noop: Record<string, number> = {};
    noop[`tenants${sizes.fleet}Ms`] = await noopMs(current, sizes.noopRepeats, sizes.fleet);

    // 4. A no-op run over a big fleet.
    const more = Array.from({ length: sizes.bigFleet - sizes.fleet }, (_, i) => `fleet-${sizes.fleet + i}`);
    const bigSeconds = await timed(() => inParallel(more, 4, (slug) => current.createTenant(slug).then(() => undefined)));
    log(`fleet grown to ${sizes.bigFleet} tenants in ${bigSeconds.toFixed(1)} s`);
    noop[`tenants${sizes.bigFleet}Ms`] = await noopMs(current, sizes.noopRepeats, sizes.bigFleet);
    log(`no-op migrateTenants: ${JSON.stringify(noop)}`);

    const report = {
      benchmark: 'fleet',
      generatedAt: new Date().toISOString(),
      quick,
      environment,
      sizes,
      provisioning,
      signup,
      migrate,
      noop,
      targets: {
        provisioningPerSecond: { required: '>= 150 (best setting)', measured: Math.max(provisioning.concurrency1PerSecond!, provisioning.concurrency4PerSecond!) },
        warmSignupP50Ms: { required: '< 20', measured: (signup.warmMs as Latency).p50 },
        migrateBestSeconds: { required: `<= 10 for 1,000 tenants`, measured: Math.min(...Object.values(migrate)), tenants: sizes.fleet },
        noopBigFleetMs: { required: '< 1000 for 10,000 tenants', measured: noop[`tenants${sizes.bigFleet}Ms`], tenants: sizes.bigFleet },
      },
    };
    const name = quick ? 'fleet-quick' : 'fleet';
    await writeFile(join(RESULTS_DIR, `${name}.json`), `${JSON.stringify(report, null, 2)}\n`);
    const markdown = renderMarkdown(report);
    await writeFile(join(RESULTS_DIR, `${name}.md`), markdown);
    console.log(markdown);
  } finally {
    await managers.closeAll();
    await database.stop();
  }
}

interface Latency {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

async function latencies(count: number, op: (i: number) => Promise<unknown>): Promise<Latency> {
  const samples: number[] = [];
  for (let i = 0; i < count; i += 1) {
    const start = performance.now();
    await op(i);
    samples.push(performance.now() - start);
  }
  samples.sort((a, b) => a - b);
  return { p50: round(percentile(samples, 50)), p99: round(percentile(samples, 99)), max: round(samples[samples.length - 1]!) };
}

/**
 * Median wall time of a `migrateTenants()` with nothing pending. The report
 * is complete (one `up-to-date` line per tenant, from the one ledger query),
 * so this times the query and the building of `tenants` lines.
 */
async function noopMs(manager: TenantDataSourceManager, repeats: number, tenants: number): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < repeats; i += 1) {
    const start = performance.now();
    const report = await manager.migrateTenants();
    samples.push(performance.now() - start);
    if (report.results.length !== tenants || report.totals.upToDate !== tenants) {
      throw new Error(`A no-op run over ${tenants} tenants should report each of them up to date; got ${JSON.stringify(report.totals)}`);
    }
  }
  return round(median(samples));
}

async function timed(work: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await work();
  return (performance.now() - start) / 1000;
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

function renderMarkdown(report: {
  generatedAt: string;
  environment: Awaited<ReturnType<typeof describeEnvironment>>;
  sizes: Sizes;
  provisioning: Record<string, number>;
  signup: Record<string, unknown>;
  migrate: Record<string, number>;
  noop: Record<string, number>;
}): string {
  const env = report.environment;
  const inline = report.signup.inlineMs as Latency;
  const warm = report.signup.warmMs as Latency;
  return [
    `<!-- generated by bench/fleet/run.ts on ${report.generatedAt}; do not edit by hand -->`,
    '',
    `Measured on ${env.machine.cpuModel}, ${env.machine.cores} cores, Node ${env.node}, PostgreSQL ${env.postgres.version}${env.postgres.embedded ? ' (embedded, same machine)' : ''}.`,
    '',
    '| figure | measured |',
    '|---|---:|',
    `| createTenant, example model, concurrency 1 | ${report.provisioning.concurrency1PerSecond}/s |`,
    `| createTenant, example model, concurrency 4 | ${report.provisioning.concurrency4PerSecond}/s |`,
    `| signup on a ${String(report.signup.tables)}-table model, inline: p50 / p99 | ${inline.p50} / ${inline.p99} ms |`,
    `| signup on the same model, warm pool: p50 / p99 | ${warm.p50} / ${warm.p99} ms |`,
    `| one new migration over ${report.sizes.fleet} tenants, concurrency 1 / 4 / 8 | ${report.migrate.concurrency1Seconds} / ${report.migrate.concurrency4Seconds} / ${report.migrate.concurrency8Seconds} s |`,
    `| no-op migrateTenants over ${report.sizes.fleet} tenants, every tenant reported (median) | ${report.noop[`tenants${report.sizes.fleet}Ms`]} ms |`,
    `| no-op migrateTenants over ${report.sizes.bigFleet} tenants, every tenant reported (median) | ${report.noop[`tenants${report.sizes.bigFleet}Ms`]} ms |`,
    '',
  ].join('\n');
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
