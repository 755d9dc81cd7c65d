import { Controller, Get, Module, type Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { Client } from '../../entities';
import { DatabaseUnreachableError, ManagerDestroyedError, ManagerNotInitializedError, fromHeader, tenantContext, type TenantDataSourceManager } from '../../src';
import { TENANCY_MANAGER, TenancyModule, type TenancyModuleOptions } from '../../src/http/nestjs';
import { databaseUrl, managerOptions, openManager, uniqueSlug } from '../support/fixtures';
import { freePort } from '../../support/free-port';
import { getJson } from './http-support';
import { apps, connectionsOf, platforms } from './nestjs-support';

@Controller('clients')
class ClientsController {
  @Get()
  async list(): Promise<unknown> {
    return { slug: tenantContext.current()?.slug ?? null, count: await tenantContext.getRepository(Client).count() };
  }
}

function appModule(options: TenancyModuleOptions): Type {
  @Module({ imports: [TenancyModule.forRoot(options)], controllers: [ClientsController] })
  class AppModule {}
  return AppModule;
}

/** managerOptions whose connections carry a name of their own, to count them in pg_stat_activity. */
function markedManagerOptions(): { options: TenancyModuleOptions['managerOptions']; marker: string } {
  const marker = `tt-nest-${randomBytes(4).toString('hex')}`;
  const base = managerOptions();
  return { marker, options: { ...base, dataSource: { ...base.dataSource!, applicationName: marker } } };
}

for (const platform of platforms) {
  describe(`NestJS TenancyModule lifecycle on ${platform.name}`, function () {
    this.timeout(60_000);
    const started = apps();

    it('a manager the module creates: no connection before app init, initialised on module init, destroyed by app.close() (its connections leave pg_stat_activity)', async () => {
      const { options, marker } = markedManagerOptions();
      const app = started.track(await NestFactory.create(appModule({ managerOptions: options, resolve: fromHeader() }), platform.adapter() as never, { logger: false }));
      const manager = app.get<TenantDataSourceManager>(TENANCY_MANAGER);
      expect(await connectionsOf(marker)).to.equal(0);
      await expect(manager.listTenants()).to.be.rejectedWith(ManagerNotInitializedError);

      await app.listen(0, '127.0.0.1');
      const base = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
      const slug = uniqueSlug('lc');
      await manager.createTenant(slug);
      expect((await getJson(`${base}/clients`, { 'x-tenant-slug': slug })).body).to.deep.equal({ slug, count: 0 });
      expect(await connectionsOf(marker)).to.be.greaterThan(0);

      await manager.dropTenant(slug, { force: true });
      await app.close();
      expect(await connectionsOf(marker, 0)).to.equal(0);
      await expect(manager.listTenants()).to.be.rejectedWith(ManagerDestroyedError);
    });

    it('a second init of a closed app opens nothing again: after close, app.init() leaves the manager destroyed; an app closed before its init refuses init with ManagerDestroyedError', async () => {
      const { options, marker } = markedManagerOptions();
      const app = await NestFactory.create(appModule({ managerOptions: options, resolve: fromHeader() }), platform.adapter() as never, { logger: false });
      await app.init();
      const manager = app.get<TenantDataSourceManager>(TENANCY_MANAGER);
      expect(await manager.listTenants()).to.be.an('array');
      await app.close();
      await app.init();
      await expect(manager.listTenants()).to.be.rejectedWith(ManagerDestroyedError);
      expect(await connectionsOf(marker, 0)).to.equal(0);

      const other = markedManagerOptions();
      const neverStarted = await NestFactory.create(appModule({ managerOptions: other.options, resolve: fromHeader() }), platform.adapter() as never, { logger: false });
      await neverStarted.close();
      const refused = await neverStarted.init().then(
        () => undefined,
        (error: unknown) => error,
      );
      // Fastify refuses a closed instance itself, before the module's hook runs.
      if (platform.name === 'Express') expect(refused).to.be.instanceOf(ManagerDestroyedError).with.property('message').that.matches(/initialize\(\) cannot run: this TenantDataSourceManager was destroyed/);
      else expect(refused).to.be.instanceOf(Error);
      expect(await connectionsOf(other.marker)).to.equal(0);
    });

    it('a manager you pass is neither initialised nor destroyed by the module: it serves on after app.close()', async () => {
      const manager = await openManager();
      const slug = uniqueSlug('own');
      await manager.createTenant(slug);
      const { app, base } = await started.start(appModule({ manager, resolve: fromHeader() }), platform);
      expect(app.get(TENANCY_MANAGER)).to.equal(manager);
      expect((await getJson(`${base}/clients`, { 'x-tenant-slug': slug })).body).to.deep.equal({ slug, count: 0 });
      await app.close();
      expect(await manager.run(slug, () => tenantContext.getRepository(Client).count())).to.equal(0);
      expect(manager.stats().pool.total).to.be.greaterThan(0);
    });

    it('a manager that cannot connect fails the app\'s init (the error names the target), and app.close() after it resolves', async () => {
      const url = new URL(databaseUrl());
      url.port = String(await freePort());
      const base = managerOptions();
      const app = await NestFactory.create(
        appModule({ managerOptions: { ...base, dataSource: { ...base.dataSource!, url: url.toString(), connectTimeoutMS: 2_000 } }, resolve: fromHeader() }),
        platform.adapter() as never,
        { logger: false },
      );
      const failure = await app.init().then(
        () => undefined,
        (error: unknown) => error as Error,
      );
      expect(failure, 'init should have failed').to.be.instanceOf(DatabaseUnreachableError);
      expect(failure!.message).to.contain(`${url.hostname}:${url.port}`);
      await app.close();
    });
  });
}

describe('NestJS TenancyModule with app.enableShutdownHooks()', function () {
  this.timeout(60_000);

  it('SIGTERM destroys the manager the module created: its pool is closed before the process exits, its connections leave pg_stat_activity', async () => {
    const marker = `tt-nest-sig-${randomBytes(4).toString('hex')}`;
    const build = resolve(__dirname, '../..');
    // A service's main.ts, on the compiled library: the manager from managerOptions, shutdown hooks on.
    const script = `
      require('reflect-metadata');
      const { Module } = require('@nestjs/common');
      const { NestFactory } = require('@nestjs/core');
      const { TenancyModule, TENANCY_MANAGER, fromHeader } = require(${JSON.stringify(`${build}/src/http/nestjs.js`)});
      const { Client, Plan, Project } = require(${JSON.stringify(`${build}/entities/index.js`)});
      const { tenantMigrations, sharedMigrations } = require(${JSON.stringify(`${build}/migrations/index.js`)});
      class AppModule {}
      Reflect.decorate([Module({ imports: [TenancyModule.forRoot({
        managerOptions: { dataSource: { type: 'postgres', url: process.env.TEST_DATABASE_URL, applicationName: ${JSON.stringify(marker)}, poolSize: 3 },
          entities: [Client, Project, Plan], tenantMigrations, sharedMigrations },
        resolve: fromHeader(),
      })] })], AppModule);
      (async () => {
        const app = await NestFactory.create(AppModule, { logger: false });
        app.enableShutdownHooks();
        await app.listen(0, '127.0.0.1');
        const manager = app.get(TENANCY_MANAGER);
        // Seen from outside: the module's destroy() call and what is left of the pool after it (written before Nest re-raises the signal).
        const destroy = manager.destroy.bind(manager);
        manager.destroy = async () => {
          await destroy();
          require('node:fs').writeSync(1, 'destroyed ' + JSON.stringify({ poolTotal: manager.stats().pool.total }) + '\\n');
        };
        await manager.listTenants();
        console.log('ready ' + JSON.stringify({ poolTotal: manager.stats().pool.total }));
      })().catch((error) => { console.error(error); process.exit(1); });
    `;
    const child = spawn(process.execPath, ['-e', script], {
      cwd: resolve(build, '..'),
      env: { ...process.env, TEST_DATABASE_URL: databaseUrl() },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => child.on('close', (code, signal) => done({ code, signal })));
    try {
      for (let i = 0; i < 600 && !stdout.includes('ready'); i += 1) {
        if (child.exitCode !== null) break;
        await new Promise((r) => setTimeout(r, 25));
      }
      expect(stdout, stderr).to.match(/ready \{"poolTotal":[1-9]/);
      expect(await connectionsOf(marker)).to.be.greaterThan(0);
      child.kill('SIGTERM');
      const { signal } = await exited;
      // Nest runs the shutdown hooks, then re-raises the signal.
      expect(signal, stderr).to.equal('SIGTERM');
      expect(stdout, stderr).to.contain('destroyed {"poolTotal":0}');
      expect(await connectionsOf(marker, 0)).to.equal(0);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
});
