import { median, pairedRatios, percentile, type SeriesStats } from '../measure';
import type { Cell, RoutingResults } from './routing-benchmark';

/**
 * Where B100's gap to B1 comes from. B100 (N tenants) costs more per
 * operation than B1 (1 tenant) for two reasons that the controls separate:
 *
 * - PostgreSQL's: N sets of relations (per-backend catalog caches, a larger
 *   buffer working set, a different statement text per tenant);
 * - the client's: N tenant DataSources (N copies of TypeORM's metadata and
 *   caches, N cache entries and run states), so the hot path walks N times
 *   as much memory and meets N metadata objects.
 *
 * S100 does B100's client work (N tenants through the library) on one
 * schema, B1's: S100 - B1 is the client's share, B100 - S100 PostgreSQL's.
 * C1 and C100 do the same client work (one DataSource, `SET search_path`
 * per op) for 1 and N schemas: C100 - C1 is PostgreSQL's share measured a
 * second way (it includes the cost of switching search_path to another
 * schema on every op, which B never pays).
 *
 * Differences are taken in microseconds of wall time per operation
 * (1 / throughput; at concurrency above 1 this is the throughput cost, not
 * a latency), round by round (round r of one contender against round r of
 * the other, run seconds apart), and summarised by their median and
 * quartiles over the rounds; ratios are medians of round-by-round ratios.
 */
export interface GapFigures {
  readonly workload: string;
  readonly concurrency: number;
  readonly rounds: number;
  /** Medians (and ranges) of round-by-round throughput ratios. */
  readonly ratios: Readonly<Record<string, RatioSummary>>;
  /** Wall time per operation over all rounds, in microseconds, by contender. */
  readonly usPerOp: Readonly<Record<string, number>>;
  /** Round-by-round differences of time per operation, in microseconds. */
  readonly deltasUs: Readonly<Record<string, DeltaSummary>>;
  /**
   * Of B100 - B1 (median of rounds), the parts of the client (S100 - B1) and
   * of PostgreSQL (B100 - S100), each over their sum; absent without S100.
   */
  readonly shareOfTenantGap?: { readonly client: number; readonly postgres: number };
  /** CPU per op over all rounds, in microseconds: the benchmark process's and the contender's backends' (cpu-meter.ts). */
  readonly cpuUsPerOp: Readonly<Record<string, { readonly client: number; readonly clientMain: number | null; readonly server: number | null }>>;
  /** Round-by-round differences of CPU per op, in microseconds, on each side (labels as `deltasUs`). */
  readonly cpuDeltasUs: {
    readonly client: Readonly<Record<string, DeltaSummary>>;
    /** The main (JavaScript) thread's part of `client`. */
    readonly clientMain: Readonly<Record<string, DeltaSummary>>;
    readonly server: Readonly<Record<string, DeltaSummary>>;
  };
  /**
   * Of the extra CPU B100 burns per op over B1 (client + server, medians of
   * rounds), the client's part and the server's; absent without server CPU.
   */
  readonly cpuShareOfTenantGap?: { readonly client: number; readonly postgres: number };
}

