import { quoteIdent } from '../naming/quote-ident';
import type { SqlRunner } from '../registry/tenant-registry';
import type { TenantStatus } from '../registry/tenant-record';

/** A tenant in the scope of a fleet run, with what the ledger says of it. */
export interface LedgerScopeTenant {
  readonly slug: string;
  readonly schemaName: string;
  readonly status: TenantStatus;
  /** The server the tenant lives on. */
  readonly server: string;
  /** True when the ledger lacks at least one of the known migrations for this tenant. */
  readonly pending: boolean;
}

/** Applied migrations of one tenant, as the ledger holds them. */
export interface LedgerTenantEntry {
  readonly slug: string;
  readonly schemaName: string;
  readonly status: TenantStatus;
  readonly applied: string[];
}

/**
 * The fleet's migration ledger: one table in the shared schema with a row per
 * (tenant, applied migration), so that "which tenants have something pending"
 * is one indexed query, not one query per tenant schema. Each tenant's own
 * `migrations` table stays TypeORM's truth; the ledger is copied from it in
 * the same transaction as every change to it (`syncTenant`), and
 * `reconcile` rebuilds it from those tables.
 */
export class MigrationLedger {
  readonly #table: string;
  readonly #registry: string;
  readonly #migrationsTable: string;
  /** The home server's name, for registry rows whose `server` is NULL. */
  readonly #home: string;

  constructor(sharedSchema: string, registryTable: string, migrationsTableName: string, homeServer: string) {
    this.#home = homeServer;
    this.#table = `${quoteIdent(sharedSchema)}.${quoteIdent(`${registryTable}_migrations`)}`;
    this.#registry = `${quoteIdent(sharedSchema)}.${quoteIdent(registryTable)}`;
    this.#migrationsTable = quoteIdent(migrationsTableName);
  }

  /** Creates the ledger table if it is missing (after the registry table). */
  async ensureTable(sql: SqlRunner): Promise<void> {
    await sql.query(
      `CREATE TABLE IF NOT EXISTS ${this.#table} (
        slug text NOT NULL REFERENCES ${this.#registry} (slug) ON DELETE CASCADE ON UPDATE CASCADE,
        name text NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (slug, name)
      )`,
    );
  }

