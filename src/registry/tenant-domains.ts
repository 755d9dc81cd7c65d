import type { QueryRunner } from 'typeorm';
import { InvalidArgumentError, InvalidTenantStateError, TenantDomainNotFoundError, TenantDomainTakenError, TenantNotFoundError } from '../errors';
import type { TenantEvents } from '../manager/tenant-events';
import { normaliseHostname } from '../naming/hostname';
import { quoteIdent } from '../naming/quote-ident';
import type { SqlRunner } from './tenant-registry';
import type { TenantStatus } from './tenant-record';
import type { TenantServer } from '../data-source/tenant-server';

/** One row of the domains registry: a hostname and the tenant it serves. */
export interface TenantDomain {
  /** Normalised: lower case, no port, no trailing dot, punycode (see `normaliseHostname`). */
  readonly hostname: string;
  /** The tenant the hostname belongs to. */
  readonly slug: string;
  /** The tenant's main hostname (for links and redirects); at most one per tenant. */
  readonly primary: boolean;
  /** Whether the customer proved they control the name; `fromDomain()` serves only verified hostnames by default. */
  readonly verified: boolean;
  readonly createdAt: Date;
}

/** What `addTenantDomain` takes besides the slug and hostname. */
export interface AddTenantDomainOptions {
  /**
   * Make it the tenant's primary hostname (the previous primary stops being
   * one, in the same transaction). Default: true when the tenant has no
   * primary hostname yet, else false.
   */
  readonly primary?: boolean;
  /** Mark it verified at once (you checked the DNS record yourself). Default false. */
  readonly verified?: boolean;
}

/** What `updateTenantDomain` changes; what is left out stays. */
export interface UpdateTenantDomainOptions {
  /** `true` makes it the tenant's primary hostname (the previous one stops being primary); `false` leaves the tenant without one. */
  readonly primary?: boolean;
  readonly verified?: boolean;
}

/** @internal The domains registry as `fromDomain()` keeps it in memory: changed since the generation it had, or not. */
export interface TenantDomainSnapshot {
  /** Bumped by every committed change of the domains registry. */
  readonly generation: string;
  /** Every hostname, when the generation differs from the one asked with; `undefined` when it is the same. */
  readonly domains: ReadonlyArray<Pick<TenantDomain, 'hostname' | 'slug' | 'verified'>> | undefined;
}

/** @internal The manager's method that `fromDomain()` reads the registry with (a symbol: not part of the manager's API). */
export const DOMAIN_SNAPSHOT: unique symbol = Symbol('typeorm-tenants.domainSnapshot');

/** What the domains registry needs from the manager. */
export interface TenantDomainsAccess {
  /** The home server, whose shared schema holds the registry (available once the manager is initialised). */
  homeServer(): TenantServer;
  readonly events: TenantEvents;
}

interface DomainRow {
  hostname: string;
  slug: string;
  is_primary: boolean;
  verified: boolean;
  created_at: Date;
}

const COLUMNS = 'hostname, slug, is_primary, verified, created_at';

/**
 * The domains registry: a table in the shared schema next to the tenant
 * registry (default `"public"."tenants_domains"`), a row per hostname. A
 * hostname belongs to one tenant (primary key, compared normalised); a
 * tenant has any number, at most one of them primary (an exclusion
 * constraint: the database enforces it); rows go with their tenant's
 * registry row (foreign key). A one-row table (`tenants_domain_gen`) counts
 * the changes, so that `fromDomain()` in every process can tell with one
 * cheap query whether its in-memory copy is still current.
 *
 * Changes run in a transaction holding the hostname's advisory lock (two
 * tenants adding one hostname: one wins, the other gets
 * `TenantDomainTakenError`), lock the tenant's registry row (so they
 * serialise with the tenant's status changes and drop, not with its
 * migrations) and bump the generation last.
 */
export class TenantDomains {
  readonly #table: string;
  readonly #generation: string;
  readonly #registry: string;
  readonly #access: TenantDomainsAccess;

  constructor(sharedSchema: string, registryTable: string, access: TenantDomainsAccess) {
    const schema = quoteIdent(sharedSchema);
    this.#table = `${schema}.${quoteIdent(`${registryTable}_domains`)}`;
    // At most 11 characters after the registry name, as "_migrations": registryTable is limited to fit.
    this.#generation = `${schema}.${quoteIdent(`${registryTable}_domain_gen`)}`;
    this.#registry = `${schema}.${quoteIdent(registryTable)}`;
    this.#access = access;
  }

