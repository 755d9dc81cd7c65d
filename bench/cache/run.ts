import 'reflect-metadata';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { Client as PgClient } from 'pg';
import { Client } from '../../entities';
import { DEFAULT_TENANT_RECORD_TTL_MS, TenantDataSourceManager, tenantContext, type TenantDataSourceManagerOptions } from '../../src';
import { startScratchDatabase } from '../../support/database';
import { cpuShareBetween, snapshotCpu } from '../cpu-share';
import { describeEnvironment, round2 } from '../environment';
import { ExampleManagers } from '../example-managers';
import { collectGarbage, percentile } from '../measure';
import { inParallel } from '../routing/fixture';

/**
 * `node --expose-gc build/bench/cache/run.js [--quick]` (part of `npm run bench`):
 * how many tenants one process and one database serve.
 *
 * 1. Cache scale: N tenants (10,000; --quick 200) touched round-robin through
 *    `manager.run()` with `maxDataSources` at two sizes (1,000 and 10,000;
 *    --quick 50 and 200): heap per cached DataSource (heapUsed after a forced
 *    GC over the cached count), cache-miss cost (time of a `run()` whose
 *    tenant was not cached), steady-state throughput of runs doing a
 *    findOneBy, PostgreSQL connections (peak in pg_stat_activity) and RSS.
 * 2. PostgreSQL's side: backend memory of the pool's connections after
 *    touching 1,000 and 5,000 tenant schemas (--quick 100 and 200), without
 *    connection recycling (`pool.maxLifetimeSeconds: 0`) and with a short
 *    lifetime: `sum(total_bytes)` of pg_backend_memory_contexts run on each
 *    pooled connection, and VmRSS / RssAnon of each backend from /proc (the
 *    server runs on this machine; skipped when /proc cannot see it).
 *
 * Writes bench/results/cache.json + cache.md (cache-quick.* with --quick).
 */

interface Sizes {
  readonly tenants: number;
  readonly maxDataSources: readonly number[];
  readonly touchSteps: readonly number[];
  /** Passes over the touched tenants at each step of the backend-memory part (concurrency 10). */
  readonly touchPasses: number;
  readonly recycleSeconds: number;
}

const DEFAULT_SIZES: Sizes = { tenants: 10_000, maxDataSources: [1_000, 10_000], touchSteps: [1_000, 5_000], touchPasses: 3, recycleSeconds: 2 };
const QUICK_SIZES: Sizes = { tenants: 200, maxDataSources: [50, 200], touchSteps: [100, 200], touchPasses: 2, recycleSeconds: 1 };
const POOL_SIZE = 10;
const APP = 'bench-cache';
const RESULTS_DIR = join(__dirname, '..', '..', '..', 'bench', 'results');
const log = (line: string): void => console.error(`[bench:cache] ${line}`);

const slugOf = (i: number): string => `c${String(i).padStart(5, '0')}`;

/** A full GC: `global.gc` under --expose-gc, else the harness's fallback. */
function fullGc(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc !== undefined) {
    gc();
    gc();
  } else {
    collectGarbage();
    collectGarbage();
  }
}

const mib = (bytes: number): number => round2(bytes / 2 ** 20);
const kib = (bytes: number): number => round2(bytes / 1024);

interface Latency {
  readonly count: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

function latency(samplesMs: number[]): Latency {
  const sorted = Float64Array.from(samplesMs).sort();
  return { count: sorted.length, p50Ms: round3(percentile(sorted, 50)), p99Ms: round3(percentile(sorted, 99)) };
}

const round3 = (v: number): number => Math.round(v * 1000) / 1000;

/** Samples the connections of application_name APP every `everyMs` while running. */
class ConnectionSampler {
  #peak = 0;
  #timer: NodeJS.Timeout | undefined;
  #busy = false;
  private constructor(readonly client: PgClient) {}

