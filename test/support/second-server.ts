import { Client as PgClient, Pool } from 'pg';
import { Client, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { TenantDataSourceManager, tenantContext, type TenantDataSourceManagerOptions } from '../../src';
import type { TenantConnectionOptions } from '../../src/data-source/shared-pool';
import { closeSharedPool, trackClients } from '../../src/data-source/shared-pool';
import { freshDatabaseOn, type ScratchDatabase } from '../../support/database';
import { startRestartablePostgres, type RestartablePostgres } from '../faults/restartable-postgres';
import { databaseUrl } from './fixtures';

/**
 * A second, real PostgreSQL server for the tests of tenants on several
 * servers: an embedded one whose data survives `stop()`, so that a test can
 * take it down and bring it back (same port, same data); the fault tests'
 * restartable server. The run's test database (`databaseUrl()`) is the
 * first server.
 */
export type SecondServer = RestartablePostgres;

/** Starts the second server (call it in `before()`, and `destroy()` it in `after()`). */
export const startSecondServer = startRestartablePostgres;

/**
 * The second server of the enclosing `describe`: started in its `before`
 * hook, destroyed in its `after` hook. The object is usable from the tests on.
 */
export function useSecondServer(): SecondServer {
  let server: SecondServer | undefined;
  before(async function () {
    this.timeout(120_000);
    server = await startSecondServer();
  });
  after(async function () {
    this.timeout(60_000);
    await server?.destroy();
  });
  const started = (): SecondServer => {
    if (server === undefined) throw new Error('The second server is not started: useSecondServer() starts it in the before() hook of its describe.');
    return server;
  };
  return {
    get url() {
      return started().url;
    },
    get running() {
      return started().running;
    },
    get pid() {
      return started().pid;
    },
    stop: () => started().stop(),
    start: () => started().start(),
    destroy: () => started().destroy(),
  };
}

/** The application name of the catalog pools below: connection counts leave them out. */
export const CATALOG_APPLICATION = 'servers-test-catalog';

/** A fresh database on one of the two servers, read directly (not through the library). */
export interface ServerDatabase {
  readonly url: string;
  /** The database's name, as `current_database()` says it. */
  readonly name: string;
  query<T = Record<string, unknown>>(sql: string, parameters?: unknown[]): Promise<T[]>;
  /** Whether a schema of that name exists in this database. */
  hasSchema(name: string): Promise<boolean>;
  /** Tables of a schema, sorted. */
  tablesOf(schema: string): Promise<string[]>;
  /** Backends connected to this database now, the catalog pool's own left out (read from another database of the server). */
  connections(): Promise<number>;
}

/** The two servers of a test: `a` (the home server) on the run's test server, `b` on the second server. */
export interface TwoServers {
  readonly a: ServerDatabase;
  readonly b: ServerDatabase;
  /** Manager options over both servers (`servers: { a, b }`, poolSize 4 each), then `overrides`. */
  options(overrides?: Partial<TenantDataSourceManagerOptions>): TenantDataSourceManagerOptions;
  /** A manager of `options(overrides)`, destroyed before the databases are dropped. */
  manager(overrides?: Partial<TenantDataSourceManagerOptions>): TenantDataSourceManager;
  /** `manager(overrides)`, initialised. */
  open(overrides?: Partial<TenantDataSourceManagerOptions>): Promise<TenantDataSourceManager>;
}

/** Connection options of a server in the manager's `servers` option. */
export function serverOptions(url: string, poolSize = 4): TenantConnectionOptions {
  return { type: 'postgres', url, poolSize };
}

/**
 * Runs `fn` with a fresh database on each server (the run's test server and
 * `second`), dropped afterwards with every manager made on them. The second
 * server is started again first if the test left it stopped.
 */
export async function withTwoServers(second: SecondServer, fn: (servers: TwoServers) => Promise<void>): Promise<void> {
  const managers: TenantDataSourceManager[] = [];
  const closers: Array<() => Promise<void>> = [];
  const scratch: ScratchDatabase[] = [];
  try {
    const first = await freshDatabaseOn(databaseUrl());
    scratch.push(first);
    const other = await freshDatabaseOn(second.url);
    scratch.push(other);
    const a = serverDatabase(first.url, databaseUrl(), closers);
    const b = serverDatabase(other.url, second.url, closers);
    const options = (overrides: Partial<TenantDataSourceManagerOptions> = {}): TenantDataSourceManagerOptions => ({
      servers: { a: serverOptions(a.url), b: serverOptions(b.url) },
      entities: [Client, Project, Plan],
      tenantMigrations,
      sharedMigrations,
      slugReuseDelayMs: 0,
      ...overrides,
    });
    const manager = (overrides: Partial<TenantDataSourceManagerOptions> = {}): TenantDataSourceManager => {
      const made = new TenantDataSourceManager(options(overrides));
      managers.push(made);
      return made;
    };
    await fn({
      a,
      b,
      options,
      manager,
      open: async (overrides) => {
        const made = manager(overrides);
        await made.initialize();
        return made;
      },
    });
  } finally {
    await Promise.allSettled(managers.map((m) => m.destroy()));
    await Promise.allSettled(closers.map((close) => close()));
    if (!second.running) await second.start();
    for (const database of scratch.reverse()) await database.stop();
  }
}

function serverDatabase(url: string, adminUrl: string, closers: Array<() => Promise<void>>): ServerDatabase {
  const name = decodeURIComponent(new URL(url).pathname.slice(1));
  let pool: Pool | undefined;
  const query = async <T>(sql: string, parameters: unknown[] = []): Promise<T[]> => {
    if (pool === undefined) {
      pool = new Pool({ connectionString: url, max: 2, application_name: CATALOG_APPLICATION });
      trackClients(pool);
      // A test may stop the second server under this pool's idle connections.
      pool.on('error', () => undefined);
      const opened = pool;
      closers.push(() => closeSharedPool(opened));
    }
    return (await pool.query(sql, parameters)).rows as T[];
  };
  let sampler: PgClient | undefined;
  return {
    url,
    name,
    query,
    hasSchema: async (schema) => (await query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema])).length === 1,
    tablesOf: async (schema) =>
      (
        await query<{ name: string }>(
          "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY 1",
          [schema],
        )
      ).map((row) => row.name),
    connections: async () => {
      // One connection to the server's admin database, kept for the test: it is not a backend of `name`.
      if (sampler === undefined) {
        const client = new PgClient({ connectionString: adminUrl, application_name: CATALOG_APPLICATION });
        client.on('error', () => undefined);
        await client.connect();
        sampler = client;
        closers.push(() => client.end());
      }
      const { rows } = await sampler.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name IS DISTINCT FROM $2',
        [name, CATALOG_APPLICATION],
      );
      return rows[0]!.n;
    },
  };
}

/** Puts `rows` clients in the tenant (one INSERT ... SELECT generate_series, in its run). */
export async function fillClients(tenants: TenantDataSourceManager, slug: string, rows: number): Promise<void> {
  await tenants.run(slug, () =>
    tenantContext.query(`INSERT INTO client (name, email) SELECT 'n' || g, 'e' || g || '@x.test' FROM generate_series(1, $1) g`, [rows]),
  );
}

/** The schemas named `schema`, and every moved copy, on a server. */
export async function copiesOn(server: ServerDatabase, schema: string): Promise<string[]> {
  return (
    await server.query<{ n: string }>(`SELECT nspname AS n FROM pg_namespace WHERE nspname = $1 OR nspname LIKE 'typeorm_tenants_moved%' ORDER BY 1`, [schema])
  ).map((r) => r.n);
}
