import { randomUUID } from 'node:crypto';
import { quoteIdent, quoteLiteral } from '../naming/quote-ident';
import { sqlStateOf } from '../errors';
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
  server: string | null;
  created_at: Date;
}

const COLUMNS = 'slug, schema_name, name, status, server, created_at';

/** How the registry table's comment begins; the registry's identity follows. */
const IDENTITY_PREFIX = 'typeorm-tenants registry ';

/**
 * The tenant registry: one table in the shared schema (default
 * `"public"."tenants"`) with a row per tenant. All SQL is parameterised and
 * every identifier quoted.
 */
export class TenantRegistry {
  readonly #table: string;
  /** The home server's name: a row whose `server` is NULL (made before tenants had servers) lives there. */
  readonly #home: string;
  /** Names freed by dropTenant, and when: `createTenant` waits `slugReuseDelayMs` before taking one again. */
  readonly #dropped: string;

  constructor(sharedSchema: string, tableName: string, homeServer: string) {
    this.#home = homeServer;
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
        server text,
        created_at timestamptz NOT NULL DEFAULT now()
      )`,
    );
    // Registries made before tenants had servers: their rows are on the home server (NULL).
    await sql.query(`ALTER TABLE ${this.#table} ADD COLUMN IF NOT EXISTS server text`);
    // The registry's identity, in its table's comment: schemas it marks on other servers name it.
    const [{ comment }] = (await sql.query(`SELECT obj_description($1::regclass, 'pg_class') AS comment`, [this.#table])) as Array<{ comment: string | null }>;
    if (comment === null) {
      // Only the table's owner may comment on it: a role that is not keeps a derived identity (see identity()).
      await sql.query('SAVEPOINT typeorm_tenants_identity');
      try {
        await sql.query(`COMMENT ON TABLE ${this.#table} IS ${quoteLiteral(`${IDENTITY_PREFIX}${randomUUID()}`)}`);
        await sql.query('RELEASE SAVEPOINT typeorm_tenants_identity');
      } catch (error) {
        if (sqlStateOf(error) !== '42501') throw error;
        await sql.query('ROLLBACK TO SAVEPOINT typeorm_tenants_identity');
      }
    }
    await sql.query(
      `CREATE TABLE IF NOT EXISTS ${this.#dropped} (
        schema_name text PRIMARY KEY,
        slug text NOT NULL,
        dropped_at timestamptz NOT NULL DEFAULT now()
      )`,
    );
  }

  /**
   * The registry's identity: a random id made with its table (in the
   * table's comment; where the connecting role may not comment on it, the
   * database's and the table's object ids), so that schemas it marks on a
   * server it shares with another registry are told apart. `undefined`
   * before `ensureTable`.
   */
  async identity(sql: SqlRunner): Promise<string | undefined> {
    const [row] = (await sql.query(
      `SELECT obj_description(to_regclass($1), 'pg_class') AS comment, to_regclass($1)::oid::text AS oid,
              (SELECT oid::text FROM pg_database WHERE datname = current_database()) AS database`,
      [this.#table],
    )) as Array<{ comment: string | null; oid: string | null; database: string }>;
    const comment = row?.comment;
    if (comment?.startsWith(IDENTITY_PREFIX) === true) return comment.slice(IDENTITY_PREFIX.length);
    // A registry its owner could not comment on: the database's and the table's object ids (unique on the home server).
    return row?.oid === null || row?.oid === undefined ? undefined : `oid-${row.database}-${row.oid}`;
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
    return rows.length === 0 ? undefined : this.#toRecord(rows[0]!);
  }

  /**
   * The tenant's record, read `FOR SHARE`: a change of the row that is
   * written but not committed (a move switching the tenant's server) is
   * waited for, up to the connection's `lock_timeout`.
   */
  async findCommitted(sql: SqlRunner, slug: string): Promise<TenantRecord | undefined> {
    const rows: TenantRow[] = await sql.query(`SELECT ${COLUMNS} FROM ${this.#table} WHERE slug = $1 FOR SHARE`, [slug]);
    return rows.length === 0 ? undefined : this.#toRecord(rows[0]!);
  }

  /** The tenant holding `slug` or `schemaName`, if any (two slugs can map to one schema name). */
  async findConflict(sql: SqlRunner, slug: string, schemaName: string): Promise<TenantRecord | undefined> {
    const rows: TenantRow[] = await sql.query(
      `SELECT ${COLUMNS} FROM ${this.#table} WHERE slug = $1 OR schema_name = $2 LIMIT 1`,
      [slug, schemaName],
    );
    return rows.length === 0 ? undefined : this.#toRecord(rows[0]!);
  }

  /** The tenants whose schema is one of `schemaNames`. */
  async holdingSchemas(sql: SqlRunner, schemaNames: readonly string[]): Promise<TenantRecord[]> {
    const rows: TenantRow[] = await sql.query(`SELECT ${COLUMNS} FROM ${this.#table} WHERE schema_name = ANY($1::text[]) ORDER BY slug`, [schemaNames]);
    return rows.map((row) => this.#toRecord(row));
  }

  /** The records of `slugs` that exist, ordered by slug. */
  async findMany(sql: SqlRunner, slugs: readonly string[]): Promise<TenantRecord[]> {
    const rows: TenantRow[] = await sql.query(`SELECT ${COLUMNS} FROM ${this.#table} WHERE slug = ANY($1::text[]) ORDER BY slug`, [slugs]);
    return rows.map((row) => this.#toRecord(row));
  }

  async list(sql: SqlRunner): Promise<TenantRecord[]> {
    const rows: TenantRow[] = await sql.query(`SELECT ${COLUMNS} FROM ${this.#table} ORDER BY slug`);
    return rows.map((row) => this.#toRecord(row));
  }

  /** The number of tenants (any status) on each server that has one; NULL rows count for the home server. */
  async countByServer(sql: SqlRunner): Promise<Map<string, number>> {
    const rows: Array<{ server: string; tenants: number }> = await sql.query(
      `SELECT coalesce(server, $1) AS server, count(*)::int AS tenants FROM ${this.#table} GROUP BY 1`,
      [this.#home],
    );
    return new Map(rows.map((row) => [row.server, row.tenants]));
  }

  async insert(sql: SqlRunner, tenant: Omit<TenantRecord, 'createdAt'>): Promise<TenantRecord> {
    const rows: TenantRow[] = await sql.query(
      `INSERT INTO ${this.#table} (slug, schema_name, name, status, server) VALUES ($1, $2, $3, $4, $5) RETURNING ${COLUMNS}`,
      // The home server is written NULL, so that renaming it (or going from `dataSource` to `servers`) keeps its tenants.
      [tenant.slug, tenant.schemaName, tenant.name, tenant.status, tenant.server === this.#home ? null : tenant.server],
    );
    return this.#toRecord(rows[0]!);
  }

  /** Sets the tenant's status and returns the updated record. */
  async setStatus(sql: SqlRunner, slug: string, status: TenantStatus): Promise<TenantRecord> {
    // Wrapped in a SELECT: TypeORM returns [rows, count] for a bare UPDATE.
    const rows: TenantRow[] = await sql.query(
      `WITH updated AS (UPDATE ${this.#table} SET status = $2 WHERE slug = $1 RETURNING ${COLUMNS}) SELECT * FROM updated`,
      [slug, status],
    );
    return this.#toRecord(rows[0]!);
  }

  /** Records that the tenant now lives on `server` (NULL for the home server) and returns the updated record. */
  async setServer(sql: SqlRunner, slug: string, server: string): Promise<TenantRecord> {
    const rows: TenantRow[] = await sql.query(
      `WITH updated AS (UPDATE ${this.#table} SET server = $2 WHERE slug = $1 RETURNING ${COLUMNS}) SELECT * FROM updated`,
      [slug, server === this.#home ? null : server],
    );
    return this.#toRecord(rows[0]!);
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

  #toRecord(row: TenantRow): TenantRecord {
    return Object.freeze({
      slug: row.slug,
      schemaName: row.schema_name,
      name: row.name,
      status: row.status,
      server: row.server ?? this.#home,
      createdAt: row.created_at,
    });
  }
}
