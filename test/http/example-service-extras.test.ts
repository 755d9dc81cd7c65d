import { expect } from 'chai';
import Redis from 'ioredis';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startService, type RunningService } from '../../examples/service';
import { tenantIncarnation } from '../../src';
import { databaseUrl, uniqueSlug } from '../support/fixtures';
import { redisHost, redisPort } from '../support/redis';
import { expectError, getJson } from './http-support';

describe('the example service\'s files, cache and metrics', function () {
  this.timeout(60_000);
  let service: RunningService | undefined;
  let root: string | undefined;
  const cachePrefix = `example-extras-${process.pid}-${Date.now()}:`;
  const redis = new Redis({ host: redisHost, port: redisPort, lazyConnect: true });

  before(() => redis.connect());
  after(() => redis.quit());

  afterEach(async () => {
    await service?.close();
    service = undefined;
    if (root !== undefined) rmSync(root, { recursive: true, force: true });
    root = undefined;
    const left = await redis.keys(`${cachePrefix}*`);
    if (left.length > 0) await redis.del(...left);
  });

  const send = (url: string, method: string, body: string | object, headers: Record<string, string>) =>
    getJson(url, { 'content-type': typeof body === 'string' ? 'text/plain' : 'application/json', ...headers }, { method, body: typeof body === 'string' ? body : JSON.stringify(body) });

  it('files: PUT/GET/list per tenant, each tenant\'s file on disk under its own schema and incarnation; bad keys 400, other tenants 404', async () => {
    root = mkdtempSync(join(tmpdir(), 'example-files-test-'));
    service = await startService({ databaseUrl: databaseUrl(), filesRoot: root, redisUrl: '' });
    const base = service.url;
    const [acme, globex] = [uniqueSlug('sfacme'), uniqueSlug('sfglobex')];
    for (const slug of [acme, globex]) expect((await send(`${base}/tenants`, 'POST', { slug }, {})).status).to.equal(201);

    expect((await send(`${base}/files/notes/hello.txt`, 'PUT', 'hello from acme', { 'x-tenant-slug': acme })).status).to.equal(204);
    const read = await getJson(`${base}/files/notes/hello.txt`, { 'x-tenant-slug': acme });
    expect(read).to.include({ status: 200, body: 'hello from acme' });
    expectError(await getJson(`${base}/files/notes/hello.txt`, { 'x-tenant-slug': globex }), 404, 'TENANT_FILE_NOT_FOUND');
    expectError(await getJson(`${base}/files/..%2Fx`, { 'x-tenant-slug': acme }), 400, 'INVALID_FILE_KEY');
    expect((await getJson(`${base}/files`, { 'x-tenant-slug': acme })).body.map((f: { key: string }) => f.key)).to.deep.equal(['notes/hello.txt']);
    expect((await getJson(`${base}/files`, { 'x-tenant-slug': globex })).body).to.deep.equal([]);

    const record = (await service.tenants.getTenant(acme))!;
    const onDisk = join(root, record.schemaName, tenantIncarnation(record), 'notes', 'hello.txt');
    expect(readFileSync(onDisk, 'utf8')).to.equal('hello from acme');
    expect(readdirSync(root).sort()).to.deep.equal([record.schemaName]);

    await service.tenants.dropTenant(acme, { force: true });
    expect(existsSync(onDisk), 'dropTenant deleted the tenant\'s files').to.equal(false);
    await service.tenants.dropTenant(globex, { force: true });
  });

  it('cache: GET /clients/count is cached per tenant in Redis under the tenant\'s keys; metrics count the runs', async () => {
    service = await startService({ databaseUrl: databaseUrl(), redisUrl: `redis://${redisHost}:${redisPort}`, cachePrefix, jobsPrefix: `${cachePrefix}jobs` });
    const base = service.url;
    const [acme, globex] = [uniqueSlug('scacme'), uniqueSlug('scglobex')];
    for (const slug of [acme, globex]) expect((await send(`${base}/tenants`, 'POST', { slug }, {})).status).to.equal(201);
    await send(`${base}/clients`, 'POST', { name: 'Ada', email: 'ada@acme.test' }, { 'x-tenant-slug': acme });

    expect((await getJson(`${base}/clients/count`, { 'x-tenant-slug': acme })).body).to.deep.equal({ count: 1 });
    expect((await getJson(`${base}/clients/count`, { 'x-tenant-slug': globex })).body).to.deep.equal({ count: 0 });
    await send(`${base}/clients`, 'POST', { name: 'Alan', email: 'alan@acme.test' }, { 'x-tenant-slug': acme });
    expect((await getJson(`${base}/clients/count`, { 'x-tenant-slug': acme })).body, 'served from the cache within its 10 s').to.deep.equal({ count: 1 });

    const keys = (await redis.keys(`${cachePrefix}*`)).filter((key) => !key.startsWith(`${cachePrefix}jobs`)).sort();
    const expected = await Promise.all(
      [acme, globex].map(async (slug) => {
        const record = (await service!.tenants.getTenant(slug))!;
        return `${cachePrefix}tenant:${record.schemaName}:${tenantIncarnation(record)}:clients:count`;
      }),
    );
    expect(keys).to.deep.equal(expected.sort());

    await service.tenants.dropTenant(acme, { force: true });
    expect(await redis.exists(expected.find((key) => key.includes(acme.replace(/-/g, '_')))!), 'dropTenant cleared the tenant\'s keys').to.equal(0);

    const metrics = await getJson(`${base}/metrics`);
    expect(metrics.status).to.equal(200);
    expect(metrics.body).to.be.a('string').and.match(/typeorm_tenants_/);
    await service.tenants.dropTenant(globex, { force: true });
  });

  it('coreOnly: no files, cache or metrics routes', async () => {
    service = await startService({ databaseUrl: databaseUrl(), redisUrl: `redis://${redisHost}:${redisPort}`, coreOnly: true });
    // No tenant-free /metrics route: the request reaches the tenant middleware, which wants a tenant.
    expectError(await getJson(`${service.url}/metrics`), 400, 'TENANT_REQUIRED');
    const slug = uniqueSlug('score');
    expect((await send(`${service.url}/tenants`, 'POST', { slug }, {})).status).to.equal(201);
    expect((await send(`${service.url}/files/a.txt`, 'PUT', 'x', { 'x-tenant-slug': slug })).status).to.equal(404);
    await service.tenants.dropTenant(slug, { force: true });
  });
});
