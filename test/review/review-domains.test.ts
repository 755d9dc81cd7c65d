import { expect } from 'chai';
import express from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { connect as http2Connect } from 'node:http2';
import { runCli, uniqueRegistry } from '../cli/cli-support';
import { createTenants } from '../support/fixtures';
import { tenantContext, type TenantDataSourceManager, type TenantDataSourceManagerOptions } from '../../src';
import { fromDomain as fromDomainOfExpress, fromSubdomain, tenancyErrorHandler, tenantMiddleware, type DomainResolver } from '../../src/http/express';
import { fromDomain as fromDomainOfFastify, tenancyErrorHandler as fastifyErrorHandler, tenancyPlugin } from '../../src/http/fastify';
import { adminQuery, databaseUrl, openManager, sleep, uniqueSlug } from '../support/fixtures';
import { closeServer, listen } from '../http/http-support';

type Adapter = 'express' | 'fastify';
const ADAPTERS: Adapter[] = ['express', 'fastify'];
const BASE_DOMAIN = 'app.test';

function host(prefix = 'portal'): string {
  return `${prefix}-${randomBytes(4).toString('hex')}.example.com`;
}

interface RawAnswer {
  readonly status: number;
  readonly body: string;
  slug(): string | null | undefined;
}

/** Sends bytes as they are over a TCP socket (what node:http and fetch will not send: duplicate Host, raw bytes, absolute-form). */
function rawHttp(port: number, request: Buffer | string): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => socket.write(request));
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
      const body = text.slice(text.indexOf('\r\n\r\n') + 4);
      resolve({
        status,
        body,
        slug: () => {
          try {
            return JSON.parse(body).slug;
          } catch {
            return undefined;
          }
        },
      });
    });
  });
}

function getWithHost(hostBytes: Buffer | string, path = '/whoami'): Buffer {
  return Buffer.concat([Buffer.from(`GET ${path} HTTP/1.1\r\nHost: `), Buffer.from(hostBytes as never), Buffer.from('\r\nConnection: close\r\n\r\n')]);
}

