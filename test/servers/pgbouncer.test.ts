import { expect } from 'chai';
import { Client } from '../../entities';
import { TenantDataSourceManager, tenantContext } from '../../src';
import { PgBouncerMissingError, startPgBouncer, type RunningPgBouncer } from '../../support/pgbouncer';
import { AddClientPhone1700000000003 } from '../support/extra-migrations';
import { serverOptions, withTwoServers, useSecondServer } from '../support/second-server';
import { tenantMigrations } from '../../migrations';

/**
 * Two servers, the second behind a real PgBouncer in transaction pooling
 * (server pool of 3): placement, isolation, the fleet, the lifecycle and
 * moves in both directions all go through the pooler for that server's
 * tenants, and every row is where it belongs when each server is read
 * directly.
 */
describe('several servers, one behind PgBouncer (transaction pooling)', function () {
  this.timeout(180_000);
  const second = useSecondServer();

  it('tenants on the pooled server are created, served, migrated, archived, restored, moved and dropped through it, each row on its own server', async function () {
    const test = this;
    await withTwoServers(second, async ({ a, b, options }) => {
      let bouncer: RunningPgBouncer | undefined;
      try {
        bouncer = await startPgBouncer(b.url, { poolSize: 3, poolMode: 'transaction' });
      } catch (error) {
        if (error instanceof PgBouncerMissingError && process.env.CI !== 'true') {
          console.log(`  (${error.message} Without it this test is not run here; CI runs it.)`);
          test.skip();
        }
        throw error;
      }
      const base = options({ servers: { a: serverOptions(a.url), b: serverOptions(bouncer.url, 8) } });
      const tenants = new TenantDataSourceManager(base);
      let newer: TenantDataSourceManager | undefined;
      try {
        await tenants.initialize();
        const slugs = ['pa-1', 'pa-2', 'pb-1', 'pb-2', 'pb-3'];
        await Promise.all(slugs.map((slug) => tenants.createTenant(slug, { server: slug.startsWith('pa') ? 'a' : 'b' })));
        // Concurrent writes through both servers, 20 rows per tenant.
        await Promise.all(
          slugs.flatMap((slug) =>
            Array.from({ length: 20 }, (_, i) =>
              tenants.run(slug, () => tenantContext.getRepository(Client).insert({ name: `${slug}-${i}`, email: `${i}@${slug}.test` })),
            ),
          ),
        );
        for (const slug of slugs) {
          const schema = slug.replace(/-/g, '_');
          const [here, there] = slug.startsWith('pa') ? [a, b] : [b, a];
          const rows = await here.query<{ email: string }>(`SELECT email FROM "${schema}".client ORDER BY id`);
          expect(rows.map((r) => r.email).sort(), slug).to.deep.equal(Array.from({ length: 20 }, (_, i) => `${i}@${slug}.test`).sort());
          expect(await there.hasSchema(schema), `${slug} on the other server`).to.equal(false);
        }
        // PgBouncer kept to its 3 server connections while the manager had 8 client connections.
        expect(await bouncer.serverConnections()).to.be.at.most(3);

        // The fleet through the pooler: a new migration reaches every tenant of both servers.
        await tenants.destroy();
        newer = new TenantDataSourceManager({ ...base, tenantMigrations: [...tenantMigrations, AddClientPhone1700000000003] });
        await newer.initialize();
        const report = await newer.migrateTenants({ concurrency: 2 });
        expect(report.totals).to.include({ tenants: 5, migrated: 5, failed: 0 });
        for (const slug of slugs) {
          const here = slug.startsWith('pa') ? a : b;
          const columns = await here.query<{ column_name: string }>(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'client' AND column_name = 'phone'",
            [slug.replace(/-/g, '_')],
          );
          expect(columns, slug).to.have.length(1);
        }
        expect((await newer.migrationStatus()).every((s) => s.pending.length === 0)).to.equal(true);

        // Lifecycle of a pooled tenant.
        await newer.archiveTenant('pb-1');
        expect(await b.hasSchema('pb_1')).to.equal(false);
        await newer.restoreTenant('pb-1');
        expect(await newer.run('pb-1', () => tenantContext.getRepository(Client).count())).to.equal(20);

        // Moves in both directions through the pooler.
        const toA = await newer.moveTenant('pb-2', { server: 'a' });
        expect(toA).to.include({ moved: true, from: 'b', to: 'a', rows: '20' });
        expect(await a.query('SELECT count(*)::int AS n FROM pb_2.client')).to.deep.equal([{ n: 20 }]);
        expect(await b.hasSchema('pb_2')).to.equal(false);
        const toB = await newer.moveTenant('pa-1', { server: 'b' });
        expect(toB).to.include({ moved: true, from: 'a', to: 'b', rows: '20' });
        expect(await b.query('SELECT count(*)::int AS n FROM pa_1.client')).to.deep.equal([{ n: 20 }]);
        expect(await a.hasSchema('pa_1')).to.equal(false);
        await newer.run('pa-1', () => tenantContext.getRepository(Client).insert({ name: 'after', email: 'after@pa-1.test' }));
        expect(await b.query("SELECT count(*)::int AS n FROM pa_1.client WHERE email = 'after@pa-1.test'")).to.deep.equal([{ n: 1 }]);

        // Fan-out over both servers, through the pooler for b.
        const { rows } = await newer.queryAcrossTenants<{ tenant: string; db: string }>('SELECT current_database() AS db');
        expect(Object.fromEntries(rows.map((r) => [r.tenant, r.db]))).to.deep.equal({
          'pa-1': b.name,
          'pa-2': a.name,
          'pb-1': b.name,
          'pb-2': a.name,
          'pb-3': b.name,
        });

        await newer.dropTenant('pb-3', { force: true });
        expect(await b.hasSchema('pb_3')).to.equal(false);
        expect(await newer.getTenant('pb-3')).to.equal(undefined);
        expect(await bouncer.serverConnections()).to.be.at.most(3);
      } finally {
        await newer?.destroy();
        await tenants.destroy();
        await bouncer.stop();
      }
    });
  });
});