  /** Runs `work` in a transaction of the shared DataSource holding the advisory lock `lockName`. */
  #inLockedTransaction<T>(lockName: string, work: (runner: QueryRunner & SqlRunner) => Promise<T>): Promise<T> {
    const server = this.#access.homeServer();
    return server.inLockedTransaction(server.sharedDataSource, lockName, work);
  }

  /** Creates the tables if they are missing (after the tenant registry). Run it under the initialisation lock. */
  async ensureTable(sql: SqlRunner): Promise<void> {
    // Every constraint is declared in the table, so PostgreSQL names it (never truncating into another's name) and
    // CREATE TABLE IF NOT EXISTS covers it. The exclusion constraint is a partial unique index on slug: one primary
    // per tenant. UNIQUE (slug, hostname) adds nothing hostname's key does not; it is the index by tenant, for
    // listing a tenant's domains and freeing them when it is dropped.
    await sql.query(
      `CREATE TABLE IF NOT EXISTS ${this.#table} (
        hostname text PRIMARY KEY CHECK (hostname <> '' AND hostname = lower(hostname) AND length(hostname) <= 253),
        slug text NOT NULL REFERENCES ${this.#registry} (slug) ON DELETE CASCADE ON UPDATE CASCADE,
        is_primary boolean NOT NULL DEFAULT false,
        verified boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (slug, hostname),
        EXCLUDE USING btree (slug WITH =) WHERE (is_primary)
      )`,
    );
    await sql.query(
      `CREATE TABLE IF NOT EXISTS ${this.#generation} (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        generation bigint NOT NULL DEFAULT 0
      )`,
    );
    await sql.query(`INSERT INTO ${this.#generation} (singleton, generation) VALUES (true, 0) ON CONFLICT (singleton) DO NOTHING`);
  }

  /** Adds `hostname` to the tenant `slug` (a valid slug); see the manager's `addTenantDomain`. */
  async add(slug: string, hostname: unknown, options: AddTenantDomainOptions): Promise<TenantDomain> {
    const host = normaliseHostname(hostname);
    const primary = optionalBoolean(options?.primary, 'primary');
    const verified = optionalBoolean(options?.verified, 'verified');
    const changes = await this.#inLockedTransaction(`domain:${host}`, async (runner) => {
      const status = await this.#lockTenant(runner, slug);
      if (status === undefined) throw new TenantNotFoundError(slug);
      if (status === 'dropping') {
        throw new InvalidTenantStateError(slug, status, 'addTenantDomain()', 'Its domains are freed when the drop completes; add the hostname to another tenant then.');
      }
      const existing = await this.#find(runner, host);
      if (existing !== undefined && existing.slug !== slug) throw new TenantDomainTakenError(host, slug, existing.slug);
      if (existing !== undefined) {
        // Adding again what the tenant has: the flags asked for are set, none is taken away.
        return this.#change(runner, existing, { primary: primary === true ? true : undefined, verified: verified === true ? true : undefined });
      }
      const makePrimary = primary ?? (await this.#primaryOf(runner, slug)) === undefined;
      const demoted = makePrimary ? await this.#demote(runner, slug) : [];
      const rows: DomainRow[] = await runner.query(
        `INSERT INTO ${this.#table} (hostname, slug, is_primary, verified) VALUES ($1, $2, $3, $4)
         ON CONFLICT (hostname) DO NOTHING RETURNING ${COLUMNS}`,
        [host, slug, makePrimary, verified === true],
      );
      if (rows.length === 0) {
        // Written past the hostname's lock (by hand, say): whoever holds it now.
        const holder = await this.#find(runner, host);
        throw new TenantDomainTakenError(host, slug, holder?.slug ?? 'unknown');
      }
      await this.#bump(runner);
      return { domain: toDomain(rows[0]!), added: true, updated: demoted };
    });
    this.#announce(changes);
    return changes.domain;
  }

  /** Changes the flags of `hostname`; see the manager's `updateTenantDomain`. */
  async update(hostname: unknown, options: UpdateTenantDomainOptions): Promise<TenantDomain> {
    const host = normaliseHostname(hostname);
    const primary = optionalBoolean(options?.primary, 'primary');
    const verified = optionalBoolean(options?.verified, 'verified');
    const changes = await this.#inLockedTransaction(`domain:${host}`, async (runner) => {
      const existing = await this.#find(runner, host);
      if (existing === undefined) throw new TenantDomainNotFoundError(host);
      // A drop of the tenant that committed meanwhile freed the hostname.
      if ((await this.#lockTenant(runner, existing.slug)) === undefined) throw new TenantDomainNotFoundError(host);
      return this.#change(runner, existing, { primary, verified });
    });
    this.#announce(changes);
    return changes.domain;
  }

  /** Removes `hostname` from its tenant and returns what it was; see the manager's `removeTenantDomain`. */
  async remove(hostname: unknown): Promise<TenantDomain> {
    const host = normaliseHostname(hostname);
    const removed = await this.#inLockedTransaction(`domain:${host}`, async (runner) => {
      const rows: DomainRow[] = await runner.query(
        `WITH removed AS (DELETE FROM ${this.#table} WHERE hostname = $1 RETURNING ${COLUMNS}) SELECT * FROM removed`,
        [host],
      );
      if (rows.length === 0) throw new TenantDomainNotFoundError(host);
      await this.#bump(runner);
      return toDomain(rows[0]!);
    });
    this.#access.events.emit('domain-removed', { slug: removed.slug, domain: removed });
    return removed;
  }

  /**
   * The domains of the tenant `slug` (primary first, then by hostname), or
   * of every tenant (by slug) when `slug` is undefined.
   *
   * @throws TenantNotFoundError when `slug` names no tenant.
   */
  async list(slug: string | undefined): Promise<TenantDomain[]> {
    const sql = this.#access.homeServer().sharedDataSource;
    if (slug === undefined) {
      const rows: DomainRow[] = await sql.query(`SELECT ${COLUMNS} FROM ${this.#table} ORDER BY slug COLLATE "C", is_primary DESC, hostname COLLATE "C"`);
      return rows.map(toDomain);
    }
    // One query tells an unknown tenant (no row) from one without domains (a row of nulls).
    const rows: Array<{ [K in keyof DomainRow]: DomainRow[K] | null }> = await sql.query(
      `SELECT d.hostname, t.slug, d.is_primary, d.verified, d.created_at
         FROM ${this.#registry} t LEFT JOIN ${this.#table} d ON d.slug = t.slug
        WHERE t.slug = $1 ORDER BY d.is_primary DESC, d.hostname COLLATE "C"`,
      [slug],
    );
    if (rows.length === 0) throw new TenantNotFoundError(slug);
    return rows.filter((row): row is DomainRow => row.hostname !== null).map(toDomain);
  }

  /** The domain of `hostname` (normalised first), or `undefined` when no tenant has it. */
  async find(hostname: unknown): Promise<TenantDomain | undefined> {
    return this.#find(this.#access.homeServer().sharedDataSource, normaliseHostname(hostname));
  }

  /**
   * Inside the transaction that drops the tenant `slug`: deletes its domains
   * (freeing the hostnames for other tenants) and returns them. Locks the
   * tenant's row first, so a domain added concurrently is either committed
   * before (and freed here) or refused after (the tenant is gone). The
   * caller announces them once the drop has committed.
   */
  async freeTenant(runner: SqlRunner, slug: string): Promise<TenantDomain[]> {
    await runner.query(`SELECT 1 FROM ${this.#registry} WHERE slug = $1 FOR UPDATE`, [slug]);
    const rows: DomainRow[] = await runner.query(
      `WITH freed AS (DELETE FROM ${this.#table} WHERE slug = $1 RETURNING ${COLUMNS}) SELECT * FROM freed ORDER BY hostname COLLATE "C"`,
      [slug],
    );
    if (rows.length > 0) await this.#bump(runner);
    return rows.map(toDomain);
  }

  /** @internal Every hostname, unless the generation is still `since`; one statement, so rows and generation agree. */
  async snapshot(since: string): Promise<TenantDomainSnapshot> {
    // The uncorrelated subquery is a one-time filter: when the generation is
    // unchanged the domains table is not even scanned (a join on the same
    // condition would read every row and discard it).
    const rows: Array<{ generation: string | null; hostname: string | null; slug: string; verified: boolean }> = await this.#access
      .homeServer()
      .sharedDataSource.query(
        `SELECT generation::text AS generation, NULL::text AS hostname, NULL::text AS slug, NULL::boolean AS verified FROM ${this.#generation}
         UNION ALL
         SELECT NULL, hostname, slug, verified FROM ${this.#table} WHERE (SELECT generation::text FROM ${this.#generation}) <> $1`,
        [since],
      );
    const generation = rows.find((row) => row.generation !== null)?.generation ?? '0';
    if (generation === since) return { generation, domains: undefined };
    const domains: Array<Pick<TenantDomain, 'hostname' | 'slug' | 'verified'>> = [];
    for (const row of rows) if (row.hostname !== null) domains.push({ hostname: row.hostname, slug: row.slug, verified: row.verified });
    return { generation, domains };
  }

  /**
   * Locks the tenant's registry row and returns its status, or `undefined`
   * when there is no such tenant. FOR NO KEY UPDATE: the tenant's status
   * changes and its drop wait for the change, its migrations (whose ledger
   * rows only share-lock the key) do not.
   */
  async #lockTenant(runner: SqlRunner, slug: string): Promise<TenantStatus | undefined> {
    const rows: Array<{ status: TenantStatus }> = await runner.query(`SELECT status FROM ${this.#registry} WHERE slug = $1 FOR NO KEY UPDATE`, [slug]);
    return rows[0]?.status;
  }

  /** Sets the flags given (undefined: unchanged) and reports what changed. */
  async #change(
    runner: SqlRunner,
    existing: TenantDomain,
    flags: { readonly primary: boolean | undefined; readonly verified: boolean | undefined },
  ): Promise<DomainChanges> {
    const primary = flags.primary ?? existing.primary;
    const verified = flags.verified ?? existing.verified;
    if (primary === existing.primary && verified === existing.verified) return { domain: existing, added: false, updated: [] };
    const demoted = primary && !existing.primary ? await this.#demote(runner, existing.slug) : [];
    const rows: DomainRow[] = await runner.query(
      `WITH updated AS (UPDATE ${this.#table} SET is_primary = $2, verified = $3 WHERE hostname = $1 RETURNING ${COLUMNS}) SELECT * FROM updated`,
      [existing.hostname, primary, verified],
    );
    await this.#bump(runner);
    const domain = toDomain(rows[0]!);
    return { domain, added: false, updated: [...demoted, domain] };
  }

  /** The tenant's primary hostname stops being primary; returns it (none or one). */
  async #demote(runner: SqlRunner, slug: string): Promise<TenantDomain[]> {
    const rows: DomainRow[] = await runner.query(
      `WITH demoted AS (UPDATE ${this.#table} SET is_primary = false WHERE slug = $1 AND is_primary RETURNING ${COLUMNS}) SELECT * FROM demoted`,
      [slug],
    );
    return rows.map(toDomain);
  }

  async #primaryOf(sql: SqlRunner, slug: string): Promise<string | undefined> {
    const rows: Array<{ hostname: string }> = await sql.query(`SELECT hostname FROM ${this.#table} WHERE slug = $1 AND is_primary`, [slug]);
    return rows[0]?.hostname;
  }

  async #find(sql: SqlRunner, hostname: string): Promise<TenantDomain | undefined> {
    const rows: DomainRow[] = await sql.query(`SELECT ${COLUMNS} FROM ${this.#table} WHERE hostname = $1`, [hostname]);
    return rows.length === 0 ? undefined : toDomain(rows[0]!);
  }

  /** Last in each changing transaction (the row is a lock every change takes: nothing waits while holding it). */
  async #bump(runner: SqlRunner): Promise<void> {
    await runner.query(`UPDATE ${this.#generation} SET generation = generation + 1`);
  }

  /** After the commit: the events, so resolvers in this process see the change at once. */
  #announce(changes: DomainChanges): void {
    if (changes.added) this.#access.events.emit('domain-added', { slug: changes.domain.slug, domain: changes.domain });
    for (const domain of changes.updated) this.#access.events.emit('domain-updated', { slug: domain.slug, domain });
  }
}

interface DomainChanges {
  /** The domain as it is now. */
  readonly domain: TenantDomain;
  readonly added: boolean;
  /** Domains whose flags changed, in the order they changed (a demoted primary first). */
  readonly updated: readonly TenantDomain[];
}

function optionalBoolean(value: unknown, name: string): boolean | undefined {
  if (value === undefined || typeof value === 'boolean') return value;
  throw new InvalidArgumentError(`Option "${name}" must be true or false; got ${JSON.stringify(value) ?? String(value)}.`);
}

function toDomain(row: DomainRow): TenantDomain {
  return Object.freeze({
    hostname: row.hostname,
    slug: row.slug,
    primary: row.is_primary,
    verified: row.verified,
    createdAt: row.created_at,
  });
}
