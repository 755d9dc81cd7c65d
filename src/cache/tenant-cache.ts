import { refuseInSeed, runStorage } from '../context/tenant-context';
import { InvalidArgumentError, TenancyConfigurationError, TenantContextMissingError, TenantDroppedError } from '../errors';
import { tenantIncarnation, type LifecycleTenant, type TenantLifecyclePlugin } from '../lifecycle/lifecycle-plugins';
import type { TenantDataSourceManager } from '../manager/tenant-data-source-manager';
import type { TenantRecord } from '../registry/tenant-record';
import type { TenantCacheStore } from './cache-store';

/** How long an entry lives when neither `set()`/`wrap()` nor `defaultTtlMs` says: one hour. */
export const DEFAULT_TENANT_CACHE_TTL_MS = 3_600_000;

/** The longest key `tenantCache` takes, in characters (the physical key adds the prefix to it). */
export const MAX_TENANT_CACHE_KEY_LENGTH = 1_024;

/** The longest `keyPrefix`, in characters. */
export const MAX_TENANT_CACHE_PREFIX_LENGTH = 256;

/** How many dropped tenants a cache remembers, to refuse the work of runs that began before the drop. */
const REMEMBERED_DROPS = 10_000;

/** How values become the store's strings and back. */
export interface TenantCacheSerializer {
  serialize(value: unknown): string;
  deserialize(text: string): unknown;
}

/** The default: JSON. A `Date` comes back as its ISO string, a `Map` as `{}`; `undefined`, functions and BigInts are refused. */
export const JSON_SERIALIZER: TenantCacheSerializer = Object.freeze({
  serialize: (value: unknown) => JSON.stringify(value),
  deserialize: (text: string) => JSON.parse(text) as unknown,
});

export interface TenantCacheOptions {
  /** Where the entries live: `redisCacheStore(redis)`, `memoryCacheStore()`, or a store of your own. */
  readonly store: TenantCacheStore;
  /**
   * What every physical key starts with. Default `typeorm-tenants:<database>:cache:`
   * (the manager's database name), so two databases can share a Redis.
   * Two caches on one manager need different prefixes.
   */
  readonly keyPrefix?: string;
  /** How long an entry lives when `set()`/`wrap()` gives no TTL, in ms; `Infinity` for no expiry. Default one hour. */
  readonly defaultTtlMs?: number;
  /** How values are stored. Default JSON (`JSON_SERIALIZER`). */
  readonly serializer?: TenantCacheSerializer;
}

/**
 * A cache whose keys are always the active tenant's. Made by `tenantCache()`.
 * Every method must run inside `manager.run()` of the manager the cache was
 * made for; outside one it throws `TenantContextMissingError` and touches no
 * store.
 */
export interface TenantCache {
  /** The value stored under `key` for the active tenant, or `undefined` (missing or expired). */
  get<T = unknown>(key: string): Promise<T | undefined>;
  /** Stores `value` (serialised: JSON by default) under `key` for the active tenant. `ttlMs` defaults to `defaultTtlMs`. */
  set(key: string, value: unknown, ttlMs?: number): Promise<void>;
  /** Deletes the active tenant's `key`. */
  delete(key: string): Promise<void>;
  /**
   * The value under `key`, or else `fn()`'s, stored for `ttlMs` (`undefined`:
   * `defaultTtlMs`). Concurrent calls for one tenant and key in this process
   * share one read and one `fn()` call, made in the first caller's run. A
   * rejection of `fn` is not stored and reaches every waiter. The value is
   * returned as `get()` would return it (serialised and back), to every caller.
   */
  wrap<T>(key: string, ttlMs: number | undefined, fn: () => T | Promise<T>): Promise<T>;
  /**
   * Deletes every entry of a tenant, of every incarnation of its schema, and
   * resolves to how many. The lifecycle does it on drop, archive and restore;
   * call it to repair by hand (say after `restoreTenant()` failed in this
   * cache's hook). Needs no run.
   */
  clearTenant(tenant: { readonly schemaName: string }): Promise<number>;
  /** Stops clearing on the manager's lifecycle (removes the plugin). The store stays open: it is yours. Safe to call twice. */
  close(): void;
}

/**
 * A cache scoped to the active tenant, over a store you already have. Keys
 * are stored as `<keyPrefix>tenant:<schema>:<incarnation>:<key>`: the schema
 * and the incarnation (`tenantIncarnation(record)`) end with `:` and hold no
 * `:`, so no key of one tenant can equal or extend another tenant's
 * namespace, whatever characters it holds; a tenant dropped and created
 * again under the same slug has a new incarnation and never meets the old
 * entries.
 *
 * It adds a lifecycle plugin to `manager` (named `tenant-cache`, or
 * `tenant-cache:<keyPrefix>` with a `keyPrefix`) that clears the tenant's
 * entries when `dropTenant()` marks it dropping (a failed clear leaves the
 * tenant `dropping`; `dropTenant()` again finishes it), after
 * `archiveTenant()` and after `restoreTenant()`. In this process, a run that
 * began before a drop gets `TenantDroppedError` from the cache afterwards.
 *
 * @throws InvalidArgumentError for bad options.
 * @example
 * ```ts
 * import { redisCacheStore, tenantCache } from 'typeorm-tenants/cache';
 * const cache = tenantCache(tenants, { store: redisCacheStore(redis), defaultTtlMs: 60_000 });
 * await tenants.run('acme', () => cache.wrap('plans', 30_000, () => loadPlans()));
 * ```
 */
