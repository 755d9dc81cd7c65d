import 'reflect-metadata';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Client as PgClient } from 'pg';
import { Client, Plan, Project } from '../entities';
import { sharedMigrations, tenantMigrations } from '../migrations';
import { TenantDataSourceManager, tenantContext, type TenantManagerStats } from '../src';
import { startScratchDatabase, type ScratchDatabase } from '../support/database';

/**
 * `npm run soak -- --minutes N` (or `--seconds N` for a short run): a mixed
 * load for N minutes on one manager (embedded PostgreSQL unless DATABASE_URL
 * is set): reads, writes, tenantContext.transaction (commits and deliberate
 * rollbacks), tenantContext.query, tenants created and dropped in a loop, and
 * DataSource cache evictions (maxDataSources below the tenant count). Every
 * interval it prints throughput, errors, heap (after a forced full GC, so the
 * figure is live data, not garbage), RSS, PostgreSQL connections and
 * manager.stats(). At the end it audits every row of every tenant (each row's
 * email names its tenant: every schema must hold only its own, and every
 * acknowledged write), prints a summary, writes bench/results/soak.json and
 * exits (code 1 when the audit or the run failed).
 */

interface SoakConfig {
  readonly durationSeconds: number;
  readonly tenants: number;
  readonly maxDataSources: number;
  readonly concurrency: number;
  readonly poolSize: number;
  readonly intervalSeconds: number;
  readonly warmupSeconds: number;
  readonly out: string;
}

const USAGE = `Usage: node build/bench/soak.js [options]
  --minutes N            run for N minutes (default 10)
  --seconds N            run for N seconds (overrides --minutes; for short runs)
  --tenants N            long-lived tenants (default 50)
  --max-data-sources N   manager maxDataSources, below --tenants so the cache evicts (default 20)
  --concurrency N        concurrent workers (default 16)
  --pool-size N          size of the shared pool (default 10)
  --interval N           seconds between reports (default 10)
  --out FILE             result file (default bench/results/soak.json)`;

