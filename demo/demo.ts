import 'reflect-metadata';
import { instanceToPlain } from 'class-transformer';
import { Client, Plan, Project } from '../entities';
import { sharedMigrations, tenantMigrations } from '../migrations';
import { TenantContextMissingError, TenantDataSourceManager, tenantContext } from '../src';
import { startScratchDatabase } from '../support/database';

const TENANTS = [
  { slug: 'acme', name: 'Acme Corp', people: ['Ada Lovelace', 'Alan Turing', 'Grace Hopper'] },
  { slug: 'globex', name: 'Globex Corporation', people: ['Hank Scorpio', 'Homer Simpson'] },
  { slug: 'initech', name: 'Initech', people: ['Peter Gibbons', 'Michael Bolton', 'Samir Nagheenanajar', 'Milton Waddams'] },
];

/** The seed's story end to end, on embedded PostgreSQL unless DATABASE_URL is set. */
async function main(): Promise<void> {
  const database = await startScratchDatabase();
  let tenants: TenantDataSourceManager | undefined;
  try {
    console.log(`Database: ${database.description}`);
    tenants = new TenantDataSourceManager({
      dataSource: { type: 'postgres', url: database.url, poolSize: 10 },
      entities: [Client, Project, Plan],
      tenantMigrations,
      sharedMigrations,
      maxDataSources: 1000,
    });
    await tenants.initialize();
    const manager = tenants;

    // Shared data: one plan table for everybody, in the shared schema.
    const plans = manager.sharedDataSource.getRepository(Plan);
    const pro = await plans.save(plans.create({ code: 'pro', name: 'Pro', monthlyPriceCents: 4900 }));

    for (const tenant of TENANTS) await manager.createTenant(tenant.slug, { name: tenant.name });
    console.log(`Created tenants: ${(await manager.listTenants()).map((t) => `${t.slug} (schema "${t.schemaName}")`).join(', ')}`);

    // Insert every tenant's clients at once: the runs interleave at every await.
    await Promise.all(
      TENANTS.flatMap((tenant) =>
        tenant.people.map((person) =>
          manager.run(tenant.slug, async () => {
            const clients = tenantContext.getRepository(Client);
            const email = `${person.split(' ')[0]!.toLowerCase()}@${tenant.slug}.test`;
            await clients.save(clients.create({ name: person, email, internalNote: 'vip', plan: pro }));
          }),
        ),
      ),
    );

    console.log('\nEach tenant lists only its own clients:');
    for (const tenant of TENANTS) {
      const clients = await manager.run(tenant.slug, () =>
        tenantContext.getRepository(Client).find({ relations: { plan: true }, order: { id: 'ASC' } }),
      );
      const foreign = clients.filter((c) => !c.email.endsWith(`@${tenant.slug}.test`));
      if (clients.length !== tenant.people.length || foreign.length > 0) {
        throw new Error(`Isolation broken for ${tenant.slug}: ${JSON.stringify(clients)}`);
      }
      console.log(`  ${tenant.slug.padEnd(8)} ${clients.length} clients: ${clients.map((c) => c.name).join(', ')}`);
    }
    const [first] = await manager.run('acme', () => tenantContext.getRepository(Client).find({ relations: { plan: true }, take: 1 }));
    console.log(`\nAs the API returns it (class-transformer hides internalNote): ${JSON.stringify(instanceToPlain(first))}`);

    const tables: Array<{ table: string; rows: number }> = await manager.sharedDataSource.query(
      `SELECT n.nspname || '.' || c.relname AS table, c.reltuples::int AS rows
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relname = 'client' AND c.relkind = 'r' ORDER BY 1`,
    );
    console.log(`\nPhysical tables: ${tables.map((t) => t.table).join(', ')}`);

    try {
      tenantContext.getRepository(Client);
      throw new Error('A query with no tenant was served: fail-closed is broken.');
    } catch (error) {
      if (!(error instanceof TenantContextMissingError)) throw error;
      console.log(`\nA query with no tenant is refused: ${error.code}: ${error.message}`);
    }

    const stats = manager.stats();
    console.log(
      `\nSummary: ${TENANTS.length} tenants, ${TENANTS.reduce((n, t) => n + t.people.length, 0)} clients, ` +
        `${stats.cachedDataSources} cached DataSources, ${stats.pool.total} PostgreSQL connections (pool max ${stats.pool.max}).`,
    );

    for (const tenant of TENANTS) await manager.dropTenant(tenant.slug, { force: true });
  } finally {
    await tenants?.destroy();
    await database.stop();
  }
}

main().then(
  () => console.log('Demo finished.'),
  (error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  },
);
