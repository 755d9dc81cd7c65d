import type { Pool } from 'pg';
import { DataSource, type QueryRunner } from 'typeorm';
import type { PostgresDriver } from 'typeorm/driver/postgres/PostgresDriver';
import { readCitusFacts, type CitusFacts } from '../citus/citus-mode';
import { shardNameRenamer, type ShardNameRenamer } from '../citus/shard-names';
import type { SqlRunner } from '../registry/tenant-registry';
import { startLockedTransaction } from './advisory-lock';
import { describeConnectionTarget, poolConfigOf } from './connection-target';
import { createPgDriverFacade, type PgDriverFacade } from './pool-facade';
import { DEFAULT_POOL_SIZE, closeSharedPool, createSharedPool, type TenantConnectionOptions, type TenantPoolOptions } from './shared-pool';
import { UNQUALIFIED_SCHEMA_SENTINEL, buildTenantDataSource, type DriverFacts, type ServedRawSql } from './tenant-data-source';
import { sharedCachePrefix, type QueryCacheStore } from './tenant-query-cache';

/** What every server of a manager is built with: the model and the settings they share. */
export interface TenantServerModel {
  readonly tenantEntities: readonly Function[];
  readonly sharedEntities: readonly Function[];
  /** The tenant migrations, in TypeORM's order. */
  readonly tenantMigrations: readonly Function[];
  readonly sharedMigrations: readonly Function[];
  readonly sharedSchema: string;
  /** Bounds every wait for an advisory lock (`lock_timeout` as well). */
  readonly lockTimeoutMs: number;
  readonly pool: Required<TenantPoolOptions>;
  /** The manager's query result cache, when one is configured (the shared DataSource makes its store). */
  readonly queryCache: QueryCacheStore | undefined;
  /** TypeORM's logger for the DataSource of a schema. */
  dataSourceLogger(schema: string): TenantConnectionOptions['logger'] | undefined;
  /** Reports an error of an idle pooled connection. */
  onPoolError(error: Error): void;
  /** Whether the manager has several servers: errors then name the server as well as its address. */
  readonly severalServers: boolean;
}

/**
 * One PostgreSQL server (and database) of a manager: its one pool, the
 * TypeORM driver facade over it, the facts TypeORM's driver would read at
 * connect time, and the DataSource of its shared schema. It builds the
 * DataSources bound to tenant schemas on itself and runs the library's
 * locked transactions there, so provisioning, the fleet, the lifecycle and
 * the warm pool take a server rather than closures over the manager.
 */
export class TenantServer {
  /** The server's name in the manager's options. */
  readonly name: string;
  readonly connection: TenantConnectionOptions;
  /** The one `pg.Pool` every DataSource of this server checks connections out of. */
  readonly pool: Pool;
  readonly #model: TenantServerModel;
  readonly #facade: PgDriverFacade;
  #shared: DataSource | undefined;
  #facts: DriverFacts | undefined;
  #role: string | undefined;
  #citus: CitusFacts | undefined;
  #citusMode = false;
  #renameShards: ShardNameRenamer | undefined;
  #sharedTables: ReadonlySet<string> = new Set();

  private constructor(name: string, connection: TenantConnectionOptions, model: TenantServerModel) {
    this.name = name;
    this.connection = connection;
    this.#model = model;
    this.pool = createSharedPool(connection, model.pool);
    this.pool.on('error', (error) => model.onPoolError(error));
    this.#facade = createPgDriverFacade(this.pool, { server: model.severalServers ? name : undefined });
  }

  /**
   * Opens the server: its pool, and its shared DataSource (TypeORM's connect
   * time lookups run once, here). On failure the pool is closed again.
   */
  static async open(name: string, connection: TenantConnectionOptions, model: TenantServerModel): Promise<TenantServer> {
    const server = new TenantServer(name, connection, model);
    try {
      await server.#openShared();
    } catch (error) {
      await server.close();
      throw error;
    }
    return server;
  }

