import 'reflect-metadata';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tenantContext, type TenantDataSourceManager } from '../../src';
import { startScratchDatabase } from '../../support/database';
import { describeEnvironment } from '../environment';
import { ExampleManagers } from '../example-managers';
import { percentile } from '../measure';
import { inParallel } from '../routing/fixture';

/**
 * `node --expose-gc build/bench/fan-out/run.js [--quick]` (part of `npm run
 * bench`): `queryAcrossTenants('SELECT count(*) FROM client')` over a fleet
 * (1,000 tenants; 30 with --quick) at concurrency 1, 4 and 8: wall time,
 * per-tenant p50/p99, and the process's peak heap and RSS above the level
 * before the call; plus the same count through `aggregateAcrossTenants`;
 * then the same fleet placed on 2 servers (a second embedded PostgreSQL on
 * this machine, the fewest-tenants placement: half on each), concurrency
 * per server. Writes bench/results/fan-out.json and fan-out.md (fan-out-quick.* with --quick).
 */

interface Sizes {
  readonly tenants: number;
  readonly clientsPerTenant: number;
}

const DEFAULT_SIZES: Sizes = { tenants: 1000, clientsPerTenant: 5 };
const QUICK_SIZES: Sizes = { tenants: 30, clientsPerTenant: 5 };
const CONCURRENCIES = [1, 4, 8] as const;
const RESULTS_DIR = join(__dirname, '..', '..', '..', 'bench', 'results');
const log = (line: string): void => console.error(`[bench:fan-out] ${line}`);

interface RunFigures {
  readonly concurrency: number;
  readonly wallMs: number;
  readonly tenantP50Ms: number;
  readonly tenantP99Ms: number;
  readonly tenantsPerSecond: number;
  readonly peakHeapDeltaMb: number;
  readonly peakRssDeltaMb: number;
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const sizes = quick ? QUICK_SIZES : DEFAULT_SIZES;
  const database = await startScratchDatabase({ settings: { max_connections: 200, max_locks_per_transaction: 256 } });
  let second: Awaited<ReturnType<typeof startScratchDatabase>> | undefined;
  const managers = new ExampleManagers(database.url, { poolSize: 10, logging: false });
  const started = performance.now();
  try {
    log(`database: ${database.description}`);
    const environment = await describeEnvironment(database.url, database.embedded, database.description);
    const manager = await managers.open({ registryTable: 'fan_out', maxDataSources: sizes.tenants + 10 });
    await createFleet(manager, sizes, 'fan');
    const runs: RunFigures[] = [];
    for (const concurrency of CONCURRENCIES) {
      runs.push(await measure(manager, concurrency, sizes));
      log(`concurrency ${concurrency}: ${JSON.stringify(runs[runs.length - 1])}`);
    }
    const aggregateSeconds = await timed(async () => {
      const result = await manager.aggregateAcrossTenants('SELECT count(*) AS clients FROM client', [], { concurrency: 8, aggregates: { clients: 'sum' } });
      const expected = String(sizes.tenants * sizes.clientsPerTenant);
      if (result.groups[0]?.clients !== expected) throw new Error(`aggregate: expected ${expected} clients, got ${JSON.stringify(result.groups)}`);
    });
    await managers.close(manager);

    // The same fleet on 2 servers: a second PostgreSQL, embedded, on this machine.
    second = await startScratchDatabase({ forceEmbedded: true, settings: { max_connections: 200, max_locks_per_transaction: 256 } });
    log(`second server: ${second.description}`);
    const pair = await managers.openOn(
      { one: { type: 'postgres', url: database.url, poolSize: 10, logging: false }, two: { type: 'postgres', url: second.url, poolSize: 10, logging: false } },
      { registryTable: 'fan_out_pair', maxDataSources: sizes.tenants + 10 },
    );
    await createFleet(pair, sizes, 'pair');
    const placed = pair.stats().servers;
    const twoServerRuns: RunFigures[] = [];
    for (const concurrency of CONCURRENCIES) {
      twoServerRuns.push(await measure(pair, concurrency, sizes));
      log(`2 servers, concurrency ${concurrency} per server: ${JSON.stringify(twoServerRuns[twoServerRuns.length - 1])}`);
    }
    const perServer = Object.fromEntries(
      await Promise.all(Object.keys(placed).map(async (name) => [name, (await pair.listTenants({ where: { server: name } })).length] as const)),
    );
    const report = {
      benchmark: 'fan-out',
      generatedAt: new Date().toISOString(),
      quick,
      environment,
      sizes,
      poolSize: 10,
      runs,
      twoServers: { tenantsPerServer: perServer, secondServer: second.description, runs: twoServerRuns },
      aggregateConcurrency8Ms: Math.round(aggregateSeconds * 1000),
      durationSeconds: 0,
    };
    report.durationSeconds = round((performance.now() - started) / 1000);
    const name = quick ? 'fan-out-quick' : 'fan-out';
    await writeFile(join(RESULTS_DIR, `${name}.json`), `${JSON.stringify(report, null, 2)}\n`);
    const markdown = renderMarkdown(report);
    await writeFile(join(RESULTS_DIR, `${name}.md`), markdown);
    console.log(markdown);
  } finally {
    await managers.closeAll();
    await second?.stop();
    await database.stop();
  }
}

