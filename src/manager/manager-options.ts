import type { EntityManager } from 'typeorm';
import type { TenantConnectionOptions, TenantPoolOptions } from '../data-source/shared-pool';
import type { WarmPoolOptions } from '../provisioning/warm-pool';
import type { TenantRecord } from '../registry/tenant-record';
import type { TenancyLogger } from './tenancy-logger';

/** What a seed hook gets: the new tenant, inside its creation transaction. */
export interface TenantSeedContext {
  /** The tenant's registry record (committed with everything else, or not at all). */
  readonly tenant: TenantRecord;
  /** The creation transaction's EntityManager, bound to the new tenant's schema. */
  readonly manager: EntityManager;
  /** Raw SQL in the creation transaction; unqualified names resolve in the tenant schema, then the shared one. */
  query(sql: string, parameters?: unknown[]): Promise<any>;
}

/** Fills a new tenant with its starting data, inside the creation transaction: a throw rolls the tenant back. */
export type TenantSeed = (context: TenantSeedContext) => Promise<void>;

/** What a `placement` function decides from: the new tenant's slug, and every server with its number of tenants. */
export interface TenantPlacementContext {
  readonly slug: string;
  readonly servers: ReadonlyArray<{ readonly name: string; readonly tenants: number }>;
}

/** Chooses the server of a new tenant (the `placement` option): returns a server's name. */
export type TenantPlacement = (context: TenantPlacementContext) => string | Promise<string>;

