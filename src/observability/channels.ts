import diagnosticsChannel from 'node:diagnostics_channel';
import type { FleetTenantError, FleetTenantStatus } from '../migration/fleet-run';
import { schemaNameForSlug } from '../naming/tenant-slug';
import type { TenantRecord } from '../registry/tenant-record';
import type { TenantEventMap, TenantEventName } from '../manager/tenant-events';

/**
 * Names of the `node:diagnostics_channel` channels the library publishes on.
 * Nothing is built or published while a channel has no subscriber, so they
 * cost nothing until someone listens.
 *
 * - `run`, `createTenant`, `dropTenant` are `TracingChannel`s: subscribe with
 *   `diagnostics_channel.tracingChannel(TENANT_CHANNELS.run).subscribe({ start, asyncEnd, error })`,
 *   or to one of their events by its full name (`tracing:typeorm-tenants:run:start`,
 *   `...:asyncEnd`, `...:error`; see `TENANT_RUN_START` and `TENANT_RUN_END`).
 *   The context object is the same at every event of one call.
 * - `tenantMigration` is a plain channel: one message per tenant a fleet run
 *   (`migrateTenants`, `revertTenants`, `revertTenant`) worked on.
 * - `tenantEvent(name)` is the plain channel of each manager event
 *   (`typeorm-tenants:tenant:created`, `...:dropped`, ...), published after the
 *   change committed, with the event's payload.
 */
export const TENANT_CHANNELS = Object.freeze({
  run: 'typeorm-tenants:run',
  createTenant: 'typeorm-tenants:create-tenant',
  dropTenant: 'typeorm-tenants:drop-tenant',
  tenantMigration: 'typeorm-tenants:tenant-migration',
});

/** The full name of the run tracing channel's `start` event (before `fn` runs, inside the tenant's context). */
export const TENANT_RUN_START = `tracing:${TENANT_CHANNELS.run}:start`;
/** The full name of the run tracing channel's `asyncEnd` event (the run settled; `durationMs` and `error` or `result` are set). */
export const TENANT_RUN_END = `tracing:${TENANT_CHANNELS.run}:asyncEnd`;

/** Every manager event name, in the order of `TenantEventMap`. */
export const TENANT_EVENT_NAMES: readonly TenantEventName[] = Object.freeze([
  'created',
  'migrated',
  'migration-failed',
  'suspended',
  'resumed',
  'archived',
  'restored',
  'moved',
  'dropped',
  'domain-added',
  'domain-updated',
  'domain-removed',
] satisfies TenantEventName[]);

/**
 * The name of the plain channel of a manager event: `typeorm-tenants:tenant:<event>`.
 *
 * @example
 * ```ts
 * import { subscribe } from 'node:diagnostics_channel';
 * subscribe(tenantEventChannel('created'), (message) => console.log((message as TenantEventMessage<'created'>).slug));
 * ```
 */
export function tenantEventChannel(event: TenantEventName): string {
  return `typeorm-tenants:tenant:${event}`;
}

/** The context of one `run()` on the run tracing channel. */
export interface TenantRunMessage {
  /** The manager whose `run()` this is. */
  readonly manager: object;
  readonly slug: string;
  readonly schema: string;
  /** The tenant's record, as the run sees it (`tenantContext.current()`). */
  readonly tenant: TenantRecord;
  /** Set at `asyncStart`/`asyncEnd`: how long `fn` ran, in milliseconds (from just before it was called until its result settled). */
  durationMs?: number;
  /** Set by the tracing channel when `fn` threw or its promise rejected. */
  error?: unknown;
  /** Set by the tracing channel: what `fn` returned (resolved). */
  result?: unknown;
}

/** The context of one `createTenant()` or `dropTenant()` on its tracing channel. */
export interface TenantOperationMessage {
  readonly manager: object;
  readonly operation: 'createTenant' | 'dropTenant';
  /** The slug as given (a refused one too: it failed validation before any SQL). */
  readonly slug: unknown;
  /** Set at `asyncEnd`: milliseconds from the call until it settled. */
  durationMs?: number;
  error?: unknown;
  result?: unknown;
}

