import { InvalidArgumentError } from '../errors';

/** What happened to one tenant in a fleet migration or revert. */
export type FleetTenantStatus = 'migrated' | 'reverted' | 'up-to-date' | 'failed' | 'skipped';

/** The error of a failed tenant, plain enough for JSON. */
export interface FleetTenantError {
  /** The migration that failed, when the failure was inside one. */
  readonly migration?: string;
  readonly message: string;
  /** The PostgreSQL SQLSTATE, or the library's error code. */
  readonly code?: string;
}

/** One tenant's line in a fleet report. */
export interface FleetTenantResult {
  readonly slug: string;
  readonly status: FleetTenantStatus;
  /** Migrations applied (migrate) or undone (revert), in order. */
  readonly applied: readonly string[];
  readonly error?: FleetTenantError;
  /** Wall time spent on this tenant, in milliseconds. */
  readonly ms: number;
}

/** Counts of a fleet report, by status, plus the wall time of the whole run. */
export interface FleetTotals {
  readonly tenants: number;
  readonly migrated: number;
  readonly reverted: number;
  readonly upToDate: number;
  readonly failed: number;
  readonly skipped: number;
  readonly ms: number;
}

/** The result of `migrateTenants()` / `revertTenants()`: one line per tenant considered. */
export interface FleetReport {
  readonly results: readonly FleetTenantResult[];
  readonly totals: FleetTotals;
}

/** A wave size: a number of tenants, or a percentage of the tenants to process (`'10%'`). */
export type WaveSize = number | `${number}%`;

/** How a fleet run proceeds. */
export interface FleetRunOptions {
  /** Tenants processed at once. Default: half the pool size, at least 1. */
  readonly concurrency?: number;
  /** Stop starting tenants after the first failure; the rest are reported `skipped`. Default false. */
  readonly stopOnError?: boolean;
  /**
   * Process the tenants in waves, for instance `[1, '10%']`: first one tenant,
   * then 10% of them, then the rest. A wave with a failure stops the run; the
   * tenants of later waves are reported `skipped`.
   */
  readonly waves?: readonly WaveSize[];
  /** Aborting stops starting tenants; those not started are reported `skipped`. */
  readonly signal?: AbortSignal;
  /** Called after each tenant, for progress display. */
  readonly onProgress?: (result: FleetTenantResult, done: number, total: number) => void;
}

/**
 * Runs `work` over `slugs` with bounded concurrency, in waves, and collects
 * one result per slug, in the order of `slugs`. `work` must not throw: it
 * reports failures as results.
 */
export async function runFleet(
  slugs: readonly string[],
  work: (slug: string) => Promise<FleetTenantResult>,
  options: FleetRunOptions & { readonly concurrency: number },
): Promise<FleetReport> {
  const started = performance.now();
  const results = new Map<string, FleetTenantResult>();
  let stop = false;
  let done = 0;
  for (const wave of splitIntoWaves(slugs, options.waves ?? [])) {
    if (stop) break;
    let next = 0;
    let waveFailed = false;
    const worker = async (): Promise<void> => {
      while (next < wave.length && !stop && options.signal?.aborted !== true) {
        const slug = wave[next++]!;
        const result = await work(slug);
        results.set(slug, result);
        done += 1;
        options.onProgress?.(result, done, slugs.length);
        if (result.status === 'failed') {
          waveFailed = true;
          if (options.stopOnError === true) stop = true;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(options.concurrency, wave.length) }, worker));
    if (waveFailed && (options.waves?.length ?? 0) > 0) stop = true;
  }
  const ordered = slugs.map(
    (slug) =>
      results.get(slug) ??
      ({ slug, status: 'skipped', applied: [], ms: 0, error: { message: skipReason(options.signal) } } as FleetTenantResult),
  );
  return { results: ordered, totals: totalsOf(ordered, performance.now() - started) };
}

function skipReason(signal: AbortSignal | undefined): string {
  return signal?.aborted === true ? 'Not started: the run was aborted.' : 'Not started: an earlier failure stopped the run.';
}

/** Splits `slugs` into waves of the given sizes; whatever is left forms the last wave. */
export function splitIntoWaves(slugs: readonly string[], waves: readonly WaveSize[]): string[][] {
  const result: string[][] = [];
  let offset = 0;
  for (const wave of waves) {
    if (offset >= slugs.length) break;
    const size = waveSizeOf(wave, slugs.length);
    result.push(slugs.slice(offset, offset + size));
    offset += size;
  }
  if (offset < slugs.length) result.push(slugs.slice(offset));
  return result;
}

function waveSizeOf(wave: WaveSize, total: number): number {
  if (typeof wave === 'number' && Number.isInteger(wave) && wave >= 1) return wave;
  if (typeof wave === 'string' && /^\d+(\.\d+)?%$/.test(wave)) {
    const percent = Number(wave.slice(0, -1));
    if (percent > 0 && percent <= 100) return Math.max(1, Math.ceil((total * percent) / 100));
  }
  throw new InvalidArgumentError(
    `Wave size ${JSON.stringify(wave)} is invalid: use a positive whole number of tenants or a percentage such as "10%".`,
  );
}

function totalsOf(results: readonly FleetTenantResult[], ms: number): FleetTotals {
  const count = (status: FleetTenantStatus): number => results.filter((r) => r.status === status).length;
  return {
    tenants: results.length,
    migrated: count('migrated'),
    reverted: count('reverted'),
    upToDate: count('up-to-date'),
    failed: count('failed'),
    skipped: count('skipped'),
    ms: Math.round(ms),
  };
}
