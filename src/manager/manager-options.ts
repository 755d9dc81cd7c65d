import type { TenantConnectionOptions, TenantPoolOptions } from '../data-source/shared-pool';

/** Options of `TenantDataSourceManager`. */
export interface TenantDataSourceManagerOptions {
  /**
   * TypeORM postgres connection options (`type: 'postgres'`, `url` or
   * host/port/..., `poolSize`, `logging`, ...), without entities, migrations or
   * schema: the manager sets those per DataSource. `poolSize` (default 10) is
   * the size of the ONE pool all tenants share. `synchronize`, `dropSchema`
   * and `migrationsRun` are refused: schemas change through migrations.
   */
  readonly dataSource: TenantConnectionOptions;
  /**
   * Every entity class. Those marked `@TenantScoped()` live in each tenant
   * schema; the others live once, in the shared schema.
   */
  readonly entities: readonly Function[];
  /** Migration classes run inside each tenant schema (at `createTenant`). */
  readonly tenantMigrations?: readonly Function[];
  /** Migration classes run once in the shared schema (at `initialize()`). */
  readonly sharedMigrations?: readonly Function[];
  /** The schema of shared entities and of the tenant registry. Default `'public'`. */
  readonly sharedSchema?: string;
  /** Most tenant DataSources kept cached (least recently used go first). Default 1,000. */
  readonly maxDataSources?: number;
  /** Name of the registry table in the shared schema. Default `'tenants'`. */
  readonly registryTable?: string;
  /**
   * Schemas searched after the tenant's own by `tenantContext.query()`, for
   * example `['extensions']` where extensions are installed. Never include the
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
  /** How long `destroy()` waits for active runs before closing anyway, in milliseconds. Default 10,000. */
  readonly destroyTimeoutMs?: number;
  /** Longest wait for a row or advisory lock in provisioning and dropping, in milliseconds. Default 30,000. */
  readonly lockTimeoutMs?: number;
  /** Settings of the shared pool: connection recycling and timeouts. */
  readonly pool?: TenantPoolOptions;
  /**
   * Called when an idle pooled connection fails (for example the server
   * terminated it). The pool drops that connection and opens a new one when
   * needed. Default: a process warning.
   */
  readonly onPoolError?: (error: Error) => void;
}

export const DEFAULT_SHARED_SCHEMA = 'public';
export const DEFAULT_MAX_DATA_SOURCES = 1000;
export const DEFAULT_REGISTRY_TABLE = 'tenants';
export const DEFAULT_TENANT_RECORD_TTL_MS = 5_000;
export const DEFAULT_DESTROY_TIMEOUT_MS = 10_000;
export const DEFAULT_LOCK_TIMEOUT_MS = 30_000;