export function tenantCache(manager: TenantDataSourceManager, options: TenantCacheOptions): TenantCache {
  return new ScopedTenantCache(manager, options);
}

class ScopedTenantCache implements TenantCache {
  readonly #manager: TenantDataSourceManager;
  readonly #store: TenantCacheStore;
  readonly #keyPrefix: string | undefined;
  readonly #defaultTtlMs: number | undefined;
  readonly #serializer: TenantCacheSerializer;
  /** In-flight `wrap()` calls by physical key: each resolves to the serialised value. */
  readonly #flights = new Map<string, Promise<string>>();
  /** `<schema>:<incarnation>` of tenants this process has seen dropping, oldest first. */
  readonly #dropped = new Set<string>();
  /** `<keyPrefix>tenant:<schema>:<incarnation>:` by record (a run's record is one object for as long as it is cached). */
  readonly #namespaces = new WeakMap<TenantRecord, string>();
  #defaultPrefix: string | undefined;
  #removePlugin: (() => void) | undefined;

  constructor(manager: TenantDataSourceManager, options: TenantCacheOptions) {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('tenantCache(manager, options) takes an options object with a store.');
    const store = options.store;
    if (store === null || typeof store !== 'object' || !(['get', 'set', 'delete', 'deletePrefix'] as const).every((method) => typeof store[method] === 'function')) {
      throw new InvalidArgumentError(
        'tenantCache(): option "store" must be a TenantCacheStore (get, set, delete, deletePrefix): redisCacheStore(redis), memoryCacheStore(), or your own.',
      );
    }
    if (options.keyPrefix !== undefined && (typeof options.keyPrefix !== 'string' || options.keyPrefix.length > MAX_TENANT_CACHE_PREFIX_LENGTH)) {
      throw new InvalidArgumentError(`tenantCache(): option "keyPrefix" must be a string of at most ${MAX_TENANT_CACHE_PREFIX_LENGTH} characters.`);
    }
    const defaultTtlMs = options.defaultTtlMs ?? DEFAULT_TENANT_CACHE_TTL_MS;
    const serializer = options.serializer ?? JSON_SERIALIZER;
    if (serializer === null || typeof serializer.serialize !== 'function' || typeof serializer.deserialize !== 'function') {
      throw new InvalidArgumentError('tenantCache(): option "serializer" must have serialize(value) and deserialize(text) functions.');
    }
    this.#manager = manager;
    this.#store = store;
    this.#keyPrefix = options.keyPrefix;
    this.#defaultTtlMs = checkTtl(defaultTtlMs, 'option "defaultTtlMs"');
    this.#serializer = serializer;
    this.#removePlugin = manager.use(this.#plugin(options.keyPrefix === undefined ? 'tenant-cache' : `tenant-cache:${options.keyPrefix}`));
  }

