/**
 * Where `tenantCache` keeps its entries: a key-value store of strings with
 * expiry and deletion by prefix. `redisCacheStore(redis)` and
 * `memoryCacheStore()` implement it; implement it yourself for another store.
 *
 * The store sees physical keys only (`<keyPrefix>tenant:<schema>:<incarnation>:<key>`)
 * and serialised values; it knows nothing of tenants. Every method rejects
 * when the store fails: `tenantCache` passes the error on, it never turns a
 * failure into a miss.
 *
 * @example
 * ```ts
 * const store: TenantCacheStore = {
 *   get: async (key) => map.get(key),
 *   set: async (key, value) => void map.set(key, value),
 *   delete: async (key) => void map.delete(key),
 *   deletePrefix: async (prefix) => { ... },
 * };
 * ```
 */
export interface TenantCacheStore {
  /** The value stored under `key`, or `undefined` when there is none or it has expired. */
  get(key: string): Promise<string | undefined>;
  /** Stores `value` under `key`, replacing what was there; `ttlMs` is a positive integer, `undefined` for no expiry. */
  set(key: string, value: string, ttlMs: number | undefined): Promise<void>;
  /** Deletes `key`; deleting a missing key is not an error. */
  delete(key: string): Promise<void>;
  /**
   * Deletes every key that starts with `prefix`, compared as a plain string
   * (the prefix is never a pattern), and resolves to how many it deleted.
   * It must not block the store for long (delete in batches) and must be
   * safe to call again after it failed halfway: a second call deletes what
   * the first left.
   */
  deletePrefix(prefix: string): Promise<number>;
}