/** Options of `TenantDataSourceManager`. */
export interface TenantDataSourceManagerOptions {
  /**
   * TypeORM postgres connection options (`type: 'postgres'`, `url` or
   * host/port/..., `poolSize`, `logging`, ...), without entities, migrations or
   * schema: the manager sets those per DataSource. `poolSize` (default 10) is
   * the size of the ONE pool all tenants share. `synchronize`, `dropSchema`
   * and `migrationsRun` are refused: schemas change through migrations.
   */
  readonly dataSource?: TenantConnectionOptions;
  /**
   * Several PostgreSQL servers (or databases), by name, instead of
   * `dataSource`: each entry takes the options `dataSource` takes, and each
   * server gets ONE pool of its own `poolSize`. Every tenant lives on one of
   * them (the registry records which; `createTenant(slug, { server })` or
   * the `placement` option chooses). The home server (`homeServer`) holds
   * the tenant registry, the migration ledger and the domains; every server
   * has the shared schema, its shared migrations and its shared entities'
   * tables, so a tenant's foreign keys to shared tables resolve on its own
   * server (the shared rows themselves are each server's own: the library
   * does not copy them). `migrationsTableName` and `metadataTableName` must
   * be the same on every server; `cache` is given on the home server only.
   * With `dataSource`, the one server is named `'default'`.
   *
   * @example
   * ```ts
   * servers: {
   *   eu1: { type: 'postgres', url: process.env.EU1_URL, poolSize: 10 },
   *   eu2: { type: 'postgres', url: process.env.EU2_URL, poolSize: 10 },
   * },
   * homeServer: 'eu1',
   * ```
   */
  readonly servers?: Readonly<Record<string, TenantConnectionOptions>>;
  /** With `servers`: the server of the registry, the ledger and the domains. Default: the first server named. */
  readonly homeServer?: string;
  /**
   * With `servers`: where `createTenant()` puts a tenant it is not told a
   * `server` for. Gets the slug and every server with its number of
   * tenants (any status), in the order of `servers`, and returns a server's
   * name. Default: the server with the fewest tenants (the first of those
   * on a tie). A name that is not a server fails that `createTenant()` with
   * `InvalidArgumentError`.
   */
  readonly placement?: TenantPlacement;
  /**
   * Every entity, as TypeORM takes them: classes, and file paths or globs
   * (`'dist/entities/*.entity.js'`) loaded at `initialize()` by TypeORM's
   * rules (see `tenantMigrations`); from a file, the exported classes
   * decorated with `@Entity()` are kept. Those marked `@TenantScoped()` live
   * in each tenant schema; the others live once, in the shared schema.
   * `EntitySchema` is not supported. A path that matches no file, or a file
   * that exports no entity class, is a `TenancyConfigurationError` at
   * `initialize()`.
   *
   * @example
   * ```ts
   * entities: [Plan, path.join(__dirname, 'entities/tenant/*.js')]
   * ```
   */
  readonly entities: readonly (Function | string)[];
  /**
   * Migrations run inside each tenant schema (at `createTenant`, and by
   * `migrateTenants()`): classes, and file paths or globs
   * (`'dist/migrations/tenant/*.js'`), as in TypeORM's DataSource options.
   * Strings are loaded at `initialize()` with TypeORM's own rules: a relative
   * path is relative to the working directory (`process.cwd()`), not to the
   * file that names it (use `path.join(__dirname, ...)` for that); a directory
   * means every file under it; `.js .mjs .cjs .ts .mts .cts` files are loaded
   * (`.ts` ones need a TypeScript loader), `.d.ts` never; every class a file
   * exports is a migration. They run in TypeORM's order, by the timestamp
   * that ends each class name, whatever the order given; the ledger, pending
   * lists and reports use that order too. `TenancyConfigurationError` at
   * `initialize()`: a path that matches no file, a file that exports no class
   * or a function that is not a migration, a name without a timestamp, two
   * migrations with one name. Default `[]`.
   *
   * @example
   * ```ts
   * tenantMigrations: [path.join(__dirname, 'migrations/tenant/*.js')]
   * ```
   */
  readonly tenantMigrations?: readonly (Function | string)[];
  /** Migrations run once in the shared schema (at `initialize()`): classes, paths and globs, as `tenantMigrations`. Default `[]`. */
  readonly sharedMigrations?: readonly (Function | string)[];
  /** The schema of shared entities and of the tenant registry. Default `'public'`. */
  readonly sharedSchema?: string;
  /**
   * The schema PostgreSQL extensions live in. `initialize()` creates it and
   * installs there the extensions the entities need (TypeORM's rules:
   * `uuid-ossp` for uuid generation, `citext`, `hstore`, ...; plus
   * `dataSource.extensions`), unless `dataSource.installExtensions` is
   * `false`. Every search path the library sets names it, after the tenant
   * schema; a tenant may not take its name. Set the connecting role's default
   * search_path to it too (the README says why). Default `'extensions'`.
   */
  readonly extensionsSchema?: string;
  /** Most tenant DataSources kept cached (least recently used go first). Default 1,000. */
  readonly maxDataSources?: number;
  /** Name of the registry table in the shared schema. Default `'tenants'`. */
  readonly registryTable?: string;
  /**
   * Schemas searched by tenants' raw SQL after the tenant's own and the
   * extensions schema (for example a schema of shared functions). Never include the
   * shared schema unless unqualified raw SQL should be able to reach it.
   * Default `[]`.
   */
  readonly querySearchPath?: readonly string[];
  /**
   * How long, in milliseconds, a cached tenant record is trusted before
   * `run()` reads the registry again. Changes made by this process take effect
   * at once; changes made by other processes within this time. Default 5,000.
   */
  readonly tenantRecordTtlMs?: number;
  /**
   * How long, in milliseconds, a schema name freed by `dropTenant` stays
   * unusable for `createTenant` (`TenantRecentlyDroppedError` meanwhile).
   * Within one process a dropped tenant's held DataSources refuse every
   * statement at once; another process only learns of the drop when its
   * cached record expires (`tenantRecordTtlMs`), and a run it started before
   * the drop may still be going. Keep this at least the record TTL plus your
   * longest run. Default: `tenantRecordTtlMs + destroyTimeoutMs` (15 s with
   * their defaults); 0 where a single process serves. At most one day.
   */
  readonly slugReuseDelayMs?: number;
  /** How long `destroy()` waits for active runs before closing anyway, in milliseconds. Default 10,000. */
  readonly destroyTimeoutMs?: number;
  /** Longest wait for a row or advisory lock in provisioning and dropping, in milliseconds. Default 30,000. */
  readonly lockTimeoutMs?: number;
  /** Relations dropped per transaction by `dropTenant`, to stay under `max_locks_per_transaction`. Default 50. */
  readonly dropBatchSize?: number;
  /** Seeds every new tenant inside its creation transaction (per call: `createTenant(slug, { seed })`). */
  readonly seed?: TenantSeed;
  /**
   * Keep `size` spare, fully migrated tenant schemas ready, so that
   * `createTenant` claims one (rename + registry row, one short transaction)
   * instead of running every migration inline. Refilled in the background;
   * spares are brought up to date by `migrateTenants()` and by refills.
   * Default: no warm pool.
   */
  readonly warmPool?: WarmPoolOptions;
  /** Called when background work (the warm pool refill) fails. Default: a `background-error` entry to `logger`, else a process warning. */
  readonly onBackgroundError?: (error: Error) => void;
  /**
   * `'schema'` (default): isolation by schema-qualified SQL. `'role'`: each
   * tenant also gets its own PostgreSQL role, granted its schema only, and
   * every statement of a run (reads included) executes under it (`SET ROLE`
   * at connection checkout, `RESET ROLE` at release), so even hand-written
   * SQL naming another tenant's schema is refused by PostgreSQL. Costs two
   * statements per checkout and needs session pooling (not a transaction
   * pooler); the connecting role needs `CREATEROLE`. Shared tables are
   * reachable in runs as far as they are granted to `PUBLIC`.
   */
  readonly isolation?: 'schema' | 'role';
  /**
   * Citus mode (schema-based sharding on a Citus 12+ cluster): `'auto'`
   * (default) turns it on when the database has the `citus` extension;
   * `true` requires it (`initialize()` fails without it); `false` treats
   * the database as plain PostgreSQL. In Citus mode every tenant schema is a
   * distributed schema (checked in `pg_dist_schema` when it is made), shared
   * entities' tables are reference tables, the library's own schemas stay
   * on the coordinator, `getTenant()`/`listTenants()` name each tenant's
   * node, and `moveTenant(slug, { node })` and `rebalanceTenants()` go
   * through Citus. The manager must connect to the coordinator, as its one
   * server, with `isolation: 'schema'`. See the README's "Citus" section.
   */
  readonly citus?: 'auto' | boolean;
  /**
   * At `initialize()`, also check that every tenant entity has its table
   * once all tenant migrations ran (in a throwaway schema, rolled back):
   * a `TenancyConfigurationError` names each entity left without one (a
   * migration not written yet: `typeorm-tenants migration:generate`). Costs
   * one run of the tenant migrations. Default `false`.
   */
  readonly checkEntities?: boolean;
  /**
   * What `run()` (and `getDataSource()`) does for a tenant whose migration
   * ledger lacks tenant migrations the code has (new code often reaches a
   * tenant before its migration does): `'serve'` (default) serves it;
   * `'warn'` serves it with one `TenancyMigrationWarning` per tenant (a
   * `pending-migrations` entry to `logger` when one is given);
   * `'refuse'` throws `TenantMigrationPendingError` (HTTP 503 with
   * `Retry-After`). A tenant ahead of the code (migrations the code does not
   * know) is served. Decided from the cached record: one ledger query per
   * tenant each `tenantRecordTtlMs`, none per run (and none with `'serve'`).
   */
  readonly pendingMigrations?: 'serve' | 'warn' | 'refuse';
  /**
   * Keeps every tenant migration inside its tenant schema (at `createTenant`,
   * in fleet migrations and reverts, `restoreTenant` and the warm pool; never
   * for shared migrations): a migration that creates, alters or drops an
   * object elsewhere (`CREATE TYPE "public".x`, a table in the shared schema)
   * rolls the tenant back with a `MigrationOutsideTenantError` naming the
   * migration and the object. `'event-trigger'` (default): event triggers
   * refuse the statement itself, drops included; a superuser must run
   * `initialize()` once per database to install them (otherwise
   * `TenancyConfigurationError`). `'catalog'`: one catalog query after each
   * migration, no privilege needed, drops not seen. `'off'`: no check.
   * GRANT/REVOKE on and DML into shared tables pass in every mode. In a
   * migration with `transaction = false`, each statement other than a
   * concurrent index statement runs under the guard in a transaction of its
   * own; a concurrent index statement must name the tenant schema, checked
   * before it is sent.
   */
  readonly migrationGuard?: 'event-trigger' | 'catalog' | 'off';
  /**
   * Receives what TypeORM and the library log: TypeORM's messages from every
   * DataSource the manager builds (the shared one, each tenant's, and those
   * of provisioning, migrations and lifecycle), such as a failing migration,
   * which TypeORM's default logger prints with `console.log`; and the
   * library's own: `initialize()`'s configuration warnings, the
   * `pendingMigrations: 'warn'` warning, pool and background errors (unless
   * `onPoolError` / `onBackgroundError` is given), one `info` entry per
   * lifecycle event (`created`, `migrated`, `suspended`, ..., `dropped`;
   * `migration-failed` is an `error`) and a listener's error. Either a
   * function, called with each `TenancyLogEntry` (`level`, `source`, `kind`,
   * `message`, the `schema` of the DataSource or tenant, `tenant`, and
   * `parameters` for queries), or a TypeORM `Logger`, given as is to every
   * DataSource and getting the library's messages through
   * `log('info' | 'warn', 'typeorm-tenants: ...')`. TypeORM's entries follow
   * the connection's `logging` option by TypeORM's rules: migration messages
   * and slow queries always, queries with `true`, `'all'` or `['query']`,
   * failed queries with `true`, `'all'` or `['error']`, schema builds with
   * `'all'` or `['schema']`. Default: TypeORM's logger (or
   * `dataSource.logger`), and process warnings for the library's warnings.
   * Giving both `logger` and `dataSource.logger`, or anything but a function
   * or a `Logger`, is a `TenancyConfigurationError`. A function that throws
   * does not fail what logged (its error becomes a process warning).
   *
   * @example
   * ```ts
   * logger: (entry) => {
   *   if (entry.level !== 'query') console.error(`[${entry.schema ?? '-'}] ${entry.kind}: ${entry.message}`);
   * }
   * ```
   */
  readonly logger?: TenancyLogger;
  /** Settings of the shared pool: connection recycling and timeouts. */
  readonly pool?: TenantPoolOptions;
  /**
   * `initialize()` warns (a `configuration` warning) when the connection
   * lands in the maintenance database `postgres`: the registry, the ledger
   * and the shared schema would go there, which is usually a forgotten
   * `database` or an unset `DATABASE_URL` with `PG*` variables set. Set
   * `true` where that database is meant (some hosted services give only
   * `postgres`) to silence it. Default `false`. A template database
   * (`template1`, copied into every new database) is always refused.
   */
  readonly allowMaintenanceDatabase?: boolean;
  /**
   * Put a sqlcommenter comment naming the tenant in front of every statement
   * a tenant DataSource sends (repositories, QueryBuilders, raw `query()`,
   * transactions and their control statements): `/*tenant='acme'*\/ SELECT ...`,
   * so `pg_stat_activity`, slow-query logs and `log_statement` show whose
   * statement it is. Statements of the shared DataSource, provisioning and
   * migrations carry none. It does not split `pg_stat_statements` entries
   * (comments are not part of the query id). Default `false`.
   */
  readonly sqlComment?: boolean;
  /**
   * Called when an idle pooled connection fails (for example the server
   * terminated it). The pool drops that connection and opens a new one when
   * needed. Default: a `pool-error` entry to `logger`, else a process warning.
   */
  readonly onPoolError?: (error: Error) => void;
}

export const DEFAULT_SHARED_SCHEMA = 'public';
/** The name of the one server of a manager given `dataSource`. */
export const DEFAULT_SERVER_NAME = 'default';
export const DEFAULT_EXTENSIONS_SCHEMA = 'extensions';
export const DEFAULT_MAX_DATA_SOURCES = 1000;
export const DEFAULT_REGISTRY_TABLE = 'tenants';
export const DEFAULT_TENANT_RECORD_TTL_MS = 5_000;
export const DEFAULT_DESTROY_TIMEOUT_MS = 10_000;
export const DEFAULT_LOCK_TIMEOUT_MS = 30_000;
export const DEFAULT_DROP_BATCH_SIZE = 50;