  async get<T = unknown>(key: string): Promise<T | undefined> {
    const physical = this.#physicalKey(key, `tenantCache.get()`);
    const text = await this.#store.get(physical);
    return text === undefined ? undefined : (this.#serializer.deserialize(text) as T);
  }

  async set(key: string, value: unknown, ttlMs?: number): Promise<void> {
    const physical = this.#physicalKey(key, `tenantCache.set()`);
    refuseInSeed('tenantCache.set()');
    const ttl = ttlMs === undefined ? this.#defaultTtlMs : checkTtl(ttlMs, 'the TTL of set()');
    await this.#store.set(physical, this.#serialize(value, key), ttl);
  }

  async delete(key: string): Promise<void> {
    await this.#store.delete(this.#physicalKey(key, `tenantCache.delete()`));
  }

  async wrap<T>(key: string, ttlMs: number | undefined, fn: () => T | Promise<T>): Promise<T> {
    const physical = this.#physicalKey(key, `tenantCache.wrap()`);
    refuseInSeed('tenantCache.wrap()');
    const ttl = ttlMs === undefined ? this.#defaultTtlMs : checkTtl(ttlMs, 'the TTL of wrap()');
    if (typeof fn !== 'function') throw new InvalidArgumentError(`tenantCache.wrap(${JSON.stringify(key)}, ttlMs, fn): fn must be a function.`);
    let flight = this.#flights.get(physical);
    if (flight === undefined) {
      const state = runStorage.getStore()!;
      flight = (async () => {
        const cached = await this.#store.get(physical);
        if (cached !== undefined) return cached;
        const text = this.#serialize(await fn(), key);
        // fn may have run long: a drop may have begun meanwhile (see #physicalKey).
        this.#refuseDropped(state.tenant);
        await this.#store.set(physical, text, ttl);
        return text;
      })().finally(() => this.#flights.delete(physical));
      this.#flights.set(physical, flight);
    }
    return this.#serializer.deserialize(await flight) as T;
  }

  async clearTenant(tenant: { readonly schemaName: string }): Promise<number> {
    if (tenant === null || typeof tenant !== 'object' || typeof tenant.schemaName !== 'string' || !/^[a-z][a-z0-9_]*$/.test(tenant.schemaName)) {
      throw new InvalidArgumentError('tenantCache.clearTenant(tenant) takes the tenant\'s record (or { schemaName }).');
    }
    // Every incarnation: the schema belongs to this tenant alone while it
    // exists, so older incarnations' entries (left by a tenant of the same
    // slug whose clear never ran) are dead and go too.
    return this.#store.deletePrefix(`${this.#prefixNow()}tenant:${tenant.schemaName}:`);
  }

  close(): void {
    this.#removePlugin?.();
    this.#removePlugin = undefined;
  }

  #plugin(name: string): TenantLifecyclePlugin {
    return {
      name,
      onDropping: async (tenant: LifecycleTenant) => {
        // Before the clear: from here on this process's runs of the tenant
        // write nothing more, so nothing they write outlives the clear.
        this.#rememberDrop(`${tenant.schemaName}:${tenant.incarnation}`);
        await this.clearTenant(tenant);
      },
      onArchived: async (tenant: LifecycleTenant) => {
        await this.clearTenant(tenant);
      },
      onRestored: async (tenant: LifecycleTenant) => {
        await this.clearTenant(tenant);
      },
    };
  }

  #rememberDrop(id: string): void {
    this.#dropped.delete(id);
    this.#dropped.add(id);
    if (this.#dropped.size > REMEMBERED_DROPS) this.#dropped.delete(this.#dropped.values().next().value!);
  }

  #refuseDropped(tenant: TenantRecord): void {
    if (this.#dropped.size > 0 && this.#dropped.has(`${tenant.schemaName}:${tenantIncarnation(tenant)}`)) throw new TenantDroppedError(tenant.slug);
  }

  /** The key in the store for the active tenant; throws outside a run of this cache's manager. */
  #physicalKey(key: string, operation: string): string {
    const state = runStorage.getStore();
    if (state === undefined || state.owner !== this.#manager) {
      throw new TenantContextMissingError(state === undefined ? operation : `${operation} (in a run of another manager than the cache's)`);
    }
    if (typeof key !== 'string' || key.length === 0 || key.length > MAX_TENANT_CACHE_KEY_LENGTH) {
      throw new InvalidArgumentError(
        `${operation} takes a key that is a non-empty string of at most ${MAX_TENANT_CACHE_KEY_LENGTH} characters; got ${typeof key === 'string' ? `a string of ${key.length}` : typeof key}.`,
      );
    }
    this.#refuseDropped(state.tenant);
    let namespace = this.#namespaces.get(state.tenant);
    if (namespace === undefined) {
      namespace = `${this.#prefixNow()}tenant:${state.tenant.schemaName}:${tenantIncarnation(state.tenant)}:`;
      this.#namespaces.set(state.tenant, namespace);
    }
    return namespace + key;
  }

  #serialize(value: unknown, key: string): string {
    let text: unknown;
    try {
      text = this.#serializer.serialize(value);
    } catch (error) {
      throw new InvalidArgumentError(`The value for cache key ${JSON.stringify(key)} cannot be serialised: ${error instanceof Error ? error.message : String(error)}.`, { cause: error });
    }
    if (typeof text !== 'string') {
      throw new InvalidArgumentError(
        `The value for cache key ${JSON.stringify(key)} serialises to no string (${value === undefined ? 'undefined' : typeof value}); ` +
          'a miss is undefined, so store null for "nothing".',
      );
    }
    return text;
  }

  /** The key prefix, once the manager has connected (inside a run it has). */
  #prefixNow(): string {
    if (this.#keyPrefix !== undefined) return this.#keyPrefix;
    if (this.#defaultPrefix !== undefined) return this.#defaultPrefix;
    const database = (this.#manager.sharedDataSource.driver as { database?: unknown }).database;
    if (typeof database !== 'string' || database.length === 0) {
      throw new TenancyConfigurationError('tenantCache() cannot tell the database name for its default keyPrefix: pass keyPrefix.');
    }
    this.#defaultPrefix = `typeorm-tenants:${database}:cache:`;
    return this.#defaultPrefix;
  }
}

/** A TTL: a positive integer of milliseconds, or `Infinity` (returned as `undefined`: no expiry). */
function checkTtl(ttlMs: unknown, what: string): number | undefined {
  if (ttlMs === Infinity) return undefined;
  if (typeof ttlMs !== 'number' || !Number.isSafeInteger(ttlMs) || ttlMs < 1) {
    throw new InvalidArgumentError(`tenantCache: ${what} must be a positive integer of milliseconds, or Infinity for no expiry; got ${String(ttlMs)}.`);
  }
  return ttlMs;
}