export interface RatioSummary {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

export interface DeltaSummary {
  readonly median: number;
  readonly p25: number;
  readonly p75: number;
}

/** Ratios reported when both contenders ran: [label, numerator, denominator]. */
const RATIOS: ReadonlyArray<readonly [string, string, string]> = [
  ['B1/A', 'B1', 'A'],
  ['B100/A', 'B100', 'A'],
  ['B100/B1', 'B100', 'B1'],
  ['S100/B1', 'S100', 'B1'],
  ['B100/S100', 'B100', 'S100'],
  ['C100/C1', 'C100', 'C1'],
];

/** Differences reported when both contenders ran: [label, slower, faster]. */
const DELTAS: ReadonlyArray<readonly [string, string, string]> = [
  ['B100-A', 'B100', 'A'],
  ['B1-A', 'B1', 'A'],
  ['B100-B1', 'B100', 'B1'],
  ['S100-B1', 'S100', 'B1'],
  ['B100-S100', 'B100', 'S100'],
  ['C100-C1', 'C100', 'C1'],
];

/** The gap figures of every cell that has A, B1 and B100 and at least one control; empty otherwise. */
export function gapFigures(results: RoutingResults): GapFigures[] {
  const out: GapFigures[] = [];
  for (const cell of results.cells) {
    const stats = new Map(cell.contenders.map((c) => [c.name, c.stats]));
    if (!['A', 'B1', 'B100'].every((n) => stats.has(n))) continue;
    if (!stats.has('S100') && !(stats.has('C1') && stats.has('C100'))) continue;
    out.push(cellGap(cell, stats));
  }
  return out;
}

function cellGap(cell: Cell, stats: ReadonlyMap<string, SeriesStats>): GapFigures {
  const cpu = new Map(cell.contenders.filter((c) => c.cpu !== undefined).map((c) => [c.name, c.cpu!]));
  const cpuUsPerOp: Record<string, { client: number; clientMain: number | null; server: number | null }> = {};
  for (const [name, c] of cpu) cpuUsPerOp[name] = { client: c.clientUsPerOp, clientMain: c.clientMainUsPerOp, server: c.serverUsPerOp };
  const cpuClient: Record<string, DeltaSummary> = {};
  const cpuClientMain: Record<string, DeltaSummary> = {};
  const cpuServer: Record<string, DeltaSummary> = {};
  for (const [label, x, y] of DELTAS) {
    const cx = cpu.get(x);
    const cy = cpu.get(y);
    if (cx === undefined || cy === undefined) continue;
    const client = pairedDeltas(cx.roundClientUsPerOp, cy.roundClientUsPerOp);
    if (client !== undefined) cpuClient[label] = client;
    const main = pairedDeltas(cx.roundClientMainUsPerOp, cy.roundClientMainUsPerOp);
    if (main !== undefined) cpuClientMain[label] = main;
    const server = pairedDeltas(cx.roundServerUsPerOp, cy.roundServerUsPerOp);
    if (server !== undefined) cpuServer[label] = server;
  }
  const gapClient = cpuClient['B100-B1']?.median;
  const gapServer = cpuServer['B100-B1']?.median;
  const cpuShare =
    gapClient !== undefined && gapServer !== undefined && gapClient + gapServer > 0
      ? { client: gapClient / (gapClient + gapServer), postgres: gapServer / (gapClient + gapServer) }
      : undefined;
  const ratios: Record<string, RatioSummary> = {};
  for (const [label, x, y] of RATIOS) {
    const sx = stats.get(x);
    const sy = stats.get(y);
    if (sx !== undefined && sy !== undefined) ratios[label] = pairedRatios(sx, sy);
  }
  const usPerOp: Record<string, number> = {};
  for (const [name, s] of stats) usPerOp[name] = (s.elapsedMs * 1000) / s.ops;
  const deltasUs: Record<string, DeltaSummary> = {};
  for (const [label, x, y] of DELTAS) {
    const sx = stats.get(x);
    const sy = stats.get(y);
    if (sx !== undefined && sy !== undefined) deltasUs[label] = roundDeltas(sx, sy);
  }
  const client = deltasUs['S100-B1']?.median;
  const postgres = deltasUs['B100-S100']?.median;
  const share =
    client !== undefined && postgres !== undefined && client + postgres > 0
      ? { client: client / (client + postgres), postgres: postgres / (client + postgres) }
      : undefined;
  return {
    workload: cell.workload,
    concurrency: cell.concurrency,
    rounds: cell.rounds,
    ratios,
    usPerOp,
    deltasUs,
    ...(share === undefined ? {} : { shareOfTenantGap: share }),
    cpuUsPerOp,
    cpuDeltasUs: { client: cpuClient, clientMain: cpuClientMain, server: cpuServer },
    ...(cpuShare === undefined ? {} : { cpuShareOfTenantGap: cpuShare }),
  };
}

/** x[r] - y[r] over the rounds where both are known, summarised; undefined when none is. */
function pairedDeltas(x: ReadonlyArray<number | null>, y: ReadonlyArray<number | null>): DeltaSummary | undefined {
  const deltas: number[] = [];
  for (let r = 0; r < Math.min(x.length, y.length); r++) {
    const a = x[r];
    const b = y[r];
    if (a !== null && a !== undefined && b !== null && b !== undefined) deltas.push(a - b);
  }
  if (deltas.length === 0) return undefined;
  deltas.sort((a, b) => a - b);
  return { median: median(deltas), p25: percentile(deltas, 25), p75: percentile(deltas, 75) };
}

/** Time per op of `slower` minus that of `faster`, round by round, in microseconds. */
function roundDeltas(slower: SeriesStats, faster: SeriesStats): DeltaSummary {
  const deltas = slower.roundOpsPerSec.map((v, r) => 1e6 / v - 1e6 / faster.roundOpsPerSec[r]!).sort((a, b) => a - b);
  return { median: median(deltas), p25: percentile(deltas, 25), p75: percentile(deltas, 75) };
}

const fmtRatio = (r: RatioSummary | undefined): string => (r === undefined ? '-' : r.median.toFixed(3));
const fmtRange = (r: RatioSummary | undefined): string => (r === undefined ? '-' : `${r.min.toFixed(2)}-${r.max.toFixed(2)}`);
const fmtDelta = (d: DeltaSummary | undefined): string =>
  d === undefined ? '-' : `${d.median >= 0 ? '+' : ''}${d.median.toFixed(1)} (${d.p25.toFixed(1)}..${d.p75.toFixed(1)})`;
const fmtShare = (g: GapFigures): string =>
  g.shareOfTenantGap === undefined ? '-' : `${Math.round(g.shareOfTenantGap.client * 100)}% / ${Math.round(g.shareOfTenantGap.postgres * 100)}%`;

/** Column headers and rows of the gap table (shared by the console and markdown renderings). */
export function gapTable(gaps: readonly GapFigures[]): { header: string[]; rows: string[][] } {
  const header = [
    'workload',
    'c',
    'B1/A',
    'B100/A',
    'S100/B1 (client)',
    'B100/S100 (PG)',
    'C100/C1 (PG, via C)',
    'us/op B100-B1',
    'S100-B1 (client)',
    'B100-S100 (PG)',
    'C100-C1 (PG, via C)',
    'client / PG share of B100-B1',
  ];
  const rows = gaps.map((g) => [
    g.workload,
    String(g.concurrency),
    fmtRatio(g.ratios['B1/A']),
    fmtRatio(g.ratios['B100/A']),
    `${fmtRatio(g.ratios['S100/B1'])} (${fmtRange(g.ratios['S100/B1'])})`,
    `${fmtRatio(g.ratios['B100/S100'])} (${fmtRange(g.ratios['B100/S100'])})`,
    `${fmtRatio(g.ratios['C100/C1'])} (${fmtRange(g.ratios['C100/C1'])})`,
    fmtDelta(g.deltasUs['B100-B1']),
    fmtDelta(g.deltasUs['S100-B1']),
    fmtDelta(g.deltasUs['B100-S100']),
    fmtDelta(g.deltasUs['C100-C1']),
    fmtShare(g),
  ]);
  return { header, rows };
}

const fmtUs = (v: number | null | undefined): string => (v === null || v === undefined ? '-' : v.toFixed(1));

/** The CPU side of the gap: CPU per op of each side and its round-by-round differences. */
export function gapCpuTable(gaps: readonly GapFigures[]): { header: string[]; rows: string[][] } {
  const header = [
    'workload',
    'c',
    'client CPU us/op A / B1 / S100 / B100',
    'server CPU us/op A / B1 / S100 / B100',
    'client B100-B1',
    'client S100-B1',
    'client main thread B100-B1 / S100-B1',
    'server B100-B1',
    'server S100-B1',
    'server B100-S100',
    'server C100-C1',
    'client / PG share of B100-B1 CPU',
  ];
  const side = (g: GapFigures, which: 'client' | 'server'): string =>
    ['A', 'B1', 'S100', 'B100'].map((n) => fmtUs(g.cpuUsPerOp[n]?.[which])).join(' / ');
  const rows = gaps.map((g) => [
    g.workload,
    String(g.concurrency),
    side(g, 'client'),
    side(g, 'server'),
    fmtDelta(g.cpuDeltasUs.client['B100-B1']),
    fmtDelta(g.cpuDeltasUs.client['S100-B1']),
    `${fmtUs(g.cpuDeltasUs.clientMain['B100-B1']?.median)} / ${fmtUs(g.cpuDeltasUs.clientMain['S100-B1']?.median)}`,
    fmtDelta(g.cpuDeltasUs.server['B100-B1']),
    fmtDelta(g.cpuDeltasUs.server['S100-B1']),
    fmtDelta(g.cpuDeltasUs.server['B100-S100']),
    fmtDelta(g.cpuDeltasUs.server['C100-C1']),
    g.cpuShareOfTenantGap === undefined
      ? '-'
      : `${Math.round(g.cpuShareOfTenantGap.client * 100)}% / ${Math.round(g.cpuShareOfTenantGap.postgres * 100)}%`,
  ]);
  return { header, rows };
}

export const GAP_CPU_EXPLANATION =
  'The same gap in CPU time (bench/routing/cpu-meter.ts): microseconds per op of the benchmark process (client) and of the ' +
  "contender's PostgreSQL backends (server), read before and after every batch; differences are round by round, median (quartiles).";

export const GAP_EXPLANATION =
  "Where B100's gap to B1 comes from: S100 runs B100's client work (N tenant DataSources through the library) on B1's one schema, " +
  'so S100/B1 is the client\'s share and B100/S100 PostgreSQL\'s; C1/C100 (one DataSource, SET search_path per op, 1 vs N schemas) ' +
  'measure PostgreSQL\'s share a second way. Ratios: median of round-by-round throughput ratios, below 1 = slower (range in parentheses); ' +
  'us/op: round-by-round differences of wall time per op, median (quartiles).';
