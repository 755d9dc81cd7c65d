import { InvalidArgumentError, TenantDroppedError, TenantNotActiveError, TenantNotFoundError } from '../errors';
import { fleetErrorOf } from '../migration/fleet-migrator';
import { runInWaves, skipReason, type FleetTenantError, type WaveSize } from '../migration/fleet-run';
import { validateTenantSlug, type ReservedNames } from '../naming/tenant-slug';
import { TENANT_STATUSES, type TenantRecord, type TenantStatus } from '../registry/tenant-record';

/** What happened to one tenant in a fan-out (`forEachTenant`, `queryAcrossTenants`, `aggregateAcrossTenants`). */
export type TenantWorkStatus = 'done' | 'failed' | 'skipped';

/** Which tenants a fan-out covers, and how it proceeds. */
export interface FanOutOptions {
  /**
   * Only these tenants, whatever their status (each must exist: an unknown
   * slug throws `TenantNotFoundError` before anything runs). Default: every
   * tenant `where` selects.
   */
  readonly tenants?: readonly string[];
  /**
   * Filter on the registry record. `status` (one or several) defaults to
   * `'active'`. Tenants in scope that are not active (named in `tenants`, or
   * selected by `status`) are reported `skipped` with the status in the
   * error message: runs refuse them, and a report line says so. `server`
   * (one or several names): only the tenants living there.
   */
  readonly where?: { readonly status?: TenantStatus | readonly TenantStatus[]; readonly server?: string | readonly string[] };
  /** Tenants processed at once on each server. Default: half the smallest pool's size, at least 1 (as the fleet commands). */
  readonly concurrency?: number;
  /**
   * Process the tenants in waves, for instance `[1, '10%']`: first one
   * tenant, then 10% of them, then the rest. A wave with a failure stops the
   * run; the tenants of later waves are reported `skipped`.
   */
  readonly waves?: readonly WaveSize[];
  /** Stop starting tenants after the first failure; the rest are reported `skipped`. Default false. */
  readonly stopOnError?: boolean;
  /** Aborting stops starting tenants (those in progress finish); those not started are reported `skipped`. */
  readonly signal?: AbortSignal;
  /** Called after each tenant processed (in completion order), for progress display. */
  readonly onProgress?: (result: TenantWorkResult<unknown>, done: number, total: number) => void;
}

/** Options of `forEachTenant()`. */
export type ForEachTenantOptions<T> = Omit<FanOutOptions, 'onProgress'> & {
  readonly onProgress?: (result: TenantWorkResult<T>, done: number, total: number) => void;
};

/** One tenant's line in a fan-out report. */
export interface TenantWorkResult<T> {
  readonly slug: string;
  readonly status: TenantWorkStatus;
  /** What `fn` returned (status `done` only). */
  readonly value?: T;
  /** Why it failed or was skipped: plain JSON, with the SQLSTATE and PostgreSQL's fields when the database sent them. */
  readonly error?: FleetTenantError;
  /** Wall time spent on this tenant, in milliseconds. */
  readonly ms: number;
}

/** Counts of a fan-out report by status; `tenants` is the number of lines and the counts add up to it. */
export interface TenantWorkTotals {
  readonly tenants: number;
  readonly done: number;
  readonly failed: number;
  readonly skipped: number;
  /** Wall time of the whole run, the registry query included. */
  readonly ms: number;
}

/** The result of `forEachTenant()`: one line per tenant in scope, by slug. */
export interface TenantWorkReport<T> {
  readonly results: readonly TenantWorkResult<T>[];
  readonly totals: TenantWorkTotals;
}

/** What a fan-out needs from the manager: its public reads and runs, and the slug rule of its schemas. */
export interface FanOutHost {
  listTenants(): Promise<TenantRecord[]>;
  run<T>(slug: string, fn: () => T | Promise<T>): Promise<T>;
  /** Tenants at once on each server when the options do not say. */
  readonly defaultConcurrency: number;
  /** The names of the manager's servers, in the order of its options. */
  readonly servers: readonly string[];
  readonly reserved: ReservedNames;
}

