import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Client } from '../../entities';
import { tenantMigrations } from '../../migrations';
import { InvalidArgumentError, tenantContext } from '../../src';
import { adminQuery, openManager, tablesOf, uniqueSlug } from '../support/fixtures';
import { AddClientPhone1700000000003 } from '../support/extra-migrations';

const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

/** Spare schemas listed in the warm table, with their pg_namespace oids. */
async function spares(registryTable: string): Promise<Array<{ schema: string; oid: number; applied: string[] }>> {
  return adminQuery(
    `SELECT w.schema_name AS schema, n.oid::int AS oid, w.applied
       FROM public."${registryTable}_warm" w JOIN pg_namespace n ON n.nspname = w.schema_name ORDER BY 1`,
  );
}

async function namespaceOid(schema: string): Promise<number | undefined> {
  const rows = await adminQuery<{ oid: number }>('SELECT oid::int AS oid FROM pg_namespace WHERE nspname = $1', [schema]);
  return rows[0]?.oid;
}

describe('Warm pool: signup claims a pre-migrated schema', () => {
  const registry = (): string => `warm_${randomBytes(4).toString('hex')}`;

  it('createTenant claims a spare (the same schema, renamed), and the pool refills', async () => {
    const registryTable = registry();
    const manager = await openManager({ registryTable, warmPool: { size: 3 } });
    await manager.refillWarmPool();
    expect(await manager.warmPoolStatus()).to.deep.equal({ total: 3, ready: 3, servers: { default: { total: 3, ready: 3 } } });
    const before = await spares(registryTable);
    expect(before).to.have.length(3);
    for (const spare of before) {
      expect(spare.schema).to.match(/^typeorm_tenants_warm_[0-9a-f]{16}$/);
      expect(spare.applied).to.deep.equal(tenantMigrations.map((m) => m.name));
      expect(await tablesOf(spare.schema)).to.deep.equal(['client', 'migrations', 'project']);
    }

    const slug = uniqueSlug('warm');
    await manager.createTenant(slug);
    const oid = await namespaceOid(schemaOf(slug));
    expect(before.map((s) => s.oid), 'the tenant schema is a renamed spare').to.include(oid);
    expect(await tablesOf(schemaOf(slug))).to.deep.equal(['client', 'migrations', 'project']);
    expect((await manager.migrationStatus()).find((s) => s.slug === slug)?.pending).to.deep.equal([]);
    await manager.run(slug, () => tenantContext.getRepository(Client).save({ name: 'Warm', email: `w@${slug}.test` }));
    expect(await adminQuery(`SELECT name FROM "${schemaOf(slug)}".client`)).to.deep.equal([{ name: 'Warm' }]);

    await manager.refillWarmPool();
    const after = await spares(registryTable);
    expect(after).to.have.length(3);
    expect(after.map((s) => s.oid)).to.not.include(oid);
  });

  it('concurrent signups beyond the pool size all succeed: claimed or provisioned inline', async () => {
    const registryTable = registry();
    const manager = await openManager({ registryTable, warmPool: { size: 2 } });
    await manager.refillWarmPool();
    const spareOids = (await spares(registryTable)).map((s) => s.oid);
    const slugs = Array.from({ length: 6 }, () => uniqueSlug('rush'));
    await Promise.all(slugs.map((slug) => manager.createTenant(slug)));
    const oids = await Promise.all(slugs.map((slug) => namespaceOid(schemaOf(slug))));
    const claimed = oids.filter((oid) => spareOids.includes(oid!));
    expect(claimed.length, 'the two spares were claimed once each').to.equal(2);
    expect(new Set(claimed).size).to.equal(2);
    for (const slug of slugs) expect(await tablesOf(schemaOf(slug))).to.deep.equal(['client', 'migrations', 'project']);
  });

  it('spares are migrated with the fleet, so later signups get the new migration too', async () => {
    const registryTable = registry();
    const base = await openManager({ registryTable, warmPool: { size: 2 } });
    await base.refillWarmPool();
    const newer = await openManager({
      registryTable,
      warmPool: { size: 2 },
      tenantMigrations: [...tenantMigrations, AddClientPhone1700000000003],
    });
    await base.destroy();
    await newer.migrateTenants();
    const migrated = await spares(registryTable);
    expect(migrated).to.have.length(2);
    for (const spare of migrated) expect(spare.applied).to.include('AddClientPhone1700000000003');

    const slug = uniqueSlug('late');
    await newer.createTenant(slug);
    const phone = await adminQuery(
      "SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'client' AND column_name = 'phone'",
      [schemaOf(slug)],
    );
    expect(phone).to.have.length(1);
    expect((await newer.migrationStatus()).find((s) => s.slug === slug)?.pending).to.deep.equal([]);
  });

  it('two processes refilling one pool at once never overshoot its size', async () => {
    const registryTable = registry();
    const [a, b] = await Promise.all([openManager({ registryTable, warmPool: { size: 3 } }), openManager({ registryTable, warmPool: { size: 3 } })]);
    await Promise.all([a.refillWarmPool(), b.refillWarmPool(), a.refillWarmPool()]);
    expect(await a.warmPoolStatus()).to.deep.equal({ total: 3, ready: 3, servers: { default: { total: 3, ready: 3 } } });
    expect(await spares(registryTable)).to.have.length(3);
  });

  it('the seed hook runs in a claimed schema with the tenant search_path', async () => {
    const registryTable = registry();
    const manager = await openManager({
      registryTable,
      warmPool: { size: 1 },
      seed: async ({ query }) => {
        await query("INSERT INTO client (name, email) VALUES ('Seeded', 'seeded@x.test')");
      },
    });
    await manager.refillWarmPool();
    const [spare] = await spares(registryTable);
    const slug = uniqueSlug('wseed');
    await manager.createTenant(slug);
    expect(await namespaceOid(schemaOf(slug))).to.equal(spare!.oid);
    expect(await adminQuery(`SELECT name FROM "${schemaOf(slug)}".client`)).to.deep.equal([{ name: 'Seeded' }]);
  });

  it('destroy() during a refill leaves no half-made spare; refillWarmPool needs the option', async () => {
    const registryTable = registry();
    const manager = await openManager({ registryTable, warmPool: { size: 4 } });
    await manager.destroy(); // a refill started at initialize()
    const listed = await spares(registryTable);
    for (const spare of listed) expect(await tablesOf(spare.schema)).to.deep.equal(['client', 'migrations', 'project']);
    const strays = await adminQuery<{ nspname: string }>(
      `SELECT nspname FROM pg_namespace WHERE nspname LIKE 'typeorm\\_tenants\\_warm\\_%'
          AND nspname NOT IN (SELECT schema_name FROM public."${registryTable}_warm")`,
    );
    // Other tests' spares are listed in their own warm tables.
    const others = await adminQuery<{ table_name: string }>(
      "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_name LIKE '%\\_warm'",
    );
    const listedElsewhere = new Set<string>();
    for (const { table_name } of others) {
      for (const row of await adminQuery<{ schema_name: string }>(`SELECT schema_name FROM public."${table_name}"`)) listedElsewhere.add(row.schema_name);
    }
    expect(strays.map((s) => s.nspname).filter((n) => !listedElsewhere.has(n))).to.deep.equal([]);

    const plain = await openManager();
    await expect(plain.refillWarmPool()).to.be.rejectedWith(InvalidArgumentError);
    expect(await plain.warmPoolStatus()).to.deep.equal({ total: 0, ready: 0, servers: {} });
  });
});
