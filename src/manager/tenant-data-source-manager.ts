import { randomBytes } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import { DataSource, type MigrationInterface } from 'typeorm';
import { registerLiveOwner, runStorage, unregisterLiveOwner, type ContextOwner, type RunState } from '../context/tenant-context';
import { LeaseCache, type Lease } from '../data-source/lease-cache';
import { TenantServer } from '../data-source/tenant-server';
import { citusOptionOf, decideCitusMode, withoutSchemaSharding, type CitusOption } from '../citus/citus-mode';
import { createTenantSchema, distributeTenantSchema } from '../citus/distributed-schema';
import { makeSharedTablesReferenceTables, sharedTablesInReferenceOrder } from '../citus/reference-tables';
import { nodesOfSchemas } from '../citus/tenant-nodes';
import {
  moveTenantToNode,
  rebalanceTenants,
  type MoveTenantToNodeOptions,
  type NodeMoveResult,
  type RebalanceTenantsOptions,
  type RebalanceTenantsResult,
} from '../citus/schema-move';
import { inPlacedTransaction } from '../data-source/placed-transaction';
import { exportTenantArchive, type ExportSettings } from '../portability/export-tenant';
import { moveTenantSchema, type MoveTenantOptions, type MoveTenantResult } from '../portability/move-tenant';
import { loadTenantArchive, migrationsAfterHead, openTenantArchive, type OpenedArchive } from '../portability/import-tenant';
import type { TenantArchiveManifest } from '../portability/tenant-archive';
import {
  DEFAULT_POOL_OPTIONS,
  DEFAULT_POOL_SIZE,
  type TenantConnectionOptions,
  type TenantPoolOptions,
} from '../data-source/shared-pool';
import { QueryCacheStore, tenantCachePrefix, validateQueryCacheOption, type QueryCacheOptions } from '../data-source/tenant-query-cache';
import { partitionEntities, pinSharedEntities, releaseSharedSchema, type EntityPartition } from '../entity/entity-partition';
import { loadEntities } from '../entity/load-entities';
import { classListOption, type ClassOrPath } from '../data-source/load-classes';
import { loadMigrationList } from '../migration/migration-list';
import { pinSharedActiveRecord, unpinSharedActiveRecord } from '../entity/active-record';
import {
  UNQUALIFIED_SCHEMA_SENTINEL,
  type DropFence,
} from '../data-source/tenant-data-source';
import {
  InvalidArgumentError,
  ManagerDestroyedError,
  ManagerNotInitializedError,
  TenancyConfigurationError,
  TenancyError,
  TenantAlreadyExistsError,
  TenantNotActiveError,
  TenantNotFoundError,
  TenantProvisioningError,
  TenantMigrationPendingError,
  TenantMigrationError,
  TenantMovedError,
  TenantMoveError,
  TenantRecentlyDroppedError,
  TenantSuspendedError,
  messageWithCauses,
  sqlStateOf,
} from '../errors';
import type { FleetReport, FleetRunOptions, FleetTenantResult } from '../migration/fleet-run';
import { FleetMigrator, type FleetMigrationOptions, type TenantMigrationStatus } from '../migration/fleet-migrator';
import { MigrationLedger } from '../migration/migration-ledger';
import { TenantLifecycle, type DropTenantOptions } from '../lifecycle/tenant-lifecycle';
import { runIsObserved, traceOperation, traceRun } from '../observability/channels';
import { tenantSqlCommentPrefix } from '../observability/sql-comment';
import { tagActiveSpan } from '../observability/tracing';
import { LifecyclePlugins, type TenantLifecyclePlugin } from '../lifecycle/lifecycle-plugins';
import { WarmPool, type WarmPoolOptions } from '../provisioning/warm-pool';
import { dropTenantRole, grantTenantRole } from '../isolation/tenant-role';
import { tenantRoleName } from '../naming/derived-schema-name';
import { TenantEvents, type TenantEventMap, type TenantEventName } from './tenant-events';
import { createLibraryLog, dataSourceLoggerOf, validateTenancyLogger, type LibraryLog, type TypeOrmLoggerOption } from './tenancy-logger';
import { MigrationFailure, applyPendingMigrations } from '../migration/schema-migrator';
import { isNonTransactional } from '../migration/non-transactional-migrations';
import { ensureMigrationGuard, validateMigrationGuard, type MigrationGuardMode } from '../migration/migration-guard';
import { missingTenantTables, sharedSchemaChanges, tenantSchemaChanges, type MissingTenantTable, type SchemaChanges } from '../migration/migration-generator';
import { migrationFile, type MigrationFile, type MigrationSourceOptions, type MigrationStatement } from '../migration/migration-source';
import { validatePlainIdentifier } from '../naming/plain-identifier';
import { quoteIdent, quoteIdentList } from '../naming/quote-ident';
import { ensureSchema } from '../naming/schema-exists';
import { searchPathsOf, type SearchPaths } from '../naming/search-paths';
import { LIBRARY_SCHEMA_PREFIX, validateTenantSlug, type ReservedNames } from '../naming/tenant-slug';
import { checkDefaultSearchPath, installExtensions, requiredExtensions } from '../provisioning/extensions';
import { dropOrphanedTenantSchema, markTenantSchema } from '../provisioning/tenant-schema-mark';
import type { TenantRecord } from '../registry/tenant-record';
import { forEachTenant, type FanOutHost, type ForEachTenantOptions, type TenantWorkReport } from '../fan-out/for-each-tenant';
import {
  aggregateAcrossTenants,
  queryAcrossTenants,
  type AggregateAcrossTenantsOptions,
  type QueryAcrossTenantsOptions,
  type TenantAggregateResult,
  type TenantQueryResult,
} from '../fan-out/query-across-tenants';
import { TenantRegistry, type SqlRunner } from '../registry/tenant-registry';
import {
  DOMAIN_SNAPSHOT,
  TenantDomains,
  type AddTenantDomainOptions,
  type TenantDomain,
  type TenantDomainSnapshot,
  type UpdateTenantDomainOptions,
} from '../registry/tenant-domains';
import {
  DEFAULT_DESTROY_TIMEOUT_MS,
  DEFAULT_DROP_BATCH_SIZE,
  DEFAULT_EXTENSIONS_SCHEMA,
  DEFAULT_LOCK_TIMEOUT_MS,
  DEFAULT_MAX_DATA_SOURCES,
  DEFAULT_REGISTRY_TABLE,
  DEFAULT_SHARED_SCHEMA,
  DEFAULT_TENANT_RECORD_TTL_MS,
  DEFAULT_SERVER_NAME,
  type TenantDataSourceManagerOptions,
  type TenantPlacement,
  type TenantSeed,
} from './manager-options';

/** What `createTenant` takes besides the slug. */
export interface CreateTenantOptions {
  /** Display name. Default: the slug. */
  readonly name?: string;
  /** Seeds the new tenant inside the creation transaction; overrides the manager's `seed` option. */
  readonly seed?: TenantSeed;
  /** The server to put it on (a name of the `servers` option). Default: the `placement` option's choice. */
  readonly server?: string;
}

/** What `importTenant` takes besides the slug and the archive. */
export interface ImportTenantOptions {
  /** Display name. Default: the exported tenant's. */
  readonly name?: string;
  /** The server to put it on, as `createTenant`'s option. */
  readonly server?: string;
}

/** What `generateMigration` takes besides the name. */
export interface GenerateMigrationOptions extends MigrationSourceOptions {
  /** Diff the shared entities against the shared schema instead of the tenant entities against a tenant schema. */
  readonly shared?: boolean;
  /** Milliseconds for the class name and file name. Default: now. */
  readonly timestamp?: number;
}

/** A generated migration: its file, and its statements in the order `up()` and `down()` run them. */
export interface GeneratedMigration extends MigrationFile {
  readonly up: readonly MigrationStatement[];
  readonly down: readonly MigrationStatement[];
}

/** Counters and gauges of a manager, for dashboards and tests. */
export interface TenantManagerStats {
  /** Tenant DataSources cached now (never more than `maxDataSources`). */
  readonly cachedDataSources: number;
  /** Tenant lookups served from the cache. */
  readonly hits: number;
  /** Tenant lookups that built a DataSource. */
  readonly misses: number;
  /** DataSources evicted to keep the bound. */
  readonly evictions: number;
  /** Evicted DataSources still held by a run, closed when it ends. */
  readonly pendingDisposal: number;
  /** Runs in progress. */
  readonly activeRuns: number;
  /** The pools of every server together: connections open, idle, callers waiting for one, and the sum of their sizes. */
  readonly pool: TenantPoolStats;
  /** Each server's pool, by server name, in the order of the options. */
  readonly servers: Readonly<Record<string, TenantPoolStats>>;
}

/** Gauges of a server's pool (or of all of them). */
export interface TenantPoolStats {
  readonly total: number;
  readonly idle: number;
  readonly waiting: number;
  readonly max: number;
}

/** One server of the manager's options. */
interface ServerOption {
  readonly name: string;
  /** Its connection options without `cache`. */
  readonly connection: TenantConnectionOptions;
}

interface ResolvedOptions {
  /** The home server's connection options without `cache`, which the manager gives each DataSource itself. */
  readonly connection: TenantConnectionOptions;
  /** Every server, the home server among them, in the order of the options. */
  readonly servers: readonly ServerOption[];
  readonly homeServer: string;
  readonly placement: TenantPlacement | undefined;
  readonly queryCache: QueryCacheOptions | undefined;
  /** As given (classes, paths, globs); loaded by `initialize()`. */
  readonly entities: readonly ClassOrPath[];
  readonly tenantMigrations: readonly ClassOrPath[];
  readonly sharedMigrations: readonly ClassOrPath[];
  readonly sharedSchema: string;
  readonly extensionsSchema: string;
  readonly maxDataSources: number;
  readonly registryTable: string;
  readonly querySearchPath: readonly string[];
  readonly tenantRecordTtlMs: number;
  readonly slugReuseDelayMs: number;
  readonly destroyTimeoutMs: number;
  readonly lockTimeoutMs: number;
  readonly dropBatchSize: number;
  readonly seed: TenantSeed | undefined;
  readonly warmPool: WarmPoolOptions | undefined;
  readonly isolation: 'schema' | 'role';
  readonly citus: CitusOption;
  readonly checkEntities: boolean;
  readonly pendingMigrations: 'serve' | 'warn' | 'refuse';
  readonly migrationGuard: MigrationGuardMode;
  readonly onBackgroundError: (error: Error) => void;
  readonly pool: Required<TenantPoolOptions>;
  readonly onPoolError: (error: Error) => void;
  readonly allowMaintenanceDatabase: boolean;
  readonly sqlComment: boolean;
  /** The library's own log (the `logger` option, else process warnings). */
  readonly log: LibraryLog;
  /** TypeORM's logger for the DataSource of a schema (from `logger`, else the connection's own `logger`). */
  readonly dataSourceLogger: (schema: string) => TypeOrmLoggerOption | undefined;
}

interface CachedTenant {
  readonly dataSource: DataSource;
  /** Set when the tenant is dropped: the DataSource then refuses every statement. */
  readonly fence: DropFence;
  record: TenantRecord;
  /** The ledger lacks tenant migrations of the code (read with the record, unless pendingMigrations is 'serve'). */
  pending: boolean;
  checkedAt: number;
  /** The context of a run of this tenant, rebuilt when the record is refreshed. */
  runState: RunState;
}

type ManagerState = 'new' | 'ready' | 'destroying' | 'destroyed';

/**
 * Schema-per-tenant multi-tenancy over TypeORM: keeps the tenant registry,
 * creates and drops tenants, and caches one DataSource per tenant schema, all
 * sharing ONE `pg.Pool` per database server, so connections used never exceed
 * the pool size whatever the tenant count. TypeORM writes the tenant schema
 * into every statement (`"acme"."client"`); no session state is ever set on a
 * pooled connection.
 *
 * @example
 * ```ts
 * const tenants = new TenantDataSourceManager({
 *   dataSource: { type: 'postgres', url: process.env.DATABASE_URL, poolSize: 10 },
 *   entities: [Client, Plan],
 *   tenantMigrations: [CreateClient1700000000001],
 *   sharedMigrations: [CreatePlan1700000000000],
 * });
 * await tenants.initialize();
 * await tenants.createTenant('acme', { name: 'Acme Corp' });
 * const clients = await tenants.run('acme', () => tenantContext.getRepository(Client).find());
 * await tenants.destroy();
 * ```
 */