  /**
   * The tenants in a fleet run's scope, in one query, ordered by slug in byte
   * order (`COLLATE "C"`, the order of JavaScript's sort): the tenants among
   * `slugs`, whatever their status, when given; else those with one of
   * `statuses`. Each comes with whether it misses one of `known`, decided
   * from a per-tenant count of its ledger rows, never by shipping every
   * tenant's migration names.
   */
  async scope(
    sql: SqlRunner,
    known: readonly string[],
    statuses: readonly TenantStatus[],
    slugs?: readonly string[],
  ): Promise<LedgerScopeTenant[]> {
    const rows: Array<{ slug: string; schema_name: string; status: TenantStatus; server: string; pending: boolean }> = await sql.query(
      // Counting the ledger once, grouped, then joining beats a count per
      // tenant: 16 ms against 26 ms of execution for 10,000 tenants. The
      // parameters are known when the statement is planned, so a named scope
      // reads only its tenants' ledger rows through the primary key.
      `SELECT t.slug, t.schema_name, t.status, coalesce(t.server, $4) AS server, coalesce(l.applied, 0) < cardinality($1::text[]) AS pending
         FROM ${this.#registry} t
         LEFT JOIN (SELECT slug, count(*) AS applied FROM ${this.#table}
                     WHERE name = ANY($1::text[]) AND ($3::text[] IS NULL OR slug = ANY($3::text[]))
                     GROUP BY slug) l ON l.slug = t.slug
        WHERE CASE WHEN $3::text[] IS NULL THEN t.status = ANY($2::text[]) ELSE t.slug = ANY($3::text[]) END
        ORDER BY t.slug COLLATE "C"`,
      [known, statuses, slugs ?? null, this.#home],
    );
    return rows.map((r) => ({ slug: r.slug, schemaName: r.schema_name, status: r.status, server: r.server, pending: r.pending }));
  }

  /** Every tenant (among `slugs`, when given) with its applied migrations, by slug. */
  async entries(sql: SqlRunner, slugs?: readonly string[]): Promise<LedgerTenantEntry[]> {
    const rows: Array<{ slug: string; schema_name: string; status: TenantStatus; applied: string[] }> = await sql.query(
      `SELECT t.slug, t.schema_name, t.status,
              coalesce(array_agg(l.name ORDER BY l.name) FILTER (WHERE l.name IS NOT NULL), '{}') AS applied
         FROM ${this.#registry} t LEFT JOIN ${this.#table} l ON l.slug = t.slug
        WHERE ($1::text[] IS NULL OR t.slug = ANY($1::text[]))
        GROUP BY t.slug, t.schema_name, t.status
        ORDER BY t.slug`,
      [slugs ?? null],
    );
    return rows.map((r) => ({ slug: r.slug, schemaName: r.schema_name, status: r.status, applied: r.applied }));
  }

  /**
   * Registered tenants with every one of `known` applied whose schema holds a
   * relation named like one of `tableNames` (one catalog query), at most
   * `limit`.
   */
  async upToDateTenantsHoldingTables(
    sql: SqlRunner,
    tableNames: readonly string[],
    known: readonly string[],
    limit = 5,
  ): Promise<Array<{ slug: string; table: string }>> {
    if (tableNames.length === 0) return [];
    return sql.query(
      `SELECT t.slug, c.relname AS "table" FROM ${this.#registry} t
         JOIN pg_namespace n ON n.nspname = t.schema_name
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
        WHERE c.relname = ANY($1::text[])
          AND (SELECT count(*) FROM ${this.#table} l WHERE l.slug = t.slug AND l.name = ANY($2::text[])) >= $3
        ORDER BY t.slug, c.relname LIMIT $4`,
      [tableNames, known, new Set(known).size, limit],
    );
  }

  /** True when the ledger lacks one of `known` for the tenant (one indexed query). */
  async isPending(sql: SqlRunner, slug: string, known: readonly string[]): Promise<boolean> {
    if (known.length === 0) return false;
    const [row] = (await sql.query(`SELECT count(*)::int AS applied FROM ${this.#table} WHERE slug = $1 AND name = ANY($2::text[])`, [
      slug,
      known,
    ])) as Array<{ applied: number }>;
    return row!.applied < new Set(known).size;
  }

  /**
   * Makes the tenant's ledger rows (on the home server, through `home`)
   * equal to the names in its own migrations table, read through `tenant`
   * (a runner of the tenant's server). On one server they are the same
   * runner and it is one statement pair in the transaction that changed
   * that table; across servers the names are read, then written.
   */
  async syncTenant(
    home: SqlRunner,
    slug: string,
    schemaName: string,
    options: { readonly newTenant?: boolean; readonly tenant?: SqlRunner } = {},
  ): Promise<void> {
    const migrations = `${quoteIdent(schemaName)}.${this.#migrationsTable}`;
    if (options.tenant !== undefined && options.tenant !== home) {
      const rows: Array<{ name: string }> = await options.tenant.query(`SELECT name FROM ${migrations}`);
      const names = rows.map((row) => row.name);
      if (options.newTenant !== true) await home.query(`DELETE FROM ${this.#table} WHERE slug = $1 AND NOT (name = ANY($2::text[]))`, [slug, names]);
      await home.query(`INSERT INTO ${this.#table} (slug, name) SELECT $1, unnest($2::text[]) ON CONFLICT (slug, name) DO NOTHING`, [slug, names]);
      return;
    }
    // A tenant created in this transaction has no ledger rows to remove.
    if (options.newTenant !== true) {
      await home.query(`DELETE FROM ${this.#table} WHERE slug = $1 AND name NOT IN (SELECT name FROM ${migrations})`, [slug]);
    }
    await home.query(
      `INSERT INTO ${this.#table} (slug, name) SELECT $1, name FROM ${migrations} ON CONFLICT (slug, name) DO NOTHING`,
      [slug],
    );
  }

}
