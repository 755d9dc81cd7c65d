import { Pool } from 'pg';
import { DataSource } from 'typeorm';
import { Client, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { TenantDataSourceManager, quoteIdent, schemaNameForSlug } from '../../src';

/**
 * The data every contender reads and writes: the example model's `client`
 * table (id serial pk, name, email, internal_note, plan_id), created by the
 * same migrations, with the same rows, in every schema a contender uses:
 *
 * - `public.client`: the baseline A (plain TypeORM, no tenancy);
 * - the `solo` tenant: B1, C1, and S100 (whose N tenants all name its schema);
 * - tenants `t000`..`tNNN`: B100, C100, D, E and M100 all route over these.
 */
export interface RoutingFixture {
  readonly soloSlug: string;
  readonly tenantSlugs: readonly string[];
  readonly tenantSchemas: readonly string[];
  readonly rowsPerSchema: number;
}

export const SOLO_SLUG = 'solo';

export function tenantSlug(index: number): string {
  return `t${String(index).padStart(3, '0')}`;
}

/**
 * Creates the registry, the tenants (through the library, as an application
 * would) and the baseline table, then fills every `client` table with
 * `rowsPerSchema` identical rows and analyses them.
 */
export async function buildRoutingFixture(url: string, tenants: number, rowsPerSchema: number): Promise<RoutingFixture> {
  const tenantSlugs = Array.from({ length: tenants }, (_, i) => tenantSlug(i));
  const provisioning = new TenantDataSourceManager({
    dataSource: { type: 'postgres', url, poolSize: 4, applicationName: 'bench-setup' },
    entities: [Client, Project, Plan],
    tenantMigrations,
    sharedMigrations,
  });
  try {
    await provisioning.initialize();
    const slugs = [SOLO_SLUG, ...tenantSlugs];
    await inParallel(slugs, 4, (slug) => provisioning.createTenant(slug).then(() => undefined));
  } finally {
    await provisioning.destroy();
  }

  // The baseline table: the same migrations, run in `public` by a plain DataSource.
  const plain = new DataSource({ type: 'postgres', url, entities: [Client, Project, Plan], poolSize: 1, applicationName: 'bench-setup' });
  await plain.initialize();
  try {
    const runner = plain.createQueryRunner();
    try {
      await runner.startTransaction();
      for (const Migration of tenantMigrations) await new Migration().up(runner);
      await runner.commitTransaction();
    } finally {
      await runner.release();
    }
  } finally {
    await plain.destroy();
  }

  const admin = new Pool({ connectionString: url, max: 4, application_name: 'bench-setup' });
  try {
    const schemas = ['public', ...[SOLO_SLUG, ...tenantSlugs].map(schemaNameForSlug)];
    await inParallel(schemas, 4, async (schema) => {
      const table = `${quoteIdent(schema)}.client`;
      await admin.query(
        `INSERT INTO ${table} (name, email) SELECT 'Client ' || g, 'client' || g || '@example.test' FROM generate_series(1, $1) AS g`,
        [rowsPerSchema],
      );
      await admin.query(`VACUUM ANALYZE ${table}`);
    });
  } finally {
    await admin.end();
  }
  return { soloSlug: SOLO_SLUG, tenantSlugs, tenantSchemas: tenantSlugs.map(schemaNameForSlug), rowsPerSchema };
}

/** Runs `fn` over `items`, at most `limit` at a time; the first failure rejects (after the running ones settle). */
export async function inParallel<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure !== undefined) throw failure.error;
}