  async #openShared(): Promise<void> {
    const model = this.#model;
    const shared = new DataSource({
      ...this.connection,
      schema: model.sharedSchema,
      entities: [...model.sharedEntities],
      migrations: [...model.sharedMigrations],
      driver: this.#facade,
      logger: model.dataSourceLogger(model.sharedSchema),
      // TypeORM's query result cache: the shared DataSource makes the one store; tenants reach it under their own prefixes.
      cache: model.queryCache?.sharedOption(() => sharedCachePrefix(this.#facts?.database ?? '', model.sharedSchema)) ?? false,
      // The manager installs extensions itself, for the entities of both kinds, into the extensions schema.
      installExtensions: false,
    });
    // TypeORM leaves tables of its "current schema" unqualified in DDL. Claim
    // one that names no schema (rather than read current_schema() from
    // whatever pooled or PgBouncer connection answers), so every table it
    // writes is qualified; shared migrations run under SET LOCAL search_path.
    (shared.driver as PostgresDriver).searchSchema = UNQUALIFIED_SCHEMA_SENTINEL;
    await shared.initialize();
    this.#shared = shared;
    this.#sharedTables = new Set(shared.entityMetadatas.map((metadata) => metadata.tableName));
    const driver = shared.driver as PostgresDriver;
    const [{ role, database, citus }] = (await shared.query(
      `SELECT current_user AS role, current_database() AS database, (SELECT extversion FROM pg_extension WHERE extname = 'citus') AS citus`,
    )) as Array<{ role: string; database: string; citus: string | null }>;
    this.#facts = { version: driver.version, database: driver.database ?? database };
    this.#role = role;
    this.#citus = await readCitusFacts(shared, citus);
  }

  /** The role the pool connects as (`current_user` at open). */
  get connectingRole(): string {
    if (this.#role === undefined) throw new Error(`Server "${this.name}" is not open.`);
    return this.#role;
  }

  /** What the server said about Citus at open: the extension's version, and whether it is the coordinator. */
  get citus(): CitusFacts {
    if (this.#citus === undefined) throw new Error(`Server "${this.name}" is not open.`);
    return this.#citus;
  }

  /**
   * Whether the manager runs this server in Citus mode (decided once at
   * `initialize()`, see `decideCitusMode`): tenant schemas are then made
   * distributed schemas, and the library's own schemas are kept off the
   * workers.
   */
  get citusMode(): boolean {
    return this.#citusMode;
  }

  /** Turns Citus mode on, once, at `initialize()`. */
  enterCitusMode(): void {
    if (this.#citus?.version === undefined) throw new Error(`Server "${this.name}" has no citus extension.`);
    this.#citusMode = true;
    const rename = shardNameRenamer(poolConfigOf(this.pool));
    this.#renameShards = rename;
    renameShardsOf(this.sharedDataSource, rename);
  }

  /** The DataSource of this server's shared schema. */
  get sharedDataSource(): DataSource {
    if (this.#shared === undefined) throw new Error(`Server "${this.name}" is not open.`);
    return this.#shared;
  }

  /** What TypeORM's driver read at connect time: the server version and the database name. */
  get facts(): DriverFacts {
    if (this.#facts === undefined) throw new Error(`Server "${this.name}" is not open.`);
    return this.#facts;
  }

  /** The database name (tenant roles and cache prefixes include it). */
  get database(): string {
    return this.facts.database ?? '';
  }

  /** The size of the pool, as pg was given it (`dataSource.extra.max` overrides `poolSize`, as in TypeORM). */
  get poolMax(): number {
    const max = (this.pool as unknown as { options?: { max?: unknown } }).options?.max;
    return typeof max === 'number' && max > 0 ? max : (this.connection.poolSize ?? DEFAULT_POOL_SIZE);
  }

  /** `postgres://user@host:port/database`, never the password: how errors and warnings name this server. */
  describe(): string {
    return describeConnectionTarget(poolConfigOf(this.pool));
  }

  /**
   * A DataSource bound to `schemaName` over this server's pool (see
   * `buildTenantDataSource`). A served DataSource fences raw SQL to the
   * tenant, and under role isolation checks connections out as the
   * tenant's role; without `served` it is a library DataSource
   * (provisioning, migrations, lifecycle), whose runners set their own
   * search_path. The caller destroys it.
   */
  buildDataSource(schemaName: string, served?: ServedRawSql): Promise<DataSource> {
    const model = this.#model;
    const role = served?.role;
    return buildTenantDataSource({
      connection: this.connection,
      schemaName,
      entities: [...model.tenantEntities, ...model.sharedEntities],
      migrations: model.tenantMigrations,
      logger: model.dataSourceLogger(schemaName),
      driver: role === undefined ? this.#facade : createPgDriverFacade(this.pool, { role, server: model.severalServers ? this.name : undefined }),
      facts: this.facts,
      sharedSchema: model.sharedSchema,
      sharedTables: this.#sharedTables,
      sharedDataSource: () => this.#shared,
      rawSql: served ?? { kind: 'library' },
      queryCache: served?.queryCache,
      renameShards: this.#renameShards,
    });
  }

  /**
   * Runs `work` in a transaction on `dataSource` (a DataSource of this
   * server), after taking a transaction-level advisory lock on `lockName`
   * (so it also works behind a transaction pooler) with `lock_timeout`
   * bounding every wait.
   */
  async inLockedTransaction<T>(
    dataSource: DataSource,
    lockName: string,
    work: (runner: QueryRunner & SqlRunner) => Promise<T>,
    isolation?: 'READ COMMITTED' | 'REPEATABLE READ',
  ): Promise<T> {
    return committed(dataSource, work, (runner) => startLockedTransaction(runner, `typeorm-tenants:${lockName}`, this.#model.lockTimeoutMs, isolation));
  }

  /**
   * Runs `work` in a transaction on `dataSource` (a DataSource of this
   * server) and commits it; rolls back on failure. For work whose lock the
   * caller already holds in another transaction of this server.
   */
  async inTransaction<T>(
    dataSource: DataSource,
    work: (runner: QueryRunner & SqlRunner) => Promise<T>,
    isolation?: 'READ COMMITTED' | 'REPEATABLE READ',
  ): Promise<T> {
    return committed(dataSource, work, (runner) => runner.startTransaction(isolation));
  }

  /** Closes the shared DataSource, then the pool (waiting for its connections to close). Safe to call twice. */
  async close(): Promise<void> {
    const shared = this.#shared;
    this.#shared = undefined;
    try {
      if (shared?.isInitialized) await shared.destroy();
      await this.#renameShards?.close();
    } finally {
      if (!(this.pool as unknown as { ending?: boolean }).ending) await closeSharedPool(this.pool);
    }
  }
}

/**
 * Runs `work` on a runner of `dataSource` in the transaction `begin` starts
 * (which leaves none open when it fails), commits it, rolls back on failure,
 * and releases the runner.
 */
async function committed<T>(
  dataSource: DataSource,
  work: (runner: QueryRunner & SqlRunner) => Promise<T>,
  begin: (runner: QueryRunner) => Promise<void>,
): Promise<T> {
  const runner = dataSource.createQueryRunner();
  try {
    await begin(runner);
    try {
      const result = await work(runner);
      await runner.commitTransaction();
      return result;
    } catch (error) {
      // The original error is what the caller needs. A rollback that fails
      // means the connection is broken, and PostgreSQL discards the open
      // transaction with it; releasing the runner drops the connection.
      if (runner.isTransactionActive) await runner.rollbackTransaction().catch(() => undefined);
      throw error;
    }
  } finally {
    await runner.release();
  }
}

/**
 * Has every query runner of the shared DataSource rename the shards its
 * errors name (its tables are reference tables in Citus mode, whose errors
 * name the shard as a tenant table's do).
 */
function renameShardsOf(dataSource: DataSource, rename: (error: unknown) => Promise<void>): void {
  const driver = dataSource.driver as PostgresDriver;
  const create = driver.createQueryRunner.bind(driver);
  driver.createQueryRunner = (mode) => {
    const runner = create(mode);
    const query = runner.query.bind(runner) as (...args: unknown[]) => Promise<unknown>;
    (runner as { query: unknown }).query = (...args: unknown[]) =>
      query(...args).catch(async (error: unknown) => {
        await rename(error);
        throw error;
      });
    return runner;
  };
}
