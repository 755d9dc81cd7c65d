import { DATABASE_ERROR_FIELDS, InvalidArgumentError } from '../errors';
import type { InvalidIndexRepair } from './segmented-migrations';

/** What happened to one tenant in a fleet migration or revert. */
export type FleetTenantStatus = 'migrated' | 'reverted' | 'up-to-date' | 'failed' | 'skipped';

/**
 * The error of a failed tenant, plain enough for JSON. The PostgreSQL fields
 * (`detail` to `constraint`) are present when the database sent them: for a
 * unique index that cannot be built, `detail` is the duplicated key
 * (`Key (number)=(DUP-1) is duplicated.`), which the message alone does not say.
 */
export interface FleetTenantError {
  /** The migration that failed, when the failure was inside one. */
  readonly migration?: string;
  readonly message: string;
  /** The PostgreSQL SQLSTATE, or the library's error code. */
  readonly code?: string;
  /** PostgreSQL's DETAIL, such as the duplicated key of a 23505. */
  readonly detail?: string;
  /** PostgreSQL's HINT, such as "Use DROP ... CASCADE to drop the dependent objects too." */
  readonly hint?: string;
  /** The schema of the object at fault. */
  readonly schema?: string;
  /** The table of the object at fault. */
  readonly table?: string;
  /** The column at fault (not-null and similar violations). */
  readonly column?: string;
  /** The constraint or index at fault. */
  readonly constraint?: string;
  /**
   * Indexes of the tenant PostgreSQL marks invalid after the failure (a
   * concurrent build of a `transaction = false` migration that failed): the
   * next run drops them before it runs that migration again.
   */
  readonly invalidIndexes?: readonly string[];
}

/** The PostgreSQL error fields a `FleetTenantError` carries, in the order the CLI prints them. */
export const FLEET_ERROR_DATABASE_FIELDS = DATABASE_ERROR_FIELDS;

/** One tenant's line in a fleet report. */
export interface FleetTenantResult {
  readonly slug: string;
  readonly status: FleetTenantStatus;
  /** Migrations applied (migrate) or undone (revert), in order. */
  readonly applied: readonly string[];
  readonly error?: FleetTenantError;
  /**
   * Indexes an earlier failed concurrent build had left invalid, found before
   * a `transaction = false` migration ran again: each was dropped, and
   * `rebuilt` says whether the migrations built a valid one again.
   */
  readonly invalidIndexes?: readonly InvalidIndexRepair[];
  /** Wall time spent on this tenant, in milliseconds. */
  readonly ms: number;
}

/**
 * Counts of a fleet report, by status, plus the wall time of the whole run
 * (the ledger query included). `tenants` is the number of lines in
 * `results`, and the status counts add up to it.
 */
export interface FleetTotals {
  readonly tenants: number;
  readonly migrated: number;
  readonly reverted: number;
  readonly upToDate: number;
  readonly failed: number;
  readonly skipped: number;
  readonly ms: number;
}

/**
 * The result of `migrateTenants()` / `revertTenants()` /
 * `reconcileMigrationLedger()`: one line per tenant in scope, by slug, those
 * already up to date included, so a report proves every tenant's state.
 */
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
  /**
   * Called after each tenant processed, for progress display; `total` counts
   * the tenants to process, not those the ledger showed up to date.
   */
  readonly onProgress?: (result: FleetTenantResult, done: number, total: number) => void;
}

/**
 * What a fleet run covers: every tenant in scope, in report order. Tenants
 * with a `settled` line (known up to date from the ledger, or not served) get
 * that line and no work; `work` runs on the others.
 */
export interface FleetPlan {
  /** Every slug in scope, in the order of the report. */
  readonly slugs: readonly string[];
  /** Lines decided before any work, by slug. */
  readonly settled?: ReadonlyMap<string, FleetTenantResult>;
  /** When the run began (`performance.now()`), so that `totals.ms` includes the planning query. */
  readonly started?: number;
}

/**
 * Runs `work` over the unsettled slugs of `plan` with bounded concurrency, in
 * waves, and returns one line per slug of the plan, in its order. Waves and
 * percentages count the tenants to process. `work` must not throw: it
 * reports failures as results.
 */
