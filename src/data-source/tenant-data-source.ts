import { DataSource, InstanceChecker, QueryBuilder, type ReplicationMode } from 'typeorm';
import type { PostgresDriver } from 'typeorm/driver/postgres/PostgresDriver';
import { installTenantLazyLoader } from '../entity/lazy-relations';
import { TenantDroppedError } from '../errors';
import { isOnlyGeneratedSql } from './generated-sql';
import { quoteIdent } from '../naming/quote-ident';
import { LIBRARY_SCHEMA_PREFIX } from '../naming/tenant-slug';
import type { TenantConnectionOptions } from './shared-pool';
import type { PgDriverFacade } from './pool-facade';
import type { QueryCacheOptions } from './tenant-query-cache';
import { TenantQueryRunner, type RawSqlPolicy } from './tenant-query-runner';
import { bindTenantSchema } from '../migration/migration-schema';
import { hintMissingSharedTables } from './missing-table-hint';

/**
 * The "current schema" every DataSource of the library claims. It names no
 * schema (it is under the library's reserved prefix), so TypeORM, which
 * leaves tables of its current schema unqualified in DDL, foreign keys,
 * `clear()` and migrations, qualifies every one of them: the connection's
 * own search_path never decides where generated SQL goes.
 */
export const UNQUALIFIED_SCHEMA_SENTINEL = `${LIBRARY_SCHEMA_PREFIX}no_current_schema`;

/** What TypeORM's driver learns with three queries at connect time; the same for every tenant. */
export interface DriverFacts {
  readonly version: string | undefined;
  readonly database: string | undefined;
}

/** What a tenant DataSource is built from. */
export interface TenantDataSourceSpec {
  readonly connection: TenantConnectionOptions;
  readonly schemaName: string;
  readonly entities: readonly Function[];
  readonly migrations: readonly Function[];
  /** TypeORM's `logger` for this DataSource (the manager's `logger` option, adapted to this schema). Default: the connection's own. */
  readonly logger?: TenantConnectionOptions['logger'];
  readonly driver: PgDriverFacade;
  readonly facts: DriverFacts;
  /** The shared schema and the table names of the shared entities (foreign keys to them resolve there). */
  readonly sharedSchema: string;
  readonly sharedTables: ReadonlySet<string>;
  /** The DataSource of the shared schema, for lazy relations of shared entities outside a run. */
  readonly sharedDataSource: () => DataSource | undefined;
  /**
   * How raw SQL is fenced. `served`: a DataSource serving runs (raw SQL runs
   * under `SET LOCAL search_path`); `library`: provisioning and migrations,
   * whose runners set their own search_path.
   */
  readonly rawSql: ServedRawSql | { readonly kind: 'library' };
  /** TypeORM's `cache` option for this DataSource: a view of the manager's store under the tenant's prefix (served DataSources only). */
  readonly queryCache?: QueryCacheOptions | undefined;
  /** In Citus mode: renames shards in errors to the tenant's tables. */
  readonly renameShards?: (error: unknown) => Promise<void>;
}

/** How a DataSource serving runs fences raw SQL. */
export interface ServedRawSql {
  readonly kind: 'served';
  /** The schemas raw SQL searches, tenant first (`pg_temp` is added last). */
  readonly searchPath: readonly string[];
  /** Under role isolation: the tenant's role. */
  readonly role?: string;
  /** The role the pool connects as. */
  readonly sessionUser?: string;
  readonly fence: DropFence;
  /** The tenant's view of the manager's query result cache, when one is configured. */
  readonly queryCache?: QueryCacheOptions | undefined;
  /** The manager's `sqlComment` option: the comment (and a space) put in front of every statement. */
  readonly sqlComment?: string | undefined;
}

/** Set when a tenant is dropped: its held DataSources refuse every statement from then on (`TenantDroppedError`). */
export interface DropFence {
  readonly slug: string;
  dropped: boolean;
}

