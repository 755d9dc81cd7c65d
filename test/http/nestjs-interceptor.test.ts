import { Body, Controller, Get, Inject, Injectable, Module, Post, Query, Req, Res, Sse, UseGuards, UseInterceptors, type MessageEvent, type Type } from '@nestjs/common';
import { AuthGuard, PassportStrategy } from '@nestjs/passport';
import { expect } from 'chai';
import type { ServerResponse } from 'node:http';
import { Strategy } from 'passport-http-bearer';
import { concatMap, from, interval, map, switchMap, take, timer, type Observable } from 'rxjs';
import { Repository } from 'typeorm';
import { Client } from '../../entities';
import { fromHeader, tenantContext, type TenantDataSourceManager, type TenantRequestResolver } from '../../src';
import {
  InjectTenantRepository,
  TENANCY_MANAGER,
  TENANCY_RESOLVER,
  TenancyInterceptor,
  TenancyModule,
  TenantFree,
  type TenancyModuleOptions,
} from '../../src/http/nestjs';
import { openManager, sleep, uniqueSlug } from '../support/fixtures';
import { deferred, expectError, getJson, inParallel, seedClients } from './http-support';
import { apps, platforms } from './nestjs-support';

/** Who a bearer token belongs to: what the strategy puts on req.user. */
interface User {
  readonly id: string;
  readonly tenant: string;
}

interface AuthedRequest {
  readonly headers: Record<string, string | string[] | undefined>;
  readonly params?: Record<string, string | undefined>;
  user?: User;
  tenant?: { slug: string };
}

const users = new Map<string, User>();
const gates = new Map<string, { promise: Promise<void>; resolve: () => void }>();
const finished = new Map<string, unknown>();

/** A real Passport strategy: `Authorization: Bearer <token>`, verified against `users`. */
@Injectable()
class BearerStrategy extends PassportStrategy(Strategy, 'bearer') {
  validate(token: string): User | null {
    return users.get(token) ?? null;
  }
}

@Injectable()
class ClientsService {
  constructor(@InjectTenantRepository(Client) private readonly clients: Repository<Client>) {}

  async names(): Promise<string[]> {
    await sleep(Math.floor(Math.random() * 3));
    return (await this.clients.find({ order: { id: 'ASC' } })).map((c) => c.name);
  }
}

const slugNow = (): string | null => tenantContext.current()?.slug ?? null;

@UseGuards(AuthGuard('bearer'))
@Controller('clients')
class ClientsController {
  constructor(
    private readonly service: ClientsService,
    @Inject(TENANCY_MANAGER) private readonly manager: TenantDataSourceManager,
  ) {}

  @Get()
  async list(@Req() req: AuthedRequest): Promise<unknown> {
    await sleep(Math.floor(Math.random() * 3));
    const names = await this.service.names();
    return { slug: slugNow(), requestTenant: req.tenant?.slug ?? null, user: req.user?.id ?? null, names };
  }

  /** An Observable handler with async work: it must run, lazily, in the tenant. */
  @Get('observable')
  observable(): Observable<unknown> {
    return timer(2).pipe(
      switchMap(() => from(this.service.names())),
      map((names) => ({ slug: slugNow(), names })),
    );
  }

  /** Server-sent events computed from the tenant's rows; `gate` holds the stream open after the first event. */
  @Sse('events')
  events(@Query('gate') gate?: string): Observable<MessageEvent> {
    return interval(1).pipe(
      take(4),
      concatMap(async (i) => {
        if (i === 1 && gate !== undefined) await gates.get(gate)!.promise;
        return { data: { i, slug: slugNow(), names: await this.service.names() } };
      }),
    );
  }

  /** Registers a 'finish' listener on the Node response; what it saw is read back from `finished`. */
  @Get('finish')
  finish(@Req() req: AuthedRequest & { raw?: unknown }, @Res({ passthrough: true }) res: { raw?: ServerResponse } & object, @Query('id') id: string): unknown {
    const raw = (res.raw ?? res) as ServerResponse;
    raw.on('finish', () => {
      finished.set(id, { slug: slugNow(), requestTenant: req.tenant?.slug ?? null });
    });
    return { slug: slugNow() };
  }

  /** A handler that throws TenancyErrors: a bad slug and an unknown tenant. */
  @Get('bad-run')
  async badRun(@Query('slug') slug: string): Promise<unknown> {
    return this.manager.run(slug, () => 'unreachable');
  }
}

