import { expect } from 'chai';
import express, { type NextFunction, type Request, type Response } from 'express';
import { createServer, type Server } from 'node:http';
import { randomBytes } from 'node:crypto';
import { Client } from '../../entities';
import {
  TenancyError,
  fromHeader,
  fromPath,
  fromSubdomain,
  tenancyErrorBody,
  tenantContext,
  type TenantDataSourceManager,
  type TenantMiddlewareOptions,
} from '../../src';
import { tenantMiddleware, type TenantMiddleware } from '../../src/http/express';
import { openManager, uniqueSlug } from '../support/fixtures';
import { closeServer, deferred, expectError, getJson, inParallel, listen, rawRequest, seedClients, twoPartPost } from './http-support';

interface Built {
  readonly base: string;
  readonly middleware: TenantMiddleware;
  readonly finished: Map<string, ReturnType<typeof deferred<{ slug: string | null; schema: string }>>>;
  readonly gates: Map<string, { promise: Promise<void>; resolve: () => void }>;
  readonly parsing: Map<string, { promise: Promise<void>; resolve: () => void }>;
}

describe('Express tenantMiddleware', () => {
  const servers: Server[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map(closeServer));
  });

  /** A service whose handlers only use tenantContext; the tenant middleware in front. */
  async function build(manager: TenantDataSourceManager, options: TenantMiddlewareOptions<Request>): Promise<Built> {
    const app = express();
    const finished: Built['finished'] = new Map();
    const gates: Built['gates'] = new Map();
    app.get('/health', (_req, res) => {
      res.json({ ok: true, slug: tenantContext.current()?.slug ?? null });
    });
    const middleware = tenantMiddleware(manager, options);
    app.use(middleware);
    const parsing: Built['parsing'] = new Map();
    app.use((req, _res, next) => {
      const id = req.headers['x-request-id'];
      if (typeof id === 'string') parsing.get(id)?.resolve();
      next();
    });
    // Registered after the middleware: the body is read from socket events.
    app.use(express.json({ limit: '1mb' }));
    app.use((req, res, next) => {
      // A later middleware that goes async before passing on.
      setTimeout(() => {
        res.locals.seenByLater = tenantContext.current()?.slug ?? null;
        next();
      }, 1);
    });
    app.get('/whoami', (req, res) => {
      res.json({
        slug: tenantContext.current()?.slug ?? null,
        reqTenant: req.tenant?.slug ?? null,
        seenByLater: res.locals.seenByLater,
        url: req.url,
        originalUrl: req.originalUrl,
      });
    });
    app.get('/clients', async (_req, res) => {
      const clients = await tenantContext.getRepository(Client).find({ order: { id: 'ASC' } });
      res.json(clients.map((c) => ({ name: c.name, email: c.email })));
    });
    app.post('/echo', async (req, res) => {
      await new Promise((resolve) => setTimeout(resolve, 1));
      const count = await tenantContext.getRepository(Client).count();
      res.json({ slug: tenantContext.current()?.slug ?? null, body: req.body, count });
    });
    app.post('/upload', (req, res) => {
      // Reads the body itself: its 'end' listener is called from a socket event.
      let size = 0;
      req.on('data', (chunk: Buffer) => {
        size += chunk.length;
        // Ask for the rest only now, so it comes in a later socket event.
        parsing.get(String(req.headers['x-upload-id']))?.resolve();
      });
      req.on('end', () => {
        const slug = tenantContext.current()?.slug ?? null;
        tenantContext
          .getRepository(Client)
          .count()
          .then(
            (count) => res.json({ slug, size, count }),
            (error: TenancyError) => res.status(500).json({ slug, error: error.code }),
          );
      });
    });
    app.get('/finish/:id', (req, res) => {
      const id = String(req.params.id);
      const done = deferred<{ slug: string | null; schema: string }>();
      finished.set(id, done);
      res.on('finish', () => {
        // Async work after the response went out, still in the tenant.
        void tenantContext.query<Array<{ schema: string }>>('SELECT current_schema() AS schema').then(
          ([row]) => done.resolve({ slug: tenantContext.current()?.slug ?? null, schema: row!.schema }),
          (error: unknown) => done.resolve({ slug: null, schema: `failed: ${String(error)}` }),
        );
      });
      res.json({ ok: true });
    });
    app.get('/stream', async (req, res) => {
      res.setHeader('content-type', 'text/plain');
      const gate = typeof req.query.gate === 'string' ? gates.get(req.query.gate) : undefined;
      for (let i = 0; i < 4; i += 1) {
        const [{ n }] = await tenantContext.query<Array<{ n: number }>>('SELECT count(*)::int AS n FROM client');
        const [{ email }] = await tenantContext.query<Array<{ email: string }>>('SELECT email FROM client ORDER BY id LIMIT 1');
        res.write(`${i} ${tenantContext.current()?.slug} ${n} ${email}\n`);
        if (i === 0 && gate !== undefined) await gate.promise;
        else await new Promise((resolve) => setTimeout(resolve, 2));
      }
      res.end();
    });
    app.get('/no-tenant-check', async (_req, res) => {
      let error: string | null = null;
      try {
        await tenantContext.getRepository(Client).find();
      } catch (e) {
        error = (e as TenancyError).code;
      }
      res.json({ slug: tenantContext.current()?.slug ?? null, error });
    });
    app.use((error: unknown, _req: Request, res: Response, _next: NextFunction) => {
      if (error instanceof TenancyError) res.status(error.statusCode).json(tenancyErrorBody(error));
      else res.status(500).json({ error: { code: 'INTERNAL', message: String(error) } });
    });
    const server = createServer(app);
    servers.push(server);
    return { base: await listen(server), middleware, finished, gates, parsing };
  }

  function countLookups(manager: TenantDataSourceManager): { readonly count: number } {
    const counter = { count: 0 };
    const original = manager.getTenant.bind(manager);
    manager.getTenant = (slug: string) => {
      counter.count += 1;
      return original(slug);
    };
    return counter;
  }

  describe('resolvers over HTTP', () => {
    it('fromHeader: the handler, the later middleware and req.tenant all see the tenant', async () => {
      const manager = await openManager();
      const slug = uniqueSlug('hdr');
      await manager.createTenant(slug);
      const { base } = await build(manager, { resolve: fromHeader() });
      const answer = await getJson(`${base}/whoami`, { 'x-tenant-slug': slug });
      expect(answer.status).to.equal(200);
      expect(answer.body).to.include({ slug, reqTenant: slug, seenByLater: slug, url: '/whoami' });
    });

    it('fromSubdomain: acme.app.example.com serves acme; the bare domain and www name no tenant', async () => {
      const manager = await openManager();
      const slug = uniqueSlug('sub');
      await manager.createTenant(slug);
      const { base } = await build(manager, { resolve: fromSubdomain({ baseDomain: 'app.example.com' }) });
      const ok = await rawRequest(`${base}/whoami`, { headers: { host: `${slug.toUpperCase()}.App.Example.com:8080` } });
      expect(ok.status, ok.text).to.equal(200);
      expect(ok.json()).to.include({ slug, reqTenant: slug });
      for (const host of ['app.example.com', 'www.app.example.com', 'elsewhere.test']) {
        const none = await rawRequest(`${base}/whoami`, { headers: { host } });
        expectError({ status: none.status, body: none.json(), contentType: none.contentType }, 400, 'TENANT_REQUIRED');
      }
      const twoLabels = await rawRequest(`${base}/whoami`, { headers: { host: `x.${slug}.app.example.com` } });
      expectError({ status: twoLabels.status, body: twoLabels.json() }, 400, 'INVALID_TENANT_NAME');
    });

    it('fromPath: /t/<slug>/whoami is routed as /whoami, with originalUrl kept; without a prefix the first segment', async () => {
      const manager = await openManager();
      const slug = uniqueSlug('path');
      await manager.createTenant(slug);
      const prefixed = await build(manager, { resolve: fromPath({ prefix: '/t' }) });
      const answer = await getJson(`${prefixed.base}/t/${slug}/whoami?x=1`);
      expect(answer.status, JSON.stringify(answer.body)).to.equal(200);
      expect(answer.body).to.include({ slug, url: '/whoami?x=1', originalUrl: `/t/${slug}/whoami?x=1` });
      expectError(await getJson(`${prefixed.base}/whoami`), 400, 'TENANT_REQUIRED');
      const bare = await build(manager, { resolve: fromPath() });
      const first = await getJson(`${bare.base}/${slug}/whoami`);
      expect(first.body).to.include({ slug, url: '/whoami' });
      const clients = await getJson(`${bare.base}/${slug}/clients`);
      expect(clients.status).to.equal(200);
      expect(clients.body).to.deep.equal([]);
    });

    it('resolvers compose in order: the first that names a tenant wins, a bad first name is refused (no fall-through), custom async ones work', async () => {
      const manager = await openManager();
      const [a, b] = [uniqueSlug('ca'), uniqueSlug('cb')];
      await manager.createTenant(a);
      await manager.createTenant(b);
      const fromToken = async (req: Request): Promise<string | undefined> => {
        await new Promise((resolve) => setTimeout(resolve, 1));
        const auth = req.headers.authorization;
        return auth?.startsWith('Bearer tenant:') ? auth.slice('Bearer tenant:'.length) : undefined;
      };
      const { base } = await build(manager, { resolve: [fromToken, fromHeader(), fromSubdomain({ baseDomain: 'example.com' })] });
      expect((await getJson(`${base}/whoami`, { authorization: `Bearer tenant:${a}`, 'x-tenant-slug': b })).body.slug).to.equal(a);
      expect((await getJson(`${base}/whoami`, { 'x-tenant-slug': b })).body.slug).to.equal(b);
      const bySub = await rawRequest(`${base}/whoami`, { headers: { host: `${a}.example.com`, 'x-tenant-slug': b } });
      expect(bySub.json().slug).to.equal(b);
      const bySubOnly = await rawRequest(`${base}/whoami`, { headers: { host: `${a}.example.com` } });
      expect(bySubOnly.json().slug).to.equal(a);
      expectError(await getJson(`${base}/whoami`, { authorization: 'Bearer tenant:NOPE', 'x-tenant-slug': b }), 400, 'INVALID_TENANT_NAME');
    });
  });

  describe('outcomes', () => {
    it('no tenant where one is required: 400 TENANT_REQUIRED; routes before the middleware are tenant-free', async () => {
      const manager = await openManager();
      const { base } = await build(manager, { resolve: fromHeader() });
      expectError(await getJson(`${base}/whoami`), 400, 'TENANT_REQUIRED');
      expectError(await getJson(`${base}/whoami`, { 'x-tenant-slug': '' }), 400, 'TENANT_REQUIRED');
      const health = await getJson(`${base}/health`);
      expect(health).to.deep.include({ status: 200, body: { ok: true, slug: null } });
    });

    it('an invalid name: 400 INVALID_TENANT_NAME, and no registry lookup, no DataSource, no cache entry', async () => {
      const manager = await openManager();
      const lookups = countLookups(manager);
      const { base, middleware } = await build(manager, { resolve: fromHeader() });
      const before = manager.stats();
      const names = ['ACME', 'public', 'pg_catalog', 'information_schema', '1acme', 'a'.repeat(64), "acme'; DROP SCHEMA public;--", 'typeorm_tenants_x', 'a b'];
      for (const name of names) {
        expectError(await getJson(`${base}/whoami`, { 'x-tenant-slug': name }), 400, 'INVALID_TENANT_NAME');
      }
      const twice = await fetch(`${base}/whoami`, { headers: [['x-tenant-slug', 'acme'], ['x-tenant-slug', 'globex']] });
      expectError({ status: twice.status, body: await twice.json() }, 400, 'INVALID_TENANT_NAME');
      expect(lookups.count).to.equal(0);
      expect(middleware.resolver.cache.stats()).to.include({ lookups: 0, size: 0, negativeSize: 0 });
      const after = manager.stats();
      expect([after.hits, after.misses, after.activeRuns]).to.deep.equal([before.hits, before.misses, 0]);
    });

    it('unknown 404, suspended 403, archived 423, each with its code; resumed and restored tenants are served again', async () => {
      const manager = await openManager();
      const slug = uniqueSlug('life');
      await manager.createTenant(slug);
      const { base } = await build(manager, { resolve: fromHeader() });
      const headers = { 'x-tenant-slug': slug };
      expectError(await getJson(`${base}/whoami`, { 'x-tenant-slug': uniqueSlug('nobody') }), 404, 'TENANT_NOT_FOUND');
      expect((await getJson(`${base}/whoami`, headers)).status).to.equal(200);
      await manager.suspendTenant(slug);
      expectError(await getJson(`${base}/whoami`, headers), 403, 'TENANT_SUSPENDED');
      await manager.resumeTenant(slug);
      expect((await getJson(`${base}/whoami`, headers)).body.slug).to.equal(slug);
      await manager.archiveTenant(slug);
      expectError(await getJson(`${base}/whoami`, headers), 423, 'TENANT_NOT_ACTIVE');
      await manager.restoreTenant(slug);
      expect((await getJson(`${base}/whoami`, headers)).body.slug).to.equal(slug);
      await manager.dropTenant(slug, { force: true });
      expectError(await getJson(`${base}/whoami`, headers), 404, 'TENANT_NOT_FOUND');
    });

    it('authorize: sync and async, true lets through; false, a truthy non-true value or a rejection by TenancyError refuse with 403', async () => {
      const manager = await openManager();
      const [a, b] = [uniqueSlug('auth'), uniqueSlug('auth')];
      await manager.createTenant(a);
      await manager.createTenant(b);
      const seen: Array<[string, string]> = [];
      // The user's memberships come from a (pretend) verified session header.
      const members = (req: Request): string[] => String(req.headers['x-user-tenants'] ?? '').split(',');
      const sync = await build(manager, {
        resolve: fromHeader(),
        authorize: (req, tenant) => {
          seen.push([tenant.slug, tenant.status]);
          return members(req).includes(tenant.slug);
        },
      });
      expect((await getJson(`${sync.base}/whoami`, { 'x-tenant-slug': a, 'x-user-tenants': a })).body.slug).to.equal(a);
      expectError(await getJson(`${sync.base}/whoami`, { 'x-tenant-slug': b, 'x-user-tenants': a }), 403, 'TENANT_FORBIDDEN');
      expect(seen).to.deep.equal([[a, 'active'], [b, 'active']]);
      const async = await build(manager, {
        resolve: fromHeader(),
        authorize: async (req, tenant) => {
          await new Promise((resolve) => setTimeout(resolve, 1));
          if (req.headers['x-user-tenants'] === 'truthy') return 'yes' as unknown as boolean;
          return members(req).includes(tenant.slug);
        },
      });
      expect((await getJson(`${async.base}/whoami`, { 'x-tenant-slug': b, 'x-user-tenants': `${a},${b}` })).body.slug).to.equal(b);
      expectError(await getJson(`${async.base}/whoami`, { 'x-tenant-slug': b, 'x-user-tenants': a }), 403, 'TENANT_FORBIDDEN');
      expectError(await getJson(`${async.base}/whoami`, { 'x-tenant-slug': b, 'x-user-tenants': 'truthy' }), 403, 'TENANT_FORBIDDEN');
      // Not asked for an unknown tenant: that is a 404 first.
      expectError(await getJson(`${async.base}/whoami`, { 'x-tenant-slug': uniqueSlug('none'), 'x-user-tenants': 'truthy' }), 404, 'TENANT_NOT_FOUND');
    });

    it('required: false runs the route with no tenant context when none is named, and in the tenant when one is', async () => {
      const manager = await openManager();
      const slug = uniqueSlug('opt');
      await manager.createTenant(slug);
      const { base } = await build(manager, { resolve: fromHeader(), required: false });
      const none = await getJson(`${base}/no-tenant-check`);
      expect(none).to.deep.include({ status: 200, body: { slug: null, error: 'TENANT_CONTEXT_MISSING' } });
      const some = await getJson(`${base}/no-tenant-check`, { 'x-tenant-slug': slug });
      expect(some.body).to.deep.equal({ slug, error: null });
      // Named but unknown is still refused.
      expectError(await getJson(`${base}/no-tenant-check`, { 'x-tenant-slug': uniqueSlug('none') }), 404, 'TENANT_NOT_FOUND');
    });
  });

  describe('the resolution cache', () => {
    it('a hot tenant costs one registry lookup, then cache hits', async () => {
      const manager = await openManager();
      const slug = uniqueSlug('hot');
      await manager.createTenant(slug);
      const lookups = countLookups(manager);
      const { base, middleware } = await build(manager, { resolve: fromHeader() });
      for (let i = 0; i < 30; i += 1) expect((await getJson(`${base}/whoami`, { 'x-tenant-slug': slug })).status).to.equal(200);
      await Promise.all(Array.from({ length: 20 }, () => getJson(`${base}/whoami`, { 'x-tenant-slug': slug })));
      expect(lookups.count).to.equal(1);
      expect(middleware.resolver.cache.stats()).to.include({ lookups: 1, hits: 49, size: 1 });
    });

    it('a flood of 1,000 random unknown slugs: bounded negative cache, one lookup per slug, repeats answered from the cache', async () => {
      const manager = await openManager();
      const lookups = countLookups(manager);
      const { base, middleware } = await build(manager, { resolve: fromHeader(), cache: { maxNegativeEntries: 100, negativeTtlMs: 60_000 } });
      const slugs = Array.from({ length: 1000 }, () => `r${randomBytes(6).toString('hex')}`);
      const answers = await inParallel(slugs.map((s) => () => getJson(`${base}/whoami`, { 'x-tenant-slug': s })), 20);
      for (const answer of answers) expectError(answer, 404, 'TENANT_NOT_FOUND');
      const stats = middleware.resolver.cache.stats();
      expect(stats.negativeSize).to.equal(100);
      expect(stats.size).to.equal(0);
      expect(stats.lookups).to.equal(1000);
      expect(lookups.count).to.equal(1000);
      // The same unknown slug again and again: answered from the negative cache.
      const last = slugs[slugs.length - 1]!;
      await Promise.all(Array.from({ length: 50 }, () => getJson(`${base}/whoami`, { 'x-tenant-slug': last })));
      expect(lookups.count).to.equal(1000);
      expect(middleware.resolver.cache.stats().negativeHits).to.equal(50);
      expect(manager.stats().cachedDataSources).to.equal(0);
    });

    it('creating a tenant clears its negative entry at once; suspending and dropping take effect on the next request', async () => {
      const manager = await openManager();
      const slug = uniqueSlug('late');
      const { base, middleware } = await build(manager, { resolve: fromHeader(), cache: { ttlMs: 60_000, negativeTtlMs: 60_000 } });
      const headers = { 'x-tenant-slug': slug };
      expectError(await getJson(`${base}/whoami`, headers), 404, 'TENANT_NOT_FOUND');
      expect(middleware.resolver.cache.stats().negativeSize).to.equal(1);
      await manager.createTenant(slug);
      expect((await getJson(`${base}/whoami`, headers)).body.slug).to.equal(slug);
      expect((await getJson(`${base}/whoami`, headers)).status).to.equal(200);
      await manager.suspendTenant(slug);
      expectError(await getJson(`${base}/whoami`, headers), 403, 'TENANT_SUSPENDED');
      await manager.resumeTenant(slug);
      expect((await getJson(`${base}/whoami`, headers)).status).to.equal(200);
      await manager.dropTenant(slug, { force: true });
      expectError(await getJson(`${base}/whoami`, headers), 404, 'TENANT_NOT_FOUND');
    });
  });

  describe('the tenant context for the whole request', () => {
    it('a JSON body parsed after the middleware, a body read by the handler itself, a later async middleware, and the handler run in the tenant', async () => {
      const manager = await openManager();
      const slug = uniqueSlug('body');
      await manager.createTenant(slug);
      await seedClients(manager, slug, 2);
      const { base, parsing } = await build(manager, { resolve: fromHeader() });
      const answer = await getJson(`${base}/echo`, { 'x-tenant-slug': slug, 'content-type': 'application/json' }, {
        method: 'POST',
        body: JSON.stringify({ hello: 'x'.repeat(200_000) }),
      });
      expect(answer.status, JSON.stringify(answer.body).slice(0, 300)).to.equal(200);
      expect(answer.body.slug).to.equal(slug);
      expect(answer.body.count).to.equal(2);
      expect(answer.body.body.hello).to.have.length(200_000);
      const started = deferred();
      parsing.set('late', started);
      const late = await twoPartPost(`${base}/echo`, { 'x-tenant-slug': slug, 'content-type': 'application/json', 'x-request-id': 'late' }, '{"hello":', '"z"}', () => started.promise);
      expect(late.status, late.text).to.equal(200);
      expect(late.json()).to.deep.equal({ slug, body: { hello: 'z' }, count: 2 });
      const uploading = deferred();
      parsing.set('upload', uploading);
      const upload = await twoPartPost(`${base}/upload`, { 'x-tenant-slug': slug, 'content-type': 'text/plain', 'x-upload-id': 'upload' }, 'abc', 'defg', () => uploading.promise);
      expect(upload.json()).to.deep.equal({ slug, size: 7, count: 2 });
    });

    it("res.on('finish') listeners run in the tenant, and can still query it", async () => {
      const manager = await openManager();
      const slug = uniqueSlug('fin');
      await manager.createTenant(slug);
      const { base, finished } = await build(manager, { resolve: fromHeader() });
      expect((await getJson(`${base}/finish/one`, { 'x-tenant-slug': slug })).status).to.equal(200);
      expect(await finished.get('one')!.promise).to.deep.equal({ slug, schema: slug.replace(/-/g, '_') });
    });

    it('a streamed response: each chunk, written after awaits, comes from a query in the tenant', async () => {
      const manager = await openManager();
      const slug = uniqueSlug('str');
      await manager.createTenant(slug);
      await seedClients(manager, slug, 3);
      const { base } = await build(manager, { resolve: fromHeader() });
      const response = await fetch(`${base}/stream`, { headers: { 'x-tenant-slug': slug } });
      const lines = (await response.text()).trim().split('\n');
      expect(lines).to.deep.equal([0, 1, 2, 3].map((i) => `${i} ${slug} 3 c0@${slug}.test`));
    });

    it('holds the DataSource until the response has finished: with maxDataSources 1, a slow stream of A survives requests for B and C', async () => {
      const manager = await openManager({ maxDataSources: 1 });
      const [a, b, c] = [uniqueSlug('ha'), uniqueSlug('hb'), uniqueSlug('hc')];
      for (const slug of [a, b, c]) {
        await manager.createTenant(slug);
        await seedClients(manager, slug, 1);
      }
      const { base, gates } = await build(manager, { resolve: fromHeader() });
      const gate = deferred();
      gates.set('a', gate);
      const response = await fetch(`${base}/stream?gate=a`, { headers: { 'x-tenant-slug': a } });
      const reader = response.body!.getReader();
      const first = await reader.read(); // the first chunk is out; the handler now waits on the gate
      expect(Buffer.from(first.value!).toString()).to.equal(`0 ${a} 1 c0@${a}.test\n`);
      // B and C each take the only cache slot; A's DataSource is evicted but still held.
      expect((await getJson(`${base}/clients`, { 'x-tenant-slug': b })).body).to.deep.equal([{ name: `${b} client 0`, email: `c0@${b}.test` }]);
      expect((await getJson(`${base}/clients`, { 'x-tenant-slug': c })).body).to.deep.equal([{ name: `${c} client 0`, email: `c0@${c}.test` }]);
      const during = manager.stats();
      expect(during.evictions).to.be.greaterThan(0);
      expect(during.pendingDisposal).to.equal(1);
      gate.resolve();
      let rest = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        rest += Buffer.from(value).toString();
      }
      expect(rest.trim().split('\n')).to.deep.equal([1, 2, 3].map((i) => `${i} ${a} 1 c0@${a}.test`));
      // The held DataSource is released (and closed) once the response has closed.
      for (let i = 0; i < 100 && manager.stats().pendingDisposal > 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 10));
      expect(manager.stats()).to.include({ pendingDisposal: 0, activeRuns: 0 });
    });

    it('isolation: 2,000 interleaved requests over 20 tenants each get only their own rows', async () => {
      const manager = await openManager();
      const slugs = Array.from({ length: 20 }, () => uniqueSlug('iso'));
      for (const slug of slugs) {
        await manager.createTenant(slug);
        await seedClients(manager, slug, 2);
      }
      const { base } = await build(manager, { resolve: fromHeader() });
      const tasks = Array.from({ length: 2000 }, (_, i) => async () => {
        const slug = slugs[i % slugs.length]!;
        const path = i % 2 === 0 ? '/clients' : '/whoami';
        const answer = await getJson(`${base}${path}`, { 'x-tenant-slug': slug });
        return { slug, path, answer };
      });
      const results = await inParallel(tasks, 50);
      for (const { slug, path, answer } of results) {
        expect(answer.status).to.equal(200);
        if (path === '/clients') {
          expect(answer.body).to.deep.equal([0, 1].map((i) => ({ name: `${slug} client ${i}`, email: `c${i}@${slug}.test` })));
        } else {
          expect(answer.body).to.include({ slug, reqTenant: slug, seenByLater: slug });
        }
      }
      expect(manager.stats().activeRuns).to.equal(0);
    });
  });

  it('errors that are not TenancyErrors (a resolver that throws) go to the app error handler', async () => {
    const manager = await openManager();
    const { base } = await build(manager, {
      resolve: () => {
        throw new Error('token service down');
      },
    });
    const answer = await getJson(`${base}/whoami`);
    expect(answer.status).to.equal(500);
    expect(answer.body.error.message).to.include('token service down');
  });
});