/**
 * Builds and initialises a DataSource bound to one tenant schema over the
 * shared pool. Besides TypeORM's `schema` option it:
 *
 * - answers TypeORM's connect-time lookups from `facts` and claims a current
 *   schema that does not exist, so every generated statement is qualified;
 * - resolves a foreign key to a shared entity's table (given without a
 *   schema, as in a single-schema app) to the shared schema;
 * - gives out `TenantQueryRunner`s, which fence raw SQL to the tenant;
 * - records the SQL TypeORM's query building produced, so only that passes
 *   unfenced (`@VirtualColumn` queries, written by hand, are fenced);
 * - qualifies QueryBuilder string table names with the tenant schema;
 * - binds lazy relations to the active run rather than to the last
 *   DataSource built;
 * - adds a hint to "relation does not exist" for a shared entity's table
 *   (an entity that most likely lacks `@TenantScoped()`).
 */
export async function buildTenantDataSource(spec: TenantDataSourceSpec): Promise<DataSource> {
  const dataSource = new DataSource({
    ...spec.connection,
    schema: spec.schemaName,
    entities: [...spec.entities],
    migrations: [...spec.migrations],
    logger: spec.logger ?? spec.connection.logger,
    driver: spec.driver,
    installExtensions: false,
    synchronize: false,
    dropSchema: false,
    migrationsRun: false,
    cache: spec.queryCache ?? false,
  });
  const driver = dataSource.driver as PostgresDriver;
  driver.version = spec.facts.version;
  driver.database = spec.facts.database;
  driver.searchSchema = UNQUALIFIED_SCHEMA_SENTINEL;
  resolveSharedForeignKeys(driver, spec.sharedSchema, spec.sharedTables);

  const generated = recordGeneratedSql(driver);
  const base: RawSqlPolicy =
    spec.rawSql.kind === 'library'
      ? { setSearchPath: undefined, role: undefined, sessionUser: undefined, assertServed: () => undefined, isGenerated: generated.isGenerated }
      : servedPolicy(spec.rawSql, generated.isGenerated);
  const policy: RawSqlPolicy = spec.renameShards === undefined ? base : { ...base, renameShards: spec.renameShards };
  driver.createQueryRunner = (mode: ReplicationMode) => new TenantQueryRunner(driver, mode, policy);

  bindTenantSchema(dataSource, spec.schemaName);
  hintMissingSharedTables(dataSource, spec.sharedSchema, spec.sharedTables);
  installTenantLazyLoader(dataSource, spec.sharedDataSource);
  qualifiedStringTables.set(dataSource, quoteIdent(spec.schemaName));
  installStringTableQualification();

  await dataSource.initialize();
  fenceVirtualColumns(dataSource, generated.markNextFenced);
  return dataSource;
}

function servedPolicy(rawSql: ServedRawSql, isGenerated: (sql: string, parameters: unknown) => boolean): RawSqlPolicy {
  const fence = rawSql.fence;
  return {
    setSearchPath: `SET LOCAL search_path TO ${rawSql.searchPath.map(quoteIdent).join(', ')}, pg_temp`,
    role: rawSql.role,
    sessionUser: rawSql.sessionUser,
    assertServed: () => {
      if (fence.dropped) throw new TenantDroppedError(fence.slug);
    },
    isGenerated,
    ...(rawSql.sqlComment === undefined ? {} : { sqlComment: rawSql.sqlComment }),
  };
}

const FENCED = Symbol('fenced');

/** QueryBuilders building their SQL right now (getQueryAndParameters is synchronous). */
let queryBuildDepth = 0;

/**
 * Wraps the driver's `escapeQueryWithParameters`, which every QueryBuilder
 * execution goes through, to remember which (sql, parameters) pairs it made.
 * The parameters array is fresh per call, so it identifies the pair; a
 * caller passing other SQL with it, or any array of its own, is not trusted.
 */
