import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Client } from '../../entities';
import { TenancyConfigurationError, TenantDataSourceManager, tenantContext } from '../../src';
import { tenantRoleName } from '../../src/naming/derived-schema-name';
import { adminQuery, managerOptions, openManager, uniqueSlug } from '../support/fixtures';

const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

async function roleExists(role: string): Promise<boolean> {
  return (await adminQuery('SELECT 1 FROM pg_roles WHERE rolname = $1', [role])).length === 1;
}

async function databaseName(): Promise<string> {
  const [row] = await adminQuery<{ db: string }>('SELECT current_database() AS db');
  return row!.db;
}

describe("isolation: 'role' (database-enforced)", () => {
  const registry = (): string => `role_${randomBytes(4).toString('hex')}`;

  it('every statement of a run, reads included, runs as the tenant role: another tenant\'s schema is refused by PostgreSQL', async () => {
    const manager = await openManager({ registryTable: registry(), isolation: 'role' });
    const [a, b] = [uniqueSlug('ra'), uniqueSlug('rb')];
    await manager.createTenant(a);
    await manager.createTenant(b);
    const roleA = tenantRoleName(await databaseName(), schemaOf(a));
    expect(roleA.length).to.be.at.most(63);
    expect(await roleExists(roleA)).to.equal(true);

    await manager.run(b, () => tenantContext.getRepository(Client).save({ name: 'Secret', email: `s@${b}.test` }));
    await manager.run(a, async () => {
      const clients = tenantContext.getRepository(Client);
      await clients.save({ name: 'Mine', email: `m@${a}.test` });
      expect((await clients.find()).map((c) => c.name)).to.deep.equal(['Mine']);
      // A read outside any transaction (TypeORM's find path) runs as the role too.
      const [who] = await tenantContext.getManager().query('SELECT current_user AS role');
      expect(who.role).to.equal(roleA);
      // Hand-written SQL naming the other tenant: refused, in and out of a transaction.
      const outside = await tenantContext.getManager().query(`SELECT * FROM "${schemaOf(b)}".client`).catch((e: unknown) => e);
      expect((outside as { code?: string }).code, 'outside a transaction').to.equal('42501');
      const inside = await tenantContext.query(`SELECT * FROM "${schemaOf(b)}".client`).catch((e: unknown) => e);
      expect((inside as { code?: string }).code, 'inside tenantContext.query').to.equal('42501');
      const write = await tenantContext
        .transaction((em) => em.query(`INSERT INTO "${schemaOf(b)}".client (name, email) VALUES ('x', 'x@x.test')`))
        .catch((e: unknown) => e);
      expect((write as { code?: string }).code, 'a write into the other tenant').to.equal('42501');
      const ledger = await tenantContext.getManager().query(`SELECT * FROM "${schemaOf(a)}".migrations`).catch((e: unknown) => e);
      expect((ledger as { code?: string }).code, 'its own migrations table is not the tenant role\'s').to.equal('42501');
    });
    expect(await adminQuery(`SELECT name FROM "${schemaOf(b)}".client`)).to.deep.equal([{ name: 'Secret' }]);

    // Connections go back to the pool as the connecting role.
    const roles = await Promise.all(Array.from({ length: 10 }, () => manager.sharedDataSource.query('SELECT current_user AS role, pg_backend_pid() AS pid')));
    for (const [row] of roles) expect(row.role).to.not.match(/^typeorm_tenants_r_/);
  });

  it('tables added by later migrations are granted to the role; dropping the tenant drops its role', async () => {
    const registryTable = registry();
    const manager = await openManager({ registryTable, isolation: 'role' });
    const slug = uniqueSlug('rmig');
    await manager.createTenant(slug);
    await adminQuery(`CREATE TABLE "${schemaOf(slug)}".late (id serial PRIMARY KEY)`); // as the connecting role, like a migration
    await manager.run(slug, () => tenantContext.query('INSERT INTO late DEFAULT VALUES'));
    expect(await adminQuery(`SELECT id FROM "${schemaOf(slug)}".late`)).to.have.length(1);

    const role = tenantRoleName(await databaseName(), schemaOf(slug));
    await manager.dropTenant(slug, { force: true });
    expect(await roleExists(role)).to.equal(false);
  });

  it('in the default schema mode the same hand-written SQL is not refused (the control)', async () => {
    const manager = await openManager({ registryTable: registry() });
    const [a, b] = [uniqueSlug('sa'), uniqueSlug('sb')];
    await manager.createTenant(a);
    await manager.createTenant(b);
    const rows = await manager.run(a, () => tenantContext.getManager().query(`SELECT * FROM "${schemaOf(b)}".client`));
    expect(rows).to.deep.equal([]);
    expect(await roleExists(tenantRoleName(await databaseName(), schemaOf(a)))).to.equal(false);
  });

  it('refuses an unknown isolation mode', () => {
    expect(() => new TenantDataSourceManager(managerOptions({ isolation: 'rls' as 'role' }))).to.throw(TenancyConfigurationError, 'isolation');
  });
});
