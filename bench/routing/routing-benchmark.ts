import type { BenchConfig, Workload } from '../config';
import { alternate, pairedRatios, runBatch, summarize, type SeriesStats } from '../measure';
import type { ConnectionMonitor } from './connections';
import type { Contender } from './contenders';
import { BatchCpuMeter, type CpuFigures } from './cpu-meter';

/** One contender's figures in one cell (workload x concurrency). */
export interface ContenderFigures {
  readonly name: string;
  readonly stats: SeriesStats;
  /** ops/s over ops/s of A, over all rounds. */
  readonly ratioToA: number;
  /** The same ratio taken round by round (each round of A against the same round of this contender). */
  readonly roundRatioToA: { readonly median: number; readonly min: number; readonly max: number };
  /** CPU per op of the benchmark process and of the contender's PostgreSQL backends (see cpu-meter.ts). */
  readonly cpu?: CpuFigures;
}

export interface Cell {
  readonly workload: Workload;
  readonly concurrency: number;
  readonly opsPerRound: number;
  readonly warmupOps: number;
  readonly rounds: number;
  readonly contenders: readonly ContenderFigures[];
}

/** Connections a contender used, as PostgreSQL and as its pools count them. */
export interface ConnectionFigures {
  readonly name: string;
  readonly applicationName: string;
  readonly tenants: number;
  readonly pools: number;
  readonly poolSize: number;
  /** Most connections in pg_stat_activity with its application_name, sampled after every batch. */
  readonly peakServerConnections: number;
  /** Connections its pool(s) held at the end of the run (client side). */
  readonly clientConnectionsAtEnd: number;
}

export interface RoutingResults {
  readonly cells: readonly Cell[];
  readonly connections: readonly ConnectionFigures[];
  readonly elapsedSeconds: number;
}

/**
 * Runs every cell: for each workload and concurrency, all contenders
 * alternate round-robin (after a warm-up of each). Before the cells, every
 * contender touches every one of its tenants, so tenant DataSources, TypeORM
 * metadata caches, JIT and PostgreSQL's per-connection catalog caches are
 * warm for all of them alike.
 */
export async function runRoutingBenchmark(
  contenders: readonly Contender[],
  config: BenchConfig,
  monitor: ConnectionMonitor,
  log: (line: string) => void,
): Promise<RoutingResults> {
  const started = performance.now();
  const afterBatch = async (): Promise<void> => {
    await monitor.sample();
  };

  log('warm-up: every contender touches each of its tenants (find and insert, concurrency 1 and 10)');
  const maxConcurrency = Math.max(...config.concurrencies);
  for (const contender of contenders) {
    const touches = Math.max(config.initialWarmupOps, 2 * contender.tenants);
    await runBatch(contender.ops.find, touches, 1, 1_000_000);
    await runBatch(contender.ops.insert, Math.max(config.initialWarmupOps / 2, contender.tenants), 1, 1_000_000);
    await runBatch(contender.ops.find, touches, maxConcurrency, 2_000_000);
    await afterBatch();
  }

  const cells: Cell[] = [];
  for (const workload of config.workloads) {
    for (const concurrency of config.concurrencies) {
      const opsPerRound = config.opsPerRound[concurrency]!;
      const warmupOps = config.warmupOps[concurrency]!;
      const t0 = performance.now();
      const meter = new BatchCpuMeter(monitor, new Map(contenders.map((c) => [c.name, c.applicationName])));
      const series = await alternate(
        contenders.map((c) => ({ name: c.name, op: c.ops[workload] })),
        {
          rounds: config.rounds,
          opsPerRound,
          warmupOps,
          concurrency,
          beforeBatch: (name) => meter.begin(name),
          afterBatch: async (name, round) => {
            await meter.end(name, round, round < 0 ? warmupOps : opsPerRound);
            await afterBatch();
          },
        },
      );
      const stats = series.map(summarize);
      const baseline = stats[contenders.findIndex((c) => c.name === 'A')]!;
      const figures = contenders.map((c, k) => {
        const cpu = meter.figures(c.name);
        return {
          name: c.name,
          stats: stats[k]!,
          ratioToA: stats[k]!.opsPerSec / baseline.opsPerSec,
          roundRatioToA: pairedRatios(stats[k]!, baseline),
          ...(cpu === undefined ? {} : { cpu }),
        };
      });
      cells.push({ workload, concurrency, opsPerRound, warmupOps, rounds: config.rounds, contenders: figures });
      log(
        `${workload} c=${concurrency} (${((performance.now() - t0) / 1000).toFixed(1)} s): ` +
          figures.map((f) => `${f.name} ${Math.round(f.stats.opsPerSec)} ops/s (${f.ratioToA.toFixed(3)})`).join(', '),
      );
    }
  }

  await monitor.sample();
  const connections = contenders.map((c) => ({
    name: c.name,
    applicationName: c.applicationName,
    tenants: c.tenants,
    pools: c.pools,
    poolSize: c.poolSize,
    peakServerConnections: monitor.peak(c.applicationName),
    clientConnectionsAtEnd: c.openConnections(),
  }));
  return { cells, connections, elapsedSeconds: (performance.now() - started) / 1000 };
}
