import type { TenantDomain, TenantDomainSnapshot } from '../registry/tenant-domains';

/** Default of `DomainResolverOptions.ttlMs`: how long the in-memory copy of the domains registry is trusted. */
export const DEFAULT_DOMAIN_TTL_MS = 5000;

/** What the directory knows of a hostname. */
export interface DomainDirectoryEntry {
  readonly slug: string;
  readonly verified: boolean;
}

/** Counters and sizes of a domain directory. */
export interface DomainDirectoryStats {
  /** Hostnames held in memory. */
  readonly hostnames: number;
  /** Lookups answered (known and unknown hostnames alike; none costs a query of its own). */
  readonly lookups: number;
  /** Queries sent to the registry: one per `ttlMs` at most, whatever the traffic (concurrent requests share one). */
  readonly queries: number;
  /** Of those, the ones that found the registry changed and read it whole. */
  readonly reloads: number;
}

/**
 * The domains registry in memory, hostname → tenant, for `fromDomain()`.
 * Every hostname is held, so a lookup never costs a query of its own: a
 * flood of random `Host` headers costs nothing, known or not. The copy is
 * trusted for `ttlMs`; then one query (shared by concurrent requests) asks
 * whether the registry's generation changed, and reads it whole only when
 * it did. This process's changes (the manager's `domain-*` events) apply at
 * once; other processes' within `ttlMs` (0: checked on every lookup).
 * Memory: about 250 bytes per hostname (measured with 100,000).
 */
export class DomainDirectory {
  readonly #read: (generation: string) => Promise<TenantDomainSnapshot>;
  readonly #ttlMs: number;
  #hostnames = new Map<string, DomainDirectoryEntry>();
  /** The registry's generation the copy reflects; '' when unknown (the next check reads it whole). */
  #generation = '';
  #loaded = false;
  #checkedAt = 0;
  #refreshing: Promise<void> | undefined;
  /** Changes applied while a refresh is in flight, replayed over what it read (which may predate them). */
  #journal: Array<{ readonly domain: TenantDomain; readonly removed: boolean }> | undefined;
  #lookups = 0;
  #queries = 0;
  #reloads = 0;

  constructor(read: (generation: string) => Promise<TenantDomainSnapshot>, ttlMs: number = DEFAULT_DOMAIN_TTL_MS) {
    if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs < 0) {
      throw new TypeError(`fromDomain() option "ttlMs" must be a number of milliseconds, 0 or more; got ${String(ttlMs)}.`);
    }
    this.#read = read;
    this.#ttlMs = ttlMs;
  }

  /**
   * What the registry says of `hostname` (normalised), or `undefined` when no
   * tenant has it. Answers at once while the copy is fresh; else after the
   * one shared check.
   */
  lookup(hostname: string): DomainDirectoryEntry | undefined | Promise<DomainDirectoryEntry | undefined> {
    if (this.#loaded && Date.now() - this.#checkedAt < this.#ttlMs) {
      this.#lookups += 1;
      return this.#hostnames.get(hostname);
    }
    return this.#refresh().then(() => {
      this.#lookups += 1;
      return this.#hostnames.get(hostname);
    });
  }

  /** A committed change of this process: takes effect at once. */
  apply(domain: TenantDomain, removed: boolean): void {
    this.#journal?.push({ domain, removed });
    this.#patch(domain, removed);
  }

  stats(): DomainDirectoryStats {
    return { hostnames: this.#hostnames.size, lookups: this.#lookups, queries: this.#queries, reloads: this.#reloads };
  }

  #patch(domain: TenantDomain, removed: boolean): void {
    if (removed) this.#hostnames.delete(domain.hostname);
    else this.#hostnames.set(domain.hostname, Object.freeze({ slug: domain.slug, verified: domain.verified }));
  }

  #refresh(): Promise<void> {
    this.#refreshing ??= this.#check().finally(() => {
      this.#refreshing = undefined;
    });
    return this.#refreshing;
  }

  async #check(): Promise<void> {
    const startedAt = Date.now();
    this.#journal = [];
    try {
      this.#queries += 1;
      const snapshot = await this.#read(this.#generation);
      const journal = this.#journal;
      if (snapshot.domains !== undefined) {
        this.#reloads += 1;
        const hostnames = new Map<string, DomainDirectoryEntry>();
        for (const row of snapshot.domains) hostnames.set(row.hostname, Object.freeze({ slug: row.slug, verified: row.verified }));
        this.#hostnames = hostnames;
        for (const change of journal) this.#patch(change.domain, change.removed);
      }
      // A change of this process that the read may predate is replayed over
      // it, so the copy mixes two moments: the next check reads it whole.
      this.#generation = journal.length > 0 && snapshot.domains !== undefined ? '' : snapshot.generation;
      this.#loaded = true;
      this.#checkedAt = startedAt;
    } finally {
      this.#journal = undefined;
    }
  }
}
