import { expect } from 'chai';
import type { DataSource } from 'typeorm';
import type { PostgresDriver } from 'typeorm/driver/postgres/PostgresDriver';
import { Client, Plan } from '../../entities';
import { tenantContext, type TenantDataSourceManager } from '../../src';
import { adminQuery, createTenants, databaseUrl, openManager, sleep, uniqueSlug } from '../support/fixtures';

/** Connections the manager holds to the test database (its default application_name). */
async function managerConnections(): Promise<number> {
  const [row] = await adminQuery<{ n: number }>(
    "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'typeorm-tenants'",
  );
  return row!.n;
}

function masterOf(dataSource: DataSource): unknown {
  return (dataSource.driver as PostgresDriver).master;
}

async function settle(done: () => boolean, ticks = 50): Promise<void> {
  for (let i = 0; i < ticks && !done(); i += 1) await new Promise((resolve) => setImmediate(resolve));
}

describe('Shared pool: connections bounded by the pool size, whatever the tenant count', () => {
  it('100 tenants, 100 concurrent runs, poolSize 5: never more than 5 connections', async function () {
    this.timeout(180_000);
    const manager = await openManager({ dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 5 } });
    const slugs = await createTenants(manager, 100, 'pool');
    expect(await managerConnections(), 'after provisioning 100 tenants').to.be.at.most(5);

    let loadDone = false;
    const samples: number[] = [];
    const poolTotals: number[] = [];
    const sampler = (async () => {
      while (!loadDone) {
        samples.push(await managerConnections());
        poolTotals.push(manager.stats().pool.total);
        await sleep(5);
      }
    })();

    const load = Promise.allSettled(
      slugs.map((slug) =>
        manager.run(slug, async () => {
          await tenantContext.query('SELECT pg_sleep(0.02)');
          const clients = await tenantContext.getRepository(Client).find();
          return { slug: tenantContext.current()?.slug, clients: clients.length };
        }),
      ),
    );
    const results = await load.finally(() => {
      loadDone = true;
    });
    await sampler;
    samples.push(await managerConnections());
    poolTotals.push(manager.stats().pool.total);

    const failed = results.filter((r) => r.status === 'rejected');
    expect(failed.map((r) => String((r as PromiseRejectedResult).reason)), 'every run succeeded').to.deep.equal([]);
    expect(results.map((r) => (r as PromiseFulfilledResult<{ slug: string | undefined; clients: number }>).value)).to.deep.equal(
      slugs.map((slug) => ({ slug, clients: 0 })),
    );

    expect(samples.length, 'pg_stat_activity was sampled during the load').to.be.at.least(3);
    const maxSampled = Math.max(...samples);
    expect(maxSampled, 'the sampling sees the manager\'s connections').to.be.at.least(1);
    expect(maxSampled, `connections seen in pg_stat_activity (samples: ${samples.join(',')})`).to.be.at.most(5);
    expect(Math.max(...poolTotals), 'stats().pool.total during the load').to.be.at.most(5);
    const stats = manager.stats();
    expect(stats.pool.total).to.be.at.most(5);
    expect(stats.pool.max).to.equal(5);
    expect(stats.cachedDataSources, 'one DataSource per tenant, all on the one pool').to.equal(100);
  });

  it('every tenant DataSource uses the one shared pool, and closing one (dropTenant) does not end it', async () => {
    const manager = await openManager();
    const [a, b] = await createTenants(manager, 2, 'facade');
    const dsA = await manager.getDataSource(a!);
    const dsB = await manager.getDataSource(b!);
    expect(dsA).to.not.equal(dsB);
    expect(masterOf(dsA), 'driver.master of a tenant DataSource').to.not.equal(undefined);
    expect(masterOf(dsA), 'tenants a and b share the pool').to.equal(masterOf(dsB));
    expect(masterOf(dsA), 'the shared DataSource uses it too').to.equal(masterOf(manager.sharedDataSource));

    await manager.run(b!, () => tenantContext.getRepository(Client).save({ name: 'B', email: 'b@b.test' }));
    await manager.dropTenant(a!, { force: true });
    await settle(() => !dsA.isInitialized);
    expect(dsA.isInitialized, 'the dropped tenant\'s DataSource is closed').to.equal(false);

    // The pool every other DataSource uses is still open.
    expect(await manager.run(b!, () => tenantContext.getRepository(Client).count())).to.equal(1);
    expect(await manager.run(b!, () => tenantContext.query('SELECT 1 AS one'))).to.deep.equal([{ one: 1 }]);
    const code = uniqueSlug('plan');
    await manager.sharedDataSource.getRepository(Plan).save({ code, name: 'After drop', monthlyPriceCents: 5 });
    expect(await adminQuery('SELECT 1 FROM public.plan WHERE code = $1', [code])).to.have.length(1);
    const c = uniqueSlug('facade');
    await manager.createTenant(c);
    expect(await manager.run(c, () => tenantContext.getRepository(Client).count())).to.equal(0);
    expect(masterOf(await manager.getDataSource(c)), 'a DataSource built after the drop uses the same pool').to.equal(masterOf(dsB));
  });

  it('eviction closes a tenant DataSource but not the shared pool', async () => {
    const manager = await openManager({ maxDataSources: 1 });
    const [a, b] = await createTenants(manager, 2, 'evict');
    await manager.run(a!, () => tenantContext.getRepository(Client).save({ name: 'A', email: 'a@a.test' }));
    const dsA = await manager.getDataSource(a!);
    const dsB = await manager.getDataSource(b!); // evicts a
    expect(manager.stats().evictions).to.be.at.least(1);
    expect(manager.stats().cachedDataSources).to.equal(1);
    await settle(() => !dsA.isInitialized);
    expect(dsA.isInitialized, 'the evicted DataSource is closed').to.equal(false);
    expect(dsB.isInitialized).to.equal(true);
    expect(masterOf(dsB)).to.equal(masterOf(manager.sharedDataSource));

    // Every later query still gets a connection from the pool.
    expect(await manager.run(b!, () => tenantContext.getRepository(Client).count())).to.equal(0);
    expect(await manager.run(a!, () => tenantContext.getRepository(Client).count()), 'a, rebuilt').to.equal(1);
    expect(await manager.listTenants()).to.have.length.at.least(2);
    expect(manager.stats().pool.total).to.be.at.least(1);
  });
});