export class TenantDataSourceManager implements ContextOwner, AsyncDisposable {
  readonly #options: ResolvedOptions;
  readonly #registry: TenantRegistry;
  readonly #ledger: MigrationLedger;
  readonly #domains: TenantDomains;
  /** The migrations loaded by `initialize()`, in TypeORM's order (by timestamp); names in the same order. */
  #tenantMigrations: readonly Function[] = [];
  #tenantMigrationNames: readonly string[] = [];
  #sharedMigrations: readonly Function[] = [];
  readonly #cache: LeaseCache<CachedTenant>;
  #state: ManagerState = 'new';
  #init: Promise<void> | undefined;
  #destroy: Promise<void> | undefined;
  #partition: EntityPartition | undefined;
  /** The server of the registry, the ledger and the domains. */
  #home: TenantServer | undefined;
  /** The move in progress in this manager (moves run one at a time). */
  #moves: Promise<void> = Promise.resolve();
  /** The registry's identity (see `TenantRegistry.identity`), read by `initialize()`. */
  #registryId = '';
  /** Every open server by name, the home server among them, in the order of the options. */
  readonly #servers = new Map<string, TenantServer>();
  /** The home server's shared DataSource. */
  #shared: DataSource | undefined;
  #queryCache: QueryCacheStore | undefined;
  #fleet: FleetMigrator | undefined;
  #lifecycle: TenantLifecycle | undefined;
  /** The warm pool of each server, by server name (with the `warmPool` option). */
  readonly #warmPools = new Map<string, WarmPool>();
  readonly #events: TenantEvents;
  readonly #plugins = new LifecyclePlugins();
  /** Where the library's own messages go: the `logger` option, else process warnings. */
  readonly #log: LibraryLog;
  /** The drop fences of every tenant DataSource not yet closed, by schema name. */
  readonly #fences = new Map<string, Set<DropFence>>();
  #reserved: ReservedNames;
  readonly #searchPaths: SearchPaths;
  /** Tenants already warned about under pendingMigrations: 'warn' (forgotten once they are migrated). */
  readonly #pendingWarned = new Set<string>();
  #pinned = false;
  #activeRuns = 0;
  #idleWaiters: Array<() => void> = [];

