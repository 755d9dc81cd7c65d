import { Body, Controller, Get, Inject, Injectable, Module, Param, Post, type INestApplication, type Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { expect } from 'chai';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Repository } from 'typeorm';
import { Client } from '../../entities';
import { ManagerDestroyedError, fromHeader, tenantContext, type TenantDataSourceManager } from '../../src';
import { InjectTenantRepository, TENANCY_MANAGER, TenancyModule, type TenancyModuleOptions } from '../../src/http/nestjs';
import { managerOptions, openManager, uniqueSlug } from '../support/fixtures';
import { expectError, getJson, inParallel } from './http-support';

let constructed = 0;
let repositoryIsARepository: boolean | undefined;

@Injectable()
class ClientsService {
  constructor(@InjectTenantRepository(Client) private readonly clients: Repository<Client>) {
    constructed += 1;
    repositoryIsARepository = clients instanceof Repository;
  }

  async list(): Promise<Array<{ name: string; email: string }>> {
    await new Promise((resolve) => setTimeout(resolve, 1));
    const clients = await this.clients.find({ order: { id: 'ASC' } });
    return clients.map((c) => ({ name: c.name, email: c.email }));
  }

  async add(name: string, email: string): Promise<number> {
    const saved = await this.clients.save(this.clients.create({ name, email }));
    return saved.id;
  }

  findOne(id: number): Promise<Client | null> {
    return this.clients.findOneBy({ id });
  }
}

@Controller('clients')
class ClientsController {
  constructor(private readonly service: ClientsService) {}

  @Get()
  async list(): Promise<unknown> {
    return { slug: tenantContext.current()?.slug ?? null, clients: await this.service.list() };
  }

  @Post()
  async add(@Body() body: { name: string; email: string }): Promise<unknown> {
    const id = await this.service.add(body.name, body.email);
    return { slug: tenantContext.current()?.slug ?? null, id };
  }

  @Get(':id')
  async one(@Param('id') id: string): Promise<unknown> {
    const client = await this.service.findOne(Number(id));
    return { slug: tenantContext.current()?.slug ?? null, name: client?.name ?? null };
  }
}

@Controller('health')
class HealthController {
  @Get()
  health(): unknown {
    return { ok: true, slug: tenantContext.current()?.slug ?? null };
  }
}

/** Tenant-free routes that throw: signup through the manager, a tenant repository outside any tenant, a plain error. */
@Controller('tenants')
class SignupController {
  constructor(@Inject(TENANCY_MANAGER) private readonly manager: TenantDataSourceManager) {}

  @Post()
  async signup(@Body() body: { slug: string }): Promise<unknown> {
    const tenant = await this.manager.createTenant(body.slug);
    return { slug: tenant.slug };
  }

  @Get('contextless')
  async contextless(): Promise<unknown> {
    return tenantContext.getRepository(Client).find();
  }

  @Get('plain')
  plain(): never {
    throw new Error('a plain failure');
  }
}

function appModule(options: TenancyModuleOptions): Type {
  @Module({
    imports: [TenancyModule.forRoot(options), TenancyModule.forFeature([Client])],
    controllers: [ClientsController, HealthController, SignupController],
    providers: [ClientsService],
  })
  class AppModule {}
  return AppModule;
}

const platforms = [
  { name: 'Express', adapter: () => new ExpressAdapter() },
  { name: 'Fastify', adapter: () => new FastifyAdapter() },
] as const;

