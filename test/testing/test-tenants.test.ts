import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Client } from '../../entities';
import { tenantMigrations } from '../../migrations';
import { InvalidTenantNameError, ManagerDestroyedError, tenantContext, TenantProvisioningError } from '../../src';
import { createTestTenant, dropTestTenants, testTenantsOf, withTenant } from '../../src/testing';
import { adminQuery, databaseUrl, openManager, schemaExists, tablesOf, uniqueSlug } from '../support/fixtures';

const registry = (): string => `kit_${randomBytes(4).toString('hex')}`;

/** Spare schemas in the warm table of `registryTable`. */
async function spareSchemas(registryTable: string): Promise<string[]> {
  const rows = await adminQuery<{ schema_name: string }>(`SELECT schema_name FROM public."${registryTable}_warm" ORDER BY 1`);
  return rows.map((r) => r.schema_name);
}

async function namespaceOid(schema: string): Promise<number | undefined> {
  return (await adminQuery<{ oid: number }>('SELECT oid::int AS oid FROM pg_namespace WHERE nspname = $1', [schema]))[0]?.oid;
}

describe('createTestTenant() / dropTestTenants()', () => {
  it('gives a fully migrated tenant with a fresh test slug, claimed from the warm pool (a spare renamed), seeded in its creation transaction', async () => {
    const registryTable = registry();
    const manager = await openManager({ registryTable, warmPool: { size: 2 } });
    await manager.refillWarmPool();
    const spareOids = await Promise.all((await spareSchemas(registryTable)).map(namespaceOid));

    const tenant = await createTestTenant(manager, {
      seed: async ({ manager: em }) => {
        await em.save(Client, { name: 'Seeded', email: 'seed@kit.test' });
      },
    });
    expect(tenant.slug).to.match(/^test-[0-9a-f]{12}$/);
    expect(tenant.status).to.equal('active');
    expect(spareOids, 'the tenant schema is a spare of the pool').to.include(await namespaceOid(tenant.schemaName));
    expect(await tablesOf(tenant.schemaName)).to.deep.equal(['client', 'migrations', 'project']);
    expect((await adminQuery<{ name: string }>(`SELECT name FROM "${tenant.schemaName}".migrations ORDER BY id`)).map((r) => r.name)).to.deep.equal(
      tenantMigrations.map((m) => m.name),
    );
    expect(await adminQuery(`SELECT name FROM "${tenant.schemaName}".client`)).to.deep.equal([{ name: 'Seeded' }]);
    expect((await manager.migrationStatus()).find((s) => s.slug === tenant.slug)?.pending).to.deep.equal([]);
    expect(testTenantsOf(manager)).to.deep.equal([tenant.slug]);
    await dropTestTenants(manager);
  });

  it('takes a slug or a prefix, and refuses a bad one as createTenant does', async () => {
    const manager = await openManager({ registryTable: registry() });
    const named = await createTestTenant(manager, { slug: uniqueSlug('named'), name: 'Named Co' });
    expect(named.name).to.equal('Named Co');
    const prefixed = await createTestTenant(manager, { slugPrefix: 'orders' });
    expect(prefixed.slug).to.match(/^orders-[0-9a-f]{12}$/);
    await expect(createTestTenant(manager, { slugPrefix: 'Bad Prefix' })).to.be.rejectedWith(InvalidTenantNameError);
    expect(testTenantsOf(manager)).to.deep.equal([named.slug, prefixed.slug]);
    await dropTestTenants(manager);
  });

  it('a failing seed creates nothing and remembers nothing', async () => {
    const manager = await openManager({ registryTable: registry() });
    const slug = uniqueSlug('seedfail');
    await expect(
      createTestTenant(manager, {
        slug,
        seed: async () => {
          throw new Error('seed broke');
        },
      }),
    ).to.be.rejectedWith(TenantProvisioningError, /seed broke/);
    expect(await manager.getTenant(slug)).to.equal(undefined);
    expect(testTenantsOf(manager)).to.deep.equal([]);
  });

  it('drops exactly the tenants the kit created (per manager, or of every manager), counting one the test dropped itself, and only once', async () => {
    const first = await openManager({ registryTable: registry() });
    const second = await openManager({ registryTable: registry() });
    const own = uniqueSlug('own');
    await first.createTenant(own);
    const [a, b] = [await createTestTenant(first), await createTestTenant(first)];
    const c = await createTestTenant(second);
    await first.dropTenant(b.slug, { force: true });

    expect((await dropTestTenants(first)).sort()).to.deep.equal([a.slug, b.slug].sort());
    expect(await schemaExists(a.schemaName)).to.equal(false);
    expect(await first.getTenant(a.slug)).to.equal(undefined);
    expect(await first.getTenant(own), 'a tenant made without the kit stays').to.not.equal(undefined);
    expect(await second.getTenant(c.slug), "another manager's test tenant stays").to.not.equal(undefined);
    expect(await dropTestTenants(first)).to.deep.equal([]);

    const d = await createTestTenant(first);
    const dropped = await dropTestTenants();
    expect(dropped).to.include.members([c.slug, d.slug]);
    expect(await second.getTenant(c.slug)).to.equal(undefined);
    expect(await first.getTenant(d.slug)).to.equal(undefined);
    expect(testTenantsOf(first)).to.deep.equal([]);
    expect(testTenantsOf(second)).to.deep.equal([]);
    await first.dropTenant(own, { force: true });
  });

  it('drops many tenants a few at a time, and a manager destroyed first throws ManagerDestroyedError once and is forgotten', async () => {
    const manager = await openManager({ registryTable: registry(), dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 4 } });
    const tenants = await Promise.all(Array.from({ length: 6 }, () => createTestTenant(manager)));
    expect((await dropTestTenants(manager, { concurrency: 3 })).sort()).to.deep.equal(tenants.map((t) => t.slug).sort());
    for (const tenant of tenants) expect(await schemaExists(tenant.schemaName)).to.equal(false);

    const left = await createTestTenant(manager);
    await manager.destroy();
    await expect(dropTestTenants(manager)).to.be.rejectedWith(ManagerDestroyedError);
    expect(testTenantsOf(manager)).to.deep.equal([]);
    expect(await dropTestTenants(manager)).to.deep.equal([]);
    await adminQuery(`DROP SCHEMA "${left.schemaName}" CASCADE`);
  });

  it('withTenant(manager, tenant, fn) runs fn as that tenant: rows land in its schema only', async () => {
    const manager = await openManager({ registryTable: registry() });
    const [one, two] = [await createTestTenant(manager), await createTestTenant(manager)];
    await withTenant(manager, one, () => tenantContext.getRepository(Client).save({ name: 'One', email: 'one@kit.test' }));
    const count = await withTenant(manager, two.slug, () => tenantContext.getRepository(Client).count());
    expect(count).to.equal(0);
    expect(await adminQuery(`SELECT name FROM "${one.schemaName}".client`)).to.deep.equal([{ name: 'One' }]);
    expect(await adminQuery(`SELECT name FROM "${two.schemaName}".client`)).to.deep.equal([]);
    await dropTestTenants(manager);
  });
});
