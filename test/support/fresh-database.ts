import { randomBytes } from 'node:crypto';
import { Pool } from 'pg';
import { TenantDataSourceManager, type TenantDataSourceManagerOptions } from '../../src';
import { databaseUrl } from './fixtures';

/** A new, empty database on the test server, for tests that need "fresh" to mean fresh (extensions, role defaults). */
export interface FreshDatabase {
  readonly url: string;
  readonly name: string;
  /** SQL on the fresh database through a small pool of its own. */
  query<T = Record<string, unknown>>(sql: string, parameters?: unknown[]): Promise<T[]>;
  /** A manager on it (the defaults given to `withFreshDatabase`, then `overrides`), destroyed with the database. */
  manager(overrides?: Partial<TenantDataSourceManagerOptions>): TenantDataSourceManager;
}

/** Runs `fn` on a new database, dropped afterwards with every manager made on it. */
export async function withFreshDatabase(
  defaults: Omit<TenantDataSourceManagerOptions, 'dataSource'>,
  fn: (db: FreshDatabase) => Promise<void>,
): Promise<void> {
  const name = `typeorm_tenants_fresh_${randomBytes(4).toString('hex')}`;
  const server = new Pool({ connectionString: databaseUrl(), max: 1 });
  await server.query(`CREATE DATABASE "${name}"`);
  const url = new URL(databaseUrl());
  url.pathname = `/${name}`;
  const pool = new Pool({ connectionString: url.toString(), max: 2 });
  const managers: TenantDataSourceManager[] = [];
  try {
    await fn({
      url: url.toString(),
      name,
      query: async (sql, parameters) => (await pool.query(sql, parameters)).rows,
      manager: (overrides = {}) => {
        const manager = new TenantDataSourceManager({ dataSource: { type: 'postgres', url: url.toString(), poolSize: 4 }, ...defaults, ...overrides });
        managers.push(manager);
        return manager;
      },
    });
  } finally {
    await Promise.all(managers.map((manager) => manager.destroy()));
    await pool.end();
    // Closed connections take a moment to leave the server; FORCE would kill one still leaving, and its client would throw.
    for (let i = 0; i < 100; i += 1) {
      const { rows } = await server.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [name]);
      if (rows[0].n === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await server.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    await server.end();
  }
}

/** The role default the README recommends (search_path TO the extensions schema), for this database only. */
export async function setRoleDefault(db: FreshDatabase, schema = 'extensions'): Promise<void> {
  await db.query(`ALTER ROLE CURRENT_USER IN DATABASE "${db.name}" SET search_path TO "${schema}"`);
}