@TenantFree()
@Controller('tenants')
class SignupController {
  constructor(@Inject(TENANCY_MANAGER) private readonly manager: TenantDataSourceManager) {}

  @Post()
  async signup(@Body() body: { slug: string }): Promise<unknown> {
    return { slug: (await this.manager.createTenant(body.slug)).slug, inTenant: slugNow() };
  }
}

@Controller('health')
class HealthController {
  @TenantFree()
  @Get()
  health(): unknown {
    return { ok: true, slug: slugNow() };
  }
}

/** Mode 'manual': only this controller resolves a tenant; one of its routes is tenant-free. */
@UseGuards(AuthGuard('bearer'))
@UseInterceptors(TenancyInterceptor)
@Controller('manual')
class ManualController {
  @Get()
  inTenant(@Req() req: AuthedRequest): unknown {
    return { slug: slugNow(), requestTenant: req.tenant?.slug ?? null };
  }

  @TenantFree()
  @Get('free')
  free(): unknown {
    return { slug: slugNow() };
  }
}

@UseGuards(AuthGuard('bearer'))
@Controller('unbound')
class UnboundController {
  @Get()
  noTenant(): unknown {
    return { slug: slugNow() };
  }
}

/** The tenant as a route parameter, read by a resolver in the interceptor modes (routing has run). */
@UseGuards(AuthGuard('bearer'))
@Controller('t/:tenant')
class ByPathController {
  constructor(private readonly service: ClientsService) {}

  @Get('clients')
  async list(): Promise<unknown> {
    return { slug: slugNow(), names: await this.service.names() };
  }
}

function appModule(options: TenancyModuleOptions<AuthedRequest>): Type {
  @Module({
    imports: [TenancyModule.forRoot(options), TenancyModule.forFeature([Client])],
    controllers: [ClientsController, SignupController, HealthController, ManualController, UnboundController, ByPathController],
    providers: [ClientsService, BearerStrategy],
  })
  class AppModule {}
  return AppModule;
}

/** The tenant from the verified token, or from the header if the token's user belongs to it. */
const fromUser = (req: AuthedRequest): string | undefined => req.user?.tenant;
const ownTenantOnly = (req: AuthedRequest, tenant: { slug: string }): boolean => req.user?.tenant === tenant.slug;

function login(tenant: string): { token: string; headers: Record<string, string> } {
  const token = `tok-${uniqueSlug('u')}`;
  users.set(token, { id: `user of ${tenant}`, tenant });
  return { token, headers: { authorization: `Bearer ${token}` } };
}

/** Reads `count` server-sent events' data from a streamed response. */
async function readEvents(reader: ReadableStreamDefaultReader<Uint8Array>, count: number, buffer = { text: '' }): Promise<any[]> {
  const events: any[] = [];
  while (events.length < count) {
    const separator = buffer.text.indexOf('\n\n');
    if (separator >= 0) {
      const block = buffer.text.slice(0, separator);
      buffer.text = buffer.text.slice(separator + 2);
      const data = block
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).trim())
        .join('\n');
      if (data !== '') events.push(JSON.parse(data));
      continue;
    }
    const { done, value } = await reader.read();
    if (done) break;
    buffer.text += Buffer.from(value).toString('utf8');
  }
  return events;
}