  static async open(url: string): Promise<ConnectionSampler> {
    const client = new PgClient({ connectionString: url, application_name: 'bench-cache-monitor' });
    client.on('error', () => undefined);
    await client.connect();
    return new ConnectionSampler(client);
  }

  async sample(): Promise<number> {
    const { rows } = await this.client.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1`,
      [APP],
    );
    const n = rows[0]!.n;
    this.#peak = Math.max(this.#peak, n);
    return n;
  }

  start(everyMs: number): void {
    this.#timer = setInterval(() => {
      if (this.#busy) return;
      this.#busy = true;
      this.sample()
        .catch(() => undefined)
        .finally(() => {
          this.#busy = false;
        });
    }, everyMs);
  }

  async stop(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.sample();
  }

  resetPeak(): void {
    this.#peak = 0;
  }

  get peak(): number {
    return this.#peak;
  }

  async close(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    await this.client.end();
  }
}

/** Runs `op(i)` for i in [0, count) with `concurrency` workers; returns runs/s. */
async function throughput(count: number, concurrency: number, op: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (;;) {
        const i = next++;
        if (i >= count) return;
        await op(i);
      }
    }),
  );
  return Math.round((count * 1000) / (performance.now() - start));
}

/** Times every `run()` at concurrency 1, split by whether it missed the cache (the manager's miss counter moved). */
async function timedPass(manager: TenantDataSourceManager, count: number, fn: () => Promise<unknown>): Promise<{ misses: number[]; hits: number[]; runsPerSecond: number }> {
  const misses: number[] = [];
  const hits: number[] = [];
  const start = performance.now();
  for (let i = 0; i < count; i += 1) {
    const before = manager.stats().misses;
    const t0 = performance.now();
    await manager.run(slugOf(i), fn);
    const ms = performance.now() - t0;
    (manager.stats().misses > before ? misses : hits).push(ms);
  }
  return { misses, hits, runsPerSecond: Math.round((count * 1000) / (performance.now() - start)) };
}

const find = (): Promise<unknown> => tenantContext.getRepository(Client).findOneBy({ id: 1 });
const noop = async (): Promise<void> => undefined;

interface CacheScaleFigures {
  readonly maxDataSources: number;
  readonly tenants: number;
  readonly cachedDataSources: number;
  readonly heapBaselineMiB: number;
  readonly heapWithCacheMiB: number;
  readonly heapPerDataSourceKiB: number;
  readonly rssMiB: number;
  /** `run(slug, noop)` on a miss, first pass (cold cache). */
  readonly missMs: Latency;
  /** `run(slug, noop)`, second pass: on a hit / on a miss. */
  readonly hitMs: Latency | null;
  readonly missAgainMs: Latency | null;
  /** `run(slug, findOneBy)`, second pass, split by miss / hit. */
  readonly findMissMs: Latency | null;
  readonly findHitMs: Latency | null;
  readonly runsPerSecondC1: number;
  readonly runsPerSecondC10: number;
  readonly hits: number;
  readonly misses: number;
  readonly evictions: number;
  readonly peakServerConnections: number;
  readonly poolSize: number;
}

interface BackendConnection {
  readonly pid: number;
  readonly contextsBytes: number;
  readonly cacheContextBytes: number;
  readonly vmRssKiB: number | null;
  readonly rssAnonKiB: number | null;
}

interface BackendStep {
  readonly schemasTouched: number;
  readonly runs: number;
  readonly connections: number;
  /** pg_backend_memory_contexts, summed on each connection: max / median / sum over the pool's connections. */
  readonly contextsMiB: { readonly max: number; readonly median: number; readonly sum: number };
  readonly rssAnonMiB: { readonly max: number; readonly median: number; readonly sum: number } | null;
  readonly vmRssMiB: { readonly max: number; readonly median: number; readonly sum: number } | null;
  readonly perConnection: readonly BackendConnection[];
}

interface BackendFigures {
  readonly maxLifetimeSeconds: number;
  readonly steps: readonly BackendStep[];
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const sizes = quick ? QUICK_SIZES : DEFAULT_SIZES;
  const exposedGc = typeof (globalThis as { gc?: unknown }).gc === 'function';
  if (!exposedGc) log('note: run with node --expose-gc for exact heap figures (falling back to the harness GC)');
  const database = await startScratchDatabase({ settings: { max_connections: 100 } });
  const managers = new ExampleManagers(database.url, { poolSize: POOL_SIZE, applicationName: APP });
  let sampler: ConnectionSampler | undefined;
  const open = (overrides: Partial<TenantDataSourceManagerOptions>): Promise<TenantDataSourceManager> => managers.open(overrides);
  const close = (manager: TenantDataSourceManager): Promise<void> => managers.close(manager);
  try {
    log(`database: ${database.description}`);
    const environment = await describeEnvironment(database.url, database.embedded, database.description);
    sampler = await ConnectionSampler.open(database.url);
    const cpuStart = snapshotCpu();

    // Tenants, made by the library (example model: client, project, ... + migrations table).
    const t0 = performance.now();
    const setup = await open({ dataSource: { type: 'postgres', url: database.url, poolSize: 4, applicationName: 'bench-setup' } });
    await inParallel(
      Array.from({ length: sizes.tenants }, (_, i) => slugOf(i)),
      4,
      (slug) => setup.createTenant(slug).then(() => undefined),
    );
    await close(setup);
    const createSeconds = (performance.now() - t0) / 1000;
    log(`${sizes.tenants} tenants created in ${createSeconds.toFixed(1)} s (createTenant, concurrency 4)`);

    // 1. Cache scale.
    const scale: CacheScaleFigures[] = [];
    for (const maxDataSources of sizes.maxDataSources) {
      const manager = await open({ maxDataSources, pool: { idleTimeoutMillis: 120_000 } });
      // Shared metadata, connections, JIT of the path; then evicted by the passes (or one more cached DataSource: negligible).
      await manager.run(slugOf(sizes.tenants - 1), find);
      fullGc();
      const heapBaseline = process.memoryUsage().heapUsed;
      sampler.resetPeak();
      sampler.start(250);

      const first = await timedPass(manager, sizes.tenants, noop);
      const cached = manager.stats().cachedDataSources;
      fullGc();
      const heapWithCache = process.memoryUsage().heapUsed;
      const rss = process.memoryUsage().rss;
      const again = await timedPass(manager, sizes.tenants, noop);
      const second = await timedPass(manager, sizes.tenants, find);
      const runsPerSecondC10 = await throughput(sizes.tenants, POOL_SIZE, (i) => manager.run(slugOf(i % sizes.tenants), find));
      await sampler.stop();
      const stats = manager.stats();
      const figures: CacheScaleFigures = {
        maxDataSources,
        tenants: sizes.tenants,
        cachedDataSources: cached,
        heapBaselineMiB: mib(heapBaseline),
        heapWithCacheMiB: mib(heapWithCache),
        heapPerDataSourceKiB: kib((heapWithCache - heapBaseline) / Math.max(1, cached)),
        rssMiB: mib(Math.max(rss, process.memoryUsage().rss)),
        missMs: latency(first.misses),
        // A second pass of run(slug, noop): hits when everything fits in the cache, misses again when not.
        hitMs: again.hits.length > 0 ? latency(again.hits) : null,
        missAgainMs: again.misses.length > 0 ? latency(again.misses) : null,
        findMissMs: second.misses.length > 0 ? latency(second.misses) : null,
        findHitMs: second.hits.length > 0 ? latency(second.hits) : null,
        runsPerSecondC1: second.runsPerSecond,
        runsPerSecondC10,
        hits: stats.hits,
        misses: stats.misses,
        evictions: stats.evictions,
        peakServerConnections: sampler.peak,
        poolSize: POOL_SIZE,
      };
      scale.push(figures);
      log(
        `maxDataSources ${maxDataSources}: ${cached} cached, ${figures.heapPerDataSourceKiB} KiB heap each, miss p50 ${figures.missMs.p50Ms} ms ` +
          `p99 ${figures.missMs.p99Ms} ms, ${figures.runsPerSecondC1} runs/s (c=1) ${figures.runsPerSecondC10} runs/s (c=10), ` +
          `peak ${figures.peakServerConnections} connections, RSS ${figures.rssMiB} MiB`,
      );
      await close(manager);
      fullGc();
    }

    // 2. PostgreSQL backend memory, without and with connection recycling.
    const backend: BackendFigures[] = [];
    for (const maxLifetimeSeconds of [0, sizes.recycleSeconds]) {
      const manager = await open({
        maxDataSources: Math.max(...sizes.touchSteps),
        pool: { maxLifetimeSeconds, idleTimeoutMillis: 120_000 },
      });
      const steps: BackendStep[] = [];
      // Fill the pool: concurrency 10 on one tenant.
      await throughput(5 * POOL_SIZE, POOL_SIZE, () => manager.run(slugOf(0), find));
      steps.push(await backendStep(manager, 1, 5 * POOL_SIZE));
      for (const touched of sizes.touchSteps) {
        // Each pass: every tenant in [0, touched) once, at concurrency 10, so the pool's connections share the schemas.
        const runs = sizes.touchPasses * touched;
        await throughput(runs, POOL_SIZE, (i) => manager.run(slugOf(i % touched), find));
        steps.push(await backendStep(manager, touched, runs));
      }
      backend.push({ maxLifetimeSeconds, steps });
      log(
        `backend memory, maxLifetimeSeconds ${maxLifetimeSeconds}: ` +
          steps.map((s) => `${s.schemasTouched} schemas: ${s.connections} conns, max ${s.contextsMiB.max} MiB, sum ${s.contextsMiB.sum} MiB`).join('; '),
      );
      await close(manager);
    }

    const cpu = cpuShareBetween(cpuStart, snapshotCpu());
    environment.machine.loadAverageEnd = loadavg().map(round2);
    environment.machine.cpuWhileMeasuring = cpu;

    const biggest = scale[scale.length - 1]!;
    const targets = [
      ...scale.map((s) => ({
        target: `heap per cached DataSource <= 40 KiB (maxDataSources ${s.maxDataSources})`,
        measured: s.heapPerDataSourceKiB,
        required: 40,
        met: s.heapPerDataSourceKiB <= 40,
      })),
      ...scale.map((s) => ({
        target: `cache-miss run() p50 <= 1.5 ms (maxDataSources ${s.maxDataSources})`,
        measured: s.missMs.p50Ms,
        required: 1.5,
        met: s.missMs.p50Ms <= 1.5,
      })),
      ...scale.map((s) => ({
        target: `PostgreSQL connections <= pool size (maxDataSources ${s.maxDataSources})`,
        measured: s.peakServerConnections,
        required: s.poolSize,
        met: s.peakServerConnections <= s.poolSize,
      })),
    ];
    const notes = [
      `run() of a cached tenant re-reads its registry row when the cached record is older than tenantRecordTtlMs (default ${DEFAULT_TENANT_RECORD_TTL_MS} ms): ` +
        `round-robin over ${sizes.tenants} tenants revisits each one less often than that, so most "hits" in the findOneBy passes include that read.`,
      'With maxDataSources below the number of tenants, round-robin is the LRU worst case: every run() misses (and evicts).',
      `Heap per DataSource = (heapUsed after a forced GC with the cache full - heapUsed after a forced GC before any tenant) / cached DataSources${exposedGc ? '' : ' (no --expose-gc: harness GC)'}.`,
      `Backend memory: each step runs ${sizes.touchPasses} passes over the tenants touched so far at concurrency 10 (run() + findOneBy), then runs ` +
        'SELECT sum(total_bytes) FROM pg_backend_memory_contexts on each of the pool\'s connections (all held at once) and reads /proc/<pid>/status of those backends. ' +
        'RssAnon is the backend\'s private memory; VmRSS also counts the shared buffers it has touched.',
    ];
    if (cpu !== undefined && cpu.otherCores > 0.2) {
      notes.push(`Other processes used ${cpu.otherCores} of ${cpu.cores} cores on average while this ran (this benchmark and its server ${cpu.benchmarkCores}).`);
    }
    const report = {
      benchmark: 'cache',
      generatedAt: new Date().toISOString(),
      quick,
      environment,
      sizes: { ...sizes, poolSize: POOL_SIZE, exposedGc },
      provisioning: { tenants: sizes.tenants, seconds: round2(createSeconds), perSecond: Math.round(sizes.tenants / createSeconds) },
      scale,
      backend,
      targets,
      notes,
    };
    void biggest;
    const name = quick ? 'cache-quick' : 'cache';
    await writeFile(join(RESULTS_DIR, `${name}.json`), `${JSON.stringify(report, null, 2)}\n`);
    const markdown = renderMarkdown(report);
    await writeFile(join(RESULTS_DIR, `${name}.md`), markdown);
    console.log(markdown);
  } finally {
    await managers.closeAll();
    await sampler?.close().catch(() => undefined);
    await database.stop();
  }
}

/** Holds every connection of the pool at once and asks each backend how much memory it uses. */
async function backendStep(manager: TenantDataSourceManager, schemasTouched: number, runs: number): Promise<BackendStep> {
  const total = manager.stats().pool.total;
  const shared = manager.sharedDataSource;
  const runners = Array.from({ length: total }, () => shared.createQueryRunner());
  const perConnection: BackendConnection[] = [];
  try {
    await Promise.all(runners.map((r) => r.connect()));
    for (const runner of runners) {
      const [row] = (await runner.query(
        `SELECT pg_backend_pid() AS pid,
                (SELECT sum(total_bytes) FROM pg_backend_memory_contexts)::bigint AS total,
                (SELECT sum(total_bytes) FROM pg_backend_memory_contexts WHERE name = 'CacheMemoryContext')::bigint AS cache`,
      )) as Array<{ pid: number; total: string; cache: string | null }>;
      const proc = await procMemory(row!.pid);
      perConnection.push({
        pid: row!.pid,
        contextsBytes: Number(row!.total),
        cacheContextBytes: Number(row!.cache ?? 0),
        vmRssKiB: proc?.vmRss ?? null,
        rssAnonKiB: proc?.rssAnon ?? null,
      });
    }
  } finally {
    await Promise.all(runners.map((r) => r.release().catch(() => undefined)));
  }
  const summary = (values: number[]): { max: number; median: number; sum: number } => {
    const sorted = [...values].sort((a, b) => a - b);
    return {
      max: mib(sorted[sorted.length - 1] ?? 0),
      median: mib(sorted[Math.floor((sorted.length - 1) / 2)] ?? 0),
      sum: mib(sorted.reduce((s, v) => s + v, 0)),
    };
  };
  const anon = perConnection.map((c) => c.rssAnonKiB);
  const vm = perConnection.map((c) => c.vmRssKiB);
  return {
    schemasTouched,
    runs,
    connections: perConnection.length,
    contextsMiB: summary(perConnection.map((c) => c.contextsBytes)),
    rssAnonMiB: anon.every((v) => v !== null) ? summary((anon as number[]).map((v) => v * 1024)) : null,
    vmRssMiB: vm.every((v) => v !== null) ? summary((vm as number[]).map((v) => v * 1024)) : null,
    perConnection,
  };
}

/** VmRSS and RssAnon (KiB) of a backend, when the server runs on this machine and /proc is readable. */
async function procMemory(pid: number): Promise<{ vmRss: number; rssAnon: number } | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    const vmRss = field('VmRSS');
    const rssAnon = field('RssAnon');
    return Number.isNaN(vmRss) || Number.isNaN(rssAnon) ? undefined : { vmRss, rssAnon };
  } catch {
    return undefined;
  }
}

function renderMarkdown(report: {
  generatedAt: string;
  quick: boolean;
  environment: Awaited<ReturnType<typeof describeEnvironment>>;
  provisioning: { tenants: number; seconds: number; perSecond: number };
  scale: CacheScaleFigures[];
  backend: BackendFigures[];
  targets: Array<{ target: string; measured: number; required: number; met: boolean }>;
  notes: string[];
}): string {
  const env = report.environment;
  const lat = (l: Latency | null): string => (l === null ? '-' : `${l.p50Ms} / ${l.p99Ms}`);
  const out: string[] = [
    `<!-- generated by bench/cache/run.ts on ${report.generatedAt}; do not edit by hand -->`,
    '',
    `Measured on ${env.machine.cpuModel}, ${env.machine.cores} cores, Node ${env.node}, PostgreSQL ${env.postgres.version}` +
      `${env.postgres.embedded ? ' (embedded, same machine)' : ''}; pool of ${POOL_SIZE}; ${report.provisioning.tenants} tenants of the example model ` +
      `(created in ${report.provisioning.seconds} s, ${report.provisioning.perSecond}/s at concurrency 4).` +
      (env.machine.cpuWhileMeasuring === undefined ? '' : ` Other processes used ${env.machine.cpuWhileMeasuring.otherCores} of ${env.machine.cpuWhileMeasuring.cores} cores meanwhile.`) +
      (report.quick ? ' **Quick run: sizes too small for real figures.**' : ''),
    '',
    '**Cache scale** (tenants touched round-robin; latencies in ms, p50 / p99)',
    '',
    '| maxDataSources | cached | heap per DataSource | miss: run() p50 / p99 | 2nd pass: run() hit / miss | run()+findOneBy miss | run()+findOneBy hit | runs/s c=1 | runs/s c=10 | PG connections (peak) | RSS |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...report.scale.map(
      (s) =>
        `| ${s.maxDataSources.toLocaleString('en-US')} | ${s.cachedDataSources.toLocaleString('en-US')} | ${s.heapPerDataSourceKiB} KiB | ${lat(s.missMs)} | ${s.hitMs !== null ? `hit ${lat(s.hitMs)}` : `miss ${lat(s.missAgainMs)}`} | ` +
        `${lat(s.findMissMs)} | ${lat(s.findHitMs)} | ${s.runsPerSecondC1.toLocaleString('en-US')} | ${s.runsPerSecondC10.toLocaleString('en-US')} | ` +
        `${s.peakServerConnections} (pool ${s.poolSize}) | ${s.rssMiB} MiB |`,
    ),
    '',
    '**PostgreSQL backend memory of the pool\'s connections** (MiB; max / median / sum over the connections)',
    '',
    '| connection recycling | schemas touched | connections | pg_backend_memory_contexts | RssAnon (/proc) | VmRSS (/proc) |',
    '|---|---:|---:|---:|---:|---:|',
  ];
  const trio = (v: { max: number; median: number; sum: number } | null): string => (v === null ? '-' : `${v.max} / ${v.median} / ${v.sum}`);
  for (const b of report.backend) {
    for (const s of b.steps) {
      out.push(
        `| ${b.maxLifetimeSeconds === 0 ? 'none (maxLifetimeSeconds 0)' : `maxLifetimeSeconds ${b.maxLifetimeSeconds}`} | ${s.schemasTouched.toLocaleString('en-US')} | ${s.connections} | ` +
          `${trio(s.contextsMiB)} | ${trio(s.rssAnonMiB)} | ${trio(s.vmRssMiB)} |`,
      );
    }
  }
  out.push('', '**Targets**', '', '| target | measured | required | result |', '|---|---:|---:|---|');
  for (const t of report.targets) out.push(`| ${t.target} | ${t.measured} | ${t.target.includes('<=') ? '<=' : '>='} ${t.required} | ${t.met ? 'pass' : 'miss'} |`);
  out.push('');
  for (const note of report.notes) out.push(`- ${note}`);
  out.push('');
  return out.join('\n');
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
