import type { DataSource, QueryRunner } from 'typeorm';
import type { PostgresDriver } from 'typeorm/driver/postgres/PostgresDriver';
import { MigrationGenerationError } from '../errors';
import { withoutSchemaSharding } from '../citus/citus-mode';
import { createTenantSchema, distributeTenantSchema } from '../citus/distributed-schema';

/**
 * Where the throwaway schema is made: `false` as on any server; on a Citus
 * cluster `true` a distributed schema (as a tenant's would be), `'local'` a
 * schema on the coordinator (schema sharding off), to tell Citus's refusals
 * from a migration that fails anywhere.
 */
export type ThrowawayPlacement = boolean | 'local';
import { quoteIdent } from '../naming/quote-ident';
import { TENANT_SCHEMA_PARAMETER, type MigrationStatement } from './migration-source';
import { applyPendingMigrations } from './schema-migrator';

/** What the schema builder would change: the statements of `up()` and of `down()`, each in the order they run. */
export interface SchemaChanges {
  readonly up: readonly MigrationStatement[];
  readonly down: readonly MigrationStatement[];
}

/**
 * The changes that bring a tenant schema at the head of the tenant
 * migrations to the tenant entities, written so that they run in any tenant:
 * tenant objects unqualified (they resolve through the migration's search
 * path, tenant first), shared objects qualified with the shared schema.
 *
 * `dataSource` is a library DataSource bound to `throwawaySchema`, a name no
 * tenant can take. Inside one transaction, rolled back at the end so nothing
 * is left, the schema is created, every tenant migration applied, and
 * TypeORM's schema builder diffs the tenant entities against it on that same
 * runner (its `log()` would otherwise open a runner of its own, outside the
 * transaction, and see nothing). Shared entities, present on the DataSource
 * for relations, are not synchronized.
 */
export async function tenantSchemaChanges(dataSource: DataSource, throwawaySchema: string, searchPath: readonly string[], citus: ThrowawayPlacement = false): Promise<SchemaChanges> {
  return atMigrationHead(dataSource, throwawaySchema, searchPath, citus, async (runner) => {
    // Only the tenant side is diffed: shared entities and the junction and
    // closure tables they own live in the shared schema.
    for (const metadata of dataSource.entityMetadatas) {
      if (!isTenantSide(metadata, throwawaySchema)) metadata.synchronize = false;
    }
    const changes = await withRecreatedEnums(dataSource, () => logOnRunner(dataSource, runner));
    return {
      up: changes.up.map((statement) => schemaAgnostic(statement, throwawaySchema)),
      down: changes.down.map((statement) => schemaAgnostic(statement, throwawaySchema)),
    };
  });
}

/** A tenant entity whose table no tenant migration creates. */
export interface MissingTenantTable {
  readonly entity: string;
  readonly table: string;
}

/**
 * The tenant entities (tables and views) that have no relation in a tenant
 * schema at the head of the tenant migrations, built as for
 * `tenantSchemaChanges` and rolled back.
 */
export async function missingTenantTables(
  dataSource: DataSource,
  throwawaySchema: string,
  searchPath: readonly string[],
  citus: ThrowawayPlacement = false,
): Promise<MissingTenantTable[]> {
  return atMigrationHead(dataSource, throwawaySchema, searchPath, citus, async (runner) => {
    const rows = (await runner.query(
      `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1`,
      [throwawaySchema],
    )) as Array<{ name: string }>;
    const present = new Set(rows.map((row) => row.name));
    // Junction and closure tables included: they are the tenant's too.
    return dataSource.entityMetadatas
      .filter((metadata) => isTenantSide(metadata, throwawaySchema) && metadata.tableType !== 'entity-child' && !present.has(metadata.tableName))
      .map((metadata) => ({ entity: metadata.name, table: metadata.tableName }));
  });
}

/**
 * Runs `work` on a runner whose open transaction holds `throwawaySchema`
 * brought to the head of the DataSource's migrations (a distributed schema
 * in Citus mode, as a tenant's would be); rolls it all back.
 */