  constructor(options: TenantDataSourceManagerOptions) {
    this.#options = resolveOptions(options);
    this.#log = this.#options.log;
    this.#events = new TenantEvents(this.#log, this);
    this.#reserved = { sharedSchema: this.#options.sharedSchema, otherSchemas: this.#librarySchemas };
    this.#searchPaths = searchPathsOf(this.#options);
    this.#registry = new TenantRegistry(this.#options.sharedSchema, this.#options.registryTable, this.#options.homeServer);
    this.#ledger = new MigrationLedger(
      this.#options.sharedSchema,
      this.#options.registryTable,
      this.#options.connection.migrationsTableName ?? 'migrations',
      this.#options.homeServer,
    );
    this.#domains = new TenantDomains(this.#options.sharedSchema, this.#options.registryTable, {
      homeServer: () => this.#home!,
      events: this.#events,
    });
    this.#cache = new LeaseCache<CachedTenant>({
      max: this.#options.maxDataSources,
      create: (slug) => this.#openTenant(slug),
      dispose: async ({ dataSource, fence, record }) => {
        const fences = this.#fences.get(record.schemaName);
        fences?.delete(fence);
        if (fences?.size === 0) this.#fences.delete(record.schemaName);
        if (dataSource.isInitialized) await dataSource.destroy();
      },
      onDisposeError: (error, slug) =>
        this.#options.onPoolError(new Error(`Closing the DataSource of tenant "${slug}" failed: ${String(error)}`, { cause: error })),
    });
  }

  /**
   * Connects, creates the shared schema and the registry table if missing, and
   * runs the shared migrations, under an advisory lock so that several
   * processes may start at once. Checks the entities first and refuses, with
   * `TenancyConfigurationError`, what would break isolation. Calling it again
   * returns the same promise; after a failure the next call retries.
   */
  initialize(): Promise<void> {
    if (this.#state === 'destroying' || this.#state === 'destroyed') {
      return Promise.reject(new ManagerDestroyedError('initialize()'));
    }
    this.#init ??= this.#start().catch(async (error: unknown) => {
      this.#init = undefined;
      await this.#teardown();
      throw error;
    });
    return this.#init;
  }

  /**
   * The DataSource of the shared schema: shared entities, the registry.
   *
   * @throws ManagerNotInitializedError before `initialize()`.
   */
  get sharedDataSource(): DataSource {
    this.#assertReady('sharedDataSource');
    return this.#shared!;
  }

  /**
   * Creates a tenant: validates the slug, then in ONE transaction creates its
   * schema, runs the tenant migrations inside it (the migrations table lives
   * in that schema) and inserts its registry row. On any failure nothing is
   * kept. Concurrent calls for one slug: one succeeds, the others get
   * `TenantAlreadyExistsError`.
   *
   * @throws InvalidTenantNameError for a bad or reserved slug (no SQL runs).
   * @throws TenantAlreadyExistsError when the slug, or its schema name, is taken.
   * @throws TenantProvisioningError when a migration fails (naming it).
   * @example
   * ```ts
   * const acme = await tenants.createTenant('acme', { name: 'Acme Corp' });
   * acme.schemaName; // 'acme'
   * ```
   */
  createTenant(slug: string, options: CreateTenantOptions = {}): Promise<TenantRecord> {
    return traceOperation(this, 'createTenant', slug, () => this.#createTenant(slug, options));
  }

  /**
   * Writes one tenant, active or suspended, to `destination` (a path, never
   * overwritten, or a writable stream, ended) as a portable archive: its
   * migration head, then every table's rows, gzip-compressed, with row
   * counts, checksums and sequence values. It reads one consistent snapshot
   * while the service keeps serving the tenant (no write freeze), under the
   * tenant's advisory lock, so no migration or lifecycle change of it runs
   * meanwhile. Returns the archive's manifest. For backups, data-portability
   * requests, and copying a customer into another environment with
   * `importTenant`.
   *
   * @throws InvalidTenantNameError / TenantNotFoundError; TenantNotActiveError for an archived tenant (restore it first).
   * @throws InvalidArgumentError when the destination file exists.
   * @example
   * ```ts
   * const manifest = await tenants.exportTenant('acme', '/backups/acme.tenant.gz');
   * manifest.tables; // [{ name: 'client', rows: '1200', checksum: '...', columns: [...] }, ...]
   * ```
   */
  async exportTenant(slug: string, destination: string | Writable): Promise<TenantArchiveManifest> {
    this.#assertReady('exportTenant()');
    validateTenantSlug(slug, this.#reserved);
    const record = await this.#registry.find(this.#shared!, slug);
    if (record === undefined) throw new TenantNotFoundError(slug);
    if (record.status !== 'active' && record.status !== 'suspended') throw new TenantNotActiveError(slug, record.status);
    return exportTenantArchive(this.#serverOf(record.server), record, destination, this.#archiveSettings());
  }

  /**
   * Creates the tenant `slug` from an archive of `exportTenant` (a path or
   * a readable stream): in ONE transaction, as `createTenant` does, its
   * schema is brought to the archive's migration head, the rows are loaded
   * and checked against the archive's counts and checksums, sequences are
   * set, then the code's later tenant migrations run (an archive of an
   * older version comes out current) and the registry row is inserted. Any
   * failure leaves nothing. The slug may differ from the exported one.
   *
   * @throws TenantArchiveError for an archive that is not one, is damaged, or does not match this code's migrations (nothing created).
   * @throws InvalidTenantNameError / TenantAlreadyExistsError / TenantRecentlyDroppedError as `createTenant`.
   * @throws TenantProvisioningError when a migration fails.
   * @example
   * ```ts
   * await staging.importTenant('acme-copy', '/backups/acme.tenant.gz');
   * ```
   */
  importTenant(slug: string, source: string | Readable, options: ImportTenantOptions = {}): Promise<TenantRecord> {
    return traceOperation(this, 'createTenant', slug, async () => {
      this.#assertReady('importTenant()');
      validateTenantSlug(slug, this.#reserved);
      const archive = await openTenantArchive(source);
      try {
        const after = migrationsAfterHead(archive.manifest, this.#tenantMigrationNames);
        return await this.#createTenant(slug, { name: options.name ?? archive.manifest.name, server: options.server }, { archive, after });
      } finally {
        archive.close();
      }
    });
  }

  /**
   * Moves the tenant to another server, nothing lost: its schema is copied
   * to `server` (at its migration head, every row, each table's row count
   * and checksum compared) from a snapshot while the service keeps serving
   * it; then a short write freeze on its current server (reads go on;
   * writes wait, then fail with `TenantMovedError`, HTTP 503, retryable:
   * nothing of theirs lands in the old copy) copies again the tables written
   * meanwhile and the sequences; then the registry names the new server and
   * the old schema is dropped (kept under a reserved name with
   * `keepSource: true`). `freezeMs` in the result says how long writes
   * waited. Any failure before the switch leaves the tenant served where it
   * was, unchanged, and no copy behind; after a crash, calling
   * `moveTenant` again completes or undoes what was left. Active and
   * suspended tenants move; a tenant on `server` already gets
   * `{ moved: false }` (and leftovers of an earlier move are cleaned up).
   * Moves run one at a time in a manager.
   *
   * @throws InvalidArgumentError for a server the manager does not have, or pools too small for a move; TenantNotFoundError;
   *   InvalidTenantStateError for an archived or dropping tenant, or a schema with objects the migrations do not make.
   * @throws TenantMoveError for a failure that is not a refusal (a server gone away); its `switched` says whether the registry names the new server.
   * @example
   * ```ts
   * const result = await tenants.moveTenant('acme', { server: 'eu2' });
   * result.freezeMs; // how long writes to acme waited
   * ```
   */
  moveTenant(slug: string, options: MoveTenantOptions): Promise<MoveTenantResult>;
  /**
   * In Citus mode: moves the tenant's schema to another node of the
   * cluster with `citus_schema_move` (online by default: the tenant keeps
   * being served and written while Citus copies it), holding the tenant's
   * lock meanwhile. A tenant on `node` already gets `{ moved: false }`.
   *
   * @throws InvalidArgumentError outside Citus mode, for a node that is not the cluster's, or for an online move of tables without a primary key.
   * @throws TenantNotFoundError; InvalidTenantStateError for an archived or dropping tenant; TenantMoveError when Citus fails the move.
   * @example
   * ```ts
   * const { node } = (await tenants.getTenant('acme'))!; // '10.0.0.5:5432'
   * await tenants.moveTenant('acme', { node: '10.0.0.6:5432' });
   * ```
   */
  moveTenant(slug: string, options: MoveTenantToNodeOptions): Promise<NodeMoveResult>;
  async moveTenant(slug: string, options: MoveTenantOptions | MoveTenantToNodeOptions): Promise<MoveTenantResult | NodeMoveResult> {
    this.#assertReady('moveTenant()');
    validateTenantSlug(slug, this.#reserved);
    const citus = this.#home!.citusMode;
    if (options === null || typeof options !== 'object') {
      throw new InvalidArgumentError(`moveTenant() needs options such as ${citus ? "{ node: '10.0.0.6:5432' }" : '{ server: "eu2" }'}.`);
    }
    if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw new InvalidArgumentError('Option "onProgress" must be a function.');
    const toNode = (options as { node?: unknown }).node !== undefined;
    const toServer = (options as { server?: unknown }).server !== undefined;
    if (toNode && toServer) throw new InvalidArgumentError('moveTenant() takes { server } (several servers) or { node } (a Citus cluster), not both.');
    if (toNode || citus) {
      if (!citus) {
        throw new InvalidArgumentError(
          'moveTenant(slug, { node }) moves a tenant between the nodes of a Citus cluster, and this manager is not in Citus mode (option citus; the database has no citus extension). ' +
            'Between servers: moveTenant(slug, { server }).',
        );
      }
      if (!toNode) {
        throw new InvalidArgumentError("In Citus mode tenants move between the cluster's nodes: moveTenant(slug, { node: 'host:port' }) (getTenant(slug).node says where a tenant is).");
      }
      const home = this.#home!;
      return this.#oneMoveAtATime(() =>
        moveTenantToNode({ server: home, findTenant: (name) => this.#registry.find(this.#shared!, name) }, slug, options as MoveTenantToNodeOptions),
      );
    }
    const serverOptions = options as MoveTenantOptions;
    const target = this.#serverNamed(serverOptions.server, 'Option "server"');
    return this.#oneMoveAtATime(() => this.#moveToServer(slug, target, serverOptions));
  }

  /**
   * In Citus mode: runs Citus's rebalancer (`citus_rebalance_start`), which
   * moves tenant schemas between nodes until they are spread evenly, and
   * waits for its job to end, calling `onProgress` at each poll with
   * Citus's task counts. Tenants keep being served throughout (online
   * moves by default). Returns the tenants whose node changed.
   *
   * @throws InvalidArgumentError outside Citus mode or for bad options; TenantRebalanceError when the job fails or is cancelled.
   * @example
   * ```ts
   * const { moved } = await tenants.rebalanceTenants({ onProgress: (p) => console.log(p.state, p.tasks) });
   * ```
   */
  async rebalanceTenants(options: RebalanceTenantsOptions = {}): Promise<RebalanceTenantsResult> {
    this.#assertReady('rebalanceTenants()');
    if (!this.#home!.citusMode) {
      throw new InvalidArgumentError('rebalanceTenants() runs the rebalancer of a Citus cluster, and this manager is not in Citus mode (option citus; the database has no citus extension).');
    }
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('rebalanceTenants() takes an options object.');
    return this.#oneMoveAtATime(() => rebalanceTenants(this.#home!, () => this.listTenants(), options));
  }

  /** One move at a time in this manager: each holds several connections of a pool, and two at once could wait for each other's. */
  async #oneMoveAtATime<T>(move: () => Promise<T>): Promise<T> {
    const previous = this.#moves;
    let done!: () => void;
    this.#moves = new Promise<void>((resolve) => (done = resolve));
    await previous;
    try {
      return await move();
    } finally {
      done();
    }
  }

  async #moveToServer(slug: string, target: TenantServer, options: MoveTenantOptions): Promise<MoveTenantResult> {
    let result: MoveTenantResult;
    try {
      result = await moveTenantSchema(
        {
          home: this.#home!,
          serverOf: (name) => this.#serverOf(name),
          servers: () => [...this.#servers.values()],
          registry: this.#registry,
          registryId: this.#registryId,
          settings: this.#archiveSettings(),
          tenantMigrationNames: this.#tenantMigrationNames,
          searchPaths: this.#searchPaths,
          migrationGuard: this.#options.migrationGuard,
          grantRole: async (runner, server, schemaName) => {
            if (this.#options.isolation === 'role') {
              await grantTenantRole(runner, this.#roleOf(server, schemaName), schemaName, this.#options.sharedSchema, this.#migrationsTableName);
            }
          },
          dropRole: (runner, server, schemaName) => dropTenantRole(runner, this.#roleOf(server, schemaName)),
        },
        slug,
        target,
        options,
      );
    } catch (error) {
      if (error instanceof TenancyError) throw error;
      const now = await this.#registry.find(this.#shared!, slug).catch(() => undefined);
      throw new TenantMoveError(slug, target.name, now?.server === target.name, error);
    } finally {
      this.#cache.evict(slug);
    }
    // (Evicted above: this process serves the tenant from its new server at once; others when their cached record expires, tenantRecordTtlMs.)
    if (result.moved) {
      const tenant = await this.#registry.find(this.#shared!, slug);
      if (tenant !== undefined) this.#events.emit('moved', { tenant, from: result.from });
      // Last, once everything is done; the move happened, so a callback that throws is logged, as a listener's error is.
      try {
        options.onProgress?.({ step: 'switched', tablesDone: result.tables, tables: result.tables, rowsCopied: result.rows });
      } catch (error) {
        this.#log({ level: 'error', kind: 'listener-error', message: `moveTenant()'s onProgress threw at "switched": ${error instanceof Error ? error.message : String(error)}`, tenant: slug, error });
      }
    }
    return result;
  }

  #archiveSettings(): ExportSettings {
    return { migrationsTableName: this.#migrationsTableName, metadataTableName: this.#options.connection.metadataTableName ?? 'typeorm_metadata' };
  }

  async #createTenant(slug: string, options: CreateTenantOptions, imported?: { archive: OpenedArchive; after: string | undefined }): Promise<TenantRecord> {
    this.#assertReady('createTenant()');
    const schemaName = validateTenantSlug(slug, this.#reserved);
    const name = options.name ?? slug;
    if (typeof name !== 'string' || name.length === 0 || name.length > 500) {
      throw new InvalidArgumentError(`The tenant name must be a string of 1 to 500 characters; got ${JSON.stringify(name)}.`);
    }
    const seed = imported === undefined ? (options.seed ?? this.#options.seed) : undefined;
    const server = await this.#placeTenant(slug, options.server);
    const home = this.#home!;
    let claimed = false;
    let dataSource: DataSource | undefined;
    try {
      const provisioning = await server.buildDataSource(schemaName);
      dataSource = provisioning;
      const warmPool = imported === undefined ? this.#warmPools.get(server.name) : undefined;
      // On the home server one transaction; on another, its transaction inside the home one, committed first (see inPlacedTransaction).
      const created = await inPlacedTransaction(
        home,
        server,
        `schema:${schemaName}`,
        async ({ tenant: runner, home: registry }) => {
          const existing = await this.#registry.findConflict(registry, slug, schemaName);
          if (existing !== undefined) throw new TenantAlreadyExistsError(slug, schemaName, existing.slug);
          const delay = this.#options.slugReuseDelayMs;
          const droppedAgo = delay > 0 ? await this.#registry.droppedWithin(registry, schemaName, delay) : undefined;
          if (droppedAgo !== undefined) throw new TenantRecentlyDroppedError(slug, schemaName, delay - droppedAgo);
          // Under both locks, with no tenant holding the name: a schema marked as a tenant's here was left by a creation whose registry row never committed.
          if (server !== home) await dropOrphanedTenantSchema(runner, schemaName, this.#registryId);
          const searchPath = this.#searchPaths.tenantMigration(schemaName);
          try {
            if (warmPool !== undefined && (await warmPool.claim(runner, schemaName))) {
              claimed = true;
              await runner.query(`SET LOCAL search_path TO ${quoteIdentList(searchPath)}`); // for the seed hook
            } else {
              await createTenantSchema(runner, schemaName, server.citusMode);
            }
          } catch (error) {
            if (sqlStateOf(error) === '42P06') throw new TenantAlreadyExistsError(slug, schemaName, undefined);
            throw error;
          }
          const guard = this.#options.migrationGuard;
          if (imported !== undefined) {
            // At the archive's head, its rows, then the code's later migrations over them.
            await applyPendingMigrations(provisioning, runner, searchPath, { freshSchema: true, guard, stopBefore: imported.after });
            const settings = this.#archiveSettings();
            await loadTenantArchive(runner, schemaName, imported.archive, [settings.migrationsTableName, settings.metadataTableName]);
            if (imported.after !== undefined) await applyPendingMigrations(provisioning, runner, searchPath, { guard });
          } else if (!claimed) {
            await applyPendingMigrations(provisioning, runner, searchPath, { freshSchema: true, guard });
          }
          await distributeTenantSchema(runner, schemaName, server.citusMode);
          if (this.#options.isolation === 'role') {
            await grantTenantRole(runner, this.#roleOf(server, schemaName), schemaName, this.#options.sharedSchema, this.#migrationsTableName);
          }
          const record = await this.#registry.insert(registry, { slug, schemaName, name, status: 'active', server: server.name });
          if (seed !== undefined) {
            // Inside the hook tenantContext serves the new tenant, joined to the creation transaction.
            const seedRun: RunState = { owner: this, tenant: record, dataSource: provisioning, transactionManager: runner.manager, seeding: true };
            await runStorage.run(seedRun, () =>
              seed({ tenant: record, manager: runner.manager, query: (sql, parameters) => runner.query(sql, parameters) }),
            );
          }
          if (server !== home) await markTenantSchema(runner, schemaName, slug, this.#registryId);
          await this.#ledger.syncTenant(registry, slug, schemaName, { newTenant: true, tenant: runner });
          return record;
        },
        { dataSource: provisioning },
      );
      if (claimed) warmPool!.refillInBackground();
      this.#events.emit('created', { tenant: created });
      return created;
    } catch (error) {
      if (error instanceof TenancyError) throw error;
      if (error instanceof MigrationFailure) throw new TenantProvisioningError(slug, error.migration, error.cause);
      throw new TenantProvisioningError(slug, undefined, error);
    } finally {
      if (dataSource?.isInitialized) await dataSource.destroy();
    }
  }

  /**
   * The server a new tenant goes to: the one named (it must be one of the
   * manager's), else the `placement` option's choice, else the server with
   * the fewest tenants (the first of those, in the order of the options).
   */
  async #placeTenant(slug: string, named: string | undefined): Promise<TenantServer> {
    if (named !== undefined) return this.#serverNamed(named, 'Option "server"');
    if (this.#servers.size === 1) return this.#home!;
    const counts = await this.#registry.countByServer(this.#shared!);
    const servers = [...this.#servers.keys()].map((name) => Object.freeze({ name, tenants: counts.get(name) ?? 0 }));
    const placement = this.#options.placement;
    if (placement === undefined) return this.#servers.get(servers.reduce((best, s) => (s.tenants < best.tenants ? s : best)).name)!;
    const chosen = await placement(Object.freeze({ slug, servers: Object.freeze(servers) }));
    return this.#serverNamed(chosen, 'The placement option');
  }

  /** The server of that name, or InvalidArgumentError naming the servers there are. */
  #serverNamed(name: unknown, what: string): TenantServer {
    const server = typeof name === 'string' ? this.#servers.get(name) : undefined;
    if (server === undefined) {
      throw new InvalidArgumentError(`${what} must name one of the manager's servers (${[...this.#servers.keys()].map((n) => `"${n}"`).join(', ')}); got ${JSON.stringify(name)}.`);
    }
    return server;
  }

  /** The server a tenant lives on; a name the options do not have (a server removed or renamed) is a configuration error. */
  #serverOf(name: string): TenantServer {
    const server = this.#servers.get(name);
    if (server === undefined) {
      throw new TenancyConfigurationError(
        `A tenant lives on server "${name}", which the manager's servers option does not name (it names ${[...this.#servers.keys()].map((n) => `"${n}"`).join(', ')}). ` +
          'Add that server back to the options (a renamed server keeps its tenants only under its old name).',
      );
    }
    return server;
  }

  /**
   * Drops a tenant: its tables, its schema and its registry row. The tenant
   * is first marked `dropping` (not served from then on); its relations are
   * then dropped a batch at a time (`dropBatchSize` per transaction), so a
   * tenant with thousands of tables does not exhaust
   * `max_locks_per_transaction`; last, schema and row go together. A crash in
   * between leaves it `dropping`, and calling `dropTenant` again completes it.
   * An active tenant must be suspended or archived first, or dropped with
   * `{ force: true }`. Its cached DataSource closes once no run holds it.
   *
   * @throws TenantNotFoundError when no such tenant exists.
   * @throws InvalidTenantStateError for an active tenant without `{ force: true }`.
   */
  dropTenant(slug: string, options: DropTenantOptions = {}): Promise<void> {
    return traceOperation(this, 'dropTenant', slug, () => this.#dropTenant(slug, options));
  }

  async #dropTenant(slug: string, options: DropTenantOptions): Promise<void> {
    this.#assertReady('dropTenant()');
    const schemaName = validateTenantSlug(slug, this.#reserved);
    await this.#lifecycle!.drop(slug, schemaName, options);
    // Runs that still hold a DataSource of the dropped tenant send nothing more,
    // so nothing of theirs can reach a new tenant that reuses the schema name.
    for (const fence of this.#fences.get(schemaName) ?? []) fence.dropped = true;
    this.#fences.delete(schemaName);
  }

  /**
   * Suspends an active tenant: `run()` then throws `TenantSuspendedError`;
   * its data is untouched. Suspending a suspended tenant does nothing.
   *
   * @throws TenantNotFoundError; InvalidTenantStateError when it is archived or being dropped.
   */
  async suspendTenant(slug: string): Promise<TenantRecord> {
    this.#assertReady('suspendTenant()');
    return this.#lifecycle!.suspend(slug, validateTenantSlug(slug, this.#reserved));
  }

  /** Makes a suspended tenant active again. */
  async resumeTenant(slug: string): Promise<TenantRecord> {
    this.#assertReady('resumeTenant()');
    return this.#lifecycle!.resume(slug, validateTenantSlug(slug, this.#reserved));
  }

  /**
   * Archives an active or suspended tenant: not served, data kept, its schema
   * renamed to a reserved archive name (an instant operation). Undo with
   * `restoreTenant()`.
   */
  async archiveTenant(slug: string): Promise<TenantRecord> {
    this.#assertReady('archiveTenant()');
    return this.#lifecycle!.archive(slug, validateTenantSlug(slug, this.#reserved));
  }

  /**
   * Restores an archived tenant: its schema gets its name back, its pending
   * tenant migrations are applied in the same transaction, and it is active.
   */
  async restoreTenant(slug: string): Promise<TenantRecord> {
    this.#assertReady('restoreTenant()');
    return this.#lifecycle!.restore(slug, validateTenantSlug(slug, this.#reserved));
  }

  /**
   * Subscribes to a lifecycle event (`created`, `migrated`,
   * `migration-failed`, `suspended`, `resumed`, `archived`, `restored`,
   * `dropped`, `domain-added`, `domain-updated`, `domain-removed`), emitted
   * after the change has committed. Returns a function
   * that unsubscribes.
   *
   * @example
   * ```ts
   * const off = tenants.on('suspended', ({ tenant }) => log.info(`suspended ${tenant.slug}`));
   * ```
   */
  on<E extends TenantEventName>(event: E, listener: (payload: TenantEventMap[E]) => void): () => void {
    return this.#events.on(event, listener);
  }

  /**
   * Adds a lifecycle plugin: hooks that keep the tenant's data outside
   * PostgreSQL (files, cache keys) in step with its life. `onDropping` runs
   * while the tenant is `dropping`, before its tables go (again when a failed
   * `dropTenant()` is resumed); `onArchived` after `archiveTenant()` commits
   * (again when it is called on an archived tenant); `onRestored` after
   * `restoreTenant()` commits. A hook that throws makes that call reject with
   * `TenantLifecycleHookError`. May be called before `initialize()`. Returns
   * a function that removes the plugin.
   *
   * @throws InvalidArgumentError for a plugin without a name, a hook that is not a function, or a name in use.
   * @throws ManagerDestroyedError once `destroy()` was called.
   */
  use(plugin: TenantLifecyclePlugin): () => void {
    if (this.#state === 'destroying' || this.#state === 'destroyed') throw new ManagerDestroyedError('use()');
    return this.#plugins.add(plugin);
  }

  /**
   * The tenant's registry record, or `undefined` when there is none.
   *
   * @throws InvalidTenantNameError for a bad slug (no SQL runs).
   */
  async getTenant(slug: string): Promise<TenantRecord | undefined> {
    this.#assertReady('getTenant()');
    validateTenantSlug(slug, this.#reserved);
    const record = await this.#registry.find(this.#shared!, slug);
    return record === undefined ? undefined : (await this.#withNodes([record]))[0];
  }

  /** In Citus mode, the records with the node holding each tenant's schema (one catalog query); as they are otherwise. */
  async #withNodes(records: TenantRecord[]): Promise<TenantRecord[]> {
    if (!this.#home!.citusMode || records.length === 0) return records;
    const nodes = await nodesOfSchemas(this.#shared!, [...new Set(records.map((record) => record.schemaName))]);
    return records.map((record) => {
      const node = nodes.get(record.schemaName);
      return node === undefined ? record : Object.freeze({ ...record, node });
    });
  }

  /**
   * Every tenant's registry record, ordered by slug; with `where.server`,
   * only those living on that server (or those servers).
   *
   * @throws InvalidArgumentError for a server name the manager does not have.
   */
  async listTenants(options: { readonly where?: { readonly server?: string | readonly string[] } } = {}): Promise<TenantRecord[]> {
    this.#assertReady('listTenants()');
    const servers = options.where?.server;
    const names: readonly unknown[] | undefined = servers === undefined ? undefined : Array.isArray(servers) ? servers : [servers];
    for (const name of names ?? []) this.#serverNamed(name, 'Option "where.server"');
    const records = await this.#registry.list(this.#shared!);
    return this.#withNodes(names === undefined ? records : records.filter((record) => names.includes(record.server)));
  }

  /**
   * Runs `fn(tenant)` in every active tenant (or in `options.tenants`, or
   * those `options.where` selects), each inside `run(slug, ...)` so that
   * `tenantContext` serves that tenant, at most `concurrency` at once
   * (default: half the pool size, at least 1), optionally in `waves`.
   * A tenant whose `fn` throws is reported `failed` and the others go on; a
   * tenant in scope that is not active (named, or selected by
   * `where.status`) is reported `skipped` with its status, never dropped
   * silently. The report has one line per tenant in scope, by slug, with
   * `fn`'s return value as `value`.
   *
   * @throws InvalidArgumentError for bad options; InvalidTenantNameError / TenantNotFoundError for a bad or unknown slug in `tenants` (nothing runs).
   * @example
   * ```ts
   * const report = await tenants.forEachTenant(() => tenantContext.getRepository(Client).count(), { concurrency: 4 });
   * for (const r of report.results) console.log(r.slug, r.status, r.value ?? r.error?.message);
   * ```
   */
  forEachTenant<T>(fn: (tenant: TenantRecord) => T | Promise<T>, options: ForEachTenantOptions<T> = {}): Promise<TenantWorkReport<T>> {
    this.#assertReady('forEachTenant()');
    return forEachTenant(this.#fanOutHost(), fn, options);
  }

  /**
   * Runs one read-only SQL statement in every active tenant (scope and
   * concurrency as `forEachTenant()`), each in a READ ONLY transaction of its
   * own that is rolled back at the end, under `SET LOCAL search_path` to the
   * tenant and `SET LOCAL statement_timeout` (`statementTimeoutMs`, default
   * 30 s). The statement is sent alone with the extended protocol, so a
   * string of several statements is refused. Rows come back merged, tenants
   * in slug order, each with a `tenant` column (`tenantColumn`) holding the
   * slug; a row that already has that column fails its tenant rather than
   * being overwritten. Tenants that failed (a write, a timeout, an error) or
   * were skipped are listed in `failures`; the others' rows are returned.
   *
   * @throws InvalidArgumentError for bad SQL, parameters or options; TenantNotFoundError for an unknown slug in `tenants` (nothing runs).
   * @example
   * ```ts
   * const { rows, failures } = await tenants.queryAcrossTenants('SELECT count(*)::int AS clients FROM client WHERE created_at > $1', [since]);
   * // rows: [{ tenant: 'acme', clients: 12 }, { tenant: 'globex', clients: 3 }]
   * ```
   */
  queryAcrossTenants<Row = Record<string, unknown>>(
    sql: string,
    params: readonly unknown[] = [],
    options: QueryAcrossTenantsOptions = {},
  ): Promise<TenantQueryResult<Row>> {
    this.#assertReady('queryAcrossTenants()');
    return queryAcrossTenants<Row>(this.#fanOutHost(), sql, params, options);
  }

  /**
   * Runs one read-only statement in every tenant as `queryAcrossTenants()`
   * does, and merges each tenant's rows into groups (the values of the
   * `groupBy` columns) as they come, keeping only the groups: memory is
   * bounded by the number of groups, not of tenants or rows. Each column of
   * `aggregates` is merged by `count` or `sum` (exact: decimal strings, as
   * PostgreSQL sends bigint and numeric), `min` or `max`. A tenant that
   * fails adds nothing to the groups and is listed in `failures`.
   *
   * @throws InvalidArgumentError for bad SQL, parameters or options (an aggregate other than count/sum/min/max, no aggregates).
   * @example
   * ```ts
   * const { groups } = await tenants.aggregateAcrossTenants(
   *   'SELECT status, count(*) AS invoices, sum(total) AS revenue FROM invoice GROUP BY status', [],
   *   { groupBy: ['status'], aggregates: { invoices: 'count', revenue: 'sum' } },
   * );
   * // [{ status: 'open', invoices: '1043', revenue: '98211.50' }, { status: 'paid', ... }]
   * ```
   */
  aggregateAcrossTenants(sql: string, params: readonly unknown[], options: AggregateAcrossTenantsOptions): Promise<TenantAggregateResult> {
    this.#assertReady('aggregateAcrossTenants()');
    return aggregateAcrossTenants(this.#fanOutHost(), sql, params, options);
  }

  /** What the fan-out module needs of this manager: its public runs and reads, and its reserved names. */
  #fanOutHost(): FanOutHost {
    return {
      listTenants: () => this.listTenants(),
      run: (slug, fn) => this.run(slug, fn),
      defaultConcurrency: this.#defaultConcurrency,
      servers: [...this.#servers.keys()],
      reserved: this.#reserved,
    };
  }

  /**
   * Gives the tenant a hostname of its own (a custom domain such as
   * `portal.acme.com`), for `fromDomain()` to resolve. The hostname is
   * normalised first (lower case, no port, no trailing dot, punycode; IP
   * addresses refused: see `normaliseHostname`). A hostname belongs to one
   * tenant; a tenant has any number, at most one primary (by default its
   * first). Adding a hostname the tenant already has returns it, with
   * `primary`/`verified` set where the options say `true`. `fromDomain()`
   * serves only verified hostnames unless told otherwise: mark it verified
   * here or with `updateTenantDomain` once the customer proved they control
   * the name. Any tenant status but `dropping` may get domains; an archived
   * tenant keeps them and is answered 423 through them.
   *
   * @throws InvalidTenantNameError / InvalidHostnameError for a bad slug or hostname (no SQL runs).
   * @throws TenantNotFoundError when no such tenant exists.
   * @throws TenantDomainTakenError when another tenant has the hostname (also when two tenants race for it: one wins).
   * @example
   * ```ts
   * await tenants.addTenantDomain('acme', 'Portal.Acme.com', { primary: true, verified: true });
   * // { hostname: 'portal.acme.com', slug: 'acme', primary: true, verified: true, createdAt }
   * ```
   */
  async addTenantDomain(slug: string, hostname: string, options: AddTenantDomainOptions = {}): Promise<TenantDomain> {
    this.#assertReady('addTenantDomain()');
    validateTenantSlug(slug, this.#reserved);
    return this.#domains.add(slug, hostname, options);
  }

  /**
   * Changes a hostname's flags: `verified`, and `primary` (`true` makes it the
   * tenant's primary hostname, the previous one stops being primary, in one
   * transaction; `false` leaves the tenant without one). Returns the domain.
   *
   * @throws InvalidHostnameError; TenantDomainNotFoundError when no tenant has the hostname.
   * @example
   * ```ts
   * await tenants.updateTenantDomain('portal.acme.com', { verified: true });
   * ```
   */
  async updateTenantDomain(hostname: string, options: UpdateTenantDomainOptions): Promise<TenantDomain> {
    this.#assertReady('updateTenantDomain()');
    return this.#domains.update(hostname, options);
  }

  /**
   * Takes a hostname from its tenant (it is free for any tenant afterwards)
   * and returns the removed domain. `fromDomain()` in this process stops
   * resolving it at once; in other processes within its `ttlMs`. Removing
   * the primary hostname leaves the tenant without one until another is
   * made primary.
   *
   * @throws InvalidHostnameError; TenantDomainNotFoundError when no tenant has the hostname.
   */
  async removeTenantDomain(hostname: string): Promise<TenantDomain> {
    this.#assertReady('removeTenantDomain()');
    return this.#domains.remove(hostname);
  }

  /**
   * The hostnames of the tenant `slug`, primary first, then by name; without
   * a slug, every tenant's, by slug.
   *
   * @throws InvalidTenantNameError for a bad slug; TenantNotFoundError when no such tenant exists.
   */
  async listTenantDomains(slug?: string): Promise<TenantDomain[]> {
    this.#assertReady('listTenantDomains()');
    if (slug !== undefined) validateTenantSlug(slug, this.#reserved);
    return this.#domains.list(slug);
  }

  /**
   * The domain of a hostname (normalised first: `PORTAL.acme.com:443` finds
   * `portal.acme.com`), or `undefined` when no tenant has it.
   *
   * @throws InvalidHostnameError for what is no hostname (no SQL runs).
   */
  async getTenantDomain(hostname: string): Promise<TenantDomain | undefined> {
    this.#assertReady('getTenantDomain()');
    return this.#domains.find(hostname);
  }

  /** @internal How `fromDomain()` reads the domains registry: everything, unless it has not changed since `generation`. */
  [DOMAIN_SNAPSHOT](generation: string): Promise<TenantDomainSnapshot> {
    this.#assertReady('fromDomain()');
    return this.#domains.snapshot(generation);
  }

  /**
   * The cached DataSource bound to the tenant's schema, built on first use.
   * It is not held: a later eviction may close it. For work that must not be
   * interrupted, use `run()`, which holds the DataSource until the work ends.
   *
   * @throws TenantNotFoundError for an unknown tenant; TenantNotActiveError when it is not active.
   */
  async getDataSource(slug: string): Promise<DataSource> {
    const lease = await this.#lease(slug, 'getDataSource()');
    lease.release();
    return lease.value.dataSource;
  }

  /**
   * Runs `fn` with the tenant active and returns its result. Inside `fn`, and
   * in everything it starts (promises, timers, event handlers),
   * `tenantContext` serves this tenant; nested runs switch to the inner tenant
   * and restore the outer one after. The tenant's DataSource is held until
   * the promise returned by `fn` settles, so eviction cannot close it midway.
   *
   * @throws TenantNotFoundError (before `fn` runs) for an unknown tenant.
   * @throws TenantNotActiveError when the tenant is not active.
   * @example
   * ```ts
   * const clients = await tenants.run('acme', () => tenantContext.getRepository(Client).find());
   * ```
   */
  run<T>(slug: string, fn: () => T | Promise<T>): Promise<T> {
    // Hot path: a cached tenant with a fresh, active record starts fn with no
    // await in between. Only validated slugs ever become cache keys, so a hit
    // needs no revalidation of the slug.
    const held = this.#state === 'ready' && typeof slug === 'string' ? this.#cache.tryLease(slug) : undefined;
    if (held !== undefined) {
      const cached = held.value;
      if (cached.record.status === 'active' && !cached.pending && Date.now() - cached.checkedAt <= this.#options.tenantRecordTtlMs) {
        return this.#runHeld(held, fn);
      }
    }
    return this.#lease(slug, 'run()', held).then((lease) => this.#runHeld(lease, fn));
  }

  /** Runs `fn` in the leased tenant's context and releases the lease when its result settles. */
  #runHeld<T>(lease: Lease<CachedTenant>, fn: () => T | Promise<T>): Promise<T> {
    this.#activeRuns += 1;
    const finish = (): void => {
      lease.release();
      this.#activeRuns -= 1;
      if (this.#activeRuns === 0) this.#wakeIdleWaiters();
    };
    let result: T | Promise<T>;
    try {
      const { record } = lease.value;
      tagActiveSpan(record.slug, record.schemaName);
      result = runIsObserved() ? runStorage.run(lease.value.runState, traceRun, this, record, fn) : runStorage.run(lease.value.runState, fn);
    } catch (error) {
      finish();
      return Promise.reject(error);
    }
    return Promise.resolve(result).then(
      (value) => {
        finish();
        return value;
      },
      (error: unknown) => {
        finish();
        if (this.#servers.size > 1 && isMissingSchemaObject(error)) return this.#movedOr(error, lease.value.record);
        throw error;
      },
    );
  }

  /**
   * A run failed on a missing schema or relation: when the registry now
   * places the tenant on another server than the one this run used (it
   * moved meanwhile), the failure is `TenantMovedError` and the cached
   * DataSource is forgotten; otherwise the error as it was.
   */
  async #movedOr(error: unknown, ran: TenantRecord): Promise<never> {
    // FOR SHARE: a move that renamed the schema writes the new server before its commit; this waits for that commit.
    const now = await this.#registry.findCommitted(this.#shared!, ran.slug).catch(() => undefined);
    if (now !== undefined && now.server !== ran.server) {
      this.#cache.evict(ran.slug);
      throw new TenantMovedError(ran.slug, now.server, error);
    }
    throw error;
  }

  /**
   * Applies pending tenant migrations to every active tenant (or to
   * `options.tenants`). Which tenants are in scope, and which have something
   * pending, come from the migration ledger in one query; the report has a
   * line for every tenant in scope (those with nothing pending are
   * `up-to-date`, with no DataSource opened), so a run with nothing to do is
   * fast whatever the fleet size and still proves every tenant's state.
   * Each tenant is migrated in its own transaction under its schema's
   * advisory lock: a failing tenant is rolled back and
   * reported, the others go on (unless `stopOnError`, or a failing wave).
   * Two processes may run it at once: no tenant is migrated twice, none
   * deadlocks. A rerun picks up exactly what is still pending.
   *
   * @throws InvalidTenantNameError / TenantNotFoundError for a bad or unknown slug in `options.tenants` (nothing runs).
   * @example
   * ```ts
   * const report = await tenants.migrateTenants({ concurrency: 4, waves: [1, '10%'] });
   * for (const r of report.results) if (r.status === 'failed') console.error(r.slug, r.error);
   * ```
   */
  async migrateTenants(options: FleetMigrationOptions = {}): Promise<FleetReport> {
    this.#assertReady('migrateTenants()');
    this.#validateFleetOptions(options);
    const report = await this.#fleet!.migrateTenants({
      ...options,
      onProgress: (result, done, total) => {
        if (result.status === 'migrated') {
          this.#recheckMigrations(result.slug);
          this.#events.emit('migrated', { slug: result.slug, applied: result.applied });
        }
        if (result.status === 'failed' && result.error !== undefined) this.#events.emit('migration-failed', { slug: result.slug, error: result.error });
        options.onProgress?.(result, done, total);
      },
    });
    // Up to date (maybe migrated by another process): served again at once, not after the record TTL.
    for (const result of report.results) if (result.status === 'up-to-date') this.#recheckMigrations(result.slug);
    // Spare schemas are part of the fleet: bring them up to date too.
    if (options.signal?.aborted !== true) await Promise.all([...this.#warmPools.values()].map((pool) => pool.refill()));
    return report;
  }

  /**
   * Undoes the last applied migration of every active tenant (or of
   * `options.tenants`), each in its own locked transaction; same report as
   * `migrateTenants()`, with status `reverted`.
   */
  async revertTenants(options: FleetMigrationOptions = {}): Promise<FleetReport> {
    this.#assertReady('revertTenants()');
    this.#validateFleetOptions(options);
    const report = await this.#fleet!.revertTenants(options);
    for (const result of report.results) if (result.status === 'reverted') this.#recheckMigrations(result.slug);
    return report;
  }

  /**
   * Undoes the last applied migration of one tenant, in one locked
   * transaction, and returns its report line (status `reverted`, or
   * `up-to-date` when nothing was applied).
   *
   * @throws TenantNotFoundError for an unknown tenant; TenantNotActiveError when it is archived or being dropped.
   * @throws TenantMigrationError when the migration's `down()` fails (the tenant is unchanged).
   */
  async revertTenant(slug: string): Promise<FleetTenantResult> {
    this.#assertReady('revertTenant()');
    validateTenantSlug(slug, this.#reserved);
    const tenant = await this.#registry.find(this.#shared!, slug);
    if (tenant === undefined) throw new TenantNotFoundError(slug);
    if (tenant.status !== 'active' && tenant.status !== 'suspended') throw notServedError(slug, tenant.status);
    const result = await this.#fleet!.revertTenant(tenant);
    this.#recheckMigrations(slug);
    return result;
  }

  /**
   * Every tenant's applied and pending tenant migrations, from the ledger
   * (one query, whatever the fleet size). Rebuild the ledger from the
   * tenants' own migrations tables with `reconcileMigrationLedger()`.
   */
  async migrationStatus(): Promise<TenantMigrationStatus[]> {
    this.#assertReady('migrationStatus()');
    return this.#fleet!.migrationStatus();
  }

  /**
   * Rebuilds the migration ledger from every tenant's own migrations table
   * (TypeORM's truth), for instance after migrations were run by hand.
   */
  async reconcileMigrationLedger(options: FleetRunOptions = {}): Promise<FleetReport> {
    this.#assertReady('reconcileMigrationLedger()');
    this.#validateFleetOptions(options);
    const report = await this.#fleet!.reconcile(options);
    for (const result of report.results) this.#recheckMigrations(result.slug);
    return report;
  }

  /**
   * Runs the shared schema's pending migrations (`initialize()` does it too)
   * under the initialisation lock, on every server (home first), and returns
   * the names applied on any of them.
   */
  async migrateShared(): Promise<string[]> {
    this.#assertReady('migrateShared()');
    const applied = new Set<string>();
    // Every server has the shared schema: the home server first, then the others, one at a time.
    for (const server of this.#servers.values()) {
      const shared = server.sharedDataSource;
      const names = await server.inLockedTransaction(shared, 'initialize', (runner) =>
        applyPendingMigrations(shared, runner, this.#searchPaths.sharedMigration(), { shared: true }),
      );
      for (const name of names) applied.add(name);
    }
    return [...applied];
  }

  /**
   * Generates a migration from the entities, as TypeORM's
   * `migration:generate` does, but one that is right for every tenant.
   * Tenant migrations: a throwaway schema is brought to the head of the
   * tenant migrations inside a transaction that is rolled back (nothing is
   * left), TypeORM's schema builder diffs the tenant entities against it, and
   * the statements come out with tenant objects (tables, enum types,
   * sequences, indexes, constraints) unqualified and shared objects
   * qualified with the shared schema. With `shared: true`, the shared
   * entities against the shared schema. Returns `undefined` when nothing
   * would change. The caller writes `source` to `fileName`.
   *
   * @throws MigrationGenerationError when TypeORM wrote the throwaway schema's name where it cannot be removed.
   * @example
   * ```ts
   * const migration = await tenants.generateMigration('AddInvoiceStatus');
   * if (migration) await writeFile(`src/migrations/tenant/${migration.fileName}`, migration.source);
   * ```
   */
  async generateMigration(name: string, options: GenerateMigrationOptions = {}): Promise<GeneratedMigration | undefined> {
    this.#assertReady('generateMigration()');
    const timestamp = options.timestamp ?? Date.now();
    migrationFile(name, timestamp, [], [], options); // checks the name and timestamp before any SQL
    let changes: SchemaChanges;
    if (options.shared === true) {
      changes = await sharedSchemaChanges(this.#shared!);
    } else {
      const throwaway = `${LIBRARY_SCHEMA_PREFIX}gen_${randomBytes(6).toString('hex')}`;
      const dataSource = await this.#home!.buildDataSource(throwaway);
      try {
        changes = await tenantSchemaChanges(dataSource, throwaway, this.#searchPaths.tenantMigration(throwaway), this.#home!.citusMode);
      } finally {
        await dataSource.destroy();
      }
    }
    if (changes.up.length === 0) return undefined;
    return { ...migrationFile(name, timestamp, changes.up, changes.down, options), up: changes.up, down: changes.down };
  }

  /**
   * Brings the warm pool's spare schemas up to date and tops it up to its
   * size; resolves when done. Runs in the background after each claim and at
   * `initialize()`; call it to wait for a full pool.
   *
   * @throws InvalidArgumentError when the manager has no `warmPool` option.
   */
  async refillWarmPool(): Promise<void> {
    this.#assertReady('refillWarmPool()');
    if (this.#warmPools.size === 0) throw new InvalidArgumentError('refillWarmPool() needs the manager option warmPool: { size }.');
    await Promise.all([...this.#warmPools.values()].map((pool) => pool.refill()));
  }

  /**
   * Spare schemas in the warm pools, and how many have every tenant
   * migration (zeros without a warm pool): every server's together, and
   * each server's (`servers`, by name; each server keeps `warmPool.size` spares).
   */
  async warmPoolStatus(): Promise<{ total: number; ready: number; servers: Record<string, { total: number; ready: number }> }> {
    this.#assertReady('warmPoolStatus()');
    const servers: Record<string, { total: number; ready: number }> = {};
    let total = 0;
    let ready = 0;
    for (const [name, pool] of this.#warmPools) {
      const count = await pool.count(this.#servers.get(name)!.sharedDataSource);
      servers[name] = count;
      total += count.total;
      ready += count.ready;
    }
    return { total, ready, servers };
  }

  /** Cache counters and the shared pool's gauges. */
  stats(): TenantManagerStats {
    const cache = this.#cache.stats();
    let total = 0;
    let idle = 0;
    let waiting = 0;
    let max = 0;
    const servers: Record<string, TenantPoolStats> = {};
    for (const [name, server] of this.#servers) {
      const pool = server.pool;
      servers[name] = Object.freeze({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount, max: server.poolMax });
      total += pool.totalCount;
      idle += pool.idleCount;
      waiting += pool.waitingCount;
      max += server.poolMax;
    }
    return {
      cachedDataSources: cache.size,
      hits: cache.hits,
      misses: cache.misses,
      evictions: cache.evictions,
      pendingDisposal: cache.pendingDisposal,
      activeRuns: this.#activeRuns,
      // The pools' real sizes (`extra.max` overrides poolSize, as in TypeORM); before initialize(), the options'.
      pool: { total, idle, waiting, max: this.#servers.size > 0 ? max : this.#options.servers.reduce((sum, s) => sum + (s.connection.poolSize ?? DEFAULT_POOL_SIZE), 0) },
      servers: Object.freeze(servers),
    };
  }

  /** Schemas every tenant's raw SQL searches besides its own, so no tenant may take their names. */
  get #librarySchemas(): readonly string[] {
    return [this.#options.extensionsSchema, ...this.#options.querySearchPath];
  }

  /**
   * Stops serving, waits for active runs (up to `destroyTimeoutMs`), closes
   * every cached DataSource, the shared DataSource and the pool. Safe to call
   * twice; any other method afterwards throws `ManagerDestroyedError`.
   */
  destroy(): Promise<void> {
    this.#destroy ??= this.#shutdown();
    return this.#destroy;
  }

  /** Same as `destroy()`, for `await using tenants = new TenantDataSourceManager(...)`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.destroy();
  }

  async #start(): Promise<void> {
    const options = this.#options;
    // Paths and globs are loaded once, here: every DataSource gets these classes, so what TypeORM runs is what the ledger names.
    const [entities, tenantMigrations, sharedMigrations] = await Promise.all([
      loadEntities(options.entities),
      loadMigrationList(options.tenantMigrations, 'tenantMigrations'),
      loadMigrationList(options.sharedMigrations, 'sharedMigrations'),
    ]);
    this.#tenantMigrations = tenantMigrations.classes;
    this.#tenantMigrationNames = tenantMigrations.names;
    this.#sharedMigrations = sharedMigrations.classes;
    this.#partition = partitionEntities(entities);
    pinSharedEntities(this.#partition.sharedEntities, options.sharedSchema);
    this.#pinned = true;

    this.#queryCache = options.queryCache === undefined ? undefined : new QueryCacheStore(options.queryCache);
    const partition = this.#partition!;
    const model = {
      tenantEntities: partition.tenantEntities,
      sharedEntities: partition.sharedEntities,
      tenantMigrations: this.#tenantMigrations,
      sharedMigrations: this.#sharedMigrations,
      sharedSchema: options.sharedSchema,
      lockTimeoutMs: options.lockTimeoutMs,
      pool: options.pool,
      queryCache: this.#queryCache,
      dataSourceLogger: options.dataSourceLogger,
      onPoolError: options.onPoolError,
      severalServers: options.servers.length > 1,
    };
    // Every server opens at once; if one cannot, those that did are closed again (by #teardown) and the error says which.
    const opened = await Promise.allSettled(options.servers.map((server) => TenantServer.open(server.name, server.connection, model)));
    for (const result of opened) if (result.status === 'fulfilled') this.#servers.set(result.value.name, result.value);
    const failed = opened.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    const home = this.#servers.get(options.homeServer)!;
    this.#home = home;
    if (decideCitusMode(options.citus, [...this.#servers.values()], options.isolation)) home.enterCitusMode();
    const shared = home.sharedDataSource;
    this.#shared = shared;
    pinSharedActiveRecord(partition.sharedEntities, shared);
    if (options.warmPool !== undefined) {
      for (const server of this.#servers.values()) {
        const pool = new WarmPool(
          {
            server,
            sharedSchema: options.sharedSchema,
            searchPaths: this.#searchPaths,
            metadataTableName: options.connection.metadataTableName ?? 'typeorm_metadata',
            tenantMigrationNames: this.#tenantMigrationNames,
            migrationGuard: options.migrationGuard,
            isServing: () => this.#state === 'ready',
            onBackgroundError: options.onBackgroundError,
          },
          options.warmPool,
          options.registryTable,
        );
        this.#warmPools.set(server.name, pool);
      }
    }

    this.#reserved = {
      sharedSchema: options.sharedSchema,
      connectingRoles: [...new Set([...this.#servers.values()].map((server) => server.connectingRole))],
      otherSchemas: this.#librarySchemas,
    };
    for (const server of this.#servers.values()) this.#checkDatabaseName(server);

    const extensions = await this.#checkModel(options.connection.installExtensions !== false);
    // The home server first (registry, domains, ledger, then its shared schema), then every other server's shared schema.
    for (const server of this.#servers.values()) {
      const isHome = server === home;
      const serverShared = server.sharedDataSource;
      const warnings = await server.inLockedTransaction(serverShared, 'initialize', async (runner) => {
        // The library's own schemas (shared, extensions, guard) stay on the coordinator, whatever the cluster's default.
        if (server.citusMode) await withoutSchemaSharding(runner);
        await ensureSchema(runner, options.sharedSchema);
        await ensureMigrationGuard(runner, options.migrationGuard);
        if (isHome) {
          await this.#registry.ensureTable(runner);
          this.#registryId = (await this.#registry.identity(runner))!;
          await this.#domains.ensureTable(runner);
          await this.#ledger.ensureTable(runner);
          // A tenant made before these names were reserved (an upgrade, or another config) would be searched by every tenant's raw SQL.
          const taken = await this.#registry.holdingSchemas(runner, this.#librarySchemas);
          if (taken.length > 0) {
            throw new TenancyConfigurationError(
              `Tenant ${taken.map((t) => `"${t.slug}" (schema "${t.schemaName}")`).join(', ')} holds a schema that every tenant's raw SQL searches ` +
                '(extensionsSchema or querySearchPath): its tables would be reachable from every tenant. Choose another extensionsSchema or querySearchPath entry.',
            );
          }
        }
        await this.#warmPools.get(server.name)?.ensureTable(runner);
        const installed = await installExtensions(runner, { schema: options.extensionsSchema, sharedSchema: options.sharedSchema, names: extensions });
        const pathWarning = await checkDefaultSearchPath(runner, { schema: options.extensionsSchema, schemas: installed.schemas });
        await applyPendingMigrations(serverShared, runner, this.#searchPaths.sharedMigration(), { shared: true });
        // Tenant tables on the workers may reference shared tables only as reference tables (a copy on every node).
        if (server.citusMode) await makeSharedTablesReferenceTables(runner, sharedTablesInReferenceOrder(serverShared.entityMetadatas, options.sharedSchema));
        if (isHome) await this.#refuseSharedTablesInTenants(runner);
        const found = pathWarning === undefined ? installed.warnings : [...installed.warnings, pathWarning];
        return this.#servers.size === 1 ? found : found.map((warning) => `server "${server.name}": ${warning}`);
      });
      for (const warning of warnings) this.#log({ level: 'warn', kind: 'configuration', message: warning });
    }
    if (options.checkEntities || home.citusMode) await this.#checkTenantMigrations(options.checkEntities);
    const smallestPool = Math.min(...[...this.#servers.values()].map((server) => server.poolMax));
    this.#fleet = new FleetMigrator({
      home,
      serverOf: (name) => this.#serverOf(name),
      searchPaths: this.#searchPaths,
      registry: this.#registry,
      ledger: this.#ledger,
      tenantMigrationNames: this.#tenantMigrationNames,
      migrationGuard: options.migrationGuard,
      log: this.#log,
      defaultConcurrency: this.#defaultConcurrency,
      poolSize: smallestPool,
      owner: this,
      nonTransactionalMigrations: this.#tenantMigrations.some(declaresNonTransactional),
      nodesOf: home.citusMode ? (schemaNames) => nodesOfSchemas(home.sharedDataSource, schemaNames) : undefined,
    });
    this.#lifecycle = new TenantLifecycle({
      home,
      serverOf: (name) => this.#serverOf(name),
      registry: this.#registry,
      domains: this.#domains,
      events: this.#events,
      plugins: this.#plugins,
      dropBatchSize: options.dropBatchSize,
      evict: (slug) => this.#cache.evict(slug),
      dropTenantRole: (runner, schemaName, server) => dropTenantRole(runner, this.#roleOf(server, schemaName)),
      migrateInTransaction: async (dataSource, runners, slug, schemaName) => {
        try {
          await applyPendingMigrations(dataSource, runners.tenant, this.#searchPaths.tenantMigration(schemaName), { guard: options.migrationGuard });
        } catch (error) {
          // restoreTenant(): say which tenant and which migration (the guard's refusals included).
          if (error instanceof MigrationFailure) throw new TenantMigrationError(slug, error.migration, error.cause);
          throw error;
        }
        await this.#ledger.syncTenant(runners.home, slug, schemaName, { tenant: runners.tenant });
      },
    });
    this.#state = 'ready';
    registerLiveOwner(this);
    for (const pool of this.#warmPools.values()) pool.refillInBackground();
  }

  /** Tenants processed at once on each server by fleet runs and fan-outs that do not say: half the smallest pool, at least 1. */
  get #defaultConcurrency(): number {
    // The pools' real sizes: `extra.max` overrides poolSize, as in TypeORM.
    return Math.max(1, Math.floor(Math.min(...[...this.#servers.values()].map((server) => server.poolMax)) / 2));
  }

  /** Refuses a template database and warns about the maintenance one, for the database a server connected to. */
  #checkDatabaseName(server: TenantServer): void {
    const database = server.database;
    if (database === 'template0' || database === 'template1') {
      throw new TenancyConfigurationError(
        `initialize() connected to the template database "${database}" of ${server.describe()}: ` +
          'every database created later is copied from it, so the tenant registry, the ledger and the shared schema would be copied into each. ' +
          "Name your application's database (dataSource.url or dataSource.database; is DATABASE_URL unset?).",
      );
    }
    if (database === 'postgres' && !this.#options.allowMaintenanceDatabase) {
      this.#log({
        level: 'warn',
        kind: 'configuration',
        message:
          `initialize() is using the maintenance database "${database}" of ${server.describe()}: ` +
          'the tenant registry, the migration ledger and the shared schema go there. Name your application\'s database ' +
          '(dataSource.url or dataSource.database; is DATABASE_URL unset?), or pass allowMaintenanceDatabase: true if it is meant.',
      });
    }
  }

  async #shutdown(): Promise<void> {
    const wasReady = this.#state === 'ready';
    this.#state = 'destroying';
    unregisterLiveOwner(this);
    if (!wasReady) await this.#init?.catch(() => undefined); // a failed start tears itself down
    await this.#waitForRuns(this.#options.destroyTimeoutMs);
    await Promise.all([...this.#warmPools.values()].map((pool) => pool.settled()));
    await this.#teardown();
    this.#state = 'destroyed';
  }

  async #teardown(): Promise<void> {
    await this.#cache.clear();
    if (this.#shared !== undefined) unpinSharedActiveRecord(this.#shared);
    this.#shared = undefined;
    this.#home = undefined;
    const servers = [...this.#servers.values()];
    this.#servers.clear();
    this.#warmPools.clear();
    const closed = await Promise.allSettled(servers.map((server) => server.close()));
    if (this.#pinned) {
      this.#pinned = false;
      releaseSharedSchema();
    }
    const failed = closed.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  }

  #waitForRuns(timeoutMs: number): Promise<void> {
    if (this.#activeRuns === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      timer.unref();
      this.#idleWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  #wakeIdleWaiters(): void {
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const wake of waiters) wake();
  }

  #assertReady(operation: string): void {
    switch (this.#state) {
      case 'ready':
        return;
      case 'new':
        throw new ManagerNotInitializedError(operation);
      case 'destroying':
      case 'destroyed':
        throw new ManagerDestroyedError(operation);
      default:
        throw new Error(`Unexpected manager state "${this.#state satisfies never}"`);
    }
  }

  /** The tenant role of `schemaName` on `server` (roles are cluster-wide: the name includes the database). */
  #roleOf(server: TenantServer, schemaName: string): string {
    return tenantRoleName(server.database, schemaName);
  }

  get #migrationsTableName(): string {
    return this.#options.connection.migrationsTableName ?? 'migrations';
  }

  #validateFleetOptions(options: FleetMigrationOptions): void {
    for (const slug of options.tenants ?? []) validateTenantSlug(slug, this.#reserved);
    const where = options.where;
    if (where !== undefined && (where === null || typeof where !== 'object')) throw new InvalidArgumentError('Option "where" must be an object such as { server: "eu1" }.');
    const servers = where?.server;
    for (const name of servers === undefined ? [] : typeof servers === 'string' ? [servers] : Array.isArray(servers) ? servers : [servers]) {
      this.#serverNamed(name, 'Option "where.server"');
    }
    if (options.concurrency !== undefined && (!Number.isInteger(options.concurrency) || options.concurrency < 1)) {
      throw new InvalidArgumentError(`Option "concurrency" must be a positive integer; got ${String(options.concurrency)}.`);
    }
  }

  /** Leases the tenant's cached DataSource after checking that it is served. */
  async #lease(slug: string, operation: string, held?: Lease<CachedTenant>): Promise<Lease<CachedTenant>> {
    let lease = held;
    if (lease === undefined) {
      this.#assertReady(operation);
      validateTenantSlug(slug, this.#reserved);
      lease = await this.#cache.lease(slug);
    }
    try {
      const cached = lease.value;
      const now = Date.now();
      if (now - cached.checkedAt > this.#options.tenantRecordTtlMs) {
        const record = await this.#registry.find(this.#shared!, slug);
        if (record === undefined) {
          this.#cache.evict(slug);
          throw new TenantNotFoundError(slug);
        }
        if (record.createdAt.getTime() !== cached.record.createdAt.getTime() || record.schemaName !== cached.record.schemaName) {
          // Dropped and created again (by another process): a new tenant under the old name, with a DataSource of its own.
          cached.fence.dropped = true;
          this.#cache.evict(slug);
          lease.release();
          lease = undefined;
          return await this.#lease(slug, operation);
        }
        cached.record = record;
        cached.pending = await this.#isPending(slug);
        cached.checkedAt = now;
        cached.runState = { owner: this, tenant: record, dataSource: cached.dataSource };
      }
      if (cached.record.status !== 'active') {
        this.#cache.evict(slug);
        throw notServedError(slug, cached.record.status);
      }
      if (cached.pending) this.#onPendingMigrations(cached.record);
      return lease;
    } catch (error) {
      lease?.release();
      throw error;
    }
  }

  /** This process changed the tenant's migrations: its next run reads its record and pending state again. */
  #recheckMigrations(slug: string): void {
    this.#pendingWarned.delete(slug);
    const cached = this.#cache.peek(slug);
    if (cached !== undefined) cached.checkedAt = 0;
  }

  /** With pendingMigrations other than 'serve': whether the tenant's ledger lacks migrations of the code. */
  async #isPending(slug: string): Promise<boolean> {
    if (this.#options.pendingMigrations === 'serve') return false;
    return this.#ledger.isPending(this.#shared!, slug, this.#tenantMigrationNames);
  }

  /** A served tenant has migrations pending: refuse it, or warn once (until it is migrated), by the pendingMigrations option. */
  #onPendingMigrations({ slug, schemaName }: TenantRecord): void {
    if (this.#options.pendingMigrations === 'refuse') {
      throw new TenantMigrationPendingError(slug, Math.max(1, Math.ceil(this.#options.tenantRecordTtlMs / 1000)));
    }
    if (this.#pendingWarned.has(slug)) return;
    this.#pendingWarned.add(slug);
    this.#log({
      level: 'warn',
      kind: 'pending-migrations',
      message: `tenant "${slug}" is served with tenant migrations pending (pendingMigrations: 'warn'); apply them with typeorm-tenants migrate.`,
      schema: schemaName,
      tenant: slug,
    });
  }

  /** Cache miss: read the registry, then build the tenant's DataSource. */
  async #openTenant(slug: string): Promise<CachedTenant> {
    const record = await this.#registry.find(this.#shared!, slug);
    if (record === undefined) throw new TenantNotFoundError(slug);
    if (record.status !== 'active') throw notServedError(slug, record.status);
    const pending = await this.#isPending(slug);
    const server = this.#serverOf(record.server);
    const role = this.#options.isolation === 'role' ? this.#roleOf(server, record.schemaName) : undefined;
    const fence: DropFence = { slug, dropped: false };
    const dataSource = await server.buildDataSource(record.schemaName, {
      kind: 'served',
      searchPath: this.#searchPaths.tenantRaw(record.schemaName),
      role,
      sessionUser: server.connectingRole,
      fence,
      queryCache: this.#queryCache?.tenantOption(tenantCachePrefix(server.database, record.schemaName, record.createdAt)),
      sqlComment: this.#options.sqlComment ? tenantSqlCommentPrefix(record.slug) : undefined,
    });
    let fences = this.#fences.get(record.schemaName);
    if (fences === undefined) this.#fences.set(record.schemaName, (fences = new Set()));
    fences.add(fence);
    return { dataSource, fence, record, pending, checkedAt: Date.now(), runState: { owner: this, tenant: record, dataSource } };
  }

  /**
   * A tenant schema holding a table named like a shared entity's: the entity
   * most likely lacks `@TenantScoped()` (tenant migrations create its table
   * per tenant, while the manager serves it from the shared schema, where a
   * same-named table would be shared by every tenant).
   */
  async #refuseSharedTablesInTenants(runner: SqlRunner): Promise<void> {
    const shared = this.#shared!.entityMetadatas.filter((metadata) => metadata.tableType !== 'entity-child');
    // Only tenants with every tenant migration applied: a pending one may be what moves the table out (to the shared schema).
    const found = await this.#ledger.upToDateTenantsHoldingTables(
      runner,
      shared.map((metadata) => metadata.tableName),
      this.#tenantMigrationNames,
    );
    if (found.length === 0) return;
    const entityOf = (table: string): string => shared.find((metadata) => metadata.tableName === table)?.name ?? table;
    throw new TenancyConfigurationError(
      `Shared entit${new Set(found.map((f) => f.table)).size === 1 ? 'y' : 'ies'} ` +
        `${[...new Set(found.map((f) => `${entityOf(f.table)} (table "${f.table}")`))].join(', ')} ` +
        `${found.length === 1 ? 'has its table' : 'have tables'} in tenant schemas (${found.map((f) => `"${f.slug}"`).join(', ')}): ` +
        'a tenant migration creates it per tenant, but without @TenantScoped() the manager serves it from the shared schema. ' +
        'Mark the entity @TenantScoped(), or rename one of the tables.',
    );
  }

  /** `checkEntities`: every tenant entity has a table at the head of the tenant migrations. */
  /** Whether the tenant migrations run in a throwaway schema on the coordinator (not distributed; rolled back). */
  async #tenantMigrationsRunLocally(): Promise<boolean> {
    const throwaway = `${LIBRARY_SCHEMA_PREFIX}check_${randomBytes(6).toString('hex')}`;
    const dataSource = await this.#home!.buildDataSource(throwaway);
    try {
      await missingTenantTables(dataSource, throwaway, this.#searchPaths.tenantMigration(throwaway), 'local');
      return true;
    } catch {
      return false; // what it failed on is the distributed run's error, which the caller reports
    } finally {
      await dataSource.destroy();
    }
  }

  /**
   * Runs every tenant migration in a throwaway schema (rolled back): with
   * `checkEntities`, refuses tenant entities left without a table; in Citus
   * mode (where the run happens in a distributed schema, as a signup's
   * would), refuses what Citus does not accept there (a foreign key to a
   * table that is not a reference table, a trigger, table inheritance...)
   * before a signup meets it: a failure there that a second run on the
   * coordinator, not distributed, does not meet. A migration that fails
   * either way is a warning (as on one server, createTenant and the fleet
   * report it), and a node out of reach skips the check with a warning.
   */
  async #checkTenantMigrations(checkEntities: boolean): Promise<void> {
    const throwaway = `${LIBRARY_SCHEMA_PREFIX}check_${randomBytes(6).toString('hex')}`;
    const citus = this.#home!.citusMode;
    const dataSource = await this.#home!.buildDataSource(throwaway);
    let missing: MissingTenantTable[];
    try {
      missing = await missingTenantTables(dataSource, throwaway, this.#searchPaths.tenantMigration(throwaway), citus);
    } catch (error) {
      if (!citus) throw error;
      if (!reachesNoNode(error) && !(await this.#tenantMigrationsRunLocally())) {
        // They fail outside a distributed schema too: not Citus's refusal, and, as on one server, each createTenant and fleet run says so.
        this.#log({
          level: 'warn',
          kind: 'configuration',
          message: `The tenant migrations fail in a throwaway schema (rolled back), distributed or not: ${messageWithCauses(error)}. createTenant and migrateTenants will fail until the migration is fixed.`,
        });
        return;
      }
      if (reachesNoNode(error)) {
        // A worker down must not keep a process from starting: the check is for the code, and the next start makes it.
        this.#log({
          level: 'warn',
          kind: 'configuration',
          message: `Citus mode: the tenant migrations could not be checked in a distributed schema, a node being unreachable (${messageWithCauses(error)}); this process starts without that check.`,
        });
        return;
      }
      throw new TenancyConfigurationError(
        `In Citus mode every tenant schema is a distributed schema, and the tenant migrations failed in one (a throwaway schema, rolled back): ${messageWithCauses(error)}. ` +
          'Citus accepts in a distributed schema foreign keys to its own tables and to reference tables (the shared entities\' tables) only, and no table inheritance; ' +
          "fix the migration, or set citus: false. No tenant could be created as things are.",
        { cause: error },
      );
    } finally {
      await dataSource.destroy();
    }
    if (!checkEntities) return;
    if (missing.length === 0) return;
    throw new TenancyConfigurationError(
      `Tenant entit${missing.length === 1 ? 'y' : 'ies'} ${missing.map((m) => `${m.entity} (table "${m.table}")`).join(', ')} ` +
        `${missing.length === 1 ? 'has no table' : 'have no tables'} after every tenant migration ran: the migration is missing. ` +
        'Write it with: typeorm-tenants migration:generate <dir/Name>, and add it to tenantMigrations.',
    );
  }

  /**
   * Reads the whole model from a throwaway DataSource with the entities of
   * both kinds: refuses a table name that a tenant entity and a shared one
   * both map (a foreign key written without a schema could not tell them
   * apart), and returns the extensions the entities need (TypeORM's rules),
   * or none when `installExtensions` is off.
   */
  async #checkModel(installExtensions: boolean): Promise<string[]> {
    const all = await this.#home!.buildDataSource(UNQUALIFIED_SCHEMA_SENTINEL);
    try {
      const shared = new Set(this.#partition!.sharedEntities);
      const tenantTables = new Map<string, string>();
      for (const metadata of all.entityMetadatas) {
        if (metadata.schema === UNQUALIFIED_SCHEMA_SENTINEL) tenantTables.set(metadata.tableName, metadata.name);
      }
      for (const metadata of all.entityMetadatas) {
        const tenant = tenantTables.get(metadata.tableName);
        if (shared.has(metadata.target as Function) && tenant !== undefined) {
          throw new TenancyConfigurationError(
            `Tenant entity ${tenant} and shared entity ${metadata.name} both map the table "${metadata.tableName}": ` +
              'foreign keys and raw SQL written without a schema could not tell them apart. Rename one of the tables.',
          );
        }
      }
      return installExtensions ? await requiredExtensions(all) : [];
    } finally {
      await all.destroy();
    }
  }
}

function resolveOptions(options: TenantDataSourceManagerOptions): ResolvedOptions {
  if (options === null || typeof options !== 'object') {
    throw new TenancyConfigurationError('TenantDataSourceManager needs an options object with "dataSource" and "entities".');
  }
  const { servers, homeServer, queryCache } = resolveServers(options);
  const home = servers.find((server) => server.name === homeServer)!;
  const connection = home.connection as TenantConnectionOptions & Record<string, unknown>;
  if (!Array.isArray(options.entities) || options.entities.length === 0) {
    throw new TenancyConfigurationError(
      'Option "entities" must list the entity classes, tenant-scoped and shared, or paths or globs of their files (as in TypeORM\'s DataSource options).',
    );
  }
  const sharedSchema = validatePlainIdentifier(options.sharedSchema ?? DEFAULT_SHARED_SCHEMA, 'sharedSchema');
  const registryTable = validatePlainIdentifier(options.registryTable ?? DEFAULT_REGISTRY_TABLE, 'registryTable');
  if (registryTable.length > 63 - '_migrations'.length) {
    // The ledger is "<registryTable>_migrations"; PostgreSQL would silently truncate a longer name.
    throw new TenancyConfigurationError(
      `Option "registryTable" must be at most ${63 - '_migrations'.length} characters, so that its ledger table "${registryTable}_migrations" fits in 63.`,
    );
  }
  const querySearchPath = (options.querySearchPath ?? []).map((s, i) => validatePlainIdentifier(s, `querySearchPath[${i}]`));
  const extensionsSchema = validatePlainIdentifier(options.extensionsSchema ?? DEFAULT_EXTENSIONS_SCHEMA, 'extensionsSchema');
  if (extensionsSchema === sharedSchema) {
    throw new TenancyConfigurationError(
      `Option "extensionsSchema" must differ from the shared schema "${sharedSchema}": every tenant's raw SQL searches the extensions schema, ` +
        'and unqualified names must never reach shared tables. Keep extensions in a schema of their own (default "extensions").',
    );
  }

  const tenantRecordTtlMs = nonNegative(options.tenantRecordTtlMs ?? DEFAULT_TENANT_RECORD_TTL_MS, 'tenantRecordTtlMs');
  const destroyTimeoutMs = nonNegative(options.destroyTimeoutMs ?? DEFAULT_DESTROY_TIMEOUT_MS, 'destroyTimeoutMs');
  const slugReuseDelayMs = nonNegative(options.slugReuseDelayMs ?? tenantRecordTtlMs + destroyTimeoutMs, 'slugReuseDelayMs');
  if (slugReuseDelayMs > MAX_SLUG_REUSE_DELAY_MS) {
    throw new TenancyConfigurationError(`Option "slugReuseDelayMs" must be at most one day (${MAX_SLUG_REUSE_DELAY_MS} ms); got ${slugReuseDelayMs}.`);
  }
  const maxDataSources = positiveInteger(options.maxDataSources ?? DEFAULT_MAX_DATA_SOURCES, 'maxDataSources');
  const pool = { ...DEFAULT_POOL_OPTIONS, ...(options.pool ?? {}) };
  const logger = validateTenancyLogger(options.logger, connection.logger);
  const log = createLibraryLog(logger);
  if (options.placement !== undefined && typeof options.placement !== 'function') {
    throw new TenancyConfigurationError(`Option "placement" must be a function that returns a server's name; got ${typeof options.placement}.`);
  }
  return Object.freeze({
    connection: home.connection,
    servers,
    homeServer,
    placement: options.placement,
    queryCache,
    entities: classListOption(options.entities, 'entities'),
    tenantMigrations: classListOption(options.tenantMigrations ?? [], 'tenantMigrations'),
    sharedMigrations: classListOption(options.sharedMigrations ?? [], 'sharedMigrations'),
    sharedSchema,
    extensionsSchema,
    maxDataSources,
    registryTable,
    querySearchPath: Object.freeze(querySearchPath),
    tenantRecordTtlMs,
    slugReuseDelayMs,
    destroyTimeoutMs,
    lockTimeoutMs: nonNegative(options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS, 'lockTimeoutMs'),
    dropBatchSize: positiveInteger(options.dropBatchSize ?? DEFAULT_DROP_BATCH_SIZE, 'dropBatchSize'),
    seed: options.seed,
    isolation: isolationOf(options.isolation),
    citus: citusOptionOf(options.citus),
    checkEntities: options.checkEntities === true,
    pendingMigrations: pendingMigrationsOf(options.pendingMigrations),
    migrationGuard: validateMigrationGuard(options.migrationGuard),
    warmPool: options.warmPool === undefined ? undefined : Object.freeze({ size: positiveInteger(options.warmPool.size, 'warmPool.size') }),
    onBackgroundError: options.onBackgroundError ?? ((error: Error) => log({ level: 'warn', kind: 'background-error', message: error.message, error })),
    pool: Object.freeze(pool),
    allowMaintenanceDatabase: booleanOption(options.allowMaintenanceDatabase, 'allowMaintenanceDatabase'),
    sqlComment: booleanOption(options.sqlComment, 'sqlComment'),
    onPoolError:
      options.onPoolError ??
      ((error: Error) => log({ level: 'warn', kind: 'pool-error', message: `a pooled connection failed: ${error.message}`, error })),
    log,
    dataSourceLogger: dataSourceLoggerOf(logger, connection.logging, connection.logger),
  });
}

/** A server name: what the registry records and the CLI's `--server` takes. */
const SERVER_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;

/**
 * The servers of the options: `dataSource` (one server named `'default'`)
 * or `servers` (by name), each checked as TypeORM postgres options the
 * manager can own; the home server; and the query cache option, which only
 * the home server may carry.
 */
function resolveServers(options: TenantDataSourceManagerOptions): {
  servers: readonly ServerOption[];
  homeServer: string;
  queryCache: QueryCacheOptions | undefined;
} {
  const given = options.servers;
  if (given !== undefined && options.dataSource !== undefined) {
    throw new TenancyConfigurationError('Give either "dataSource" (one server) or "servers" (several, by name), not both.');
  }
  if (given === undefined) {
    if (options.homeServer !== undefined) throw new TenancyConfigurationError('Option "homeServer" needs the "servers" option.');
    const { connection, cache } = resolveConnection(options.dataSource, 'dataSource');
    return { servers: Object.freeze([Object.freeze({ name: DEFAULT_SERVER_NAME, connection })]), homeServer: DEFAULT_SERVER_NAME, queryCache: cache };
  }
  if (given === null || typeof given !== 'object' || Array.isArray(given) || Object.keys(given).length === 0) {
    throw new TenancyConfigurationError('Option "servers" must be an object of TypeORM postgres options by server name, with at least one server.');
  }
  const names = Object.keys(given);
  for (const name of names) {
    if (!SERVER_NAME.test(name)) {
      throw new TenancyConfigurationError(`Server name ${JSON.stringify(name)} is invalid: use 1 to 63 letters, digits, "_" or "-", starting with a letter or digit.`);
    }
  }
  const homeServer = options.homeServer ?? names[0]!;
  if (!names.includes(homeServer)) {
    throw new TenancyConfigurationError(`Option "homeServer" must be one of the servers (${names.map((n) => `"${n}"`).join(', ')}); got ${JSON.stringify(homeServer)}.`);
  }
  let queryCache: QueryCacheOptions | undefined;
  const servers = names.map((name) => {
    const { connection, cache } = resolveConnection(given[name], `servers.${name}`);
    if (name === homeServer) queryCache = cache;
    else if (cache !== undefined) {
      throw new TenancyConfigurationError(`Option "servers.${name}.cache" is refused: the query result cache is one store for every server, given on the home server ("${homeServer}").`);
    }
    return Object.freeze({ name, connection });
  });
  const home = servers.find((server) => server.name === homeServer)!;
  for (const server of servers) {
    for (const key of ['migrationsTableName', 'metadataTableName'] as const) {
      if (server.connection[key] !== home.connection[key]) {
        throw new TenancyConfigurationError(
          `Option "servers.${server.name}.${key}" differs from the home server's: every tenant's migrations are read and written under one name, so give it the same value on every server.`,
        );
      }
    }
  }
  return { servers: Object.freeze(servers), homeServer, queryCache };
}

/** One server's connection options, checked: postgres, nothing the manager sets itself, nothing that changes schemas outside migrations. */
function resolveConnection(value: unknown, label: string): { connection: TenantConnectionOptions; cache: QueryCacheOptions | undefined } {
  const connection = value as TenantConnectionOptions & Record<string, unknown>;
  if (connection === null || typeof connection !== 'object' || connection.type !== 'postgres') {
    throw new TenancyConfigurationError(`Option "${label}" must be TypeORM postgres options, with type: "postgres".`);
  }
  for (const key of ['entities', 'migrations', 'schema', 'driver', 'replication'] as const) {
    if (connection[key] !== undefined) {
      throw new TenancyConfigurationError(
        `Option "${label}.${key}" is set by the manager and must not be given: ` +
          (key === 'entities'
            ? 'pass entities as the "entities" option.'
            : key === 'migrations'
              ? 'pass "tenantMigrations" and "sharedMigrations".'
              : key === 'schema'
                ? 'tenant schemas come from the slugs; the shared schema is the "sharedSchema" option.'
                : key === 'driver'
                  ? 'every DataSource uses the manager\'s shared pool.'
                  : 'read replicas are not supported yet.'),
      );
    }
  }
  // TypeORM keys cached results by the caller's id or the query text: an id
  // such as { cache: { id: 'clients' } } is the same in every tenant, so the
  // manager keeps one store and gives each tenant DataSource its own prefix.
  const { cache, ...connectionWithoutCache } = connection;
  const queryCache = validateQueryCacheOption(cache as TenantConnectionOptions['cache']);
  for (const key of ['synchronize', 'dropSchema', 'migrationsRun'] as const) {
    if (connection[key]) {
      throw new TenancyConfigurationError(
        `Option "${label}.${key}" is refused: on a tenant DataSource it would change or drop one tenant's schema outside migrations. ` +
          'Change schemas with tenantMigrations and sharedMigrations.',
      );
    }
  }
  return { connection: Object.freeze({ ...connectionWithoutCache }) as TenantConnectionOptions, cache: queryCache };
}

/** An optional boolean option: `false` when not given. */
function booleanOption(value: unknown, name: string): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') throw new TenancyConfigurationError(`Option "${name}" must be true or false; got ${JSON.stringify(value)}.`);
  return value;
}

/** Whether a migration class declares TypeORM's `transaction = false` (its instances, as TypeORM makes them, say so). */
function declaresNonTransactional(migration: Function): boolean {
  try {
    return isNonTransactional(new (migration as new () => MigrationInterface)());
  } catch {
    return false; // a constructor that needs arguments: TypeORM could not build it either, and says so when it runs
  }
}

/** PostgreSQL's "schema does not exist" (3F000) or "relation does not exist" (42P01): what a statement gets from a tenant's former server. */
function isMissingSchemaObject(error: unknown): boolean {
  const state = sqlStateOf(error);
  return state === '3F000' || state === '42P01';
}

/** Drop notes older than this are pruned, so no longer wait can be kept. */
const MAX_SLUG_REUSE_DELAY_MS = 86_400_000;

function positiveInteger(value: unknown, option: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new TenancyConfigurationError(`Option "${option}" must be a positive integer; got ${String(value)}.`);
  }
  return value;
}

function nonNegative(value: unknown, option: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new TenancyConfigurationError(`Option "${option}" must be a number of milliseconds, 0 or more; got ${String(value)}.`);
  }
  return value;
}

function notServedError(slug: string, status: string): TenantNotActiveError {
  return status === 'suspended' ? new TenantSuspendedError(slug) : new TenantNotActiveError(slug, status);
}

function pendingMigrationsOf(value: unknown): 'serve' | 'warn' | 'refuse' {
  if (value === undefined || value === 'serve' || value === 'warn' || value === 'refuse') return value ?? 'serve';
  throw new TenancyConfigurationError(`Option "pendingMigrations" must be 'serve', 'warn' or 'refuse'; got ${JSON.stringify(value)}.`);
}

function isolationOf(value: unknown): 'schema' | 'role' {
  if (value === undefined || value === 'schema' || value === 'role') return value ?? 'schema';
  throw new TenancyConfigurationError(`Option "isolation" must be 'schema' or 'role'; got ${JSON.stringify(value)}.`);
}

/** Whether `error` (or a cause of it) says a node of the Citus cluster could not be reached (SQLSTATE class 08, or Citus's own wording). */
function reachesNoNode(error: unknown): boolean {
  for (let current = error, depth = 0; current !== undefined && current !== null && depth < 10; current = (current as { cause?: unknown }).cause, depth += 1) {
    if (sqlStateOf(current)?.startsWith('08') === true) return true;
    if (current instanceof Error && /connection to the remote node .* failed/.test(current.message)) return true;
  }
  return false;
}