/** Creates the fleet (4 at a time), puts `clientsPerTenant` clients in each, then opens every tenant's DataSource once. */
async function createFleet(manager: TenantDataSourceManager, sizes: Sizes, prefix: string): Promise<void> {
  const slugs = Array.from({ length: sizes.tenants }, (_, i) => `${prefix}-${String(i).padStart(5, '0')}`);
  const createSeconds = await timed(() =>
    inParallel(slugs, 4, async (slug) => {
      await manager.createTenant(slug);
      const values = Array.from({ length: sizes.clientsPerTenant }, (_, i) => `('c${i}', 'c${i}@${slug}.test')`).join(', ');
      await manager.run(slug, () => tenantContext.query(`INSERT INTO client (name, email) VALUES ${values}`));
    }),
  );
  log(`fleet of ${sizes.tenants} created in ${createSeconds.toFixed(1)} s`);
  // A first pass opens every tenant's DataSource, so the timed runs measure the fan-out, not DataSource initialisation.
  const warmup = await timed(() => manager.queryAcrossTenants('SELECT 1', [], { concurrency: 8 }));
  log(`warm-up pass (opens ${sizes.tenants} DataSources): ${warmup.toFixed(2)} s`);
}

/** One timed `queryAcrossTenants` with memory sampled every 5 ms; checks every tenant answered the right count. */
async function measure(manager: TenantDataSourceManager, concurrency: number, sizes: Sizes): Promise<RunFigures> {
  (globalThis as { gc?: () => void }).gc?.();
  const before = process.memoryUsage();
  let peakHeap = before.heapUsed;
  let peakRss = before.rss;
  const sampler = setInterval(() => {
    const now = process.memoryUsage();
    peakHeap = Math.max(peakHeap, now.heapUsed);
    peakRss = Math.max(peakRss, now.rss);
  }, 5);
  const perTenant: number[] = [];
  const start = performance.now();
  const result = await manager.queryAcrossTenants<{ count: string }>('SELECT count(*) FROM client', [], {
    concurrency,
    onProgress: (line) => perTenant.push(line.ms),
  });
  const wallMs = performance.now() - start;
  clearInterval(sampler);
  const after = process.memoryUsage();
  peakHeap = Math.max(peakHeap, after.heapUsed);
  peakRss = Math.max(peakRss, after.rss);
  if (result.rows.length !== sizes.tenants || result.rows.some((row) => row.count !== String(sizes.clientsPerTenant))) {
    throw new Error(`Expected ${sizes.tenants} rows of count ${sizes.clientsPerTenant}; got ${result.rows.length} rows, failures ${JSON.stringify(result.failures.slice(0, 3))}`);
  }
  perTenant.sort((a, b) => a - b);
  return {
    concurrency,
    wallMs: Math.round(wallMs),
    tenantP50Ms: round(percentile(perTenant, 50)),
    tenantP99Ms: round(percentile(perTenant, 99)),
    tenantsPerSecond: Math.round(sizes.tenants / (wallMs / 1000)),
    peakHeapDeltaMb: round((peakHeap - before.heapUsed) / 1024 / 1024),
    peakRssDeltaMb: round((peakRss - before.rss) / 1024 / 1024),
  };
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
  poolSize: number;
  runs: RunFigures[];
  twoServers: { tenantsPerServer: Record<string, number>; secondServer: string; runs: RunFigures[] };
  aggregateConcurrency8Ms: number;
  durationSeconds: number;
}): string {
  const env = report.environment;
  return [
    `<!-- generated by bench/fan-out/run.ts on ${report.generatedAt}; do not edit by hand -->`,
    '',
    `Measured on ${env.machine.cpuModel}, ${env.machine.cores} cores, Node ${env.node}, PostgreSQL ${env.postgres.version}${env.postgres.embedded ? ' (embedded, same machine)' : ''}; ` +
      `${report.sizes.tenants} tenants of ${report.sizes.clientsPerTenant} clients, pool ${report.poolSize}, DataSources already open.`,
    '',
    `\`queryAcrossTenants('SELECT count(*) FROM client')\`:`,
    '',
    '| concurrency | wall time | tenants/s | per tenant p50 / p99 | peak heap Δ | peak RSS Δ |',
    '|---:|---:|---:|---:|---:|---:|',
    ...report.runs.map(
      (r) => `| ${r.concurrency} | ${r.wallMs} ms | ${r.tenantsPerSecond} | ${r.tenantP50Ms} / ${r.tenantP99Ms} ms | ${r.peakHeapDeltaMb} MB | ${r.peakRssDeltaMb} MB |`,
    ),
    '',
    `\`aggregateAcrossTenants\` of the same count (sum), concurrency 8: ${report.aggregateConcurrency8Ms} ms.`,
    '',
    `The same fleet on 2 servers (${Object.entries(report.twoServers.tenantsPerServer).map(([name, n]) => `${n} tenants on "${name}"`).join(', ')}; ` +
      `the second server is ${report.twoServers.secondServer}, on the same 2 cores), pool 10 each, concurrency per server:`,
    '',
    '| concurrency per server | wall time | tenants/s | per tenant p50 / p99 | peak heap Δ | peak RSS Δ |',
    '|---:|---:|---:|---:|---:|---:|',
    ...report.twoServers.runs.map(
      (r) => `| ${r.concurrency} | ${r.wallMs} ms | ${r.tenantsPerSecond} | ${r.tenantP50Ms} / ${r.tenantP99Ms} ms | ${r.peakHeapDeltaMb} MB | ${r.peakRssDeltaMb} MB |`,
    ),
    '',
    `Whole benchmark: ${report.durationSeconds} s.`,
    '',
  ].join('\n');
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