for (const platform of platforms) {
  describe(`NestJS TenancyModule mode 'interceptor' with Passport on ${platform.name}`, function () {
    this.timeout(120_000);
    const started = apps();

    async function tenantsWithClients(manager: TenantDataSourceManager, count: number, prefix: string, rows = 2): Promise<string[]> {
      const slugs: string[] = [];
      for (let i = 0; i < count; i += 1) {
        const slug = uniqueSlug(prefix);
        await manager.createTenant(slug);
        await seedClients(manager, slug, rows);
        slugs.push(slug);
      }
      return slugs;
    }

    it('after the AuthGuard: a valid token serves the tenant of req.user; an invalid or missing token is 401 with no tenant lookup; a header for another tenant is refused by authorize', async () => {
      const manager = await openManager();
      const [a, b] = await tenantsWithClients(manager, 2, 'pa');
      const { app, base } = await started.start(appModule({ manager, mode: 'interceptor', resolve: [fromHeader(), fromUser], authorize: ownTenantOnly }), platform);
      const resolver = app.get<TenantRequestResolver>(TENANCY_RESOLVER);
      const alice = login(a!);

      expect((await getJson(`${base}/clients`, alice.headers)).body).to.deep.equal({
        slug: a,
        requestTenant: a,
        user: `user of ${a}`,
        names: [`${a} client 0`, `${a} client 1`],
      });
      expect((await getJson(`${base}/clients`, { ...alice.headers, 'x-tenant-slug': a! })).body).to.include({ slug: a });
      expectError(await getJson(`${base}/clients`, { ...alice.headers, 'x-tenant-slug': b! }), 403, 'TENANT_FORBIDDEN');

      const before = resolver.cache.stats();
      const unauthenticated: Record<string, string>[] = [{ authorization: 'Bearer not-a-token', 'x-tenant-slug': b! }, { 'x-tenant-slug': uniqueSlug('nobody') }, {}];
      for (const headers of unauthenticated) {
        const answer = await getJson(`${base}/clients`, headers);
        expect(answer.status, JSON.stringify(answer.body)).to.equal(401);
      }
      const after = resolver.cache.stats();
      expect({ lookups: after.lookups, hits: after.hits, negativeHits: after.negativeHits }).to.deep.equal({
        lookups: before.lookups,
        hits: before.hits,
        negativeHits: before.negativeHits,
      });

      // A 'finish' listener the handler added to the response runs in the tenant too.
      const id = uniqueSlug('fin');
      expect((await getJson(`${base}/clients/finish?id=${id}`, alice.headers)).body).to.deep.equal({ slug: a });
      for (let i = 0; i < 100 && !finished.has(id); i += 1) await sleep(5);
      expect(finished.get(id)).to.deep.equal({ slug: a, requestTenant: a });

      // Tenant-free routes (@TenantFree on a controller or a handler) need neither a token nor a tenant.
      expect((await getJson(`${base}/health`)).body).to.deep.equal({ ok: true, slug: null });
      // A token whose tenant no longer exists: 404 after authentication.
      const ghost = login(uniqueSlug('gone'));
      expectError(await getJson(`${base}/clients`, ghost.headers), 404, 'TENANT_NOT_FOUND');
    });

    it("in mode 'middleware' the same resolver cannot see req.user (the middleware runs before the guards): a valid token gets 400 TENANT_REQUIRED", async () => {
      const manager = await openManager();
      const [a] = await tenantsWithClients(manager, 1, 'pm', 0);
      const { base } = await started.start(appModule({ manager, mode: 'middleware', resolve: fromUser, exclude: ['health'] }), platform);
      expectError(await getJson(`${base}/clients`, login(a!).headers), 400, 'TENANT_REQUIRED');
    });

    it('isolation: 600 interleaved requests of users of 6 tenants (async and Observable handlers) each see only their tenant\'s rows', async () => {
      const manager = await openManager();
      const slugs = await tenantsWithClients(manager, 6, 'pi');
      const { base } = await started.start(appModule({ manager, mode: 'interceptor', resolve: fromUser }), platform);
      const sessions = slugs.map((slug) => ({ slug, ...login(slug) }));
      const results = await inParallel(
        Array.from({ length: 600 }, (_, i) => async () => {
          const session = sessions[(i * 7) % sessions.length]!;
          const path = i % 2 === 0 ? 'clients' : 'clients/observable';
          return { session, path, answer: await getJson(`${base}/${path}`, session.headers) };
        }),
        60,
      );
      for (const { session, path, answer } of results) {
        expect(answer.status, `${path}: ${JSON.stringify(answer.body)}`).to.equal(200);
        expect(answer.body.slug).to.equal(session.slug);
        expect(answer.body.names).to.deep.equal([`${session.slug} client 0`, `${session.slug} client 1`]);
      }
      expect(manager.stats().activeRuns).to.equal(0);
    });

    it('a TenancyError thrown in a handler is answered by TenancyExceptionFilter (400, 404, 409), in tenant routes and in @TenantFree ones', async () => {
      const manager = await openManager();
      const [a] = await tenantsWithClients(manager, 1, 'pe', 0);
      const { base } = await started.start(appModule({ manager, mode: 'interceptor', resolve: fromUser }), platform);
      const alice = login(a!);
      expectError(await getJson(`${base}/clients/bad-run?slug=Not%20A%20Slug`, alice.headers), 400, 'INVALID_TENANT_NAME');
      expectError(await getJson(`${base}/clients/bad-run?slug=${uniqueSlug('none')}`, alice.headers), 404, 'TENANT_NOT_FOUND');
      const signup = (slug: string) => getJson(`${base}/tenants`, { 'content-type': 'application/json' }, { method: 'POST', body: JSON.stringify({ slug }) });
      const fresh = uniqueSlug('pe');
      expect(await signup(fresh)).to.deep.include({ status: 201, body: { slug: fresh, inTenant: null } });
      expectError(await signup(fresh), 409, 'TENANT_ALREADY_EXISTS');
    });

    it('server-sent events run in the tenant, and the DataSource is held until the stream ends: with maxDataSources 1, an open stream of A survives requests for B and C', async () => {
      const manager = await openManager({ maxDataSources: 1 });
      const [a, b, c] = await tenantsWithClients(manager, 3, 'ps', 1);
      const { base } = await started.start(appModule({ manager, mode: 'interceptor', resolve: fromUser }), platform);
      const gate = deferred();
      const gateName = uniqueSlug('gate');
      gates.set(gateName, gate);
      const response = await fetch(`${base}/clients/events?gate=${gateName}`, { headers: login(a!).headers });
      const reader = response.body!.getReader();
      try {
        expect(response.status).to.equal(200);
        expect(response.headers.get('content-type')).to.match(/^text\/event-stream/);
        const buffer = { text: '' };
        expect(await readEvents(reader, 1, buffer)).to.deep.equal([{ i: 0, slug: a, names: [`${a} client 0`] }]);
        // The stream now waits on the gate. B and C each take the only cache slot; A's DataSource is evicted but still held.
        for (const other of [b!, c!]) {
          expect((await getJson(`${base}/clients`, login(other).headers)).body.names).to.deep.equal([`${other} client 0`]);
        }
        const during = manager.stats();
        expect(during.evictions).to.be.greaterThan(0);
        expect(during.pendingDisposal).to.equal(1);
        gate.resolve();
        expect(await readEvents(reader, 3, buffer)).to.deep.equal([1, 2, 3].map((i) => ({ i, slug: a, names: [`${a} client 0`] })));
        expect((await reader.read()).done).to.equal(true);
      } finally {
        gate.resolve();
        await reader.cancel().catch(() => undefined);
      }
      for (let i = 0; i < 100 && manager.stats().pendingDisposal > 0; i += 1) await sleep(10);
      expect(manager.stats()).to.include({ pendingDisposal: 0, activeRuns: 0 });
    });

    it('a route parameter as the tenant: (req) => req.params.tenant, checked against the user by authorize', async () => {
      const manager = await openManager();
      const [a, b] = await tenantsWithClients(manager, 2, 'pp', 1);
      const { base } = await started.start(appModule({ manager, mode: 'interceptor', resolve: (req) => req.params?.tenant, authorize: ownTenantOnly }), platform);
      const alice = login(a!);
      expect((await getJson(`${base}/t/${a}/clients`, alice.headers)).body).to.deep.equal({ slug: a, names: [`${a} client 0`] });
      expectError(await getJson(`${base}/t/${b}/clients`, alice.headers), 403, 'TENANT_FORBIDDEN');
    });

    it("mode 'manual': only controllers that bind TenancyInterceptor get a tenant (and not their @TenantFree handlers); no global interceptor, no middleware", async () => {
      const manager = await openManager();
      const [a] = await tenantsWithClients(manager, 1, 'pn', 0);
      const { base } = await started.start(appModule({ manager, mode: 'manual', resolve: [fromHeader(), fromUser] }), platform);
      const alice = login(a!);
      expect((await getJson(`${base}/manual`, alice.headers)).body).to.deep.equal({ slug: a, requestTenant: a });
      expect((await getJson(`${base}/manual/free`, alice.headers)).body).to.deep.equal({ slug: null });
      expect((await getJson(`${base}/unbound`, { ...alice.headers, 'x-tenant-slug': a! })).body).to.deep.equal({ slug: null });
      expectError(await getJson(`${base}/manual`, { ...alice.headers, 'x-tenant-slug': 'Not-Valid' }), 400, 'INVALID_TENANT_NAME');
    });
  });
}
