import { expect } from 'chai';
import { Client, Plan } from '../../entities';
import {
  ManagerDestroyedError,
  ManagerNotInitializedError,
  TenantAlreadyExistsError,
  TenantNotActiveError,
  TenantNotFoundError,
  tenantContext,
} from '../../src';
import { adminQuery, newManager, openManager, schemaExists, sleep, tablesOf, uniqueSlug } from '../support/fixtures';

describe('TenantDataSourceManager: tenant lifecycle', () => {
  it('initialize() twice is harmless and creates the registry table once', async () => {
    const manager = newManager();
    await Promise.all([manager.initialize(), manager.initialize()]);
    await manager.initialize();
    const rows = await adminQuery("SELECT 1 FROM information_schema.tables WHERE table_schema = 'public' AND table_name = 'tenants'");
    expect(rows).to.have.length(1);
  });

  it('refuses use before initialize() and after destroy()', async () => {
    const manager = newManager();
    await expect(manager.listTenants()).to.be.rejectedWith(ManagerNotInitializedError);
    await manager.initialize();
    await manager.destroy();
    await manager.destroy();
    await expect(manager.run('acme', () => 1)).to.be.rejectedWith(ManagerDestroyedError);
    await expect(manager.initialize()).to.be.rejectedWith(ManagerDestroyedError);
  });

  it('createTenant returns the record and makes schema, tables and migrations rows in the tenant schema', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('life');
    const record = await manager.createTenant(slug, { name: 'Life Corp' });
    expect(record).to.include({ slug, schemaName: slug.replace(/-/g, '_'), name: 'Life Corp', status: 'active' });
    expect(record.createdAt).to.be.instanceOf(Date);
    expect(await tablesOf(record.schemaName)).to.deep.equal(['client', 'migrations', 'project']);
    const applied = await adminQuery<{ name: string }>(`SELECT name FROM "${record.schemaName}".migrations ORDER BY id`);
    expect(applied.map((r) => r.name)).to.deep.equal(['CreateClient1700000000001', 'CreateProject1700000000002']);
    expect(await manager.getTenant(slug)).to.deep.equal(record);
    expect((await manager.listTenants()).map((t) => t.slug)).to.include(slug);
  });

  it('keeps each tenant\'s rows in its own physical table', async () => {
    const manager = await openManager();
    const [a, b] = [uniqueSlug('iso'), uniqueSlug('iso')];
    const ta = await manager.createTenant(a);
    const tb = await manager.createTenant(b);
    await manager.run(a, () => tenantContext.getRepository(Client).save({ name: 'Only A', email: 'a@a.test' }));
    await manager.run(b, () => tenantContext.getRepository(Client).save([{ name: 'B1', email: 'b1@b.test' }, { name: 'B2', email: 'b2@b.test' }]));
    const seenByA = await manager.run(a, () => tenantContext.getRepository(Client).find());
    const seenByB = await manager.run(b, () => tenantContext.getRepository(Client).find());
    expect(seenByA.map((c) => c.name)).to.deep.equal(['Only A']);
    expect(seenByB.map((c) => c.name).sort()).to.deep.equal(['B1', 'B2']);
    const physicalA = await adminQuery<{ name: string }>(`SELECT name FROM "${ta.schemaName}".client`);
    const physicalB = await adminQuery<{ name: string }>(`SELECT name FROM "${tb.schemaName}".client`);
    expect(physicalA.map((r) => r.name)).to.deep.equal(['Only A']);
    expect(physicalB.map((r) => r.name).sort()).to.deep.equal(['B1', 'B2']);
    const inShared = await adminQuery("SELECT 1 FROM information_schema.tables WHERE table_schema = 'public' AND table_name = 'client'");
    expect(inShared, 'no client table in the shared schema').to.have.length(0);
  });

  it('a tenant entity holds a relation to a shared one, and one transaction spans both', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('rel');
    await manager.createTenant(slug);
    const code = uniqueSlug('plan');
    const client = await manager.run(slug, () =>
      tenantContext.transaction(async () => {
        const plan = await tenantContext.getRepository(Plan).save({ code, name: 'Gold', monthlyPriceCents: 100 });
        return tenantContext.getRepository(Client).save({ name: 'Rel', email: 'rel@x.test', plan });
      }),
    );
    const loaded = await manager.run(slug, () => tenantContext.getRepository(Client).findOne({ where: { id: client.id }, relations: { plan: true } }));
    expect(loaded?.plan?.code).to.equal(code);
    const planRows = await adminQuery('SELECT 1 FROM public.plan WHERE code = $1', [code]);
    expect(planRows, 'the plan lives in the shared schema').to.have.length(1);

    const rolledBack = uniqueSlug('plan');
    await expect(
      manager.run(slug, () =>
        tenantContext.transaction(async () => {
          const plan = await tenantContext.getRepository(Plan).save({ code: rolledBack, name: 'Lost', monthlyPriceCents: 1 });
          await tenantContext.getRepository(Client).save({ name: 'Lost', email: 'lost@x.test', plan });
          throw new Error('abort');
        }),
      ),
    ).to.be.rejectedWith('abort');
    expect(await adminQuery('SELECT 1 FROM public.plan WHERE code = $1', [rolledBack])).to.have.length(0);
    expect(await manager.run(slug, () => tenantContext.getRepository(Client).countBy({ name: 'Lost' }))).to.equal(0);
  });

  it('shared repositories work without a tenant, from the one live manager', async () => {
    const manager = await openManager();
    const code = uniqueSlug('shared');
    await manager.sharedDataSource.getRepository(Plan).save({ code, name: 'Free', monthlyPriceCents: 0 });
    const found = await tenantContext.getRepository(Plan).findOneBy({ code });
    expect(found?.name).to.equal('Free');
  });

  it('run() of an unknown tenant throws TenantNotFoundError before fn runs', async () => {
    const manager = await openManager();
    let ran = false;
    await expect(manager.run(uniqueSlug('ghost'), () => (ran = true))).to.be.rejectedWith(TenantNotFoundError);
    expect(ran).to.equal(false);
    await expect(manager.getDataSource(uniqueSlug('ghost'))).to.be.rejectedWith(TenantNotFoundError);
    expect(await manager.getTenant(uniqueSlug('ghost'))).to.equal(undefined);
  });

  it('createTenant of an existing slug, or of a slug mapping to the same schema, throws TenantAlreadyExistsError', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('dup');
    await manager.createTenant(slug);
    await expect(manager.createTenant(slug)).to.be.rejectedWith(TenantAlreadyExistsError);
    const twin = slug.replace('-', '_');
    const error = await manager.createTenant(twin).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(TenantAlreadyExistsError);
    expect((error as Error).message).to.include(`already belongs to tenant "${slug}"`);
  });

  it('createTenant over a schema that exists without a tenant refuses and keeps the schema', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('orphan');
    const schema = slug.replace(/-/g, '_');
    await adminQuery(`CREATE SCHEMA "${schema}"`);
    await adminQuery(`CREATE TABLE "${schema}".keep (id int)`);
    await expect(manager.createTenant(slug)).to.be.rejectedWith(TenantAlreadyExistsError, 'belongs to no tenant');
    expect(await tablesOf(schema)).to.deep.equal(['keep']);
    expect(await manager.getTenant(slug)).to.equal(undefined);
  });

  it('dropTenant removes schema and row together, evicts the DataSource, and later runs get TenantNotFoundError', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('drop');
    const record = await manager.createTenant(slug);
    const dataSource = await manager.getDataSource(slug);
    expect(manager.stats().cachedDataSources).to.equal(1);
    await manager.dropTenant(slug, { force: true });
    expect(await schemaExists(record.schemaName)).to.equal(false);
    expect(await manager.getTenant(slug)).to.equal(undefined);
    expect(manager.stats().cachedDataSources).to.equal(0);
    await manager.run(uniqueSlug('x'), () => 1).catch(() => undefined);
    await new Promise((resolve) => setImmediate(resolve));
    expect(dataSource.isInitialized, 'the evicted DataSource is closed').to.equal(false);
    await expect(manager.run(slug, () => 1)).to.be.rejectedWith(TenantNotFoundError);
    await expect(manager.dropTenant(slug)).to.be.rejectedWith(TenantNotFoundError);
  });

  it('run() of a tenant that is not active is refused with TenantNotActiveError naming the status', async () => {
    const manager = await openManager({ tenantRecordTtlMs: 0 });
    const slug = uniqueSlug('susp');
    await manager.createTenant(slug);
    await manager.run(slug, () => tenantContext.getRepository(Client).save({ name: 'Kept', email: 'k@x.test' }));
    await adminQuery("UPDATE public.tenants SET status = 'suspended' WHERE slug = $1", [slug]);
    let ran = false;
    const error = await manager.run(slug, () => (ran = true)).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(TenantNotActiveError);
    expect((error as TenantNotActiveError).status).to.equal('suspended');
    expect((error as Error).message).to.include('suspended');
    expect(ran).to.equal(false);
    expect(manager.stats().cachedDataSources, 'a refused tenant leaves the cache').to.equal(0);
    await adminQuery("UPDATE public.tenants SET status = 'active' WHERE slug = $1", [slug]);
    expect(await manager.run(slug, () => tenantContext.getRepository(Client).count())).to.equal(1);
  });

  it('a tenant dropped by another process is refused once the cached record expires', async () => {
    const manager = await openManager({ tenantRecordTtlMs: 0 });
    const other = await openManager();
    const slug = uniqueSlug('gone');
    await manager.createTenant(slug);
    await manager.run(slug, () => 1);
    await other.dropTenant(slug, { force: true });
    await expect(manager.run(slug, () => 1)).to.be.rejectedWith(TenantNotFoundError);
  });

  it('destroy() waits for active runs to finish before closing, and refuses new ones meanwhile', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('wait');
    await manager.createTenant(slug);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const running = manager.run(slug, async () => {
      await gate;
      return tenantContext.getRepository(Client).save({ name: 'Late', email: 'late@x.test' });
    });
    await sleep(20);
    const destroyed = manager.destroy();
    await expect(manager.run(slug, () => 1)).to.be.rejectedWith(ManagerDestroyedError);
    let destroyDone = false;
    void destroyed.then(() => (destroyDone = true));
    await sleep(50);
    expect(destroyDone, 'destroy() still waits for the run').to.equal(false);
    release();
    const saved = await running;
    await destroyed;
    expect(saved.id).to.be.a('number');
    const schema = slug.replace(/-/g, '_');
    expect(await adminQuery(`SELECT 1 FROM "${schema}".client WHERE name = 'Late'`)).to.have.length(1);
  });

  it('Symbol.asyncDispose destroys the manager', async () => {
    const manager = await openManager();
    await manager[Symbol.asyncDispose]();
    expect(() => manager.sharedDataSource).to.throw(ManagerDestroyedError);
  });
});