async function atMigrationHead<T>(
  dataSource: DataSource,
  throwawaySchema: string,
  searchPath: readonly string[],
  citus: ThrowawayPlacement,
  work: (runner: QueryRunner) => Promise<T>,
): Promise<T> {
  const runner = dataSource.createQueryRunner();
  try {
    await runner.startTransaction();
    try {
      if (citus === 'local') await withoutSchemaSharding(runner);
      await createTenantSchema(runner, throwawaySchema, citus === true);
      await applyPendingMigrations(dataSource, runner, searchPath, { freshSchema: true });
      await distributeTenantSchema(runner, throwawaySchema, citus === true);
      return await work(runner);
    } finally {
      if (runner.isTransactionActive) await runner.rollbackTransaction();
    }
  } finally {
    await runner.release();
  }
}

/** The changes that bring the shared schema to the shared entities (the shared DataSource qualifies every object with it). */
export async function sharedSchemaChanges(sharedDataSource: DataSource): Promise<SchemaChanges> {
  // initialize() runs every shared migration in one transaction too.
  const memory = await withRecreatedEnums(sharedDataSource, () => sharedDataSource.driver.createSchemaBuilder().log());
  return {
    up: memory.upQueries.map((query) => ({ sql: query.query, parameters: query.parameters })),
    down: [...memory.downQueries].reverse().map((query) => ({ sql: query.query, parameters: query.parameters })),
  };
}

/** A table of the tenant side: tenant entities and their junction and closure tables, all in the DataSource's (throwaway) schema. */
function isTenantSide(metadata: { readonly schema?: string }, throwawaySchema: string): boolean {
  return metadata.schema === throwawaySchema;
}

/**
 * TypeORM writes `ALTER TYPE ... ADD VALUE` for a new enum value on
 * PostgreSQL 12+ (the driver's only use of the version once connected). A
 * value added so cannot be used in the transaction that added it (55P04),
 * and the library runs migrations in one transaction (createTenant with its
 * seed hook, initialize() for shared ones): claiming 11 while `work` runs
 * makes TypeORM write the recreate-the-type form.
 */
async function withRecreatedEnums<T>(dataSource: DataSource, work: () => Promise<T>): Promise<T> {
  const driver = dataSource.driver as PostgresDriver;
  const version = driver.version;
  driver.version = '11.0';
  try {
    return await work();
  } finally {
    driver.version = version;
  }
}

/** Runs the schema builder's `log()` on `runner` (inside its open transaction), leaving the runner open. */
async function logOnRunner(dataSource: DataSource, runner: QueryRunner): Promise<SchemaChanges> {
  const createQueryRunner = dataSource.createQueryRunner;
  const release = runner.release;
  dataSource.createQueryRunner = () => runner;
  runner.release = async () => undefined;
  try {
    const memory = await dataSource.driver.createSchemaBuilder().log();
    return {
      up: memory.upQueries.map((query) => ({ sql: query.query, parameters: query.parameters })),
      // TypeORM lists down queries in the order of the up queries they undo.
      down: [...memory.downQueries].reverse().map((query) => ({ sql: query.query, parameters: query.parameters })),
    };
  } finally {
    dataSource.createQueryRunner = createQueryRunner;
    runner.release = release;
  }
}

/**
 * Strips exactly `"<throwaway>".` from the statement and turns a parameter
 * naming the throwaway schema into the tenant schema at run time; any other
 * mention of the name means TypeORM wrote it somewhere this cannot rewrite.
 */
function schemaAgnostic(statement: MigrationStatement, throwawaySchema: string): MigrationStatement {
  const sql = statement.sql.split(`${quoteIdent(throwawaySchema)}.`).join('');
  if (sql.includes(throwawaySchema)) {
    throw new MigrationGenerationError(
      `A generated statement names the throwaway schema "${throwawaySchema}" where it cannot be made tenant-neutral: ${sql}. ` +
        'Write this change by hand in a migration (migration:create).',
    );
  }
  const parameters = statement.parameters?.map((value) => (value === throwawaySchema ? TENANT_SCHEMA_PARAMETER : value));
  return parameters === undefined ? { sql } : { sql, parameters };
}
