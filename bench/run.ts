import 'reflect-metadata';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { DEFAULT_POOL_OPTIONS, DEFAULT_TENANT_RECORD_TTL_MS } from '../src';
import { startScratchDatabase, type ScratchDatabase } from '../support/database';
import { parseArgs, type BenchConfig } from './config';
import { cpuShareBetween, snapshotCpu } from './cpu-share';
import { describeEnvironment, round2 } from './environment';
import { abortBatches, BenchAborted } from './measure';
import { renderText, writeReport, type BenchReport } from './report';
import { ConnectionMonitor } from './routing/connections';
import { openContender, type Contender } from './routing/contenders';
import { buildRoutingFixture } from './routing/fixture';
import { gapFigures } from './routing/gap';
import { runRoutingBenchmark } from './routing/routing-benchmark';
import { checkTargets } from './routing/targets';

/**
 * `npm run bench` (or `node build/bench/run.js [--quick] ...`): the routing
 * part of the benchmark suite. Starts a scratch database (embedded PostgreSQL
 * unless DATABASE_URL is set), builds the same data for every contender,
 * measures them alternating, prints a table and writes
 * bench/results/latest.json + summary.md (quick.json + quick.md with --quick).
 * Everything it opens is closed on success and on failure.
 */

const RESULTS_DIR = join(__dirname, '..', '..', 'bench', 'results');
/** Idle connections stay open this long in every contender's pool, so no batch pays for reconnecting. */
const IDLE_TIMEOUT_MS = 120_000;

const log = (line: string): void => console.error(`[bench] ${line}`);

async function main(): Promise<void> {
  const config = parseArgs(process.argv.slice(2));
  const cleanups: Array<{ what: string; run: () => Promise<void> }> = [];
  const onSignal = (): void => {
    log('interrupted: stopping after the current call, then cleaning up');
    abortBatches();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let failed = false;
  try {
    await measure(config, cleanups);
  } catch (error) {
    failed = true;
    if (error instanceof BenchAborted) log('aborted');
    else console.error(error);
  } finally {
    for (const { what, run } of cleanups.reverse()) {
      try {
        await run();
      } catch (error) {
        failed = true;
        console.error(`[bench] cleaning up ${what} failed:`, error);
      }
    }
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (failed) process.exitCode = 1;
}

async function measure(config: BenchConfig, cleanups: Array<{ what: string; run: () => Promise<void> }>): Promise<void> {
  const wantsE = config.contenders.includes('E');
  const needed = config.contenders.filter((c) => c !== 'E').length * config.poolSize + (wantsE ? config.tenants * config.poolSizePerTenantE : 0) + 20;
  const database: ScratchDatabase = await startScratchDatabase({ settings: { max_connections: Math.max(200, needed + 50) } });
  cleanups.push({ what: 'the scratch database', run: () => database.stop() });
  log(`database: ${database.description}`);

  const environment = await describeEnvironment(database.url, database.embedded, database.description);
  const setupStart = performance.now();
  const fixture = await buildRoutingFixture(database.url, config.tenants, config.rowsPerSchema);
  log(`fixture: ${config.tenants + 1} tenants and the baseline table, ${config.rowsPerSchema} rows each (${((performance.now() - setupStart) / 1000).toFixed(1)} s)`);

  const monitor = await ConnectionMonitor.open(database.url);
  cleanups.push({ what: 'the connection monitor', run: () => monitor.close() });

  const notes: string[] = [];
  let names = [...config.contenders];
  if (wantsE) {
    const server = await monitor.serverConnections();
    if (server.maxConnections - server.open < needed) {
      names = names.filter((n) => n !== 'E');
      notes.push(
        `E skipped: the server allows ${server.maxConnections} connections, ${server.open} are open, and this run needs about ${needed} ` +
          `(${config.tenants} tenants x ${config.poolSizePerTenantE}). Raise max_connections or use fewer --tenants.`,
      );
      log(notes[notes.length - 1]!);
    }
  }

  const contenders: Contender[] = [];
  const settings = { url: database.url, poolSize: config.poolSize, poolSizePerTenantE: config.poolSizePerTenantE, idleTimeoutMillis: IDLE_TIMEOUT_MS };
  for (const name of names) {
    const t0 = performance.now();
    const contender = await openContender(name, fixture, settings);
    contenders.push(contender);
    cleanups.push({ what: `contender ${name}`, run: () => contender.close() });
    log(`opened ${name} (${(performance.now() - t0).toFixed(0)} ms)`);
  }

  const cpuStart = snapshotCpu();
  const routing = await runRoutingBenchmark(contenders, config, monitor, log);
  const cpu = cpuShareBetween(cpuStart, snapshotCpu());
  environment.machine.loadAverageEnd = loadavg().map(round2);
  environment.machine.cpuWhileMeasuring = cpu;

  if (cpu !== undefined && cpu.otherCores > 0.2) {
    notes.push(
      `Other processes used ${cpu.otherCores} of ${cpu.cores} cores on average while this run measured (the benchmark and its ` +
        `embedded server used ${cpu.benchmarkCores}): absolute figures are likely low and noisier; ratios between ` +
        'alternating contenders are less affected.',
    );
  }
  notes.push(
    `B1/B100 use the library defaults: tenantRecordTtlMs ${DEFAULT_TENANT_RECORD_TTL_MS} (run() re-reads a tenant's registry row when its ` +
      `cached record is older), pool.maxLifetimeSeconds ${DEFAULT_POOL_OPTIONS.maxLifetimeSeconds}; every pool keeps idle connections ${IDLE_TIMEOUT_MS / 1000} s.`,
  );

  const report: BenchReport = {
    benchmark: 'routing',
    generatedAt: new Date().toISOString(),
    quick: config.quick,
    environment,
    settings: {
      tenants: config.tenants,
      rowsPerSchema: config.rowsPerSchema,
      poolSize: config.poolSize,
      poolSizePerTenantE: config.poolSizePerTenantE,
      concurrencies: config.concurrencies,
      workloads: config.workloads,
      contenders: names,
      rounds: config.rounds,
      opsPerRound: config.opsPerRound,
      warmupOps: config.warmupOps,
      idleTimeoutMillis: IDLE_TIMEOUT_MS,
      tenantRecordTtlMs: DEFAULT_TENANT_RECORD_TTL_MS,
      maxLifetimeSecondsB: DEFAULT_POOL_OPTIONS.maxLifetimeSeconds,
      baselineSchema: 'public (A: a DataSource with no schema option, unqualified SQL)',
      entity: 'example Client entity (id, name, email, internal_note, plan_id), tables made by the example tenant migrations',
      latencyUnit: 'microseconds',
    },
    routing,
    targets: checkTargets(routing, config.poolSize),
    gap: gapFigures(routing),
    notes,
  };
  console.log(renderText(report));
  const written = await writeReport(report, RESULTS_DIR, config);
  log(`wrote ${written.json} and ${written.markdown}`);
}

void main();
