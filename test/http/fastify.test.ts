import { expect } from 'chai';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { PassThrough } from 'node:stream';
import { Client } from '../../entities';
import { fromHeader, fromPath, fromSubdomain, tenantContext, type TenantDataSourceManager, type TenantMiddlewareOptions } from '../../src';
import { tenancyPlugin } from '../../src/http/fastify';
import { openManager, uniqueSlug } from '../support/fixtures';
import { deferred, expectError, getJson, inParallel, rawRequest, seedClients, twoPartPost } from './http-support';

describe('Fastify tenancyPlugin', () => {
  const apps: FastifyInstance[] = [];
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((app) => app.close()));
  });

  interface Built {
    readonly base: string;
    readonly app: FastifyInstance;
    readonly tenancy: FastifyInstance['tenancy'];
    readonly finished: Map<string, ReturnType<typeof deferred<Record<string, unknown>>>>;
    readonly gates: Map<string, { promise: Promise<void>; resolve: () => void }>;
    readonly parsing: Map<string, { promise: Promise<void>; resolve: () => void }>;
  }

  async function build(manager: TenantDataSourceManager, options: TenantMiddlewareOptions<FastifyRequest>): Promise<Built> {
    const app = Fastify({ bodyLimit: 1_048_576 });
    apps.push(app);
    const finished: Built['finished'] = new Map();
    const gates: Built['gates'] = new Map();
    let tenancy: FastifyInstance['tenancy'] | undefined;
    const parsing: Built['parsing'] = new Map();
    app.get('/health', async () => ({ ok: true, slug: tenantContext.current()?.slug ?? null }));
    await app.register(async (scope) => {
      await scope.register(tenancyPlugin, { manager, ...options });
      tenancy = scope.tenancy;
      scope.addHook('preParsing', async (request) => {
        const id = request.headers['x-request-id'];
        if (typeof id === 'string') parsing.get(id)?.resolve();
      });
      scope.addHook('preHandler', async (request) => {
        await new Promise((resolve) => setTimeout(resolve, 1));
        (request as FastifyRequest & { seenByHook?: string | null }).seenByHook = tenantContext.current()?.slug ?? null;
      });
      scope.addHook('onResponse', async (request) => {
        const id = (request.query as { id?: string }).id;
        if (id === undefined) return;
        const [row] = await tenantContext.query<Array<{ schema: string }>>('SELECT current_schema() AS schema');
        finished.get(id)?.resolve({ hook: 'onResponse', slug: tenantContext.current()?.slug ?? null, schema: row!.schema });
      });
      const whoami = async (request: FastifyRequest): Promise<Record<string, unknown>> => ({
        slug: tenantContext.current()?.slug ?? null,
        reqTenant: request.tenant?.slug ?? null,
        seenByHook: (request as FastifyRequest & { seenByHook?: string | null }).seenByHook ?? null,
      });
      scope.get('/whoami', whoami);
      scope.get('/t/:tenant/whoami', whoami);
      scope.get('/clients', async () => {
        const clients = await tenantContext.getRepository(Client).find({ order: { id: 'ASC' } });
        return clients.map((c) => ({ name: c.name, email: c.email }));
      });
      scope.post('/echo', async (request) => {
        await new Promise((resolve) => setTimeout(resolve, 1));
        const count = await tenantContext.getRepository(Client).count();
        return { slug: tenantContext.current()?.slug ?? null, seenByHook: (request as { seenByHook?: string }).seenByHook, size: JSON.stringify(request.body).length, count };
      });
      scope.get('/finish', async (request, reply) => {
        const id = (request.query as { id: string }).id;
        const done = deferred<Record<string, unknown>>();
        finished.set(id, done);
        const raw = deferred<Record<string, unknown>>();
        finished.set(`${id}-raw`, raw);
        reply.raw.on('finish', () => {
          void tenantContext.query<Array<{ schema: string }>>('SELECT current_schema() AS schema').then(([row]) =>
            raw.resolve({ hook: 'finish', slug: tenantContext.current()?.slug ?? null, schema: row!.schema }),
          );
        });
        return { ok: true };
      });
      scope.get('/stream', (request, reply) => {
        const gate = gates.get((request.query as { gate?: string }).gate ?? '');
        const stream = new PassThrough();
        void (async () => {
          for (let i = 0; i < 4; i += 1) {
            const [{ n }] = await tenantContext.query<Array<{ n: number }>>('SELECT count(*)::int AS n FROM client');
            const [{ email }] = await tenantContext.query<Array<{ email: string }>>('SELECT email FROM client ORDER BY id LIMIT 1');
            stream.write(`${i} ${tenantContext.current()?.slug} ${n} ${email}\n`);
            if (i === 0 && gate !== undefined) await gate.promise;
            else await new Promise((resolve) => setTimeout(resolve, 2));
          }
          stream.end();
        })().catch((error: unknown) => stream.destroy(error as Error));
        return reply.type('text/plain').send(stream);
      });
      scope.get('/optional', async () => {
        let error: string | null = null;
        try {
          await tenantContext.getRepository(Client).find();
        } catch (e) {
          error = (e as { code: string }).code;
        }
        return { slug: tenantContext.current()?.slug ?? null, error };
      });
    });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    return { base, app, tenancy: tenancy!, finished, gates, parsing };
  }

  it('the header resolver: onRequest, a later async preHandler hook, the handler and request.tenant all see the tenant; tenant-free routes outside the scope', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('fh');
    await manager.createTenant(slug);
    const { base } = await build(manager, { resolve: fromHeader() });
    const answer = await getJson(`${base}/whoami`, { 'x-tenant-slug': slug });
    expect(answer).to.deep.include({ status: 200, body: { slug, reqTenant: slug, seenByHook: slug } });
    expect((await getJson(`${base}/health`)).body).to.deep.equal({ ok: true, slug: null });
  });

  it('subdomain and path resolvers (on Fastify the route keeps the segment: /t/:tenant/...)', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('fs');
    await manager.createTenant(slug);
    const sub = await build(manager, { resolve: fromSubdomain({ baseDomain: 'app.example.com' }) });
    const bySub = await rawRequest(`${sub.base}/whoami`, { headers: { host: `${slug}.APP.example.com:443` } });
    expect(bySub.json()).to.include({ slug, reqTenant: slug });
    const none = await rawRequest(`${sub.base}/whoami`, { headers: { host: 'www.app.example.com' } });
    expectError({ status: none.status, body: none.json(), contentType: none.contentType }, 400, 'TENANT_REQUIRED');
    const path = await build(manager, { resolve: fromPath({ prefix: '/t' }) });
    expect((await getJson(`${path.base}/t/${slug}/whoami`)).body).to.include({ slug, reqTenant: slug, seenByHook: slug });
    expectError(await getJson(`${path.base}/t/Nope/whoami`), 400, 'INVALID_TENANT_NAME');
  });

  it('every outcome: 400 required, 400 invalid (no lookup), 404 unknown, 403 suspended, 423 archived, 403 forbidden (sync and async authorize)', async () => {
    const manager = await openManager();
    const [slug, other] = [uniqueSlug('fo'), uniqueSlug('fo')];
    await manager.createTenant(slug);
    await manager.createTenant(other);
    let lookups = 0;
    const getTenant = manager.getTenant.bind(manager);
    manager.getTenant = (s: string) => {
      lookups += 1;
      return getTenant(s);
    };
    const { base, tenancy } = await build(manager, {
      resolve: fromHeader(),
      authorize: (request, tenant) => (request.headers['x-async'] ? Promise.resolve(tenant.slug === slug) : tenant.slug === slug),
    });
    expectError(await getJson(`${base}/whoami`), 400, 'TENANT_REQUIRED');
    expectError(await getJson(`${base}/whoami`, { 'x-tenant-slug': 'pg_toast' }), 400, 'INVALID_TENANT_NAME');
    expectError(await getJson(`${base}/whoami`, { 'x-tenant-slug': 'Bad Name' }), 400, 'INVALID_TENANT_NAME');
    expect(lookups).to.equal(0);
    expect(tenancy.cache.stats().lookups).to.equal(0);
    expectError(await getJson(`${base}/whoami`, { 'x-tenant-slug': uniqueSlug('none') }), 404, 'TENANT_NOT_FOUND');
    expectError(await getJson(`${base}/whoami`, { 'x-tenant-slug': other }), 403, 'TENANT_FORBIDDEN');
    expectError(await getJson(`${base}/whoami`, { 'x-tenant-slug': other, 'x-async': '1' }), 403, 'TENANT_FORBIDDEN');
    expect((await getJson(`${base}/whoami`, { 'x-tenant-slug': slug, 'x-async': '1' })).body.slug).to.equal(slug);
    await manager.suspendTenant(slug);
    expectError(await getJson(`${base}/whoami`, { 'x-tenant-slug': slug }), 403, 'TENANT_SUSPENDED');
    await manager.resumeTenant(slug);
    await manager.archiveTenant(slug);
    expectError(await getJson(`${base}/whoami`, { 'x-tenant-slug': slug }), 423, 'TENANT_NOT_ACTIVE');
    await manager.restoreTenant(slug);
    expect((await getJson(`${base}/whoami`, { 'x-tenant-slug': slug })).status).to.equal(200);
    await manager.dropTenant(slug, { force: true });
    expectError(await getJson(`${base}/whoami`, { 'x-tenant-slug': slug }), 404, 'TENANT_NOT_FOUND');
  });

  it('required: false serves requests that name no tenant without a context', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('fopt');
    await manager.createTenant(slug);
    const { base } = await build(manager, { resolve: fromHeader(), required: false });
    expect((await getJson(`${base}/optional`)).body).to.deep.equal({ slug: null, error: 'TENANT_CONTEXT_MISSING' });
    expect((await getJson(`${base}/optional`, { 'x-tenant-slug': slug })).body).to.deep.equal({ slug, error: null });
  });

  it('a POST body (read from socket events after onRequest) still reaches hooks and the handler in the tenant', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('fpost');
    await manager.createTenant(slug);
    await seedClients(manager, slug, 2);
    const { base, parsing } = await build(manager, { resolve: fromHeader() });
    const body = JSON.stringify({ data: 'y'.repeat(300_000) });
    const answer = await getJson(`${base}/echo`, { 'x-tenant-slug': slug, 'content-type': 'application/json' }, { method: 'POST', body });
    expect(answer.status, JSON.stringify(answer.body)).to.equal(200);
    expect(answer.body).to.deep.equal({ slug, seenByHook: slug, size: body.length, count: 2 });
    // The end of the body arrives only after the server has started parsing.
    const started = deferred();
    parsing.set('late', started);
    const late = await twoPartPost(`${base}/echo`, { 'x-tenant-slug': slug, 'content-type': 'application/json', 'x-request-id': 'late' }, '{"data":"', 'z"}', () => started.promise);
    expect(late.status, late.text).to.equal(200);
    expect(late.json()).to.deep.equal({ slug, seenByHook: slug, size: '{"data":"z"}'.length, count: 2 });
  });

  it("onResponse hooks and reply.raw 'finish' listeners run in the tenant and can query it", async () => {
    const manager = await openManager();
    const slug = uniqueSlug('ffin');
    await manager.createTenant(slug);
    const { base, finished } = await build(manager, { resolve: fromHeader() });
    expect((await getJson(`${base}/finish?id=f1`, { 'x-tenant-slug': slug })).status).to.equal(200);
    const schema = slug.replace(/-/g, '_');
    expect(await finished.get('f1')!.promise).to.deep.equal({ hook: 'onResponse', slug, schema });
    expect(await finished.get('f1-raw')!.promise).to.deep.equal({ hook: 'finish', slug, schema });
  });

  it('a streamed reply: every chunk comes from a tenant query, written after awaits', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('fstr');
    await manager.createTenant(slug);
    await seedClients(manager, slug, 3);
    const { base } = await build(manager, { resolve: fromHeader() });
    const text = await (await fetch(`${base}/stream`, { headers: { 'x-tenant-slug': slug } })).text();
    expect(text.trim().split('\n')).to.deep.equal([0, 1, 2, 3].map((i) => `${i} ${slug} 3 c0@${slug}.test`));
  });

  it('holds the DataSource until the reply has finished: maxDataSources 1, A streams slowly while B and C evict it', async () => {
    const manager = await openManager({ maxDataSources: 1 });
    const [a, b, c] = [uniqueSlug('fha'), uniqueSlug('fhb'), uniqueSlug('fhc')];
    for (const slug of [a, b, c]) {
      await manager.createTenant(slug);
      await seedClients(manager, slug, 1);
    }
    const { base, gates } = await build(manager, { resolve: fromHeader() });
    const gate = deferred();
    gates.set('a', gate);
    const response = await fetch(`${base}/stream?gate=a`, { headers: { 'x-tenant-slug': a } });
    const reader = response.body!.getReader();
    expect(Buffer.from((await reader.read()).value!).toString()).to.equal(`0 ${a} 1 c0@${a}.test\n`);
    expect((await getJson(`${base}/clients`, { 'x-tenant-slug': b })).body).to.deep.equal([{ name: `${b} client 0`, email: `c0@${b}.test` }]);
    expect((await getJson(`${base}/clients`, { 'x-tenant-slug': c })).body).to.deep.equal([{ name: `${c} client 0`, email: `c0@${c}.test` }]);
    expect(manager.stats().pendingDisposal).to.equal(1);
    gate.resolve();
    let rest = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      rest += Buffer.from(value).toString();
    }
    expect(rest.trim().split('\n')).to.deep.equal([1, 2, 3].map((i) => `${i} ${a} 1 c0@${a}.test`));
    for (let i = 0; i < 100 && manager.stats().pendingDisposal > 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(manager.stats()).to.include({ pendingDisposal: 0, activeRuns: 0 });
  });

  it('isolation: 1,000 interleaved requests (GET and POST) over 20 tenants each see only their own tenant', async () => {
    const manager = await openManager();
    const slugs = Array.from({ length: 20 }, () => uniqueSlug('fiso'));
    for (const slug of slugs) {
      await manager.createTenant(slug);
      await seedClients(manager, slug, 2);
    }
    const { base, tenancy } = await build(manager, { resolve: fromHeader() });
    const results = await inParallel(
      Array.from({ length: 1000 }, (_, i) => async () => {
        const slug = slugs[i % slugs.length]!;
        if (i % 2 === 0) return { slug, kind: 'get', answer: await getJson(`${base}/clients`, { 'x-tenant-slug': slug }) };
        const answer = await getJson(`${base}/echo`, { 'x-tenant-slug': slug, 'content-type': 'application/json' }, { method: 'POST', body: JSON.stringify({ i }) });
        return { slug, kind: 'post', answer };
      }),
      50,
    );
    for (const { slug, kind, answer } of results) {
      expect(answer.status).to.equal(200);
      if (kind === 'get') expect(answer.body).to.deep.equal([0, 1].map((i) => ({ name: `${slug} client ${i}`, email: `c${i}@${slug}.test` })));
      else expect(answer.body).to.include({ slug, seenByHook: slug, count: 2 });
    }
    expect(tenancy.cache.stats().lookups).to.equal(20);
  });
});
