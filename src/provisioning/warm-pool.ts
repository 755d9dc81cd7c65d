import { randomBytes } from 'node:crypto';
import { createTenantSchema, distributeTenantSchema } from '../citus/distributed-schema';
import { applyPendingMigrations } from '../migration/schema-migrator';
import type { MigrationGuardMode } from '../migration/migration-guard';
import { LIBRARY_SCHEMA_PREFIX } from '../naming/tenant-slug';
import type { SearchPaths } from '../naming/search-paths';
import { quoteIdent } from '../naming/quote-ident';
import type { SqlRunner } from '../registry/tenant-registry';
import type { TenantServer } from '../data-source/tenant-server';

/** Settings of the warm pool of pre-provisioned tenant schemas. */
export interface WarmPoolOptions {
  /** Fully migrated spare schemas to keep ready. */
  readonly size: number;
}

/** What the warm pool needs from the manager. */
export interface WarmPoolAccess {
  /** The server the spares are made on (their list lives in its shared schema). */
  readonly server: TenantServer;
  readonly sharedSchema: string;
  /** The search path of each spare's migrations. */
  readonly searchPaths: SearchPaths;
  /** TypeORM's metadata table (`metadataTableName`, default `typeorm_metadata`), whose rows name their schema. */
  readonly metadataTableName: string;
  /** Names of the tenant migrations of the code. */
  readonly tenantMigrationNames: readonly string[];
  /** Keeps each spare's migrations inside its schema. */
  readonly migrationGuard: MigrationGuardMode;
  /** True while the manager serves; the refill loop stops when it turns false. */
  isServing(): boolean;
  /** Reports a failure of background work (refill). */
  onBackgroundError(error: Error): void;
}

/** Prefix of warm schemas: under the library's reserved prefix, so no tenant can take the name. */
export const WARM_SCHEMA_PREFIX = `${LIBRARY_SCHEMA_PREFIX}warm_`;

/**
 * A pool of spare, fully migrated tenant schemas (`typeorm_tenants_warm_<random>`),
 * listed in a table of the shared schema with the migrations each has.
 * `createTenant` claims one in its transaction (rename + registry row)
 * instead of running every migration inline; the pool refills in the
 * background, and refilling first brings stale spares up to date.
 */
export class WarmPool {
  readonly #access: WarmPoolAccess;
  readonly #size: number;
  readonly #table: string;
  #refill: Promise<void> | undefined;
  #again = false;

  constructor(access: WarmPoolAccess, options: WarmPoolOptions, registryTable: string) {
    this.#access = access;
    this.#size = options.size;
    this.#table = `${quoteIdent(access.sharedSchema)}.${quoteIdent(`${registryTable}_warm`)}`;
  }

  async ensureTable(sql: SqlRunner): Promise<void> {
    await sql.query(
      `CREATE TABLE IF NOT EXISTS ${this.#table} (
        schema_name text PRIMARY KEY,
        applied text[] NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      )`,
    );
  }

