import { Controller, Get, Injectable, Module, type CanActivate, type ExecutionContext, type INestApplication, type Type } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { APP_GUARD, NestFactory } from '@nestjs/core';
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { Client, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { fromHeader, tenantContext, type TenantDataSourceManager } from '../../src';
import { TENANCY_MANAGER, TenancyModule, type TenancyModuleOptions } from '../../src/http/nestjs';
import { databaseUrl, uniqueSlug } from '../support/fixtures';
import { expectError, getJson } from './http-support';
import { apps, createOtherDatabase, platforms, queryDatabase, startApp } from './nestjs-support';

@Controller('whoami')
class WhoamiController {
  @Get('free')
  free(): unknown {
    return { slug: tenantContext.current()?.slug ?? null };
  }

  @Get()
  async whoami(): Promise<unknown> {
    const [row] = await tenantContext.query<Array<{ db: string }>>('SELECT current_database() AS db');
    return { slug: tenantContext.current()?.slug ?? null, db: row!.db, clients: await tenantContext.getRepository(Client).count() };
  }
}

const ENV = 'TENANCY_TEST_DATABASE_URL';

/**
 * The app as a service writes it: one module class, options from
 * ConfigService at startup. ConfigService reads the environment when the
 * factory runs, so each app built from this class gets the URL set at its
 * start.
 */
@Module({
  imports: [
    ConfigModule.forRoot({ ignoreEnvFile: true }),
    TenancyModule.forRootAsync({
      imports: [ConfigModule],
      inject: [ConfigService],
      useFactory: (config: ConfigService): TenancyModuleOptions => ({
        managerOptions: {
          dataSource: { type: 'postgres', url: config.getOrThrow<string>(ENV), poolSize: 4 },
          entities: [Client, Project, Plan],
          tenantMigrations,
          sharedMigrations,
        },
        resolve: fromHeader(),
      }),
    }),
  ],
  controllers: [WhoamiController],
})
class ConfiguredAppModule {}

/** Sets `process.env[ENV]` while `fn` runs (the factories run inside NestFactory.create). */
async function withDatabaseUrl<T>(url: string, fn: () => Promise<T>): Promise<T> {
  const before = process.env[ENV];
  process.env[ENV] = url;
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env[ENV];
    else process.env[ENV] = before;
  }
}

/** Stands in for authentication: sets req.user from the X-Org header. */
@Injectable()
class OrgGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<{ headers: Record<string, string | undefined>; user?: { org: string } }>();
    const org = req.headers['x-org'];
    if (org !== undefined) req.user = { org };
    return true;
  }
}

function asyncModule(useFactory: (...args: any[]) => unknown, extra: { imports?: unknown[]; inject?: unknown[]; guard?: boolean } = {}): Type {
  @Module({
    imports: [TenancyModule.forRootAsync({ useFactory: useFactory as never, imports: extra.imports as never, inject: extra.inject as never })],
    controllers: [WhoamiController],
    providers: extra.guard === true ? [{ provide: APP_GUARD, useClass: OrgGuard }] : [],
  })
  class AsyncAppModule {}
  return AsyncAppModule;
}

