import { quoteIdent } from '../naming/quote-ident';
import { TENANT_STATUSES, type TenantRecord, type TenantStatus } from './tenant-record';

/** Something that runs SQL with parameters and returns rows: a DataSource, EntityManager or QueryRunner. */
export interface SqlRunner {
  query(sql: string, parameters?: unknown[]): Promise<any>;
}

interface TenantRow {
  slug: string;
  schema_name: string;
  name: string;
  status: TenantStatus;
  created_at: Date;
}

const COLUMNS = 'slug, schema_name, name, status, created_at';

/**
 * The tenant registry: one table in the shared schema (default
 * `"public"."tenants"`) with a row per tenant. All SQL is parameterised and
 * every identifier quoted.
 */
export class TenantRegistry {
  readonly #table: string;
  /** Names freed by dropTenant, and when: `createTenant` waits `slugReuseDelayMs` before taking one again. */
  readonly #dropped: string;

  constructor(sharedSchema: string, tableName: string) {
    this.#table = `${quoteIdent(sharedSchema)}.${quoteIdent(tableName)}`;
    this.#dropped = `${quoteIdent(sharedSchema)}.${quoteIdent(`${tableName}_dropped`)}`;
  }

  /** Creates the registry table if it is missing. Run it under the initialisation lock. */
  async ensureTable(sql: SqlRunner): Promise<void> {
    const statuses = TENANT_STATUSES.map((s) => `'${s}'`).join(', ');
    await sql.query(
      `CREATE TABLE IF NOT EXISTS ${this.#table} (
        slug text PRIMARY KEY,
        schema_name text NOT NULL UNIQUE,
        name text NOT NULL,
        status text NOT NULL DEFAULT 'active' CHECK (status IN (${statuses})),
        created_at timestamptz NOT NULL DEFAULT now()
      )`,
    );
    await sql.query(
      `CREATE TABLE IF NOT EXISTS ${this.#dropped} (
        schema_name text PRIMARY KEY,
        slug text NOT NULL,
        dropped_at timestamptz NOT NULL DEFAULT now()
      )`,
    );
  }

  /** Milliseconds since the schema name was last freed by a drop, when that is less than `withinMs` ago. */
  async droppedWithin(sql: SqlRunner, schemaName: string, withinMs: number): Promise<number | undefined> {
    const rows: Array<{ ago: number }> = await sql.query(
      `SELECT (extract(epoch FROM clock_timestamp() - dropped_at) * 1000)::float8 AS ago FROM ${this.#dropped}
        WHERE schema_name = $1 AND dropped_at > clock_timestamp() - $2::float8 * interval '1 millisecond'`,
      [schemaName, withinMs],
    );
    return rows.length === 0 ? undefined : Math.max(0, rows[0]!.ago);
  }

  async find(sql: SqlRunner, slug: string): Promise<TenantRecord | undefined> {
    const rows: TenantRow[] = await sql.query(`SELECT ${COLUMNS} FROM ${this.#table} WHERE slug = $1`, [slug]);
    return rows.length === 0 ? undefined : toRecord(rows[0]!);
  }

  /** The tenant holding `slug` or `schemaName`, if any (two slugs can map to one schema name). */
  async findConflict(sql: SqlRunner, slug: string, schemaName: string): Promise<TenantRecord | undefined> {
    const rows: TenantRow[] = await sql.query(
      `SELECT ${COLUMNS} FROM ${this.#table} WHERE slug = $1 OR schema_name = $2 LIMIT 1`,
      [slug, schemaName],
    );
    return rows.length === 0 ? undefined : toRecord(rows[0]!);
  }

  /** The tenants whose schema is one of `schemaNames`. */
  async holdingSchemas(sql: SqlRunner, schemaNames: readonly string[]): Promise<TenantRecord[]> {
    const rows: TenantRow[] = await sql.query(`SELECT ${COLUMNS} FROM ${this.#table} WHERE schema_name = ANY($1::text[]) ORDER BY slug`, [schemaNames]);
    return rows.map(toRecord);
  }

  /** The records of `slugs` that exist, ordered by slug. */
  async findMany(sql: SqlRunner, slugs: readonly string[]): Promise<TenantRecord[]> {
    const rows: TenantRow[] = await sql.query(`SELECT ${COLUMNS} FROM ${this.#table} WHERE slug = ANY($1::text[]) ORDER BY slug`, [slugs]);
    return rows.map(toRecord);
  }

  async list(sql: SqlRunner): Promise<TenantRecord[]> {
    const rows: TenantRow[] = await sql.query(`SELECT ${COLUMNS} FROM ${this.#table} ORDER BY slug`);
    return rows.map(toRecord);
  }

  async insert(sql: SqlRunner, tenant: Omit<TenantRecord, 'createdAt'>): Promise<TenantRecord> {
    const rows: TenantRow[] = await sql.query(
      `INSERT INTO ${this.#table} (slug, schema_name, name, status) VALUES ($1, $2, $3, $4) RETURNING ${COLUMNS}`,
      [tenant.slug, tenant.schemaName, tenant.name, tenant.status],
    );
    return toRecord(rows[0]!);
  }

  /** Sets the tenant's status and returns the updated record. */
  async setStatus(sql: SqlRunner, slug: string, status: TenantStatus): Promise<TenantRecord> {
    // Wrapped in a SELECT: TypeORM returns [rows, count] for a bare UPDATE.
    const rows: TenantRow[] = await sql.query(
      `WITH updated AS (UPDATE ${this.#table} SET status = $2 WHERE slug = $1 RETURNING ${COLUMNS}) SELECT * FROM updated`,
      [slug, status],
    );
    return toRecord(rows[0]!);
  }

  /**
   * Deletes a dropped tenant's row and notes when its schema name was freed
   * (older notes are pruned). The time is the clock's, not the
   * transaction's start: the drop's transaction may have waited on locks
   * (up to lockTimeoutMs), and the delay counts from when the name is freed.
   * Run it last before the commit.
   */
  async deleteDropped(sql: SqlRunner, slug: string, schemaName: string): Promise<void> {
    await sql.query(`DELETE FROM ${this.#table} WHERE slug = $1`, [slug]);
    await sql.query(`DELETE FROM ${this.#dropped} WHERE dropped_at < clock_timestamp() - interval '1 day'`);
    await sql.query(
      `INSERT INTO ${this.#dropped} (schema_name, slug, dropped_at) VALUES ($1, $2, clock_timestamp())
       ON CONFLICT (schema_name) DO UPDATE SET slug = EXCLUDED.slug, dropped_at = EXCLUDED.dropped_at`,
      [schemaName, slug],
    );
  }
}

function toRecord(row: TenantRow): TenantRecord {
  return Object.freeze({
    slug: row.slug,
    schemaName: row.schema_name,
    name: row.name,
    status: row.status,
    createdAt: row.created_at,
  });
}