  /**
   * Inside the caller's creation transaction: takes one spare schema that has
   * every migration of the code, renames it to `schemaName` and returns true;
   * false when none is ready (the caller provisions inline).
   */
  async claim(runner: SqlRunner, schemaName: string): Promise<boolean> {
    // Wrapped in a SELECT: TypeORM returns [rows, count] for a bare DELETE.
    const rows: Array<{ schema_name: string }> = await runner.query(
      `WITH claimed AS (
         DELETE FROM ${this.#table} WHERE schema_name = (
           SELECT schema_name FROM ${this.#table} WHERE applied @> $1::text[]
            ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED
         ) RETURNING schema_name
       ) SELECT schema_name FROM claimed`,
      [this.#access.tenantMigrationNames],
    );
    const spare = rows[0]?.schema_name;
    if (spare === undefined) return false;
    await runner.query(`ALTER SCHEMA ${quoteIdent(spare)} RENAME TO ${quoteIdent(schemaName)}`);
    // TypeORM's metadata rows (views, generated columns) name the schema they were made in: the spare's until now.
    const metadata = `${quoteIdent(schemaName)}.${quoteIdent(this.#access.metadataTableName)}`;
    const [{ exists }] = (await runner.query(`SELECT to_regclass($1) IS NOT NULL AS exists`, [metadata])) as Array<{ exists: boolean }>;
    if (exists) await runner.query(`UPDATE ${metadata} SET "schema" = $2 WHERE "schema" = $1`, [spare, schemaName]);
    return true;
  }

  /** Spare schemas now, and how many of them have every migration of the code. */
  async count(sql: SqlRunner): Promise<{ total: number; ready: number }> {
    const [row]: Array<{ total: number; ready: number }> = await sql.query(
      `SELECT count(*)::int AS total, count(*) FILTER (WHERE applied @> $1::text[])::int AS ready FROM ${this.#table}`,
      [this.#access.tenantMigrationNames],
    );
    return row!;
  }

  /**
   * Brings stale spares up to date and creates new ones until `size` are
   * ready. Single-flight: a call during a refill makes it go round once more,
   * and both callers wait for that.
   */
  refill(): Promise<void> {
    if (this.#refill !== undefined) {
      this.#again = true;
      return this.#refill;
    }
    const run = async (): Promise<void> => {
      do {
        this.#again = false;
        await this.#refillOnce();
      } while (this.#again && this.#access.isServing());
    };
    this.#refill = run().finally(() => {
      this.#refill = undefined;
    });
    return this.#refill;
  }

  /** Starts a refill in the background; failures go to `onBackgroundError`. */
  refillInBackground(): void {
    this.refill().catch((error: unknown) =>
      this.#access.onBackgroundError(new Error(`Refilling the warm pool failed: ${String(error)}`, { cause: error })),
    );
  }

  /** Waits for a refill in progress, if any (failures are reported, not thrown here). */
  async settled(): Promise<void> {
    await this.#refill?.catch(() => undefined);
  }

  async #refillOnce(): Promise<void> {
    const access = this.#access;
    const known = access.tenantMigrationNames;
    const stale: Array<{ schema_name: string }> = await access.server.sharedDataSource.query(
      `SELECT schema_name FROM ${this.#table} WHERE NOT applied @> $1::text[] ORDER BY created_at`,
      [known],
    );
    for (const { schema_name: schemaName } of stale) {
      if (!access.isServing()) return;
      await this.#migrateSpare(schemaName);
    }
    while (access.isServing() && (await this.#createSpare())) {
      // one more spare made; go round until the pool is full
    }
  }

  /**
   * Creates one spare unless the pool is full, and says whether it did. The
   * count and the creation happen under one advisory lock per warm table, so
   * processes refilling the same pool at once never overshoot its size.
   */
  async #createSpare(): Promise<boolean> {
    const access = this.#access;
    const schemaName = `${WARM_SCHEMA_PREFIX}${randomBytes(8).toString('hex')}`;
    const dataSource = await access.server.buildDataSource(schemaName);
    try {
      return await access.server.inLockedTransaction(dataSource, `warm-pool:${this.#table}`, async (runner) => {
        const { total } = await this.count(runner);
        if (total >= this.#size) return false;
        await createTenantSchema(runner, schemaName, access.server.citusMode);
        const applied = await applyPendingMigrations(dataSource, runner, access.searchPaths.tenantMigration(schemaName), {
          freshSchema: true,
          guard: access.migrationGuard,
        });
        await distributeTenantSchema(runner, schemaName, access.server.citusMode);
        await runner.query(`INSERT INTO ${this.#table} (schema_name, applied) VALUES ($1, $2)`, [schemaName, applied]);
        return true;
      });
    } finally {
      await dataSource.destroy();
    }
  }

  async #migrateSpare(schemaName: string): Promise<void> {
    const access = this.#access;
    const dataSource = await access.server.buildDataSource(schemaName);
    try {
      await access.server.inLockedTransaction(dataSource, `schema:${schemaName}`, async (runner) => {
        // Claimed meanwhile: nothing to do.
        const rows: unknown[] = await runner.query(`SELECT 1 FROM ${this.#table} WHERE schema_name = $1 FOR UPDATE`, [schemaName]);
        if (rows.length === 0) return;
        const applied = await applyPendingMigrations(dataSource, runner, access.searchPaths.tenantMigration(schemaName), { guard: access.migrationGuard });
        await runner.query(`UPDATE ${this.#table} SET applied = applied || $2::text[] WHERE schema_name = $1`, [schemaName, applied]);
      });
    } finally {
      await dataSource.destroy();
    }
  }
}
