import { Pool } from 'pg';
import { TenantDataSourceManager, type TenantDataSourceManagerOptions } from '../../src';
import { freshDatabaseOn } from '../../support/database';
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
  const database = await freshDatabaseOn(databaseUrl());
  const url = database.url;
  const name = new URL(url).pathname.slice(1);
  const pool = new Pool({ connectionString: url, max: 2 });
  const managers: TenantDataSourceManager[] = [];
  try {
    await fn({
      url,
      name,
      query: async (sql, parameters) => (await pool.query(sql, parameters)).rows,
      manager: (overrides = {}) => {
        const manager = new TenantDataSourceManager({ dataSource: { type: 'postgres', url, poolSize: 4 }, ...defaults, ...overrides });
        managers.push(manager);
        return manager;
      },
    });
  } finally {
    await Promise.all(managers.map((manager) => manager.destroy()));
    await pool.end();
    await database.stop();
  }
}

/** The role default the README recommends (search_path TO the extensions schema), for this database only. */
export async function setRoleDefault(db: FreshDatabase, schema = 'extensions'): Promise<void> {
  await db.query(`ALTER ROLE CURRENT_USER IN DATABASE "${db.name}" SET search_path TO "${schema}"`);
}