for (const platform of platforms) {
  describe(`NestJS TenancyModule.forRootAsync on ${platform.name}`, function () {
    this.timeout(120_000);
    const started = apps();

    it('regression: a second app in the same process used the first app\'s database; with forRootAsync each app built from one module class uses its own (tenants checked in each database\'s catalog)', async () => {
      const other = await createOtherDatabase(`typeorm_tenants_nest_${randomBytes(4).toString('hex')}`);
      const opened: INestApplication[] = [];
      try {
        const first = await withDatabaseUrl(databaseUrl(), () => startApp(ConfiguredAppModule, platform));
        opened.push(first.app);
        const second = await withDatabaseUrl(other.url, () => startApp(ConfiguredAppModule, platform));
        opened.push(second.app);
        const [slugOfFirst, slugOfSecond] = [uniqueSlug('fa'), uniqueSlug('fb')];
        const firstManager = first.app.get<TenantDataSourceManager>(TENANCY_MANAGER);
        const secondManager = second.app.get<TenantDataSourceManager>(TENANCY_MANAGER);
        expect(firstManager).not.to.equal(secondManager);
        await firstManager.createTenant(slugOfFirst);
        await secondManager.createTenant(slugOfSecond);

        // Both apps serve at the same time, each from its own database.
        const firstDb = new URL(databaseUrl()).pathname.slice(1);
        const otherDb = new URL(other.url).pathname.slice(1);
        expect((await getJson(`${first.base}/whoami`, { 'x-tenant-slug': slugOfFirst })).body).to.deep.equal({ slug: slugOfFirst, db: firstDb, clients: 0 });
        expect((await getJson(`${second.base}/whoami`, { 'x-tenant-slug': slugOfSecond })).body).to.deep.equal({ slug: slugOfSecond, db: otherDb, clients: 0 });
        // Each app knows only its own tenants.
        expectError(await getJson(`${first.base}/whoami`, { 'x-tenant-slug': slugOfSecond }), 404, 'TENANT_NOT_FOUND');
        expectError(await getJson(`${second.base}/whoami`, { 'x-tenant-slug': slugOfFirst }), 404, 'TENANT_NOT_FOUND');

        // Physically: each tenant's schema and registry row exist in its app's database only.
        const schemas = [slugOfFirst, slugOfSecond].map((slug) => slug.replace(/-/g, '_'));
        const schemasIn = async (url: string): Promise<string[]> =>
          (await queryDatabase<{ nspname: string }>(url, 'SELECT nspname FROM pg_namespace WHERE nspname = ANY($1) ORDER BY 1', [schemas])).map((r) => r.nspname);
        const registryIn = async (url: string): Promise<string[]> =>
          (await queryDatabase<{ slug: string }>(url, 'SELECT slug FROM public.tenants WHERE slug = ANY($1) ORDER BY 1', [[slugOfFirst, slugOfSecond]])).map((r) => r.slug);
        expect(await schemasIn(databaseUrl())).to.deep.equal([schemas[0]]);
        expect(await schemasIn(other.url)).to.deep.equal([schemas[1]]);
        expect(await registryIn(databaseUrl())).to.deep.equal([slugOfFirst]);
        expect(await registryIn(other.url)).to.deep.equal([slugOfSecond]);
        await firstManager.dropTenant(slugOfFirst, { force: true });
      } finally {
        // Closed before the database is dropped, so no pool sees its connections killed.
        await Promise.all(opened.map((app) => app.close()));
        await other.drop();
      }
    });

    it('the factory gets what inject names from imports and may be async; its options decide exclude, the mode and the filter', async () => {
      const slug = uniqueSlug('fx');
      @Injectable()
      class TenancySettings {
        readonly url = databaseUrl();
        readonly header = 'x-org';
      }
      @Module({ providers: [TenancySettings], exports: [TenancySettings] })
      class SettingsModule {}
      let calls = 0;
      const managerOptionsOf = (settings: TenancySettings): TenancyModuleOptions['managerOptions'] => ({
        dataSource: { type: 'postgres', url: settings.url, poolSize: 2 },
        entities: [Client, Project, Plan],
        tenantMigrations,
        sharedMigrations,
      });
      const inMiddlewareMode = asyncModule(
        async (settings: TenancySettings): Promise<TenancyModuleOptions> => {
          calls += 1;
          await new Promise((resolve) => setTimeout(resolve, 5));
          return { managerOptions: managerOptionsOf(settings), resolve: fromHeader(settings.header), exclude: ['whoami/free'] };
        },
        { imports: [SettingsModule], inject: [TenancySettings] },
      );
      const first = await started.start(inMiddlewareMode, platform);
      expect(calls).to.equal(1);
      await first.app.get<TenantDataSourceManager>(TENANCY_MANAGER).createTenant(slug);
      expect((await getJson(`${first.base}/whoami`, { 'x-org': slug })).body).to.include({ slug, clients: 0 });
      // The header the factory chose, not the default one; the excluded route is tenant-free.
      expectError(await getJson(`${first.base}/whoami`, { 'x-tenant-slug': slug }), 400, 'TENANT_REQUIRED');
      expect((await getJson(`${first.base}/whoami/free`)).body).to.deep.equal({ slug: null });

      // Interceptor mode from the factory: the resolver sees what a guard set; without the filter a refusal gets Nest's own body.
      const inInterceptorMode = asyncModule(
        (settings: TenancySettings): TenancyModuleOptions<{ user?: { org: string } }> => ({
          managerOptions: managerOptionsOf(settings),
          mode: 'interceptor',
          exceptionFilter: false,
          resolve: (req) => req.user?.org,
        }),
        { imports: [SettingsModule], inject: [TenancySettings], guard: true },
      );
      const second = await started.start(inInterceptorMode, platform);
      expect((await getJson(`${second.base}/whoami`, { 'x-org': slug })).body).to.include({ slug, clients: 0 });
      const refused = await getJson(`${second.base}/whoami`);
      expect(refused.status).to.equal(400);
      expect(refused.body).to.have.property('statusCode', 400);
      expect(refused.body).not.to.have.property('error');
    });

    it('a factory that returns options that cannot work fails the app\'s startup with a TypeError that says what to fix', async () => {
      const both = asyncModule(() => ({ manager: {} as never, managerOptions: {} as never, resolve: fromHeader() }));
      await expect(NestFactory.create(both, platform.adapter() as never, { logger: false, abortOnError: false })).to.be.rejectedWith(
        TypeError,
        /useFactory of TenancyModule\.forRootAsync\(\) needs exactly one of "manager".*"managerOptions"/,
      );
      const excludeInInterceptorMode = asyncModule(async () => ({
        managerOptions: { dataSource: { type: 'postgres' as const, url: databaseUrl() }, entities: [Client, Project, Plan] },
        resolve: fromHeader(),
        mode: 'interceptor' as const,
        exclude: ['health'],
      }));
      await expect(NestFactory.create(excludeInInterceptorMode, platform.adapter() as never, { logger: false, abortOnError: false })).to.be.rejectedWith(
        TypeError,
        /"exclude" applies to mode 'middleware' only.*@TenantFree\(\)/,
      );
      expect(() => TenancyModule.forRootAsync({} as never)).to.throw(TypeError, /needs \{ useFactory \}/);
      expect(() => TenancyModule.forRoot({ manager: {} as never, resolve: fromHeader(), mode: 'guard' as never })).to.throw(TypeError, /"mode" must be one of 'middleware', 'interceptor', 'manual'/);
    });
  });
}
