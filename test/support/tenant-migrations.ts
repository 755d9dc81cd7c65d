import type { MigrationInterface, QueryRunner } from 'typeorm';
import { tenantMigrations } from '../../migrations';
import type { FleetTenantResult, TenantDataSourceManager, TenantDataSourceManagerOptions } from '../../src';
import { adminQuery, openManager, uniqueSlug } from './fixtures';

let stamp = 1_840_000_000_000;

/** A number no other call returns: the timestamp of a migration class, or a suffix for a table name. */
export function nextStamp(): number {
  return (stamp += 1);
}

/** A tenant migration class named `<Name><timestamp>`, with TypeORM's `transaction` flag as given. */
export function migration(
  name: string,
  transaction: boolean | undefined,
  up: (runner: QueryRunner) => Promise<void>,
  down: (runner: QueryRunner) => Promise<void> = async () => undefined,
): Function {
  const className = `${name}${nextStamp()}`;
  const holder = {
    [className]: class implements MigrationInterface {
      readonly transaction = transaction;
      up(runner: QueryRunner): Promise<void> {
        return up(runner);
      }
      down(runner: QueryRunner): Promise<void> {
        return down(runner);
      }
    },
  };
  return holder[className]!;
}

export const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

/** Where an index of that name in `schema` stands. */
export async function indexState(schema: string, index: string): Promise<'valid' | 'invalid' | 'missing'> {
  const rows = await adminQuery<{ valid: boolean }>(
    `SELECT i.indisvalid AS valid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2`,
    [schema, index],
  );
  return rows.length === 0 ? 'missing' : rows[0]!.valid ? 'valid' : 'invalid';
}

/** The schemas holding a relation of that name. */
export async function relationsNamed(name: string): Promise<string[]> {
  const rows = await adminQuery<{ schema: string }>(
    `SELECT n.nspname AS schema FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = $1 ORDER BY 1`,
    [name],
  );
  return rows.map((r) => r.schema);
}

/** Whether the tenant's migrations table, and the ledger, record `name`. */
export async function recorded(slug: string, name: string, registry = 'tenants'): Promise<{ own: boolean; ledger: boolean }> {
  const [row] = await adminQuery<{ own: boolean; ledger: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM "${schemaOf(slug)}".migrations WHERE name = $1) AS own,
            EXISTS (SELECT 1 FROM public."${registry}_migrations" WHERE slug = $2 AND name = $1) AS ledger`,
    [name, slug],
  );
  return row!;
}

export function lineOf(results: readonly FleetTenantResult[], slug: string): FleetTenantResult {
  const line = results.find((r) => r.slug === slug);
  if (line === undefined) throw new Error(`No line for ${slug}`);
  return line;
}

/** A manager (destroyed after the test) with the example model's tenant migrations and `extra` after them. */
export function openWith(extra: Function[], overrides: Partial<TenantDataSourceManagerOptions> = {}): Promise<TenantDataSourceManager> {
  return openManager({ tenantMigrations: [...tenantMigrations, ...extra], ...overrides });
}

/** Tenants created with the base migrations only (by a manager that is then destroyed). */
export async function baseTenants(count: number, prefix: string, overrides: Partial<TenantDataSourceManagerOptions> = {}): Promise<string[]> {
  const base = await openWith([], overrides);
  const slugs: string[] = [];
  for (let i = 0; i < count; i += 1) {
    const slug = uniqueSlug(prefix);
    await base.createTenant(slug);
    slugs.push(slug);
  }
  await base.destroy();
  return slugs;
}