/** One tenant of a fleet run, on `TENANT_CHANNELS.tenantMigration`. */
export interface TenantMigrationMessage {
  /** The manager, when known. */
  readonly manager: object | undefined;
  readonly direction: 'migrate' | 'revert';
  readonly slug: string;
  readonly schema: string;
  readonly status: FleetTenantStatus;
  /** Migrations applied (or, for a revert, undone), in the order they ran. */
  readonly applied: readonly string[];
  readonly durationMs: number;
  readonly error?: FleetTenantError;
}

/** A manager event on its `tenantEventChannel(event)`: the event's payload, plus who and which tenant. */
export type TenantEventMessage<E extends TenantEventName = TenantEventName> = TenantEventMap[E] & {
  readonly manager: object | undefined;
  readonly event: E;
  readonly slug: string;
  readonly schemaName: string;
};

const runTracing = diagnosticsChannel.tracingChannel<TenantRunMessage>(TENANT_CHANNELS.run);
const createTracing = diagnosticsChannel.tracingChannel<TenantOperationMessage>(TENANT_CHANNELS.createTenant);
const dropTracing = diagnosticsChannel.tracingChannel<TenantOperationMessage>(TENANT_CHANNELS.dropTenant);
const migrationChannel = diagnosticsChannel.channel(TENANT_CHANNELS.tenantMigration);
const eventChannels = new Map(TENANT_EVENT_NAMES.map((event) => [event, diagnosticsChannel.channel(tenantEventChannel(event))]));

/** Whether anything listens to one of the run tracing channel's events (internal; checked on every run). */
export function runIsObserved(): boolean {
  return runTracing.hasSubscribers;
}

/**
 * Runs `fn` as one traced run (internal): `start` (inside the tenant's
 * context), `end`, then `asyncStart`/`asyncEnd` (and `error`) when it
 * settles, with `durationMs` set. Only called while `runIsObserved()`.
 */
export function traceRun<T>(manager: object, tenant: TenantRecord, fn: () => T | Promise<T>): Promise<T> {
  const message: TenantRunMessage = { manager, slug: tenant.slug, schema: tenant.schemaName, tenant };
  return runTracing.tracePromise(timed(message, fn), message);
}

/** Runs a `createTenant()` or `dropTenant()` call on its tracing channel (internal); `fn` itself when nobody listens. */
export function traceOperation<T>(manager: object, operation: TenantOperationMessage['operation'], slug: unknown, fn: () => Promise<T>): Promise<T> {
  const channel = operation === 'createTenant' ? createTracing : dropTracing;
  if (!channel.hasSubscribers) return fn();
  const message: TenantOperationMessage = { manager, operation, slug };
  return channel.tracePromise(timed(message, fn), message);
}

/** Publishes one tenant's line of a fleet run (internal). */
export function publishTenantMigration(build: () => TenantMigrationMessage): void {
  if (migrationChannel.hasSubscribers) migrationChannel.publish(build());
}

/** Publishes a manager event on its channel (internal; called by `TenantEvents.emit`). */
export function publishTenantEvent<E extends TenantEventName>(manager: object | undefined, event: E, payload: TenantEventMap[E]): void {
  const channel = eventChannels.get(event);
  if (channel === undefined || !channel.hasSubscribers) return;
  channel.publish({ ...payload, manager, event, ...tenantOf(payload) } satisfies TenantEventMessage);
}

function tenantOf(payload: TenantEventMap[TenantEventName]): { slug: string; schemaName: string } {
  if ('tenant' in payload) return { slug: payload.tenant.slug, schemaName: payload.tenant.schemaName };
  if ('schemaName' in payload) return { slug: payload.slug, schemaName: payload.schemaName };
  return { slug: payload.slug, schemaName: schemaNameForSlug(payload.slug) };
}

/**
 * `fn` as a function returning a promise that sets `durationMs` on the
 * message just before it settles, so the tracing channel's `asyncEnd` has
 * it; a synchronous throw becomes a rejection (one path for every error).
 */
function timed<T>(message: { durationMs?: number }, fn: () => T | Promise<T>): () => Promise<T> {
  return () => {
    const started = performance.now();
    let pending: Promise<T>;
    try {
      pending = Promise.resolve(fn());
    } catch (error) {
      pending = Promise.reject(error);
    }
    return pending.then(
      (value) => {
        message.durationMs = performance.now() - started;
        return value;
      },
      (error: unknown) => {
        message.durationMs = performance.now() - started;
        throw error;
      },
    );
  };
}