function recordGeneratedSql(driver: PostgresDriver): {
  isGenerated(sql: string, parameters: unknown): boolean;
  markNextFenced(): void;
} {
  const made = new WeakMap<object, string | typeof FENCED>();
  let fenceNext = false;
  const original = driver.escapeQueryWithParameters.bind(driver);
  driver.escapeQueryWithParameters = (sql, parameters) => {
    const result = original(sql, parameters);
    // Only what a QueryBuilder is building counts; a direct call proves nothing.
    if (queryBuildDepth > 0) made.set(result[1], fenceNext || !isOnlyGeneratedSql(result[0]) ? FENCED : result[0]);
    fenceNext = false;
    return result;
  };
  return {
    isGenerated: (sql, parameters) => typeof parameters === 'object' && parameters !== null && made.get(parameters) === sql,
    markNextFenced: () => {
      fenceNext = true;
    },
  };
}

/**
 * `@VirtualColumn({ query })` is SQL written by hand inside generated SQL: a
 * statement that selects one is fenced like raw SQL, so its unqualified names
 * resolve in the tenant. The column's query function runs while the
 * statement is built, just before its parameters are escaped (both
 * synchronous), which is where the mark is consumed.
 */
function fenceVirtualColumns(dataSource: DataSource, markNextFenced: () => void): void {
  for (const metadata of dataSource.entityMetadatas) {
    for (const column of metadata.columns) {
      const query = column.query;
      if (typeof query !== 'function') continue;
      column.query = (alias: string) => {
        markNextFenced();
        return query(alias);
      };
    }
  }
}

/**
 * A tenant driver resolves a foreign key given without a schema to the shared
 * schema when its table is a shared entity's table, as in a single-schema app
 * (`referencedTableName: 'plan'`); TypeORM would put it in the tenant schema.
 */
function resolveSharedForeignKeys(driver: PostgresDriver, sharedSchema: string, sharedTables: ReadonlySet<string>): void {
  const original = driver.parseTableName.bind(driver);
  driver.parseTableName = (target) => {
    const parsed = original(target);
    if (
      InstanceChecker.isTableForeignKey(target) &&
      target.referencedSchema === undefined &&
      !target.referencedTableName.includes('.') &&
      sharedTables.has(parsed.tableName)
    ) {
      return { ...parsed, schema: sharedSchema };
    }
    return parsed;
  };
}

/** Quoted tenant schema of each tenant DataSource, for QueryBuilder string table names. */
const qualifiedStringTables = new WeakMap<DataSource, string>();
let stringTablesInstalled = false;

/**
 * QueryBuilder `.from('audit_log', 'a')`, `.insert().into('audit_log')`,
 * `.update('audit_log')` and joins on a table with no entity name it without
 * a schema, so it would resolve through the connection's search_path. On a
 * tenant DataSource such a name is qualified with the tenant schema (names
 * with a schema, and the query's own CTE names, are left as they are).
 * TypeORM builds these names in one QueryBuilder method for every kind of
 * query and subquery, so that method is wrapped, once per process; other
 * DataSources are unaffected.
 */
function installStringTableQualification(): void {
  if (stringTablesInstalled) return;
  stringTablesInstalled = true;
  const prototype = QueryBuilder.prototype as unknown as {
    getTableName(this: QueryBuilder<any>, tablePath: string): string;
    getQueryAndParameters(this: QueryBuilder<any>): [string, any[]];
  };
  const build = prototype.getQueryAndParameters;
  prototype.getQueryAndParameters = function getQueryAndParameters(this: QueryBuilder<any>): [string, any[]] {
    queryBuildDepth += 1;
    try {
      return build.call(this);
    } finally {
      queryBuildDepth -= 1;
    }
  };
  const original = prototype.getTableName;
  prototype.getTableName = function getTableName(this: QueryBuilder<any>, tablePath: string): string {
    const schema = qualifiedStringTables.get(this.connection);
    if (schema === undefined || typeof tablePath !== 'string' || tablePath.includes('.') || tablePath.startsWith('(')) {
      return original.call(this, tablePath);
    }
    if (this.expressionMap.commonTableExpressions.some((cte) => cte.alias === tablePath)) return original.call(this, tablePath);
    return `${schema}.${original.call(this, tablePath)}`;
  };
}
