import {
  CallHandler,
  Controller,
  ExecutionContext,
  Get,
  Inject,
  Injectable,
  Module,
  NestInterceptor,
  Param,
  PipeTransform,
  Query,
  StreamableFile,
  UseGuards,
  type CanActivate,
  type INestApplication,
  type Type,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { expect } from 'chai';
import { createServer, Socket, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { request as httpRequest } from 'node:http';
import { Readable } from 'node:stream';
import { Client } from '../../entities';
import { fromHeader, tenantContext, type TenantDataSourceManager } from '../../src';
import { TENANCY_MANAGER, TenancyModule, TenantFree, type TenancyModuleOptions } from '../../src/http/nestjs';
import { databaseUrl, openManager, sleep, uniqueSlug } from '../support/fixtures';
import { deferred, expectError, getJson, seedClients } from '../http/http-support';
import { platforms, type Platform } from '../http/nestjs-support';

/**
 * Review probes of the NestJS work (issue 12, part 2): what runs in the
 * tenant, when the DataSource lease ends, and what the exception filter
 * answers, on Express and Fastify, over real HTTP and real PostgreSQL.
 */

const gates = new Map<string, { promise: Promise<void>; resolve: () => void }>();
const started = new Map<string, { promise: Promise<void>; resolve: () => void }>();
const outcomes = new Map<string, unknown>();

const slugNow = (): string | null => tenantContext.current()?.slug ?? null;

async function tenantNames(): Promise<string[]> {
  return (await tenantContext.getRepository(Client).find({ order: { id: 'ASC' } })).map((c) => c.name);
}

/** A guard that (wrongly, but plausibly) reads tenant data: guards run before the interceptor. */
@Injectable()
class TenantReadingGuard implements CanActivate {
  async canActivate(): Promise<boolean> {
    await tenantContext.getRepository(Client).count();
    return true;
  }
}

/** A pipe that asks the manager about a slug from the route: a bad one is a TenancyError thrown in a pipe. */
@Injectable()
class TenantLookupPipe implements PipeTransform<string, Promise<string>> {
  constructor(@Inject(TENANCY_MANAGER) private readonly manager: TenantDataSourceManager) {}

  async transform(value: string): Promise<string> {
    await this.manager.getTenant(value);
    return value;
  }
}

@Controller('r')
class ReviewController {
  /** A file streamed from a lazy Readable: its rows are read when Nest pipes it to the response. */
  @Get('stream')
  stream(@Query('id') id: string): StreamableFile {
    async function* lines(): AsyncGenerator<string> {
      outcomes.set(id, { slugAtFirstRead: slugNow() });
      yield `${JSON.stringify({ slug: slugNow() })}\n`;
      try {
        for (const name of await tenantNames()) yield `${JSON.stringify({ name })}\n`;
      } catch (error) {
        outcomes.set(id, { ...(outcomes.get(id) as object), error: (error as { code?: string }).code ?? (error as Error).message });
        throw error;
      }
    }
    return new StreamableFile(Readable.from(lines()), { type: 'application/x-ndjson' });
  }

  /** Waits on a gate, then reads the tenant's rows; what it saw goes to `outcomes`. */
  @Get('slow')
  async slow(@Query('id') id: string): Promise<unknown> {
    started.get(id)?.resolve();
    await gates.get(id)!.promise;
    try {
      const value = { slug: slugNow(), names: await tenantNames() };
      outcomes.set(id, value);
      return value;
    } catch (error) {
      outcomes.set(id, { error: (error as Error).name, message: (error as Error).message });
      throw error;
    }
  }

  @Get('names')
  async names(): Promise<unknown> {
    return { slug: slugNow(), names: await tenantNames() };
  }

  /** Throws a plain error after an await, in the tenant. */
  @Get('throws')
  async throws(): Promise<unknown> {
    await tenantNames();
    throw new Error('handler failed after await');
  }

  @UseGuards(TenantReadingGuard)
  @Get('guarded')
  guarded(): unknown {
    return { slug: slugNow() };
  }

  @Get('pipe/:slug')
  pipe(@Param('slug', TenantLookupPipe) slug: string): unknown {
    return { slug: slugNow(), checked: slug };
  }
}

@TenantFree()
@Controller('free')
class FreeController {
  @Get()
  free(): unknown {
    return { slug: slugNow() };
  }
}

function reviewModule(options: TenancyModuleOptions<any>): Type {
  @Module({
    imports: [TenancyModule.forRoot(options), TenancyModule.forFeature([Client])],
    controllers: [ReviewController, FreeController],
    providers: [TenantReadingGuard, TenantLookupPipe],
  })
  class ReviewModule {}
  return ReviewModule;
}

interface Started {
  readonly app: INestApplication;
  readonly base: string;
}

function appsOf(): { start(module: Type, platform: Platform, configure?: (app: INestApplication) => void): Promise<Started> } {
  const open = new Set<INestApplication>();
  afterEach(async () => {
    const closing = [...open];
    open.clear();
    await Promise.all(closing.map((app) => app.close()));
  });
  return {
    async start(module, platform, configure) {
      const app = await NestFactory.create(module, platform.adapter() as never, { logger: false });
      open.add(app);
      configure?.(app);
      await app.listen(0, '127.0.0.1');
      return { app, base: `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}` };
    },
  };
}

async function until(check: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function gate(id: string): { open: () => void; started: Promise<void> } {
  const g = deferred();
  const s = deferred();
  gates.set(id, g);
  started.set(id, s);
  return { open: () => g.resolve(), started: s.promise };
}

async function tenantWithClients(manager: TenantDataSourceManager, prefix: string, rows = 2): Promise<string> {
  const slug = uniqueSlug(prefix);
  await manager.createTenant(slug);
  await seedClients(manager, slug, rows);
  return slug;
}

const header = (slug: string): Record<string, string> => ({ 'x-tenant-slug': slug });

for (const platform of platforms) {
  describe(`review: NestJS mode 'interceptor' on ${platform.name}`, function () {
    this.timeout(60_000);
    const apps = appsOf();

    it('a StreamableFile whose rows are read lazily (Readable.from an async generator) is read in the tenant', async () => {
      const manager = await openManager();
      const a = await tenantWithClients(manager, 'rs');
      const { base } = await apps.start(reviewModule({ manager, mode: 'interceptor', resolve: fromHeader() }), platform);
      const id = uniqueSlug('stream');
      const response = await fetch(`${base}/r/stream?id=${id}`, { headers: header(a) });
      const text = await response.text().catch((error: unknown) => `(body failed: ${String(error)}; the stream saw ${JSON.stringify(outcomes.get(id))})`);
      expect(response.status).to.equal(200);
      expect(text.trim().split('\n'), text).to.deep.equal([
        JSON.stringify({ slug: a }),
        JSON.stringify({ name: `${a} client 0` }),
        JSON.stringify({ name: `${a} client 1` }),
      ]);
      await until(() => manager.stats().activeRuns === 0, 'activeRuns 0');
    });

    it('a client that goes away mid-request: the handler goes on in its tenant, its DataSource held until it ends, then released (activeRuns 0)', async () => {
      const manager = await openManager({ maxDataSources: 1 });
      const a = await tenantWithClients(manager, 'ra', 1);
      const b = await tenantWithClients(manager, 'rb', 1);
      const { base } = await apps.start(reviewModule({ manager, mode: 'interceptor', resolve: fromHeader() }), platform);
      const id = uniqueSlug('abort');
      const g = gate(id);
      const request = httpRequest(`${base}/r/slow?id=${id}`, { headers: header(a), agent: false });
      request.on('error', () => undefined);
      request.end();
      await g.started;
      request.destroy();
      await sleep(50);
      // B takes the only cache slot; A's DataSource must stay alive for the handler still running.
      expect((await getJson(`${base}/r/names`, header(b))).body).to.deep.equal({ slug: b, names: [`${b} client 0`] });
      expect(manager.stats().activeRuns).to.equal(1);
      g.open();
      await until(() => outcomes.has(id), 'the handler to finish');
      expect(outcomes.get(id)).to.deep.equal({ slug: a, names: [`${a} client 0`] });
      await until(() => manager.stats().activeRuns === 0 && manager.stats().pendingDisposal === 0, 'the lease released');
    });

    it('a handler that throws a plain error after an await: 500 from Nest, the lease released, the next request on the same connection has no tenant', async () => {
      const manager = await openManager();
      const a = await tenantWithClients(manager, 'rh', 1);
      const { base } = await apps.start(reviewModule({ manager, mode: 'interceptor', resolve: fromHeader() }), platform);
      const failed = await getJson(`${base}/r/throws`, header(a));
      expect(failed.status).to.equal(500);
      expect(JSON.stringify(failed.body)).not.to.include('handler failed after await');
      expect((await getJson(`${base}/free`)).body).to.deep.equal({ slug: null });
      await until(() => manager.stats().activeRuns === 0, 'activeRuns 0');
    });

    it('a guard that reads tenant data runs before the tenant is known: TENANT_CONTEXT_MISSING 500 with the documented body, not a crash', async () => {
      const manager = await openManager();
      const a = await tenantWithClients(manager, 'rg', 0);
      const { base } = await apps.start(reviewModule({ manager, mode: 'interceptor', resolve: fromHeader() }), platform);
      expectError(await getJson(`${base}/r/guarded`, header(a)), 500, 'TENANT_CONTEXT_MISSING');
      expect(manager.stats().activeRuns).to.equal(0);
    });

    it('a TenancyError thrown in a pipe (inside the tenant) answers its status and body; the lease is released', async () => {
      const manager = await openManager();
      const a = await tenantWithClients(manager, 'rp', 0);
      const { base } = await apps.start(reviewModule({ manager, mode: 'interceptor', resolve: fromHeader() }), platform);
      expectError(await getJson(`${base}/r/pipe/Not_A_Slug`, header(a)), 400, 'INVALID_TENANT_NAME');
      expect((await getJson(`${base}/r/pipe/${a}`, header(a))).body).to.deep.equal({ slug: a, checked: a });
      await until(() => manager.stats().activeRuns === 0, 'activeRuns 0');
    });

    it('a resolver or authorize that throws a plain error: 500, the app keeps serving', async () => {
      const manager = await openManager();
      const a = await tenantWithClients(manager, 'rr', 1);
      const throwing = await apps.start(
        reviewModule({
          manager,
          mode: 'interceptor',
          resolve: (req: { headers: Record<string, unknown> }) => {
            if (req.headers['x-boom'] !== undefined) throw new Error('resolver bug');
            return req.headers['x-tenant-slug'] as string | undefined;
          },
          authorize: (req: { headers: Record<string, unknown> }) => {
            if (req.headers['x-authorize-boom'] !== undefined) throw new Error('authorize bug');
            return true;
          },
        }),
        platform,
      );
      expect((await getJson(`${throwing.base}/r/names`, { ...header(a), 'x-boom': '1' })).status).to.equal(500);
      expect((await getJson(`${throwing.base}/r/names`, { ...header(a), 'x-authorize-boom': '1' })).status).to.equal(500);
      expect((await getJson(`${throwing.base}/r/names`, header(a))).body).to.deep.equal({ slug: a, names: [`${a} client 0`] });
      expect(manager.stats().activeRuns).to.equal(0);
    });
  });

  describe(`review: NestJS mode 'middleware' on ${platform.name}`, function () {
    this.timeout(60_000);
    const apps = appsOf();

    it('a resolver that throws a plain error: 500 (not a hung request or a crash), the app keeps serving', async () => {
      const manager = await openManager();
      const a = await tenantWithClients(manager, 'rm', 1);
      const { base } = await apps.start(
        reviewModule({
          manager,
          resolve: (req: { headers: Record<string, unknown> }) => {
            if (req.headers['x-boom'] !== undefined) throw new Error('resolver bug');
            return req.headers['x-tenant-slug'] as string | undefined;
          },
          exclude: ['free'],
        }),
        platform,
      );
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), 5_000);
      try {
        const failed = await fetch(`${base}/r/names`, { headers: { ...header(a), 'x-boom': '1' }, signal: controller.signal });
        expect(failed.status).to.equal(500);
        expect(await failed.text()).not.to.include('resolver bug');
      } finally {
        clearTimeout(timer);
      }
      expect((await getJson(`${base}/r/names`, header(a))).body).to.deep.equal({ slug: a, names: [`${a} client 0`] });
    });
  });

  describe(`review: NestJS during a database outage on ${platform.name}`, function () {
    this.timeout(60_000);
    const apps = appsOf();

    it("a request that cannot reach the database answers 503 DATABASE_UNREACHABLE without giving the HTTP client the server's user, address or database", async () => {
      const proxy = await tcpProxy(databaseUrl());
      try {
        const manager = await openManager({ dataSource: { type: 'postgres', url: proxy.url, poolSize: 2 }, pool: { connectionTimeoutMillis: 3_000, idleTimeoutMillis: 100 } });
        const a = await tenantWithClients(manager, 'ro', 1);
        const { base } = await apps.start(reviewModule({ manager, mode: 'interceptor', resolve: fromHeader() }), platform);
        expect((await getJson(`${base}/r/names`, header(a))).status).to.equal(200);
        await proxy.stop();
        const answer = await getJson(`${base}/r/names`, header(a));
        expectError(answer, 503, 'DATABASE_UNREACHABLE');
        const url = new URL(proxy.url);
        const message = answer.body.error.message as string;
        expect(message, message).not.to.include(`${url.hostname}:${url.port}`);
        expect(message, message).not.to.include(`${decodeURIComponent(url.username)}@`);
        expect(message, message).not.to.include(url.pathname.slice(1));
      } finally {
        await proxy.stop();
      }
    });
  });
}

/** A TCP proxy to the PostgreSQL server of `target`; `stop()` closes it and every connection through it (the server "goes away"). */
async function tcpProxy(target: string): Promise<{ url: string; stop(): Promise<void> }> {
  const to = new URL(target);
  const sockets = new Set<Socket>();
  const server: Server = createServer((inbound) => {
    const outbound = new Socket();
    sockets.add(inbound).add(outbound);
    outbound.connect(Number(to.port || 5432), to.hostname);
    inbound.pipe(outbound).pipe(inbound);
    const drop = (): void => {
      inbound.destroy();
      outbound.destroy();
    };
    inbound.on('error', drop).on('close', drop);
    outbound.on('error', drop).on('close', drop);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(target);
  url.hostname = '127.0.0.1';
  url.port = String((server.address() as AddressInfo).port);
  let stopped: Promise<void> | undefined;
  return {
    url: url.toString(),
    stop() {
      stopped ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      });
      return stopped;
    },
  };
}
