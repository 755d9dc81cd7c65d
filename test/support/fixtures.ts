import { randomBytes } from 'node:crypto';
import { Pool } from 'pg';
import { Client, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { TenantDataSourceManager, type TenantDataSourceManagerOptions } from '../../src';
import type { ScratchDatabase } from '../../support/database';
import { closeSharedPool, trackClients } from '../../src/data-source/shared-pool';

let database: ScratchDatabase | undefined;
let admin: Pool | undefined;
const openManagers = new Set<TenantDataSourceManager>();

export function setDatabase(value: ScratchDatabase): void {
  database = value;
}

/** URL of the run's scratch database. */
export function databaseUrl(): string {
  if (database === undefined) throw new Error('The test database is not started (test/setup.js must be required).');
  return database.url;
}

/** A slug no other test uses: prefix, then a random suffix. */
export function uniqueSlug(prefix = 't'): string {
  return `${prefix}-${randomBytes(5).toString('hex')}`;
}

/** Options for a manager over the example model, on the test database. */
export function managerOptions(overrides: Partial<TenantDataSourceManagerOptions> = {}): TenantDataSourceManagerOptions {
  return {
    dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 10 },
    entities: [Client, Project, Plan],
    tenantMigrations,
    sharedMigrations,
    ...overrides,
  };
}

/** A manager that is destroyed after the current test, whatever happens. */
export function newManager(overrides: Partial<TenantDataSourceManagerOptions> = {}): TenantDataSourceManager {
  const manager = new TenantDataSourceManager(managerOptions(overrides));
  openManagers.add(manager);
  return manager;
}

/** `newManager()`, initialised. */
export async function openManager(overrides: Partial<TenantDataSourceManagerOptions> = {}): Promise<TenantDataSourceManager> {
  const manager = newManager(overrides);
  await manager.initialize();
  return manager;
}

export async function destroyOpenManagers(): Promise<void> {
  const managers = [...openManagers];
  openManagers.clear();
  await Promise.all(managers.map((m) => m.destroy()));
}

/**
 * Runs SQL on the test database through a separate admin pool (not the
 * manager's), for assertions on the catalog and pg_stat_activity.
 */
export async function adminQuery<T = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T[]> {
  if (admin === undefined) {
    admin = new Pool({ connectionString: databaseUrl(), max: 2, application_name: 'typeorm-tenants-test-admin' });
    // pool.end() resolves before the sockets close, so the server stopping at
    // the end of the run can still reach an idle admin connection (57P01).
    trackClients(admin);
    admin.on('error', (error: Error & { code?: string }) => {
      if (error.code !== '57P01') console.error('Test admin pool error:', error);
    });
  }
  const result = await admin.query(sql, params);
  return result.rows as T[];
}

/** Closes the admin pool (the root hook does it at the end of the run). */
export async function closeAdmin(): Promise<void> {
  const pool = admin;
  admin = undefined;
  if (pool !== undefined) await closeSharedPool(pool);
}

/** Schemas that exist in the test database, by name. */
export async function schemaExists(name: string): Promise<boolean> {
  const rows = await adminQuery('SELECT 1 FROM pg_namespace WHERE nspname = $1', [name]);
  return rows.length > 0;
}

/** Tables of a schema, sorted. */
export async function tablesOf(schema: string): Promise<string[]> {
  const rows = await adminQuery<{ table_name: string }>(
    "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY 1",
    [schema],
  );
  return rows.map((r) => r.table_name);
}

/** Creates `count` tenants one after another, with unique slugs starting with `prefix`. */
export async function createTenants(manager: TenantDataSourceManager, count: number, prefix: string): Promise<string[]> {
  const slugs: string[] = [];
  for (let i = 0; i < count; i += 1) {
    const slug = uniqueSlug(prefix);
    await manager.createTenant(slug);
    slugs.push(slug);
  }
  return slugs;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
