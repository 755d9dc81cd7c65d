import type { TenantRecord } from '../registry/tenant-record';

/** Bounds and lifetimes of the HTTP layer's slug → tenant record cache. */
export interface ResolutionCacheOptions {
  /** How long a tenant record is trusted (other processes' changes take effect within it). Default 5000. */
  readonly ttlMs?: number;
  /** Most tenant records kept (least recently used go first). Default 10000. */
  readonly maxEntries?: number;
  /** How long an unknown slug is answered 404 without asking the registry. Default 2000. */
  readonly negativeTtlMs?: number;
  /** Most unknown slugs remembered (oldest go first). Default 1000. */
  readonly maxNegativeEntries?: number;
}

/** Defaults of `ResolutionCacheOptions`. */
export const DEFAULT_RESOLUTION_CACHE_OPTIONS: Readonly<Required<ResolutionCacheOptions>> = Object.freeze({
  ttlMs: 5000,
  maxEntries: 10_000,
  negativeTtlMs: 2000,
  maxNegativeEntries: 1000,
});

/** Counters and sizes of a resolution cache. */
export interface ResolutionCacheStats {
  /** Requests answered from a cached tenant record. */
  readonly hits: number;
  /** Requests answered 404 from the negative cache. */
  readonly negativeHits: number;
  /** Registry lookups made (concurrent requests for one slug share one). */
  readonly lookups: number;
  /** Tenant records cached now. */
  readonly size: number;
  /** Unknown slugs remembered now. */
  readonly negativeSize: number;
}

/**
 * Slug → tenant record, with a short TTL and a size bound, plus a bounded
 * negative cache of unknown slugs, so that a hot tenant costs no registry
 * query per request and a flood of random slugs can neither grow memory nor
 * query the registry more than once per slug per `negativeTtlMs`. Concurrent
 * misses for one slug share one lookup. `invalidate(slug)` drops both kinds
 * of entry at once (the HTTP layer calls it on the manager's lifecycle
 * events).
 */
export class ResolutionCache {
  readonly #options: Readonly<Required<ResolutionCacheOptions>>;
  readonly #lookup: (slug: string) => Promise<TenantRecord | undefined>;
  readonly #records = new Map<string, { readonly record: TenantRecord; readonly expiresAt: number }>();
  /** The slug last in `#records`' order (the most recently used). */
  #newest: string | undefined;
  readonly #unknown = new Map<string, number>();
  readonly #pending = new Map<string, Promise<TenantRecord | undefined>>();
  /** Bumped by every invalidation, so a lookup that raced one does not store its stale answer. */
  #epoch = 0;
  #hits = 0;
  #negativeHits = 0;
  #lookups = 0;

  constructor(lookup: (slug: string) => Promise<TenantRecord | undefined>, options: ResolutionCacheOptions = {}) {
    this.#lookup = lookup;
    const resolved = { ...DEFAULT_RESOLUTION_CACHE_OPTIONS, ...options };
    for (const [key, value] of Object.entries(resolved)) {
      if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
        throw new TypeError(`Resolution cache option "${key}" must be a number, 0 or more; got ${String(value)}.`);
      }
    }
    this.#options = Object.freeze(resolved);
  }

  /** The tenant record of `slug` (any status), or `undefined` when no such tenant exists. */
  get(slug: string): Promise<TenantRecord | undefined> {
    const hit = this.peek(slug);
    if (hit !== undefined) return Promise.resolve(hit);
    this.#records.delete(slug); // absent, or expired
    const now = Date.now();
    const unknownUntil = this.#unknown.get(slug);
    if (unknownUntil !== undefined) {
      if (unknownUntil > now) {
        this.#negativeHits += 1;
        return Promise.resolve(undefined);
      }
      this.#unknown.delete(slug);
    }
    let pending = this.#pending.get(slug);
    if (pending === undefined) {
      this.#lookups += 1;
      const epoch = this.#epoch;
      pending = this.#lookup(slug)
        .then((record) => {
          if (epoch === this.#epoch) this.#store(slug, record);
          return record;
        })
        .finally(() => this.#pending.delete(slug));
      this.#pending.set(slug, pending);
    }
    return pending;
  }

  /**
   * The cached, unexpired record of `slug` (counted as a hit), without a
   * promise; `undefined` when there is none, or the slug is known to be
   * unknown: then ask `get()`.
   */
  peek(slug: string): TenantRecord | undefined {
    const cached = this.#records.get(slug);
    if (cached === undefined || cached.expiresAt <= Date.now()) return undefined;
    this.#hits += 1;
    // Map order is the recency order the bound evicts by: a hit moves its
    // entry to the end, unless it is there already (a hot tenant).
    if (slug !== this.#newest) {
      this.#records.delete(slug);
      this.#records.set(slug, cached);
      this.#newest = slug;
    }
    return cached.record;
  }

  /** Forgets `slug`, known or unknown, at once. */
  invalidate(slug: string): void {
    this.#epoch += 1;
    this.#records.delete(slug);
    this.#unknown.delete(slug);
  }

  /** Forgets everything. */
  clear(): void {
    this.#epoch += 1;
    this.#records.clear();
    this.#unknown.clear();
  }

  stats(): ResolutionCacheStats {
    return {
      hits: this.#hits,
      negativeHits: this.#negativeHits,
      lookups: this.#lookups,
      size: this.#records.size,
      negativeSize: this.#unknown.size,
    };
  }

  #store(slug: string, record: TenantRecord | undefined): void {
    const now = Date.now();
    if (record !== undefined) {
      if (this.#options.maxEntries === 0 || this.#options.ttlMs === 0) return;
      this.#records.delete(slug);
      this.#records.set(slug, { record, expiresAt: now + this.#options.ttlMs });
      this.#newest = slug;
      while (this.#records.size > this.#options.maxEntries) this.#records.delete(this.#records.keys().next().value!);
    } else {
      if (this.#options.maxNegativeEntries === 0 || this.#options.negativeTtlMs === 0) return;
      this.#unknown.set(slug, now + this.#options.negativeTtlMs);
      while (this.#unknown.size > this.#options.maxNegativeEntries) this.#unknown.delete(this.#unknown.keys().next().value!);
    }
  }
}
