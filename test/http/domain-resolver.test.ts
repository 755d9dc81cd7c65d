import { expect } from 'chai';
import express from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'typeorm';
import { Client } from '../../entities';
import { tenantContext, type TenantDataSourceManager, type TenantDataSourceManagerOptions } from '../../src';
import { fromDomain as fromDomainOfExpress, fromSubdomain, tenancyErrorHandler, tenantMiddleware, type DomainResolver } from '../../src/http/express';
import { fromDomain as fromDomainOfFastify, tenancyErrorHandler as fastifyErrorHandler, tenancyPlugin } from '../../src/http/fastify';
import { fromDomain as fromDomainOfNest } from '../../src/http/nestjs';
import { databaseUrl, openManager, uniqueSlug } from '../support/fixtures';
import { closeServer, listen, rawRequest, seedClients, type HttpAnswer } from './http-support';

const BASE_DOMAIN = 'app.test';

/** A hostname no other test uses. */
function host(prefix = 'portal'): string {
  return `${prefix}-${randomBytes(4).toString('hex')}.example.com`;
}

/** Remembers every statement any DataSource of the manager sends. */
class RecordingLogger implements Logger {
  readonly queries: string[] = [];
  logQuery(query: string): void {
    this.queries.push(query);
  }
  logQueryError(): void {}
  logQuerySlow(): void {}
  logSchemaBuild(): void {}
  logMigration(): void {}
  log(): void {}
  /** Statements that read or write the domains registry. */
  domainQueries(): number {
    return this.queries.filter((q) => q.includes('_domain')).length;
  }
}

interface Service {
  /** GET `path` with this Host header, over real HTTP. */
  get(hostHeader: string, path?: string): Promise<HttpAnswer>;
  /** POST /admin/domains (tenant-free): adds a domain; TenancyErrors answered by the adapter's error handler. */
  addDomain(slug: string, hostname: string, verified?: boolean): Promise<HttpAnswer>;
}

type Adapter = 'express' | 'fastify';

/**
 * The same service on each adapter: an admin route without a tenant, then
 * the tenant middleware with the resolvers given, then handlers that only
 * use tenantContext.
 */