export async function runFleet(
  plan: FleetPlan,
  work: (slug: string) => Promise<FleetTenantResult>,
  options: FleetRunOptions & { readonly concurrency: number; readonly groupOf?: (slug: string) => string; readonly interleaveGroups?: boolean },
): Promise<FleetReport> {
  const started = plan.started ?? performance.now();
  const settled = plan.settled ?? new Map<string, FleetTenantResult>();
  const slugs = settled.size === 0 ? plan.slugs : plan.slugs.filter((slug) => !settled.has(slug));
  const results = await runInWaves(slugs, work, options);
  const notStarted = skipReason(options.signal);
  const ordered = plan.slugs.map(
    (slug) =>
      settled.get(slug) ??
      results.get(slug) ??
      ({ slug, status: 'skipped', applied: [], ms: 0, error: { message: notStarted } } satisfies FleetTenantResult),
  );
  return { results: ordered, totals: totalsOf(ordered, performance.now() - started) };
}

/** How `runInWaves` proceeds: `FleetRunOptions` for any kind of per-tenant result. */
export interface WaveRunOptions<R> {
  readonly concurrency: number;
  readonly stopOnError?: boolean;
  readonly waves?: readonly WaveSize[];
  readonly signal?: AbortSignal;
  readonly onProgress?: (result: R, done: number, total: number) => void;
  /**
   * The group of each slug (its tenant's server): `concurrency` then bounds
   * each group, not the whole run, and the groups run side by side. Default:
   * one group.
   */
  readonly groupOf?: (slug: string) => string;
  /**
   * With `groupOf`: `concurrency` bounds the whole run, and the groups'
   * slugs are taken in turn (one of each group, then the next of each), so
   * the groups work side by side within that bound. For groups that share
   * one pool: the nodes of a Citus cluster, all reached through the
   * coordinator's.
   */
  readonly interleaveGroups?: boolean;
}

/**
 * The scheduling under every fleet run (migrations, `forEachTenant`): runs
 * `work` over `slugs` with at most `concurrency` at once (in each group of
 * `groupOf`, when given), in waves (a wave
 * with a failure stops the run), stopping on abort or, with `stopOnError`,
 * after the first failure. Returns the results of the slugs that ran; those
 * missing were not started (`skipReason()` says why). `work` must not throw.
 */
export async function runInWaves<R extends { readonly status: string }>(
  slugs: readonly string[],
  work: (slug: string) => Promise<R>,
  options: WaveRunOptions<R>,
): Promise<Map<string, R>> {
  const results = new Map<string, R>();
  let stop = false;
  let done = 0;
  for (const wave of splitIntoWaves(slugs, options.waves ?? [])) {
    if (stop) break;
    let waveFailed = false;
    const worker = async (queue: { readonly slugs: readonly string[]; next: number }): Promise<void> => {
      while (queue.next < queue.slugs.length && !stop && options.signal?.aborted !== true) {
        const slug = queue.slugs[queue.next++]!;
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
    const groups = groupsOf(wave, options.groupOf);
    const queues = (options.interleaveGroups === true ? [interleaved(groups)] : groups).map((slugsOfGroup) => ({ slugs: slugsOfGroup, next: 0 }));
    await Promise.all(queues.flatMap((queue) => Array.from({ length: Math.min(options.concurrency, queue.slugs.length) }, () => worker(queue))));
    if (waveFailed && (options.waves?.length ?? 0) > 0) stop = true;
  }
  return results;
}

/** `slugs` split by group, each group in the order of `slugs`, the groups in order of first appearance. */
function groupsOf(slugs: readonly string[], groupOf: ((slug: string) => string) | undefined): string[][] {
  if (groupOf === undefined) return [[...slugs]];
  const groups = new Map<string, string[]>();
  for (const slug of slugs) {
    const key = groupOf(slug);
    let group = groups.get(key);
    if (group === undefined) groups.set(key, (group = []));
    group.push(slug);
  }
  return [...groups.values()];
}

/** The first slug of each group, then the second of each, and so on. */
function interleaved(groups: readonly (readonly string[])[]): string[] {
  const result: string[] = [];
  const longest = Math.max(0, ...groups.map((group) => group.length));
  for (let i = 0; i < longest; i += 1) for (const group of groups) if (i < group.length) result.push(group[i]!);
  return result;
}

/** The error message of a tenant `runInWaves` did not start. */
export function skipReason(signal: AbortSignal | undefined): string {
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
  // One pass: a no-op report over 10,000 tenants has 10,000 lines.
  const counts: Record<FleetTenantStatus, number> = { migrated: 0, reverted: 0, 'up-to-date': 0, failed: 0, skipped: 0 };
  for (const result of results) counts[result.status] += 1;
  return {
    tenants: results.length,
    migrated: counts.migrated,
    reverted: counts.reverted,
    upToDate: counts['up-to-date'],
    failed: counts.failed,
    skipped: counts.skipped,
    ms: Math.round(ms),
  };
}