for (const platform of platforms) {
  describe(`NestJS TenancyModule on ${platform.name}`, () => {
    let app: INestApplication | undefined;
    afterEach(async () => {
      await app?.close();
      app = undefined;
    });

    async function start(options: TenancyModuleOptions): Promise<string> {
      app = await NestFactory.create(appModule(options), platform.adapter() as never, { logger: false });
      await app.listen(0, '127.0.0.1');
      return `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
    }

    it('every outcome as the documented JSON error; excluded routes are tenant-free', async () => {
      const manager = await openManager();
      const [slug, other] = [uniqueSlug('na'), uniqueSlug('na')];
      await manager.createTenant(slug);
      await manager.createTenant(other);
      const base = await start({
        manager,
        resolve: fromHeader(),
        exclude: ['health'],
        authorize: async (req: IncomingMessage, tenant) => req.headers['x-user-tenant'] === tenant.slug,
      });
      const as = (tenant: string, user = tenant): Record<string, string> => ({ 'x-tenant-slug': tenant, 'x-user-tenant': user });
      expectError(await getJson(`${base}/clients`), 400, 'TENANT_REQUIRED');
      expectError(await getJson(`${base}/clients`, as('Not-Valid')), 400, 'INVALID_TENANT_NAME');
      expectError(await getJson(`${base}/clients`, as(uniqueSlug('none'))), 404, 'TENANT_NOT_FOUND');
      expectError(await getJson(`${base}/clients`, as(other, slug)), 403, 'TENANT_FORBIDDEN');
      expect(await getJson(`${base}/clients`, as(slug))).to.deep.include({ status: 200, body: { slug, clients: [] } });
      await manager.suspendTenant(slug);
      expectError(await getJson(`${base}/clients`, as(slug)), 403, 'TENANT_SUSPENDED');
      await manager.resumeTenant(slug);
      await manager.archiveTenant(slug);
      expectError(await getJson(`${base}/clients`, as(slug)), 423, 'TENANT_NOT_ACTIVE');
      expect(await getJson(`${base}/health`)).to.deep.include({ status: 200, body: { ok: true, slug: null } });
    });

    it('TenancyExceptionFilter (registered by forRoot): a TenancyError thrown in a handler answers its status and the documented body; other errors stay Nest\'s', async () => {
      const manager = await openManager();
      const taken = uniqueSlug('nf');
      await manager.createTenant(taken);
      const base = await start({ manager, resolve: fromHeader(), exclude: ['tenants', 'tenants/(.*)', 'health'] });
      const post = (slug: string) =>
        getJson(`${base}/tenants`, {}, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ slug }) });
      expectError(await post(taken), 409, 'TENANT_ALREADY_EXISTS');
      expectError(await post('Not_A_Slug'), 400, 'INVALID_TENANT_NAME');
      const fresh = uniqueSlug('nf');
      expect(await post(fresh)).to.deep.include({ status: 201, body: { slug: fresh } });
      expectError(await getJson(`${base}/tenants/contextless`), 500, 'TENANT_CONTEXT_MISSING');
      expect(await getJson(`${base}/tenants/plain`)).to.deep.include({ status: 500, body: { statusCode: 500, message: 'Internal server error' } });
    });

    it("exceptionFilter: false leaves TenancyErrors to Nest's own handler (its { statusCode, message } body, no error code), so the filter is what gives the documented body", async () => {
      const manager = await openManager();
      const base = await start({ manager, resolve: fromHeader(), exclude: ['tenants', 'health'], exceptionFilter: false });
      const answer = await getJson(`${base}/tenants`, {}, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ slug: 'Not_A_Slug' }) });
      expect(answer.body).to.have.property('statusCode');
      expect(answer.body).not.to.have.property('error');
    });

    it('@InjectTenantRepository in a singleton service serves the request tenant: 400 concurrent requests over 2 tenants, only own rows', async () => {
      const manager = await openManager();
      const tenants = [uniqueSlug('nb'), uniqueSlug('nb')];
      for (const slug of tenants) await manager.createTenant(slug);
      const constructedBefore = constructed;
      const base = await start({ manager, resolve: fromHeader(), exclude: ['health'] });
      expect(constructed - constructedBefore).to.equal(1);
      expect(repositoryIsARepository).to.equal(true);
      for (const slug of tenants) {
        for (const name of ['x', 'y']) {
          const created = await getJson(`${base}/clients`, { 'x-tenant-slug': slug, 'content-type': 'application/json' }, {
            method: 'POST',
            body: JSON.stringify({ name: `${slug} ${name}`, email: `${name}@${slug}.test` }),
          });
          expect(created.status, JSON.stringify(created.body)).to.equal(201);
          expect(created.body.slug).to.equal(slug);
        }
      }
      const results = await inParallel(
        Array.from({ length: 400 }, (_, i) => async () => {
          const slug = tenants[i % 2]!;
          return { slug, answer: await getJson(`${base}/clients`, { 'x-tenant-slug': slug }) };
        }),
        40,
      );
      for (const { slug, answer } of results) {
        expect(answer.body).to.deep.equal({
          slug,
          clients: ['x', 'y'].map((name) => ({ name: `${slug} ${name}`, email: `${name}@${slug}.test` })),
        });
      }
      // Ids start at 1 in each tenant schema: the same id, each tenant's own row.
      expect((await getJson(`${base}/clients/1`, { 'x-tenant-slug': tenants[1]! })).body).to.deep.equal({ slug: tenants[1], name: `${tenants[1]} x` });
      expect(constructed - constructedBefore).to.equal(1);
      // Outside a request the injected repository refuses (fail closed).
      const service = app!.get(ClientsService);
      await expect(service.list()).to.be.rejectedWith(/needs an active tenant/);
    });
  });
}

describe('NestJS TenancyModule with managerOptions', () => {
  it('creates and initialises the manager, provides it as TENANCY_MANAGER, and destroys it on close', async () => {
    const app = await NestFactory.create(appModule({ managerOptions: managerOptions(), resolve: fromHeader(), exclude: ['health'] }), new ExpressAdapter(), {
      logger: false,
    });
    let manager: TenantDataSourceManager | undefined;
    try {
      await app.listen(0, '127.0.0.1');
      const base = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
      manager = app.get<TenantDataSourceManager>(TENANCY_MANAGER);
      const slug = uniqueSlug('nm');
      await manager.createTenant(slug);
      expect((await getJson(`${base}/clients`, { 'x-tenant-slug': slug })).body).to.deep.equal({ slug, clients: [] });
    } finally {
      await app.close();
    }
    await expect(manager!.createTenant(uniqueSlug('nm'))).to.be.rejectedWith(ManagerDestroyedError);
  });
});