/** A service on the adapter: tenant middleware with the resolvers, one route answering the tenant's slug. Returns its port. */
async function startService(adapter: Adapter, manager: TenantDataSourceManager, resolve: unknown[], closers: Array<() => Promise<void>>): Promise<number> {
  if (adapter === 'express') {
    const app = express();
    const middleware = tenantMiddleware(manager, { resolve: resolve as never });
    app.use(middleware);
    app.get('/whoami', (_req, res) => {
      res.json({ slug: tenantContext.current()?.slug ?? null });
    });
    app.use(tenancyErrorHandler());
    const server: Server = createServer(app);
    const base = await listen(server);
    closers.push(async () => {
      middleware.close();
      await closeServer(server);
    });
    return Number(new URL(base).port);
  }
  const app: FastifyInstance = Fastify();
  app.setErrorHandler(fastifyErrorHandler());
  await app.register(async (scope) => {
    await scope.register(tenancyPlugin, { manager, resolve: resolve as never });
    scope.get('/whoami', async () => ({ slug: tenantContext.current()?.slug ?? null }));
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  closers.push(() => app.close());
  return (app.server.address() as AddressInfo).port;
}

const fromDomainOf: Record<Adapter, typeof fromDomainOfExpress> = { express: fromDomainOfExpress, fastify: fromDomainOfFastify };

describe('review: custom domains (adversarial probes)', () => {
  const closers: Array<() => Promise<void>> = [];
  const resolvers: DomainResolver[] = [];
  afterEach(async () => {
    for (const resolver of resolvers.splice(0)) resolver.close();
    for (const close of closers.splice(0).reverse()) await close();
  });

  async function open(overrides: Partial<TenantDataSourceManagerOptions> = {}): Promise<TenantDataSourceManager> {
    return openManager({ slugReuseDelayMs: 0, dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 4 }, ...overrides });
  }

  function domainResolver(adapter: Adapter, manager: TenantDataSourceManager, options?: Parameters<typeof fromDomainOfExpress>[1]): DomainResolver {
    const resolver = fromDomainOf[adapter](manager, { ttlMs: 60_000, ...options });
    resolvers.push(resolver);
    return resolver;
  }

  for (const adapter of ADAPTERS) {
    describe(adapter, () => {
      it('PROBE-1: a Host header with raw latin-1 bytes that IDNA maps away (soft hyphen 0xAD, ª 0xAA) is not taken for a tenant\'s ASCII domain', async () => {
        const manager = await open();
        const slug = uniqueSlug('dom-lat');
        await manager.createTenant(slug);
        const name = host('acme');
        await manager.addTenantDomain(slug, name, { verified: true });
        const port = await startService(adapter, manager, [domainResolver(adapter, manager)], closers);

        // Control: the real name resolves.
        const real = await rawHttp(port, getWithHost(name));
        expect(real.status, real.body).to.equal(200);
        expect(real.slug()).to.equal(slug);

        // "ac<0xAD>me-....example.com": no browser sends it, no proxy routes it as the name; the resolver
        // maps the soft hyphen to nothing (UTS 46) and serves the tenant.
        const softHyphen = Buffer.concat([Buffer.from(name.slice(0, 2)), Buffer.from([0xad]), Buffer.from(name.slice(2))]);
        const shy = await rawHttp(port, getWithHost(softHyphen));
        expect(shy.slug(), `soft hyphen: ${shy.status} ${shy.body}`).to.not.equal(slug);

        // "<0xAA>cme-....": ª (feminine ordinal) maps to "a".
        const ordinal = Buffer.concat([Buffer.from([0xaa]), Buffer.from(name.slice(1))]);
        const ord = await rawHttp(port, getWithHost(ordinal));
        expect(ord.slug(), `ordinal a: ${ord.status} ${ord.body}`).to.not.equal(slug);
      });



      it('HOLDS: case, port, trailing dot and punycode spellings resolve; userinfo, IP, bare ":authority"-less and xn-- garbage are "not mine" (fall to fromSubdomain)', async () => {
        const manager = await open();
        const [a, sub] = [uniqueSlug('dom-ok'), uniqueSlug('dom-ok')];
        await manager.createTenant(a);
        await manager.createTenant(sub);
        const label = randomBytes(3).toString('hex');
        const idn = `bücher-${label}.example`;
        await manager.addTenantDomain(a, idn, { verified: true });
        const puny = (await manager.listTenantDomains(a))[0]!.hostname;
        expect(puny.startsWith('xn--')).to.equal(true);
        const port = await startService(adapter, manager, [domainResolver(adapter, manager), fromSubdomain({ baseDomain: BASE_DOMAIN })], closers);
        for (const spelling of [puny, puny.toUpperCase(), `${puny}.`, `${puny}:8443`, `${puny.toUpperCase()}.:443`]) {
          const answer = await rawHttp(port, getWithHost(spelling));
          expect(answer.slug(), `${spelling}: ${answer.body}`).to.equal(a);
        }
        // userinfo: "not mine", so the subdomain resolver gets it and sees a host outside its base: 400 TENANT_REQUIRED, never tenant a.
        for (const spelling of [`user@${puny}`, `${puny}@${sub}.${BASE_DOMAIN}`, `[::1]`, '127.0.0.1', `xn--zz${label}.example`]) {
          const answer = await rawHttp(port, getWithHost(spelling));
          expect(answer.slug(), `${spelling}: ${answer.status} ${answer.body}`).to.not.equal(a);
        }
        const subAnswer = await rawHttp(port, getWithHost(`${sub}.${BASE_DOMAIN}`));
        expect(subAnswer.slug()).to.equal(sub);
        // HTTP/1.0 without Host: not mine either.
        const noHost = await rawHttp(port, 'GET /whoami HTTP/1.0\r\nConnection: close\r\n\r\n');
        expect(noHost.status, noHost.body).to.equal(400);
      });
    });
  }


  it('HOLDS: another process (second manager) stops serving a removed domain after its TTL, and serves the new owner of a dropped tenant\'s domain', async () => {
    const admin = await open();
    const other = await open();
    const [a, b] = [uniqueSlug('dom-2p'), uniqueSlug('dom-2p')];
    await admin.createTenant(a);
    await admin.createTenant(b);
    const [h1, h2] = [host('rm'), host('dr')];
    await admin.addTenantDomain(a, h1, { verified: true });
    await admin.addTenantDomain(a, h2, { verified: true });
    const resolver = domainResolver('express', other, { ttlMs: 200 });
    const port = await startService('express', other, [resolver], closers);
    expect((await rawHttp(port, getWithHost(h1))).slug()).to.equal(a);
    expect((await rawHttp(port, getWithHost(h2))).slug()).to.equal(a);

    await admin.removeTenantDomain(h1);
    await admin.suspendTenant(a);
    await admin.dropTenant(a);
    await admin.addTenantDomain(b, h2, { verified: true });
    await sleep(300);
    const removed = await rawHttp(port, getWithHost(h1));
    expect(removed.status, removed.body).to.equal(400);
    const moved = await rawHttp(port, getWithHost(h2));
    expect(moved.slug(), moved.body).to.equal(b);
  });


  it('HOLDS: concurrent add + drop of a tenant: the hostname is never left to the dropped tenant, and another tenant can take it after', async () => {
    const manager = await open();
    for (let round = 0; round < 5; round += 1) {
      const [a, b] = [uniqueSlug('dom-ad'), uniqueSlug('dom-ad')];
      await manager.createTenant(a);
      await manager.createTenant(b);
      await manager.suspendTenant(a);
      const names = [host('r1'), host('r2'), host('r3')];
      const results = await Promise.allSettled([...names.map((n) => manager.addTenantDomain(a, n, { verified: true })), manager.dropTenant(a)]);
      expect(results[3]!.status, String((results[3] as PromiseRejectedResult).reason)).to.equal('fulfilled');
      const rows = await adminQuery<{ hostname: string }>(`SELECT hostname FROM public.tenants_domains WHERE slug = $1`, [a]);
      expect(rows).to.deep.equal([]);
      for (const n of names) expect((await manager.addTenantDomain(b, n)).slug).to.equal(b);
      const refused = results.slice(0, 3).filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
      for (const r of refused) expect(['INVALID_TENANT_STATE', 'TENANT_NOT_FOUND']).to.include(r.reason.code);
    }
  });

  it('HOLDS: concurrent primary changes across hostnames of one tenant (add primary + update primary) leave exactly one primary', async () => {
    const manager = await open();
    const slug = uniqueSlug('dom-pri');
    await manager.createTenant(slug);
    const existing = [host('p'), host('p'), host('p')];
    for (const n of existing) await manager.addTenantDomain(slug, n);
    const fresh = [host('q'), host('q'), host('q')];
    await Promise.all([
      ...existing.map((n) => manager.updateTenantDomain(n, { primary: true })),
      ...fresh.map((n) => manager.addTenantDomain(slug, n, { primary: true })),
    ]);
    const primaries = (await manager.listTenantDomains(slug)).filter((d) => d.primary);
    expect(primaries).to.have.length(1);
  });

  it('HOLDS: SQL through hostnames is refused before any SQL (400 INVALID_HOSTNAME), and nothing is written', async () => {
    const manager = await open();
    const slug = uniqueSlug('dom-sql');
    await manager.createTenant(slug);
    for (const bad of ["x.com'; DROP TABLE public.tenants_domains; --", "a.com' OR '1'='1", 'a.com\u0000', 'a.com\r\nX: y', '$1.com', 'a%2ecom']) {
      let code: string | undefined;
      try {
        await manager.addTenantDomain(slug, bad);
      } catch (error) {
        code = (error as { code?: string }).code;
      }
      expect(code, JSON.stringify(bad)).to.equal('INVALID_HOSTNAME');
      let findCode: string | undefined;
      try {
        await manager.getTenantDomain(bad);
      } catch (error) {
        findCode = (error as { code?: string }).code;
      }
      expect(findCode, JSON.stringify(bad)).to.equal('INVALID_HOSTNAME');
    }
    expect(await manager.listTenantDomains(slug)).to.deep.equal([]);
  });

  it('HOLDS: two managers (two processes) racing many tenants for one hostname: exactly one wins, the rest get 409 TENANT_DOMAIN_TAKEN', async () => {
    const m1 = await open();
    const m2 = await open();
    for (let round = 0; round < 3; round += 1) {
      const slugs = await createTenants(m1, 6, 'dom-race');
      const name = host('race');
      const results = await Promise.allSettled(slugs.map((s, i) => (i % 2 === 0 ? m1 : m2).addTenantDomain(s, name, { verified: true })));
      const won = results.filter((r) => r.status === 'fulfilled');
      expect(won, JSON.stringify(results.map((r) => (r.status === 'rejected' ? String(r.reason) : 'ok')))).to.have.length(1);
      for (const r of results) if (r.status === 'rejected') expect((r.reason as { code: string; statusCode: number }).code).to.equal('TENANT_DOMAIN_TAKEN');
      for (const r of results) if (r.status === 'rejected') expect((r.reason as { statusCode: number }).statusCode).to.equal(409);
    }
  });

  it('HOLDS: unverifying a domain (another process) stops it within the TTL; archived → 423, suspended → 403 seen from another process', async () => {
    const admin = await open();
    const other = await open({ tenantRecordTtlMs: 100 });
    const slug = uniqueSlug('dom-st');
    await admin.createTenant(slug);
    const name = host('st');
    await admin.addTenantDomain(slug, name, { verified: true });
    const port = await startService('fastify', other, [domainResolver('fastify', other, { ttlMs: 100 })], closers);
    expect((await rawHttp(port, getWithHost(name))).slug()).to.equal(slug);
    await admin.updateTenantDomain(name, { verified: false });
    await sleep(200);
    expect((await rawHttp(port, getWithHost(name))).status).to.equal(400);
    await admin.updateTenantDomain(name, { verified: true });
    await admin.archiveTenant(slug);
    await sleep(300); // past the other manager's tenant record TTL
    const archived = await rawHttp(port, getWithHost(name));
    expect(archived.status, archived.body).to.equal(423);
    await admin.restoreTenant(slug);
    await admin.suspendTenant(slug);
    await sleep(300);
    const suspended = await rawHttp(port, getWithHost(name));
    expect(suspended.status, suspended.body).to.equal(403);
  });

  it('CLI: --json errors and exit codes for domain commands (unknown hostname, invalid hostname, unknown tenant)', async () => {
    const registry = uniqueRegistry();
    const manager = await openManager({ registryTable: registry });
    await createTenants(manager, 1, 'cli-rev');
    await manager.destroy();
    const env = { registry };
    const gone = await runCli(['domain', 'remove', 'nobody-has-it.example.com', '--json'], env);
    expect(gone.code, gone.stderr).to.equal(1);
    expect(gone.stderr + gone.stdout).to.contain('TENANT_DOMAIN_NOT_FOUND');
    const bad = await runCli(['domain', 'update', "x'; drop table x;--", '--verified', '--json'], env);
    expect(bad.code, bad.stderr).to.equal(1);
    expect(bad.stderr + bad.stdout).to.contain('INVALID_HOSTNAME');
    const ghost = await runCli(['domain', 'list', 'ghost-tenant', '--json'], env);
    expect(ghost.code, ghost.stderr).to.equal(1);
    expect(ghost.stderr + ghost.stdout).to.contain('TENANT_NOT_FOUND');
    const usage = await runCli(['domain', 'add', 'only-slug', '--json'], env);
    expect(usage.code, usage.stderr).to.equal(2);
  });
  it('HOLDS: 5,000 random Host headers (ASCII, unicode, xn--, malformed) cost no query beyond the first load, and the directory does not grow', async () => {
    const manager = await open();
    const slug = uniqueSlug('dom-flood');
    await manager.createTenant(slug);
    const name = host('flood');
    await manager.addTenantDomain(slug, name, { verified: true });
    const resolver = domainResolver('express', manager);
    await resolver({ headers: { host: name } });
    const before = resolver.directory.stats();
    const kinds = [
      () => `${randomBytes(6).toString('hex')}.example.com`,
      () => `bü${randomBytes(4).toString('hex')}.example`,
      () => `xn--${randomBytes(4).toString('hex')}.example`,
      () => `${randomBytes(3).toString('hex')}@${name}`,
      () => `${randomBytes(300).toString('hex')}`,
    ];
    for (let i = 0; i < 5000; i += 1) {
      const answer = await resolver({ headers: { host: kinds[i % kinds.length]!() } });
      expect(answer === undefined || answer === null).to.equal(true);
    }
    const after = resolver.directory.stats();
    expect(after.queries - before.queries).to.equal(0);
    expect(after.hostnames).to.equal(before.hostnames);
  });

  it('PROBE-7: single-label hostnames ("localhost", a bare TLD "com") are accepted as a tenant\'s custom domain', async () => {
    const manager = await open();
    const slug = uniqueSlug('dom-one');
    await manager.createTenant(slug);
    const accepted: string[] = [];
    for (const name of ['localhost', 'com']) {
      try {
        await manager.addTenantDomain(slug, name, { verified: true });
        accepted.push(name);
      } catch (error) {
        expect((error as { code?: string }).code).to.equal('INVALID_HOSTNAME');
      }
    }
    // Host: localhost (health checks, sidecars, local calls) would then serve this tenant.
    expect(accepted).to.deep.equal([]);
  });
});
