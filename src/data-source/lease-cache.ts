/** Counters of a `LeaseCache`. */
export interface LeaseCacheStats {
  /** Entries cached now (never more than `max`). */
  readonly size: number;
  readonly hits: number;
  readonly misses: number;
  readonly evictions: number;
  /** Evicted entries still held by a lease, to be disposed of when released. */
  readonly pendingDisposal: number;
}

/** A hold on one cached value: the value is not disposed of until `release()`. */
export interface Lease<V> {
  readonly value: V;
  /** Ends the hold; safe to call more than once. */
  release(): void;
}

interface Entry<V> {
  readonly key: string;
  readonly promise: Promise<V>;
  value?: V;
  holds: number;
  evicted: boolean;
  /** Tick of the last use: the least recently used entry has the smallest. */
  lastUsed: number;
}

/**
 * A bounded LRU cache of values that are expensive to create and must be
 * disposed of (tenant DataSources), with three guarantees:
 *
 * - single flight: concurrent first use of a key creates the value once, and
 *   a failed creation is forgotten so the next call retries;
 * - only created values count: an entry joins the cache (and may evict
 *   another) once its creation has succeeded, so lookups that fail (an
 *   unknown tenant) evict nothing;
 * - bounded: at most `max` entries stay cached; the least recently used one
 *   not held by a lease goes first;
 * - leases: an entry evicted while leased leaves the cache at once but is
 *   disposed of only when its last lease is released.
 */
export class LeaseCache<V> {
  readonly #max: number;
  readonly #create: (key: string) => Promise<V>;
  readonly #dispose: (value: V, key: string) => Promise<void>;
  readonly #onDisposeError: (error: unknown, key: string) => void;
  readonly #entries = new Map<string, Entry<V>>();
  /** Creations in flight, not yet in the cache. */
  readonly #pending = new Map<string, Entry<V>>();
  readonly #disposing = new Set<Promise<void>>();
  #tick = 0;
  #hits = 0;
  #misses = 0;
  #evictions = 0;
  #pendingDisposal = 0;

  constructor(options: {
    readonly max: number;
    readonly create: (key: string) => Promise<V>;
    readonly dispose: (value: V, key: string) => Promise<void>;
    readonly onDisposeError: (error: unknown, key: string) => void;
  }) {
    this.#max = options.max;
    this.#create = options.create;
    this.#dispose = options.dispose;
    this.#onDisposeError = options.onDisposeError;
  }

  /**
   * Takes a lease on the value for `key`, creating it on a miss. The promise
   * rejects with the creation error; no lease is held then.
   */
  async lease(key: string): Promise<Lease<V>> {
    let entry = this.#entries.get(key) ?? this.#pending.get(key);
    if (entry !== undefined) {
      this.#hits += 1;
      entry.lastUsed = ++this.#tick;
    } else {
      this.#misses += 1;
      entry = { key, promise: this.#create(key), holds: 0, evicted: false, lastUsed: ++this.#tick };
      this.#pending.set(key, entry);
      const created = entry;
      created.promise.then(
        (value) => {
          created.value = value;
          if (this.#pending.get(key) === created) this.#pending.delete(key);
          if (created.evicted) return;
          this.#entries.set(key, created);
          this.#evictOverflow();
        },
        () => {
          if (this.#pending.get(key) === created) this.#pending.delete(key);
        },
      );
    }
    entry.holds += 1;
    let value: V;
    try {
      value = await entry.promise;
    } catch (error) {
      this.#release(entry);
      throw error;
    }
    return this.#leaseOf(entry, value);
  }

  /** The cached value of `key`, if built, without holding it or counting a hit. */
  peek(key: string): V | undefined {
    return this.#entries.get(key)?.value;
  }

  /**
   * Takes a lease at once when `key` is cached and its value is ready (a hit
   * with no await, the hot path); `undefined` otherwise.
   */
  tryLease(key: string): Lease<V> | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined || entry.value === undefined) return undefined;
    this.#hits += 1;
    entry.lastUsed = ++this.#tick;
    entry.holds += 1;
    return this.#leaseOf(entry, entry.value);
  }

  #leaseOf(entry: Entry<V>, value: V): Lease<V> {
    let released = false;
    return {
      value,
      release: () => {
        if (released) return;
        released = true;
        this.#release(entry);
      },
    };
  }

  /** Removes `key` from the cache (disposing of it once no lease holds it). */
  evict(key: string): void {
    const entry = this.#entries.get(key) ?? this.#pending.get(key);
    if (entry !== undefined) this.#remove(entry);
  }

  stats(): LeaseCacheStats {
    return {
      size: this.#entries.size,
      hits: this.#hits,
      misses: this.#misses,
      evictions: this.#evictions,
      pendingDisposal: this.#pendingDisposal,
    };
  }

  /** Evicts every entry and waits until all disposals that can run have run. */
  async clear(): Promise<void> {
    for (const entry of [...this.#entries.values(), ...this.#pending.values()]) this.#remove(entry);
    await this.settled();
  }

  /** Waits for the disposals in progress. */
  async settled(): Promise<void> {
    while (this.#disposing.size > 0) await Promise.all([...this.#disposing]);
  }

  // Recency is a tick per entry rather than Map reordering, so a hit costs one
  // write; the scan for the least recently used happens only on overflow.
  #evictOverflow(): void {
    while (this.#entries.size > this.#max) {
      let idle: Entry<V> | undefined;
      let any: Entry<V> | undefined;
      for (const entry of this.#entries.values()) {
        if (any === undefined || entry.lastUsed < any.lastUsed) any = entry;
        if (entry.holds === 0 && (idle === undefined || entry.lastUsed < idle.lastUsed)) idle = entry;
      }
      // All held: evict the least recently used anyway; it is disposed of on release.
      const victim = idle ?? any!;
      this.#evictions += 1;
      this.#remove(victim);
    }
  }

  #remove(entry: Entry<V>): void {
    if (this.#entries.get(entry.key) === entry) this.#entries.delete(entry.key);
    if (this.#pending.get(entry.key) === entry) this.#pending.delete(entry.key);
    if (entry.evicted) return;
    entry.evicted = true;
    if (entry.holds === 0) this.#disposeEntry(entry);
    else this.#pendingDisposal += 1;
  }

  #release(entry: Entry<V>): void {
    entry.holds -= 1;
    if (entry.holds === 0 && entry.evicted) {
      this.#pendingDisposal -= 1;
      this.#disposeEntry(entry);
    }
  }

  #disposeEntry(entry: Entry<V>): void {
    const disposal = entry.promise.then(
      (value) => this.#dispose(value, entry.key),
      () => undefined, // creation failed: nothing to dispose of
    );
    const tracked = disposal
      .catch((error: unknown) => this.#onDisposeError(error, entry.key))
      .finally(() => this.#disposing.delete(tracked));
    this.#disposing.add(tracked);
  }
}
