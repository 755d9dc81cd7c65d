import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Client } from '../../entities';
import { tenantMigrations } from '../../migrations';
import { TenantMigrationPendingError, fromHeader, tenantContext } from '../../src';
import { tenantMiddleware } from '../../src/http/express';
import { closeServer, listen } from '../http/http-support';
import { AddClientPhone1700000000003 } from '../support/extra-migrations';
import { openManager, uniqueSlug } from '../support/fixtures';

/**
 * pendingMigrations: new code reaching a tenant before its migration. Two
 * managers on one registry stand for the old code and the new one.
 */
describe('pendingMigrations: serving tenants whose migrations have not run yet', () => {
  const registryTable = `pm_${randomBytes(3).toString('hex')}`;
  const newCode = [...tenantMigrations, AddClientPhone1700000000003];
  const countClients = (): Promise<number> => tenantContext.getRepository(Client).count();

  async function tenantOfOldCode(): Promise<string> {
    const old = await openManager({ registryTable });
    const slug = uniqueSlug('pm');
    await old.createTenant(slug);
    await old.destroy();
    return slug;
  }

  it("'refuse': run() and getDataSource() throw TenantMigrationPendingError until the tenant is migrated, then serve at once", async () => {
    const slug = await tenantOfOldCode();
    const manager = await openManager({ registryTable, tenantMigrations: newCode, pendingMigrations: 'refuse' });
    const error = await manager.run(slug, countClients).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).to.be.instanceOf(TenantMigrationPendingError);
    expect(error).to.include({ code: 'TENANT_MIGRATION_PENDING', statusCode: 503, slug, retryAfterSeconds: 5 });
    await expect(manager.getDataSource(slug)).to.be.rejectedWith(TenantMigrationPendingError);
    // Refused again from the cached record, still pending.
    await expect(manager.run(slug, countClients)).to.be.rejectedWith(TenantMigrationPendingError);
    const report = await manager.migrateTenants({ tenants: [slug] });
    expect(report.results.map((r) => r.status)).to.deep.equal(['migrated']);
    expect(await manager.run(slug, countClients)).to.equal(0);
    // A tenant created by the new code has everything: served.
    const fresh = uniqueSlug('pm');
    await manager.createTenant(fresh);
    expect(await manager.run(fresh, countClients)).to.equal(0);
  });

  it("'warn' serves with one TenancyMigrationWarning per tenant; 'serve' (default) serves silently; a tenant ahead of the code is served under 'refuse'", async () => {
    const slug = await tenantOfOldCode();
    const warnings: string[] = [];
    const listener = (warning: Error): void => {
      if (warning.name === 'TenancyMigrationWarning') warnings.push(warning.message);
    };
    process.on('warning', listener);
    try {
      const warn = await openManager({ registryTable, tenantMigrations: newCode, pendingMigrations: 'warn' });
      expect(await warn.run(slug, countClients)).to.equal(0);
      expect(await warn.run(slug, countClients)).to.equal(0);
      const serve = await openManager({ registryTable, tenantMigrations: newCode });
      expect(await serve.run(slug, countClients)).to.equal(0);
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings).to.have.length(1);
      expect(warnings[0]).to.contain(`"${slug}"`).and.contain('pending');
    } finally {
      process.off('warning', listener);
    }
    // Migrated by the new code, then served by code that does not know the last migration: ahead of the code, served.
    const upgraded = await openManager({ registryTable, tenantMigrations: newCode });
    await upgraded.migrateTenants({ tenants: [slug] });
    const older = await openManager({ registryTable, tenantMigrations, pendingMigrations: 'refuse' });
    expect(await older.run(slug, countClients)).to.equal(0);
  });

  it("over HTTP: 503 TENANT_MIGRATION_PENDING with Retry-After", async () => {
    const slug = await tenantOfOldCode();
    const manager = await openManager({ registryTable, tenantMigrations: newCode, pendingMigrations: 'refuse', tenantRecordTtlMs: 30_000 });
    const middleware = tenantMiddleware(manager, { resolve: fromHeader() });
    const server = createServer((req, res) => {
      middleware(req, res, (error?: unknown) => {
        if (error !== undefined) {
          res.statusCode = 500;
          res.end(String(error));
          return;
        }
        void countClients().then((n) => res.end(JSON.stringify({ n })));
      });
    });
    const base = await listen(server);
    try {
      const response = await fetch(`${base}/clients`, { headers: { 'x-tenant-slug': slug } });
      expect(response.status).to.equal(503);
      expect(response.headers.get('retry-after')).to.equal('30');
      expect(((await response.json()) as { error: { code: string } }).error.code).to.equal('TENANT_MIGRATION_PENDING');
      await manager.migrateTenants({ tenants: [slug] });
      const served = await fetch(`${base}/clients`, { headers: { 'x-tenant-slug': slug } });
      expect(served.status).to.equal(200);
      expect(await served.json()).to.deep.equal({ n: 0 });
    } finally {
      middleware.close();
      await closeServer(server);
    }
  });
});