/** The tenants of a fan-out, decided before anything runs. */
export interface FanOutScope {
  /** Every tenant in scope, by slug. */
  readonly tenants: readonly TenantRecord[];
  /** Lines decided without work (tenants not active), by slug. */
  readonly settled: ReadonlyMap<string, TenantWorkResult<never>>;
  readonly concurrency: number;
  readonly started: number;
}

/**
 * Validates the options and reads the tenants in scope (one registry
 * query); nothing runs in any tenant yet.
 *
 * @throws InvalidArgumentError for a bad option; InvalidTenantNameError / TenantNotFoundError for a bad or unknown slug in `tenants`.
 */
export async function fanOutScope(host: FanOutHost, options: FanOutOptions): Promise<FanOutScope> {
  const started = performance.now();
  validateFanOutOptions(options);
  const named = options.tenants === undefined ? undefined : [...new Set(options.tenants)];
  for (const slug of named ?? []) validateTenantSlug(slug, host.reserved);
  const statuses = statusesOf(options.where?.status);
  const servers = serversOf(options.where?.server, host.servers);
  const all = await host.listTenants();
  const onServers = (t: TenantRecord): boolean => servers === undefined || servers.includes(t.server);
  let tenants: TenantRecord[];
  if (named !== undefined) {
    const bySlug = new Map(all.map((t) => [t.slug, t]));
    const missing = named.find((slug) => !bySlug.has(slug));
    if (missing !== undefined) throw new TenantNotFoundError(missing);
    tenants = named.map((slug) => bySlug.get(slug)!).filter((t) => onServers(t) && (options.where?.status === undefined || statuses.includes(t.status)));
  } else {
    tenants = all.filter((t) => onServers(t) && statuses.includes(t.status));
  }
  tenants.sort((a, b) => (a.slug < b.slug ? -1 : a.slug > b.slug ? 1 : 0));
  const settled = new Map<string, TenantWorkResult<never>>();
  for (const t of tenants) {
    if (t.status !== 'active') settled.set(t.slug, { slug: t.slug, status: 'skipped', ms: 0, error: { message: `Not run: the tenant is ${t.status}.`, code: 'TENANT_NOT_ACTIVE' } });
  }
  const concurrency = options.concurrency ?? host.defaultConcurrency;
  return { tenants, settled, concurrency, started };
}

/**
 * Runs `work(record)` inside `host.run()` of every unsettled tenant of
 * `scope` and returns the report: a throw is the tenant's `failed` line, a
 * tenant that stopped being served meanwhile (suspended, dropped) is `skipped`.
 */
export async function runOverScope<T>(
  host: FanOutHost,
  scope: FanOutScope,
  work: (tenant: TenantRecord) => T | Promise<T>,
  options: ForEachTenantOptions<T>,
): Promise<TenantWorkReport<T>> {
  const bySlug = new Map(scope.tenants.map((t) => [t.slug, t]));
  const slugs = scope.tenants.filter((t) => !scope.settled.has(t.slug)).map((t) => t.slug);
  const one = async (slug: string): Promise<TenantWorkResult<T>> => {
    const began = performance.now();
    const tenant = bySlug.get(slug)!;
    try {
      const value = await host.run(slug, () => work(tenant));
      return { slug, status: 'done', value, ms: performance.now() - began };
    } catch (error) {
      const gone = error instanceof TenantNotActiveError || error instanceof TenantNotFoundError || error instanceof TenantDroppedError;
      return { slug, status: gone ? 'skipped' : 'failed', error: fleetErrorOf(error), ms: performance.now() - began };
    }
  };
  // Concurrency per server, each server's tenants side by side with the others'. In Citus mode (where
  // listTenants names each tenant's node) every node goes through the coordinator's one pool: concurrency
  // bounds the run, the nodes' tenants taken in turn.
  const byNode = scope.tenants.some((tenant) => tenant.node !== undefined);
  const groupOf = (slug: string): string => {
    const tenant = bySlug.get(slug)!;
    return (byNode ? tenant.node : undefined) ?? tenant.server;
  };
  const results = await runInWaves(slugs, one, { ...options, concurrency: scope.concurrency, groupOf, interleaveGroups: byNode });
  const notStarted = skipReason(options.signal);
  const ordered = scope.tenants.map(
    ({ slug }): TenantWorkResult<T> => scope.settled.get(slug) ?? results.get(slug) ?? { slug, status: 'skipped', ms: 0, error: { message: notStarted } },
  );
  return { results: ordered, totals: workTotalsOf(ordered, performance.now() - scope.started) };
}

