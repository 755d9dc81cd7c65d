import type { INestApplication } from '@nestjs/common';
import { getDataSourceToken } from '@nestjs/typeorm';
import { expect } from 'chai';
import type { AddressInfo } from 'node:net';
import type { DataSource } from 'typeorm';
import { bootstrap } from '../../examples/nest-typeorm/main';
import { CatalogService } from '../../examples/nest-typeorm/catalog.service';
import { TenantContextMissingError, type TenantDataSourceManager } from '../../src';
import { TENANCY_MANAGER } from '../../src/http/nestjs';
import { adminQuery, databaseUrl, tablesOf, uniqueSlug } from '../support/fixtures';
import { expectError, getJson } from './http-support';

/**
 * The example of TypeOrmModule next to TenancyModule
 * (examples/nest-typeorm/), booted as its main.ts does, with DATABASE_URL
 * read through ConfigService.
 */
describe('the NestJS + TypeOrmModule example (examples/nest-typeorm/)', function () {
  this.timeout(60_000);
  let app: INestApplication | undefined;
  let base = '';

  before(async () => {
    const before = process.env.DATABASE_URL;
    process.env.DATABASE_URL = databaseUrl();
    try {
      app = await bootstrap(0);
    } finally {
      if (before === undefined) delete process.env.DATABASE_URL;
      else process.env.DATABASE_URL = before;
    }
    base = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
  });

  after(async () => {
    await app?.close();
  });

  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    getJson(`${base}/${path}`, { 'content-type': 'application/json', ...headers }, { method: 'POST', body: JSON.stringify(body) });

  it('one service: plans through @InjectRepository(Plan) land in public.plan, clients through @InjectTenantRepository(Client) in the tenant\'s schema, with a foreign key to the shared plan', async () => {
    const [acme, globex] = [uniqueSlug('nt'), uniqueSlug('nt')];
    const schemaOf = (slug: string): string => slug.replace(/-/g, '_');
    for (const slug of [acme, globex]) expect(await post('tenants', { slug })).to.deep.include({ status: 201, body: { slug, status: 'active' } });
    expectError(await post('tenants', { slug: acme }), 409, 'TENANT_ALREADY_EXISTS');

    const code = `pro-${uniqueSlug('p')}`;
    const created = await post('plans', { code, name: 'Pro', monthlyPriceCents: 4900 });
    expect(created.status, JSON.stringify(created.body)).to.equal(201);
    const planRows = await adminQuery<{ id: number; name: string }>('SELECT id, name FROM public.plan WHERE code = $1', [code]);
    expect(planRows).to.deep.equal([{ id: created.body.id, name: 'Pro' }]);
    // The shared table exists once: no tenant schema has a plan table.
    for (const slug of [acme, globex]) expect(await tablesOf(schemaOf(slug))).to.include('client').and.not.include('plan');

    const client = await post('clients', { name: 'Ada', email: `ada@${acme}.test`, planCode: code }, { 'x-tenant-slug': acme });
    expect(client.status, JSON.stringify(client.body)).to.equal(201);
    const clientRows = await adminQuery<{ name: string; plan_id: number }>(`SELECT name, plan_id FROM "${schemaOf(acme)}".client`);
    expect(clientRows).to.deep.equal([{ name: 'Ada', plan_id: created.body.id }]);
    expect(await adminQuery(`SELECT 1 FROM "${schemaOf(globex)}".client`)).to.deep.equal([]);
    expect((await adminQuery<{ t: string | null }>("SELECT to_regclass('public.client')::text AS t"))[0]!.t).to.equal(null);
    const references = await adminQuery<{ target: string }>(
      "SELECT n.nspname || '.' || c.relname AS target FROM pg_constraint k JOIN pg_class c ON c.oid = k.confrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE k.conrelid = $1::regclass AND k.contype = 'f'",
      [`"${schemaOf(acme)}".client`],
    );
    expect(references.map((r) => r.target)).to.deep.equal(['public.plan']);

    // Read back through the API: the tenant's client joined to the shared plan; the other tenant sees none, but the same plans.
    const listed = await getJson(`${base}/clients`, { 'x-tenant-slug': acme });
    expect(listed.body).to.have.length(1);
    expect(listed.body[0]).to.include({ name: 'Ada', email: `ada@${acme}.test` });
    expect(listed.body[0]).not.to.have.property('internalNote');
    expect(listed.body[0].plan).to.include({ code, name: 'Pro' });
    expect((await getJson(`${base}/clients`, { 'x-tenant-slug': globex })).body).to.deep.equal([]);
    const plans = (await getJson(`${base}/plans`)).body as Array<{ code: string }>;
    expect(plans.map((p) => p.code)).to.include(code);
    expectError(await getJson(`${base}/clients`), 400, 'TENANT_REQUIRED');

    const manager = app!.get<TenantDataSourceManager>(TENANCY_MANAGER);
    for (const slug of [acme, globex]) await manager.dropTenant(slug, { force: true });
    await adminQuery('DELETE FROM public.plan WHERE code = $1', [code]);
  });

  it('TypeOrmModule keeps its own DataSource for the shared schema; the manager keeps its own pool; the service is one singleton', async () => {
    const typeormDataSource = app!.get<DataSource>(getDataSourceToken());
    const manager = app!.get<TenantDataSourceManager>(TENANCY_MANAGER);
    expect(typeormDataSource.isInitialized).to.equal(true);
    expect(typeormDataSource).not.to.equal(manager.sharedDataSource);
    expect(typeormDataSource.entityMetadatas.map((m) => m.tablePath)).to.deep.equal(['public.plan']);
    expect(app!.get(CatalogService)).to.equal(app!.get(CatalogService));
    // Outside a request the tenant repository refuses (fail closed); the shared one works.
    const service = app!.get(CatalogService);
    await expect(Promise.resolve().then(() => service.listClients())).to.be.rejectedWith(TenantContextMissingError);
    expect(await service.listPlans()).to.be.an('array');
  });
});
