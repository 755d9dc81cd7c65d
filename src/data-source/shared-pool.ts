import { Pool, type PoolConfig } from 'pg';
import type { DataSourceOptions } from 'typeorm';

type PostgresConnectionOptions = Extract<DataSourceOptions, { type: 'postgres' }>;

/** Pool settings the manager adds on top of TypeORM's connection options. */
export interface TenantPoolOptions {
  /**
   * Recycle a connection after this many seconds. PostgreSQL keeps a catalog
   * cache per connection for every schema it touched (it grows to megabytes
   * with thousands of tenants), so with many tenants recycling is what bounds
   * backend memory. 0 keeps connections forever. Default 300.
   */
  readonly maxLifetimeSeconds?: number;
  /**
   * Longest wait, in milliseconds, for a connection: to open one, or to get one
   * from a busy pool. A call past it fails instead of hanging. Default 10,000.
   * TypeORM's `connectTimeoutMS`, when set, takes precedence.
   */
  readonly connectionTimeoutMillis?: number;
  /** Close a connection idle for this long, in milliseconds. Default 10,000. */
  readonly idleTimeoutMillis?: number;
  /**
   * PostgreSQL `statement_timeout` for every connection, in milliseconds: a
   * statement that runs longer is cancelled with an error. 0 means no limit.
   * Default 0. It is sent as a connection startup parameter, which PgBouncer
   * refuses: behind PgBouncer keep 0 and use `ALTER ROLE ... SET statement_timeout`.
   */
  readonly statementTimeoutMillis?: number;
}

/** Defaults of `TenantPoolOptions`. */
export const DEFAULT_POOL_OPTIONS: Readonly<Required<TenantPoolOptions>> = Object.freeze({
  maxLifetimeSeconds: 300,
  connectionTimeoutMillis: 10_000,
  idleTimeoutMillis: 10_000,
  statementTimeoutMillis: 0,
});

/** Default number of connections in the shared pool (TypeORM's `poolSize`). */
export const DEFAULT_POOL_SIZE = 10;

/** TypeORM postgres options as the manager takes them: no entities, migrations, schema or driver. */
export type TenantConnectionOptions = Omit<
  PostgresConnectionOptions,
  'entities' | 'migrations' | 'schema' | 'driver' | 'subscribers'
> & { readonly subscribers?: PostgresConnectionOptions['subscribers'] };

/**
 * A key naming the database server and database that `options` connect to:
 * DataSources with the same key share one pool.
 */
export function serverKeyOf(options: TenantConnectionOptions): string {
  if (options.url !== undefined) return options.url;
  return `${options.username ?? ''}@${options.host ?? 'localhost'}:${options.port ?? 5432}/${options.database ?? ''}`;
}

/**
 * Builds the `pg.Pool` that every DataSource of one server shares, with the
 * same settings TypeORM would derive from `options`, plus the manager's pool
 * options.
 */
export function createSharedPool(options: TenantConnectionOptions, poolOptions: Required<TenantPoolOptions>): Pool {
  const config: PoolConfig = {
    connectionString: options.url,
    host: options.host,
    user: options.username,
    password: options.password as PoolConfig['password'],
    database: options.database,
    port: options.port,
    ssl: options.ssl as PoolConfig['ssl'],
    application_name: options.applicationName ?? 'typeorm-tenants',
    max: options.poolSize ?? DEFAULT_POOL_SIZE,
    connectionTimeoutMillis: options.connectTimeoutMS ?? poolOptions.connectionTimeoutMillis,
    idleTimeoutMillis: poolOptions.idleTimeoutMillis,
    maxLifetimeSeconds: poolOptions.maxLifetimeSeconds,
    ...(poolOptions.statementTimeoutMillis > 0 ? { statement_timeout: poolOptions.statementTimeoutMillis } : {}),
    ...(options.extra ?? {}),
  };
  const pool = new Pool(config);
  trackClients(pool);
  return pool;
}

const openClients = new WeakMap<Pool, Set<unknown>>();

/** Starts counting the pool's open connections, so that `closeSharedPool` can wait for the last. */
export function trackClients(pool: Pool): void {
  const clients = new Set<unknown>();
  openClients.set(pool, clients);
  pool.on('connect', (client) => clients.add(client));
  pool.on('remove', (client) => clients.delete(client));
}

/**
 * Ends the pool and waits until every connection has really closed (pg-pool's
 * `end()` resolves before the sockets are closed), at most `timeoutMs`.
 */
export async function closeSharedPool(pool: Pool, timeoutMs = 5_000): Promise<void> {
  await pool.end();
  const clients = openClients.get(pool);
  if (clients === undefined || clients.size === 0) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(done, timeoutMs);
    timer.unref();
    function check(): void {
      if (clients!.size === 0) done();
    }
    function done(): void {
      clearTimeout(timer);
      pool.off('remove', check);
      resolve();
    }
    pool.on('remove', check);
    check();
  });
}