/** `manager.forEachTenant()`: see its documentation. */
export async function forEachTenant<T>(
  host: FanOutHost,
  fn: (tenant: TenantRecord) => T | Promise<T>,
  options: ForEachTenantOptions<T> = {},
): Promise<TenantWorkReport<T>> {
  if (typeof fn !== 'function') throw new InvalidArgumentError(`forEachTenant() needs a function to run in each tenant; got ${typeof fn}.`);
  const scope = await fanOutScope(host, options as FanOutOptions);
  return runOverScope(host, scope, fn, options);
}

/** Counts of `results` by status. */
export function workTotalsOf(results: readonly { readonly status: TenantWorkStatus }[], ms: number): TenantWorkTotals {
  const counts: Record<TenantWorkStatus, number> = { done: 0, failed: 0, skipped: 0 };
  for (const result of results) counts[result.status] += 1;
  return { tenants: results.length, done: counts.done, failed: counts.failed, skipped: counts.skipped, ms: Math.round(ms) };
}

function statusesOf(value: unknown): readonly TenantStatus[] {
  if (value === undefined) return ['active'];
  const list = Array.isArray(value) ? value : [value];
  for (const status of list) {
    if (!TENANT_STATUSES.includes(status as TenantStatus)) {
      throw new InvalidArgumentError(`Option "where.status" must be one of ${TENANT_STATUSES.map((s) => `'${s}'`).join(', ')} (or a list of them); got ${JSON.stringify(status)}.`);
    }
  }
  return list as TenantStatus[];
}

/** The servers `where.server` names (each must be one of the manager's), or undefined for every server. */
function serversOf(value: unknown, known: readonly string[]): readonly string[] | undefined {
  if (value === undefined) return undefined;
  const list = Array.isArray(value) ? value : [value];
  for (const server of list) {
    if (typeof server !== 'string' || !known.includes(server)) {
      throw new InvalidArgumentError(`Option "where.server" must name servers of the manager (${known.map((s) => `"${s}"`).join(', ')}); got ${JSON.stringify(server)}.`);
    }
  }
  return list as string[];
}

function validateFanOutOptions(options: FanOutOptions): void {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError(`Fan-out options must be an object; got ${String(options)}.`);
  const { concurrency, tenants, signal, onProgress, waves, where } = options;
  if (concurrency !== undefined && (!Number.isInteger(concurrency) || concurrency < 1)) {
    throw new InvalidArgumentError(`Option "concurrency" must be a positive integer; got ${String(concurrency)}.`);
  }
  if (tenants !== undefined && !Array.isArray(tenants)) throw new InvalidArgumentError(`Option "tenants" must be an array of slugs; got ${typeof tenants}.`);
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new InvalidArgumentError('Option "signal" must be an AbortSignal.');
  if (onProgress !== undefined && typeof onProgress !== 'function') throw new InvalidArgumentError('Option "onProgress" must be a function.');
  if (waves !== undefined && !Array.isArray(waves)) throw new InvalidArgumentError('Option "waves" must be an array of sizes, such as [1, "10%"].');
  if (where !== undefined && (where === null || typeof where !== 'object')) throw new InvalidArgumentError('Option "where" must be an object such as { status: "active" }.');
}
