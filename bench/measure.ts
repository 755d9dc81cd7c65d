import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * The timing harness: run an operation N times with K async workers, time
 * every call, and alternate several contenders round-robin so that drift in
 * machine load spreads over all of them instead of landing on one.
 */

/** One operation: `i` is the global index of the call (drives tenant and id choice). */
export type Operation = (i: number) => Promise<unknown>;

/** What one timed batch measured. */
export interface Batch {
  readonly ops: number;
  readonly elapsedMs: number;
  /** Latency of every call, in microseconds, in call order. */
  readonly latenciesUs: Float64Array;
}

/** Thrown out of a batch when the run is being aborted (Ctrl-C). */
export class BenchAborted extends Error {
  constructor() {
    super('Benchmark aborted');
  }
}

let aborted = false;

/** Makes every running and future batch stop at its next call. */
export function abortBatches(): void {
  aborted = true;
}

/**
 * Runs `op` `count` times with `concurrency` workers looping over a shared
 * counter (concurrency 1 = strictly one call after another). Call indexes
 * start at `firstIndex`.
 */
export async function runBatch(op: Operation, count: number, concurrency: number, firstIndex: number): Promise<Batch> {
  const latencies = new Float64Array(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      if (aborted) throw new BenchAborted();
      const k = next++;
      if (k >= count) return;
      const t0 = performance.now();
      await op(firstIndex + k);
      latencies[k] = (performance.now() - t0) * 1000;
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  const elapsedMs = performance.now() - start;
  return { ops: count, elapsedMs, latenciesUs: latencies };
}

/** A contender's measurements over all rounds of one alternation. */
export interface Series {
  readonly name: string;
  /** One batch per round, in round order. */
  readonly rounds: readonly Batch[];
}

export interface AlternationSettings {
  readonly rounds: number;
  readonly opsPerRound: number;
  readonly warmupOps: number;
  readonly concurrency: number;
  /**
   * Called just before every batch, after the GC (not timed), e.g. to take a
   * CPU reading; `round` is the round, or -1 for the warm-up batch.
   */
  readonly beforeBatch?: (name: string, round: number) => Promise<void>;
  /** Called after every batch (not timed), e.g. to sample connections; `round` as for `beforeBatch`. */
  readonly afterBatch?: (name: string, round: number) => Promise<void>;
}

/**
 * Warms every contender up, then runs `rounds` rounds; each round runs one
 * batch of every contender, starting with a different contender each round
 * (rotation), so no contender always follows the same neighbour. A full
 * garbage collection runs between batches (not timed), so one contender's
 * garbage is not collected on the next one's clock.
 */
export async function alternate(
  contenders: ReadonlyArray<{ readonly name: string; readonly op: Operation }>,
  settings: AlternationSettings,
): Promise<Series[]> {
  // Each contender counts its own calls, so all of them see the same sequence
  // of tenants and ids.
  const counters = new Map<string, number>(contenders.map((c) => [c.name, 0]));
  const take = (name: string, n: number): number => {
    const first = counters.get(name)!;
    counters.set(name, first + n);
    return first;
  };
  for (const contender of contenders) {
    if (settings.warmupOps > 0) {
      await settings.beforeBatch?.(contender.name, -1);
      await runBatch(contender.op, settings.warmupOps, settings.concurrency, take(contender.name, settings.warmupOps));
    }
    await settings.afterBatch?.(contender.name, -1);
  }
  const rounds = new Map<string, Batch[]>(contenders.map((c) => [c.name, []]));
  for (let r = 0; r < settings.rounds; r++) {
    for (let j = 0; j < contenders.length; j++) {
      const contender = contenders[(r + j) % contenders.length]!;
      collectGarbage();
      await settings.beforeBatch?.(contender.name, r);
      const batch = await runBatch(contender.op, settings.opsPerRound, settings.concurrency, take(contender.name, settings.opsPerRound));
      rounds.get(contender.name)!.push(batch);
      await settings.afterBatch?.(contender.name, r);
    }
  }
  return contenders.map((c) => ({ name: c.name, rounds: rounds.get(c.name)! }));
}

/** Summary figures of a series. */
export interface SeriesStats {
  readonly ops: number;
  readonly elapsedMs: number;
  /** Total ops / total elapsed time over all rounds. */
  readonly opsPerSec: number;
  /** ops/s of each round. */
  readonly roundOpsPerSec: readonly number[];
  /** (max - min) / median of the per-round ops/s, in percent. */
  readonly roundSpreadPct: number;
  readonly meanUs: number;
  readonly p50Us: number;
  readonly p90Us: number;
  readonly p99Us: number;
  readonly maxUs: number;
}

export function summarize(series: Series): SeriesStats {
  const ops = series.rounds.reduce((s, b) => s + b.ops, 0);
  const elapsedMs = series.rounds.reduce((s, b) => s + b.elapsedMs, 0);
  const roundOpsPerSec = series.rounds.map((b) => (b.ops * 1000) / b.elapsedMs);
  const all = new Float64Array(ops);
  let at = 0;
  for (const b of series.rounds) {
    all.set(b.latenciesUs, at);
    at += b.ops;
  }
  all.sort();
  let sum = 0;
  for (const v of all) sum += v;
  const med = median(roundOpsPerSec);
  return {
    ops,
    elapsedMs,
    opsPerSec: (ops * 1000) / elapsedMs,
    roundOpsPerSec,
    roundSpreadPct: med > 0 ? ((Math.max(...roundOpsPerSec) - Math.min(...roundOpsPerSec)) / med) * 100 : 0,
    meanUs: ops > 0 ? sum / ops : 0,
    p50Us: percentile(all, 50),
    p90Us: percentile(all, 90),
    p99Us: percentile(all, 99),
    maxUs: ops > 0 ? all[ops - 1]! : 0,
  };
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: Float64Array | readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * Ratio of `series` to `baseline`, round by round (round r of one against
 * round r of the other: both ran within seconds of each other), summarised.
 */
export function pairedRatios(series: SeriesStats, baseline: SeriesStats): { median: number; min: number; max: number } {
  const ratios = series.roundOpsPerSec.map((v, r) => v / baseline.roundOpsPerSec[r]!);
  return { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios) };
}

let gcFn: (() => void) | undefined | null = null;

/** A full GC when the runtime allows it (no `--expose-gc` flag needed). */
export function collectGarbage(): void {
  if (gcFn === null) {
    try {
      setFlagsFromString('--expose-gc');
      gcFn = runInNewContext('gc') as () => void;
    } catch {
      gcFn = undefined;
    }
  }
  gcFn?.();
}