async function startService(adapter: Adapter, manager: TenantDataSourceManager, resolve: unknown[], closers: Array<() => Promise<void>>): Promise<Service> {
  let base: string;
  if (adapter === 'express') {
    const app = express();
    app.post('/admin/domains', express.json(), async (req, res, next) => {
      try {
        res.status(201).json(await manager.addTenantDomain(req.body.slug, req.body.hostname, { verified: req.body.verified }));
      } catch (error) {
        next(error);
      }
    });
    const middleware = tenantMiddleware(manager, { resolve: resolve as never });
    app.use(middleware);
    app.get('/whoami', async (_req, res) => {
      const clients = await tenantContext.getRepository(Client).find({ order: { id: 'ASC' } });
      res.json({ slug: tenantContext.current()?.slug ?? null, clients: clients.map((c) => c.name) });
    });
    app.use(tenancyErrorHandler());
    const server: Server = createServer(app);
    base = await listen(server);
    closers.push(async () => {
      middleware.close();
      await closeServer(server);
    });
  } else {
    const app: FastifyInstance = Fastify();
    app.setErrorHandler(fastifyErrorHandler());
    app.post('/admin/domains', async (request, reply) => {
      const body = request.body as { slug: string; hostname: string; verified?: boolean };
      reply.code(201);
      return manager.addTenantDomain(body.slug, body.hostname, { verified: body.verified });
    });
    await app.register(async (scope) => {
      await scope.register(tenancyPlugin, { manager, resolve: resolve as never });
      scope.get('/whoami', async () => {
        const clients = await tenantContext.getRepository(Client).find({ order: { id: 'ASC' } });
        return { slug: tenantContext.current()?.slug ?? null, clients: clients.map((c) => c.name) };
      });
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    closers.push(() => app.close());
  }
  return {
    get: (hostHeader, path = '/whoami') => rawRequest(`${base}${path}`, { headers: { host: hostHeader } }),
    addDomain: (slug, hostname, verified) =>
      rawRequest(`${base}/admin/domains`, {
        method: 'POST',
        headers: { host: 'admin.internal', 'content-type': 'application/json' },
        body: JSON.stringify({ slug, hostname, verified }),
      }),
  };
}

function expectTenant(answer: HttpAnswer, slug: string, what: string): void {
  expect(answer.status, `${what}: ${answer.text}`).to.equal(200);
  expect(answer.json().slug, what).to.equal(slug);
}

function expectRefusal(answer: HttpAnswer, status: number, code: string, what: string): void {
  expect(answer.status, `${what}: ${answer.text}`).to.equal(status);
  expect(answer.json().error.code, what).to.equal(code);
}

const fromDomainOf: Record<Adapter, typeof fromDomainOfExpress> = { express: fromDomainOfExpress, fastify: fromDomainOfFastify };

describe('fromDomain(): custom domains through real HTTP requests', () => {
  const closers: Array<() => Promise<void>> = [];
  const resolvers: DomainResolver[] = [];
  afterEach(async () => {
    for (const resolver of resolvers.splice(0)) resolver.close();
    for (const close of closers.splice(0).reverse()) await close();
  });

  async function open(overrides: Partial<TenantDataSourceManagerOptions> = {}): Promise<{ manager: TenantDataSourceManager; logger: RecordingLogger }> {
    const logger = new RecordingLogger();
    const manager = await openManager({ slugReuseDelayMs: 0, dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 4, logger }, ...overrides });
    return { manager, logger };
  }

  function domainResolver(adapter: Adapter, manager: TenantDataSourceManager, options?: Parameters<typeof fromDomainOfExpress>[1]): DomainResolver {
    const resolver = fromDomainOf[adapter](manager, { ttlMs: 60_000, ...options });
    resolvers.push(resolver);
    return resolver;
  }

  it('is exported from the express, fastify and nestjs subpaths as one function', () => {
    expect(fromDomainOfExpress).to.equal(fromDomainOfFastify);
    expect(fromDomainOfNest).to.equal(fromDomainOfExpress);
  });

  for (const adapter of ['express', 'fastify'] as const) {
    describe(adapter, () => {
      it('custom domains resolve in any spelling; a subdomain gets fromSubdomain()\'s turn; unknown, unverified and IP hosts are "not mine"', async () => {
        const { manager } = await open();
        const [a, b, c] = [uniqueSlug('dom-a'), uniqueSlug('dom-b'), uniqueSlug('dom-c')];
        for (const slug of [a, b, c]) await manager.createTenant(slug);
        await seedClients(manager, a, 2);
        const [portal, shop, pending] = [host('portal'), `shop-${randomBytes(3).toString('hex')}.${BASE_DOMAIN}`, host('pending')];
        await manager.addTenantDomain(a, portal, { verified: true });
        // A custom domain inside the base domain: fromDomain() comes first, so it wins over the subdomain reading.
        await manager.addTenantDomain(a, shop, { verified: true });
        await manager.addTenantDomain(c, pending);
        const service = await startService(adapter, manager, [domainResolver(adapter, manager), fromSubdomain({ baseDomain: BASE_DOMAIN })], closers);

        const answer = await service.get(portal);
        expectTenant(answer, a, 'the custom domain');
        expect(answer.json().clients).to.deep.equal([`${a} client 0`, `${a} client 1`]);
        for (const spelling of [portal.toUpperCase(), `${portal}:8443`, `${portal}.`, `${portal.toUpperCase()}.:443`]) {
          expectTenant(await service.get(spelling), a, spelling);
        }
        expectTenant(await service.get(shop), a, 'a custom domain under the base domain');
        expectTenant(await service.get(`${b}.${BASE_DOMAIN}`), b, 'a subdomain');
        expectTenant(await service.get(`${b.toUpperCase()}.${BASE_DOMAIN}:3000`), b, 'a subdomain, upper case with a port');
        expectRefusal(await service.get(host('unknown')), 400, 'TENANT_REQUIRED', 'an unknown host');
        expectRefusal(await service.get(pending), 400, 'TENANT_REQUIRED', 'an unverified domain');
        expectRefusal(await service.get('127.0.0.1:8080'), 400, 'TENANT_REQUIRED', 'an IP address');
        expectRefusal(await service.get('[::1]:8080'), 400, 'TENANT_REQUIRED', 'an IPv6 address');
        expectRefusal(await service.get(`nope-${randomBytes(3).toString('hex')}.${BASE_DOMAIN}`), 404, 'TENANT_NOT_FOUND', 'an unknown subdomain');

        const serving = await startService(adapter, manager, [domainResolver(adapter, manager, { unverified: 'serve' })], closers);
        expectTenant(await serving.get(pending), c, "unverified: 'serve'");
        await manager.updateTenantDomain(pending, { verified: true });
        expectTenant(await service.get(pending), c, 'verified since, in this process: at once');
      });

      it('a removed domain stops resolving at once in this process, and a re-added one resolves at once (the TTL is a minute)', async () => {
        const { manager } = await open();
        const [a, b] = [uniqueSlug('rm-a'), uniqueSlug('rm-b')];
        await manager.createTenant(a);
        await manager.createTenant(b);
        const hostname = host('moving');
        await manager.addTenantDomain(a, hostname, { verified: true });
        const resolver = domainResolver(adapter, manager);
        const service = await startService(adapter, manager, [resolver], closers);
        expectTenant(await service.get(hostname), a, 'before');
        await manager.removeTenantDomain(hostname);
        expectRefusal(await service.get(hostname), 400, 'TENANT_REQUIRED', 'removed');
        await manager.addTenantDomain(b, hostname, { verified: true });
        expectTenant(await service.get(hostname), b, 're-added to another tenant');
        expect(resolver.directory.stats().queries, 'all of it from memory after the first load').to.equal(1);
      });

      it("an archived tenant's domain answers 423 and a suspended one's 403, as the subdomain path does; restored, it serves again", async () => {
        const { manager } = await open();
        const slug = uniqueSlug('arch');
        await manager.createTenant(slug);
        const hostname = host('arch');
        await manager.addTenantDomain(slug, hostname, { verified: true });
        const service = await startService(adapter, manager, [domainResolver(adapter, manager), fromSubdomain({ baseDomain: BASE_DOMAIN })], closers);
        expectTenant(await service.get(hostname), slug, 'active');
        await manager.archiveTenant(slug);
        expectRefusal(await service.get(hostname), 423, 'TENANT_NOT_ACTIVE', 'archived, by its domain');
        expectRefusal(await service.get(`${slug}.${BASE_DOMAIN}`), 423, 'TENANT_NOT_ACTIVE', 'archived, by its subdomain');
        await manager.restoreTenant(slug);
        expectTenant(await service.get(hostname), slug, 'restored');
        await manager.suspendTenant(slug);
        expectRefusal(await service.get(hostname), 403, 'TENANT_SUSPENDED', 'suspended');
      });

      it("a dropped tenant's domain is freed: not resolved any more, and another tenant can take it and is served by it at once", async () => {
        const { manager } = await open();
        const [gone, next] = [uniqueSlug('drop'), uniqueSlug('drop-next')];
        await manager.createTenant(gone);
        await manager.createTenant(next);
        await seedClients(manager, next, 1);
        const hostname = host('freed');
        await manager.addTenantDomain(gone, hostname, { verified: true });
        const service = await startService(adapter, manager, [domainResolver(adapter, manager)], closers);
        expectTenant(await service.get(hostname), gone, 'before the drop');
        await manager.dropTenant(gone, { force: true });
        expectRefusal(await service.get(hostname), 400, 'TENANT_REQUIRED', 'after the drop');
        expect((await service.addDomain(next, hostname, true)).status).to.equal(201);
        const answer = await service.get(hostname);
        expectTenant(answer, next, 'taken by another tenant');
        expect(answer.json().clients).to.deep.equal([`${next} client 0`]);
      });

      it('two tenants racing to add one hostname over HTTP: one 201, the other 409 TENANT_DOMAIN_TAKEN; the hostname serves the winner', async () => {
        const { manager } = await open();
        const [a, b] = [uniqueSlug('race-a'), uniqueSlug('race-b')];
        await manager.createTenant(a);
        await manager.createTenant(b);
        const hostname = host('race');
        const service = await startService(adapter, manager, [domainResolver(adapter, manager, { unverified: 'serve' })], closers);
        const answers = await Promise.all([service.addDomain(a, hostname), service.addDomain(b, hostname.toUpperCase())]);
        expect(answers.map((r) => r.status).sort()).to.deep.equal([201, 409]);
        const won = answers.find((r) => r.status === 201)!.json();
        const lost = answers.find((r) => r.status === 409)!;
        expect(lost.json().error.code).to.equal('TENANT_DOMAIN_TAKEN');
        expect(lost.json().error.message).to.contain(hostname);
        expectTenant(await service.get(hostname), won.slug, 'the winner');
        const bad = await service.addDomain(a, 'http://nope.example.com/');
        expectRefusal(bad, 400, 'INVALID_HOSTNAME', 'a URL given as the hostname');
      });

      it('a flood of random Host headers costs no query: every hostname is in memory, known or not', async () => {
        const { manager, logger } = await open();
        const slug = uniqueSlug('flood');
        await manager.createTenant(slug);
        const hostname = host('flood');
        await manager.addTenantDomain(slug, hostname, { verified: true });
        const resolver = domainResolver(adapter, manager);
        const service = await startService(adapter, manager, [resolver, fromSubdomain({ baseDomain: BASE_DOMAIN })], closers);
        expectTenant(await service.get(hostname), slug, 'warm-up');
        const before = logger.domainQueries();
        for (let i = 0; i < 200; i += 1) {
          const answer = await service.get(i % 2 === 0 ? host(`r${i}`) : `r${randomBytes(6).toString('hex')}.org:${1000 + i}`);
          expect(answer.status).to.equal(400);
        }
        expectTenant(await service.get(hostname), slug, 'after the flood');
        expect(logger.domainQueries() - before, 'domain lookups sent during the flood').to.equal(0);
        expect(resolver.directory.stats()).to.include({ queries: 1, reloads: 1 });
      });
    });
  }

  it("another process's changes take effect within ttlMs: one query checks the generation; the registry is read whole only when it changed", async () => {
    const { manager } = await open();
    const other = await openManager();
    const slug = uniqueSlug('xproc');
    await other.createTenant(slug);
    const hostname = host('xproc');
    // ttlMs 0: every request checks (a test cannot wait a TTL out); the default is 5 s.
    const resolver = fromDomainOfExpress(manager, { ttlMs: 0 });
    resolvers.push(resolver);
    const service = await startService('express', manager, [resolver], closers);
    expectRefusal(await service.get(hostname), 400, 'TENANT_REQUIRED', 'not added yet');
    await other.addTenantDomain(slug, hostname, { verified: true });
    expectTenant(await service.get(hostname), slug, 'added by the other process');
    const { queries, reloads } = resolver.directory.stats();
    for (let i = 0; i < 5; i += 1) expectTenant(await service.get(hostname), slug, 'unchanged');
    expect(resolver.directory.stats()).to.include({ queries: queries + 5, reloads });
    await other.removeTenantDomain(hostname);
    expectRefusal(await service.get(hostname), 400, 'TENANT_REQUIRED', 'removed by the other process');
    expect(resolver.directory.stats().reloads).to.equal(reloads + 1);

    // A drop in the other process frees the hostname here too (the drop bumps the generation).
    await other.addTenantDomain(slug, hostname, { verified: true });
    expectTenant(await service.get(hostname), slug, 'added again');
    await other.dropTenant(slug, { force: true });
    expectRefusal(await service.get(hostname), 400, 'TENANT_REQUIRED', 'its tenant dropped by the other process');
  });

  it('refuses what is not a manager, and unknown option values', async () => {
    expect(() => fromDomainOfExpress({} as TenantDataSourceManager)).to.throw(TypeError, /TenantDataSourceManager/);
    const { manager } = await open();
    expect(() => fromDomainOfExpress(manager, { unverified: 'maybe' as 'skip' })).to.throw(TypeError, /'skip' or 'serve'/);
    expect(() => fromDomainOfExpress(manager, { ttlMs: -1 })).to.throw(TypeError, /ttlMs/);
  });
});
