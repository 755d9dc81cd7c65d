import { InvalidArgumentError } from '../errors';
import type { TenantCacheStore } from './cache-store';

/** How many entries `memoryCacheStore()` keeps by default. */
export const DEFAULT_MEMORY_CACHE_MAX_ENTRIES = 10_000;

export interface MemoryCacheStoreOptions {
  /** The most entries kept; adding one more evicts the least recently used. Default `DEFAULT_MEMORY_CACHE_MAX_ENTRIES` (10,000). */
  readonly maxEntries?: number;
}

/** `memoryCacheStore()`: a `TenantCacheStore` with its size for tests and metrics. */
export interface MemoryCacheStore extends TenantCacheStore {
  /** Entries held, expired ones not yet evicted included. */
  readonly size: number;
  /** The bound it was made with. */
  readonly maxEntries: number;
}

interface Entry {
  readonly value: string;
  /** `Date.now()` after which the entry is gone; `Infinity` for none. */
  readonly expiresAt: number;
}

/**
 * An in-process store for tests and single-process services: at most
 * `maxEntries` entries, least recently used evicted first, expiry checked on
 * read. Nothing is shared between processes: for a service with several
 * processes use `redisCacheStore()`.
 *
 * @example
 * ```ts
 * const cache = tenantCache(tenants, { store: memoryCacheStore({ maxEntries: 1_000 }) });
 * ```
 */
export function memoryCacheStore(options: MemoryCacheStoreOptions = {}): MemoryCacheStore {
  const maxEntries = options.maxEntries ?? DEFAULT_MEMORY_CACHE_MAX_ENTRIES;
  if (typeof maxEntries !== 'number' || !Number.isInteger(maxEntries) || maxEntries < 1) {
    throw new InvalidArgumentError(`memoryCacheStore(): maxEntries must be a positive integer; got ${String(maxEntries)}.`);
  }
  // A Map iterates in insertion order: re-inserting on use keeps the least
  // recently used entry first.
  const entries = new Map<string, Entry>();
  return {
    get size() {
      return entries.size;
    },
    maxEntries,
    async get(key) {
      const entry = entries.get(key);
      if (entry === undefined) return undefined;
      entries.delete(key);
      if (entry.expiresAt <= Date.now()) return undefined;
      entries.set(key, entry);
      return entry.value;
    },
    async set(key, value, ttlMs) {
      entries.delete(key);
      entries.set(key, { value, expiresAt: ttlMs === undefined ? Infinity : Date.now() + ttlMs });
      while (entries.size > maxEntries) entries.delete(entries.keys().next().value!);
    },
    async delete(key) {
      entries.delete(key);
    },
    async deletePrefix(prefix) {
      let deleted = 0;
      for (const key of [...entries.keys()]) {
        if (key.startsWith(prefix)) {
          entries.delete(key);
          deleted += 1;
        }
      }
      return deleted;
    },
  };
}