function parseArgs(argv: readonly string[]): SoakConfig {
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      console.log(USAGE);
      process.exit(0);
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (m === null) throw new Error(`Unknown argument ${arg}\n${USAGE}`);
    const value = m[2] ?? argv[(i += 1)];
    if (value === undefined) throw new Error(`--${m[1]} needs a value\n${USAGE}`);
    flags.set(m[1]!, value);
  }
  const num = (name: string, fallback: number, min = 1): number => {
    const raw = flags.get(name);
    flags.delete(name);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number >= ${min}; got ${raw}`);
    return n;
  };
  const minutes = num('minutes', 10, 0.01);
  const seconds = num('seconds', 0, 1);
  const durationSeconds = seconds > 0 ? seconds : minutes * 60;
  const out = flags.get('out') ?? join(__dirname, '..', '..', 'bench', 'results', 'soak.json');
  flags.delete('out');
  const config: SoakConfig = {
    durationSeconds,
    tenants: Math.floor(num('tenants', 50)),
    maxDataSources: Math.floor(num('max-data-sources', 20)),
    concurrency: Math.floor(num('concurrency', 16)),
    poolSize: Math.floor(num('pool-size', 10)),
    intervalSeconds: num('interval', 10),
    // Warm-up: the first fifth of the run, at most two minutes. Heap/RSS flatness is judged after it.
    warmupSeconds: Math.min(120, durationSeconds / 5),
    out,
  };
  if (flags.size > 0) throw new Error(`Unknown option(s) ${[...flags.keys()].map((k) => `--${k}`).join(', ')}\n${USAGE}`);
  return config;
}

const log = (line: string): void => console.log(`[soak] ${line}`);
const mb = (bytes: number): number => Math.round((bytes / 2 ** 20) * 10) / 10;
const round1 = (n: number): number => Math.round(n * 10) / 10;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const suffixOf = (slug: string): string => `@${slug}.soak`;
const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

/** A full, synchronous garbage collection, so heap figures are live data. */
function exposeGc(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

type OpKind = 'read' | 'write' | 'transaction' | 'rollback' | 'query' | 'create' | 'drop';
const OP_KINDS: readonly OpKind[] = ['read', 'write', 'transaction', 'rollback', 'query', 'create', 'drop'];

/** What the run knows of each long-lived tenant, in O(1) memory per tenant. */
interface TenantBook {
  /** Clients whose write was acknowledged. */
  clients: number;
  /** Projects whose transaction was acknowledged. */
  projects: number;
  /** Writes whose call failed: they may or may not have committed. */
  uncertainClients: number;
  uncertainProjects: number;
  /** Highest client id acknowledged (ids are serial per schema). */
  maxId: number;
}

interface Sample {
  readonly t: number;
  readonly opsPerSecond: number;
  readonly byKind: Record<OpKind, number>;
  readonly errors: number;
  readonly errorsTotal: number;
  readonly violationsTotal: number;
  readonly latencyMs: { readonly p50: number; readonly p99: number; readonly max: number };
  readonly heapUsedMB: number;
  readonly heapAfterGcMB: number;
  readonly rssMB: number;
  readonly externalMB: number;
  readonly pgConnections: { readonly manager: number; readonly database: number };
  readonly stats: TenantManagerStats;
}

class RollbackMarker extends Error {}

class Soak {
  readonly books = new Map<string, TenantBook>();
  readonly counts: Record<OpKind, number> = Object.fromEntries(OP_KINDS.map((k) => [k, 0])) as Record<OpKind, number>;
  readonly totals: Record<OpKind, number> = Object.fromEntries(OP_KINDS.map((k) => [k, 0])) as Record<OpKind, number>;
  errors = 0;
  errorsTotal = 0;
  readonly errorKinds = new Map<string, number>();
  readonly violations: string[] = [];
  violationsTotal = 0;
  latencies: number[] = [];
  stopping = false;
  sequence = 0;
  ephemeralLive = new Set<string>();
  ephemeralCreated = 0;
  ephemeralDropped = 0;

  constructor(
    readonly manager: TenantDataSourceManager,
    readonly slugs: readonly string[],
  ) {
    for (const slug of slugs) this.books.set(slug, { clients: 0, projects: 0, uncertainClients: 0, uncertainProjects: 0, maxId: 0 });
  }

  violation(message: string): void {
    this.violationsTotal += 1;
    if (this.violations.length < 50) this.violations.push(message);
  }

  failure(error: unknown): void {
    this.errors += 1;
    this.errorsTotal += 1;
    const key = error instanceof Error ? `${error.constructor.name}: ${error.message.split('\n')[0]!.slice(0, 160)}` : String(error);
    if (this.errorKinds.size < 100 || this.errorKinds.has(key)) this.errorKinds.set(key, (this.errorKinds.get(key) ?? 0) + 1);
  }

  done(kind: OpKind, started: number): void {
    this.counts[kind] += 1;
    this.totals[kind] += 1;
    if (this.latencies.length < 200_000) this.latencies.push(performance.now() - started);
  }

  checkRows(slug: string, where: string, rows: ReadonlyArray<Pick<Client, 'email' | 'name'> | null>): void {
    if (tenantContext.current()?.slug !== slug) this.violation(`${slug} ${where}: ran as ${String(tenantContext.current()?.slug)}`);
    for (const row of rows) {
      if (row === null) continue;
      if (!row.email.endsWith(suffixOf(slug)) || row.name !== slug) this.violation(`${slug} ${where}: read ${row.email} / ${row.name}`);
      if (row.email.startsWith('rollback-')) this.violation(`${slug} ${where}: read rolled-back ${row.email}`);
    }
  }

  async worker(): Promise<void> {
    while (!this.stopping) {
      const slug = this.slugs[Math.floor(Math.random() * this.slugs.length)]!;
      const book = this.books.get(slug)!;
      const roll = Math.random();
      const started = performance.now();
      let kind: OpKind;
      try {
        if (roll < 0.4) {
          kind = 'read';
          await this.manager.run(slug, async () => {
            const repo = tenantContext.getRepository(Client);
            if (book.maxId > 0 && Math.random() < 0.5) {
              this.checkRows(slug, 'findOneBy', [await repo.findOneBy({ id: 1 + Math.floor(Math.random() * book.maxId) })]);
            } else {
              this.checkRows(slug, 'find', await repo.find({ order: { id: 'DESC' }, take: 20 }));
            }
          });
        } else if (roll < 0.7) {
          kind = 'write';
          const email = `w${(this.sequence += 1)}${suffixOf(slug)}`;
          try {
            const saved = await this.manager.run(slug, () => tenantContext.getRepository(Client).save({ name: slug, email }));
            book.clients += 1;
            book.maxId = Math.max(book.maxId, saved.id);
          } catch (error) {
            book.uncertainClients += 1;
            throw error;
          }
        } else if (roll < 0.82) {
          kind = 'transaction';
          const email = `t${(this.sequence += 1)}${suffixOf(slug)}`;
          try {
            const id = await this.manager.run(slug, () =>
              tenantContext.transaction(async (em) => {
                const client = await em.save(Client, { name: slug, email });
                // Tenant-agnostic code inside the transaction joins it through the context.
                await tenantContext.getRepository(Project).save({ name: `p-${email}`, client });
                const mine = await tenantContext.getRepository(Client).countBy({ email });
                if (mine !== 1) this.violation(`${slug} transaction: sees ${mine} copies of its own row`);
                return client.id;
              }),
            );
            book.clients += 1;
            book.projects += 1;
            book.maxId = Math.max(book.maxId, id);
          } catch (error) {
            book.uncertainClients += 1;
            book.uncertainProjects += 1;
            throw error;
          }
        } else if (roll < 0.85) {
          kind = 'rollback';
          const email = `rollback-${(this.sequence += 1)}${suffixOf(slug)}`;
          const outcome = await this.manager
            .run(slug, () =>
              tenantContext.transaction(async (em) => {
                await em.save(Client, { name: slug, email });
                await tenantContext.query('INSERT INTO client (name, email) VALUES ($1, $2)', [slug, email]);
                throw new RollbackMarker('deliberate rollback');
              }),
            )
            .then(
              () => 'resolved',
              (error: unknown) => error,
            );
          if (!(outcome instanceof RollbackMarker)) throw outcome instanceof Error ? outcome : new Error(`rollback transaction: ${String(outcome)}`);
        } else {
          kind = 'query';
          const before = book.clients;
          const [row] = await this.manager.run(slug, () =>
            tenantContext.query<Array<{ schema: string; n: number }>>('SELECT current_schema() AS schema, (SELECT count(*) FROM client)::int AS n'),
          );
          if (row?.schema !== schemaOf(slug)) this.violation(`${slug} query: current_schema() is ${row?.schema}`);
          if ((row?.n ?? -1) < before) this.violation(`${slug} query: counted ${row?.n} rows, ${before} acknowledged before`);
        }
        this.done(kind, started);
      } catch (error) {
        this.failure(error);
        await sleep(10);
      }
    }
  }

  /** Creates a short-lived tenant, writes and reads in it, drops it; again and again. */
  async churn(): Promise<void> {
    let n = 0;
    while (!this.stopping) {
      const slug = `eph-${process.pid}-${(n += 1)}`;
      try {
        let started = performance.now();
        await this.manager.createTenant(slug);
        this.ephemeralLive.add(slug);
        this.ephemeralCreated += 1;
        this.done('create', started);
        await this.manager.run(slug, async () => {
          const repo = tenantContext.getRepository(Client);
          for (let i = 0; i < 5; i += 1) await repo.save({ name: slug, email: `e${i}${suffixOf(slug)}` });
          const rows = await repo.find();
          this.checkRows(slug, 'ephemeral find', rows);
          if (rows.length !== 5) this.violation(`${slug}: ${rows.length} rows instead of 5`);
        });
        started = performance.now();
        await (this.manager.dropTenant as (s: string, o?: { force?: boolean }) => Promise<void>).call(this.manager, slug, { force: true });
        this.ephemeralLive.delete(slug);
        this.ephemeralDropped += 1;
        this.done('drop', started);
      } catch (error) {
        this.failure(error);
      }
      await sleep(200);
    }
  }
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Least-squares slope of y over x. */
function slope(points: ReadonlyArray<readonly [number, number]>): number {
  if (points.length < 2) return 0;
  const n = points.length;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  const sxx = points.reduce((s, [x]) => s + (x - mx) ** 2, 0);
  const sxy = points.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0);
  return sxx === 0 ? 0 : sxy / sxx;
}

interface Trend {
  readonly start: number;
  readonly warm: number;
  readonly end: number;
  readonly min: number;
  readonly max: number;
  /** Fitted growth per minute after warm-up, MB. */
  readonly slopeMBPerMinute: number;
  /** Fitted growth over the whole post-warm-up window, MB. */
  readonly fittedGrowthMB: number;
  readonly thresholdMB: number;
  readonly flat: boolean;
}

function trendOf(samples: readonly Sample[], warmupSeconds: number, pick: (s: Sample) => number, floorMB: number, fraction: number): Trend {
  const after = samples.filter((s) => s.t >= warmupSeconds);
  const window = after.length > 1 ? after : samples;
  const perMinute = slope(window.map((s) => [s.t / 60, pick(s)] as const));
  const minutes = window.length > 1 ? (window[window.length - 1]!.t - window[0]!.t) / 60 : 0;
  const warm = pick(window[0]!);
  const thresholdMB = Math.max(floorMB, warm * fraction);
  const fittedGrowthMB = perMinute * minutes;
  const values = samples.map(pick);
  return {
    start: pick(samples[0]!),
    warm,
    end: pick(samples[samples.length - 1]!),
    min: Math.min(...values),
    max: Math.max(...values),
    slopeMBPerMinute: Math.round(perMinute * 1000) / 1000,
    fittedGrowthMB: round1(fittedGrowthMB),
    thresholdMB: round1(thresholdMB),
    flat: fittedGrowthMB <= thresholdMB,
  };
}

interface AuditReport {
  readonly ok: boolean;
  readonly tenantsAudited: number;
  readonly rows: number;
  readonly projects: number;
  readonly problems: string[];
  readonly acknowledgedClients: number;
  readonly uncertainWrites: number;
}

/** Every row of every tenant, checked on the server (in SQL, so the audit holds no row in memory). */
async function audit(url: string, soak: Soak, manager: TenantDataSourceManager): Promise<AuditReport> {
  const client = new PgClient({ connectionString: url, application_name: 'soak-audit' });
  await client.connect();
  const problems: string[] = [];
  let rows = 0;
  let projects = 0;
  let acknowledgedClients = 0;
  let uncertainWrites = 0;
  try {
    for (const [slug, book] of soak.books) {
      const schema = schemaOf(slug);
      const suffix = suffixOf(slug);
      const { rows: [r] } = await client.query<{ total: number; foreign: number; rolled: number; dup: number }>(
        `SELECT count(*)::int AS total,
                count(*) FILTER (WHERE right(email, length($1)) <> $1 OR name <> $2)::int AS foreign,
                count(*) FILTER (WHERE email LIKE 'rollback-%')::int AS rolled,
                (count(*) - count(DISTINCT email))::int AS dup
           FROM "${schema}".client`,
        [suffix, slug],
      );
      const { rows: [p] } = await client.query<{ total: number; orphan: number; foreign: number }>(
        `SELECT count(*)::int AS total,
                count(*) FILTER (WHERE c.id IS NULL)::int AS orphan,
                count(*) FILTER (WHERE c.id IS NOT NULL AND p.name <> 'p-' || c.email)::int AS foreign
           FROM "${schema}".project p LEFT JOIN "${schema}".client c ON c.id = p.client_id`,
      );
      rows += r!.total;
      projects += p!.total;
      acknowledgedClients += book.clients;
      uncertainWrites += book.uncertainClients;
      if (r!.foreign > 0) problems.push(`${slug}: ${r!.foreign} rows of another tenant`);
      if (r!.rolled > 0) problems.push(`${slug}: ${r!.rolled} rows of rolled-back transactions`);
      if (r!.dup > 0) problems.push(`${slug}: ${r!.dup} duplicated writes`);
      if (r!.total < book.clients) problems.push(`${slug}: ${r!.total} clients, ${book.clients} acknowledged (lost writes)`);
      if (r!.total > book.clients + book.uncertainClients) problems.push(`${slug}: ${r!.total} clients, at most ${book.clients + book.uncertainClients} written`);
      if (p!.orphan > 0 || p!.foreign > 0) problems.push(`${slug}: ${p!.orphan} orphan and ${p!.foreign} mismatched projects`);
      if (p!.total < book.projects || p!.total > book.projects + book.uncertainProjects) {
        problems.push(`${slug}: ${p!.total} projects, ${book.projects} acknowledged, ${book.uncertainProjects} uncertain`);
      }
    }
    // Tenant data never lands in the shared schema.
    const shared = await client.query("SELECT 1 FROM information_schema.tables WHERE table_schema = 'public' AND table_name IN ('client', 'project')");
    if (shared.rows.length > 0) problems.push('a client or project table exists in public');
    // Registry and pg_namespace agree: every row has its schema, every tenant-looking schema has its row.
    const records = await manager.listTenants();
    const namespaces = new Set((await client.query<{ nspname: string }>('SELECT nspname FROM pg_namespace')).rows.map((x) => x.nspname));
    const registered = new Set(records.map((t) => t.schemaName));
    for (const t of records) if (!namespaces.has(t.schemaName)) problems.push(`registry row ${t.slug} has no schema`);
    for (const name of namespaces) {
      const system = name === 'public' || name === 'information_schema' || name.startsWith('pg_') || name.startsWith('typeorm_tenants_');
      if (!system && !registered.has(name)) problems.push(`schema ${name} has no registry row`);
    }
    for (const slug of soak.slugs) if (!registered.has(schemaOf(slug))) problems.push(`tenant ${slug} is missing from the registry`);
    const ephemeralLeft = records.filter((t) => t.slug.startsWith('eph-') && !soak.ephemeralLive.has(t.slug));
    if (ephemeralLeft.length > 0) problems.push(`${ephemeralLeft.length} dropped tenants still registered`);
  } finally {
    await client.end();
  }
  if (soak.violationsTotal > 0) problems.push(`${soak.violationsTotal} isolation violations seen during the run: ${soak.violations.slice(0, 5).join('; ')}`);
  return { ok: problems.length === 0, tenantsAudited: soak.books.size, rows, projects, problems, acknowledgedClients, uncertainWrites };
}

async function main(): Promise<number> {
  const config = parseArgs(process.argv.slice(2));
  const gc = exposeGc();
  const cleanups: Array<() => Promise<void>> = [];
  let interrupted = false;
  let soak: Soak | undefined;
  const onSignal = (): void => {
    if (interrupted) return;
    interrupted = true;
    log('interrupted: stopping the load, then auditing');
    if (soak !== undefined) soak.stopping = true;
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const database: ScratchDatabase = await startScratchDatabase({ settings: { max_connections: 100 } });
    cleanups.push(() => database.stop());
    log(`database: ${database.description}`);
    log(
      `config: ${round1(config.durationSeconds / 60)} min, ${config.tenants} tenants, maxDataSources ${config.maxDataSources}, ` +
        `${config.concurrency} workers, pool ${config.poolSize}, report every ${config.intervalSeconds} s, warm-up ${round1(config.warmupSeconds)} s`,
    );

    const poolErrors: string[] = [];
    const manager = new TenantDataSourceManager({
      dataSource: { type: 'postgres', url: database.url, poolSize: config.poolSize },
      entities: [Client, Project, Plan],
      tenantMigrations,
      sharedMigrations,
      maxDataSources: config.maxDataSources,
      onPoolError: (error) => {
        if (poolErrors.length < 20) poolErrors.push(error.message);
      },
    });
    cleanups.push(() => manager.destroy());
    await manager.initialize();
    const slugs = Array.from({ length: config.tenants }, (_, i) => `soak-${String(i).padStart(3, '0')}`);
    for (let i = 0; i < slugs.length; i += 10) await Promise.all(slugs.slice(i, i + 10).map((slug) => manager.createTenant(slug)));
    log(`${slugs.length} tenants created`);

    const monitor = new PgClient({ connectionString: database.url, application_name: 'soak-monitor' });
    monitor.on('error', () => undefined);
    await monitor.connect();
    cleanups.push(() => monitor.end());
    const connections = async (): Promise<{ manager: number; database: number }> => {
      const { rows } = await monitor.query<{ manager: number; database: number }>(
        `SELECT count(*) FILTER (WHERE application_name = 'typeorm-tenants')::int AS manager, count(*)::int AS database
           FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'`,
      );
      return rows[0]!;
    };

    soak = new Soak(manager, slugs);
    const current = soak;
    if (interrupted) current.stopping = true;
    const samples: Sample[] = [];
    const startedAt = performance.now();
    const deadline = startedAt + config.durationSeconds * 1000;
    let lastSampleAt = startedAt;

    const takeSample = async (): Promise<Sample> => {
      const now = performance.now();
      const seconds = (now - lastSampleAt) / 1000;
      lastSampleAt = now;
      const byKind = { ...current.counts };
      const ops = OP_KINDS.reduce((s, k) => s + byKind[k], 0);
      for (const k of OP_KINDS) current.counts[k] = 0;
      const latencies = current.latencies.sort((a, b) => a - b);
      current.latencies = [];
      const errors = current.errors;
      current.errors = 0;
      const heapUsedMB = mb(process.memoryUsage().heapUsed);
      gc();
      const memory = process.memoryUsage();
      const sample: Sample = {
        t: Math.round((now - startedAt) / 100) / 10,
        opsPerSecond: Math.round(ops / seconds),
        byKind,
        errors,
        errorsTotal: current.errorsTotal,
        violationsTotal: current.violationsTotal,
        latencyMs: {
          p50: round1(percentile(latencies, 50)),
          p99: round1(percentile(latencies, 99)),
          max: round1(latencies[latencies.length - 1] ?? 0),
        },
        heapUsedMB,
        heapAfterGcMB: mb(memory.heapUsed),
        rssMB: mb(memory.rss),
        externalMB: mb(memory.external),
        pgConnections: await connections(),
        stats: manager.stats(),
      };
      samples.push(sample);
      const s = sample.stats;
      log(
        `t=${String(Math.round(sample.t)).padStart(4)}s ${String(sample.opsPerSecond).padStart(5)} ops/s ` +
          `(r ${byKind.read} w ${byKind.write} tx ${byKind.transaction} rb ${byKind.rollback} q ${byKind.query} +${byKind.create} -${byKind.drop}) ` +
          `p50 ${sample.latencyMs.p50} p99 ${sample.latencyMs.p99} ms | errors ${errors} (total ${sample.errorsTotal}) violations ${sample.violationsTotal} | ` +
          `heap ${sample.heapUsedMB}->${sample.heapAfterGcMB} MB after GC, rss ${sample.rssMB} MB | ` +
          `pg conns ${sample.pgConnections.manager}/${sample.pgConnections.database} | cache ${s.cachedDataSources} hits ${s.hits} misses ${s.misses} ` +
          `evictions ${s.evictions} pending ${s.pendingDisposal} runs ${s.activeRuns} pool ${s.pool.total}/${s.pool.idle}/${s.pool.waiting}`,
      );
      return sample;
    };

    // A baseline sample before any load: the "start" figures.
    await takeSample();
    const workers = [...Array.from({ length: config.concurrency }, () => current.worker()), current.churn()];
    while (!current.stopping && performance.now() < deadline) {
      const next = Math.min(deadline, lastSampleAt + config.intervalSeconds * 1000);
      while (!current.stopping && performance.now() < next) await sleep(Math.min(250, Math.max(1, next - performance.now())));
      await takeSample();
    }
    current.stopping = true;
    await Promise.all(workers);
    const measuredSeconds = (performance.now() - startedAt) / 1000;
    log(`load stopped after ${round1(measuredSeconds)} s; auditing every row`);

    const auditReport = await audit(database.url, current, manager);
    const loadSamples = samples.slice(1);
    const trendSamples = loadSamples.length > 0 ? loadSamples : samples;
    const heap = trendOf(trendSamples, config.warmupSeconds, (s) => s.heapAfterGcMB, 2, 0.05);
    const rss = trendOf(trendSamples, config.warmupSeconds, (s) => s.rssMB, 16, 0.1);
    const totalOps = OP_KINDS.reduce((s, k) => s + current.totals[k], 0);
    const summary = {
      measuredSeconds: round1(measuredSeconds),
      operations: totalOps,
      opsPerSecond: Math.round(totalOps / measuredSeconds),
      byKind: { ...current.totals },
      errors: current.errorsTotal,
      errorKinds: Object.fromEntries(current.errorKinds),
      poolErrors,
      violations: current.violationsTotal,
      ephemeralTenants: { created: current.ephemeralCreated, dropped: current.ephemeralDropped },
      heapAfterGcMB: heap,
      rssMB: rss,
      heapStartMB: samples[0]!.heapAfterGcMB,
      rssStartMB: samples[0]!.rssMB,
      pgConnectionsMax: {
        manager: Math.max(...samples.map((s) => s.pgConnections.manager)),
        database: Math.max(...samples.map((s) => s.pgConnections.database)),
      },
      finalStats: manager.stats(),
      audit: auditReport,
      flat: heap.flat && rss.flat,
      interrupted,
    };
    const result = {
      generatedAt: new Date().toISOString(),
      config,
      environment: {
        node: process.version,
        cores: cpus().length,
        cpuModel: cpus()[0]?.model.trim(),
        loadAverageEnd: loadavg().map((x) => Math.round(x * 100) / 100),
        database: database.description,
        embedded: database.embedded,
      },
      summary,
      samples,
    };
    mkdirSync(join(config.out, '..'), { recursive: true });
    writeFileSync(config.out, `${JSON.stringify(result, null, 2)}\n`);

    log('summary');
    log(`  ${totalOps} operations in ${round1(measuredSeconds)} s = ${summary.opsPerSecond} ops/s; by kind ${JSON.stringify(current.totals)}`);
    log(`  errors ${current.errorsTotal}, isolation violations ${current.violationsTotal}, ephemeral tenants ${current.ephemeralCreated} created / ${current.ephemeralDropped} dropped`);
    for (const [kind, n] of [...current.errorKinds].slice(0, 5)) log(`    ${n} x ${kind}`);
    const describe = (name: string, t: Trend, start: number): string =>
      `  ${name}: start ${start} MB, after warm-up ${t.warm} MB, end ${t.end} MB (min ${t.min}, max ${t.max}); ` +
      `fitted growth after warm-up ${t.fittedGrowthMB} MB (${t.slopeMBPerMinute} MB/min; threshold ${t.thresholdMB} MB): ${t.flat ? 'FLAT' : 'GROWING'}`;
    log(describe('heap after GC', heap, summary.heapStartMB));
    log(describe('RSS', rss, summary.rssStartMB));
    log(`  PostgreSQL connections: manager at most ${summary.pgConnectionsMax.manager} (pool ${config.poolSize}), database at most ${summary.pgConnectionsMax.database}`);
    const st = summary.finalStats;
    log(`  cache: ${st.cachedDataSources} cached (max ${config.maxDataSources}), ${st.hits} hits, ${st.misses} misses, ${st.evictions} evictions, ${st.pendingDisposal} pending disposal`);
    log(
      `  audit: ${auditReport.ok ? 'OK' : 'FAILED'}: ${auditReport.tenantsAudited} tenants, ${auditReport.rows} client rows ` +
        `(${auditReport.acknowledgedClients} acknowledged, ${auditReport.uncertainWrites} uncertain), ${auditReport.projects} projects`,
    );
    for (const problem of auditReport.problems.slice(0, 20)) log(`    ${problem}`);
    log(`  written to ${config.out}`);
    return auditReport.ok && current.errorsTotal === 0 ? 0 : 1;
  } finally {
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (error) {
        console.error('[soak] cleanup failed:', error);
      }
    }
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  },
);
