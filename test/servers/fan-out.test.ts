import { expect } from 'chai';
import { Client } from '../../entities';
import { InvalidArgumentError, tenantContext, type TenantDataSourceManager } from '../../src';
import { withTwoServers, useSecondServer } from '../support/second-server';

const ON_A = ['fo-a1', 'fo-a2', 'fo-a3'];
const ON_B = ['fo-b1', 'fo-b2', 'fo-b3'];

/** Three tenants on each server, tenant number i holding i clients. */
async function fleet(tenants: TenantDataSourceManager): Promise<void> {
  for (const [server, slugs] of [['a', ON_A], ['b', ON_B]] as const) {
    for (const [i, slug] of slugs.entries()) {
      await tenants.createTenant(slug, { server });
      const rows = Array.from({ length: i + 1 }, (_, n) => ({ name: `${slug}-${n}`, email: `${n}@${slug}.test` }));
      await tenants.run(slug, () => tenantContext.getRepository(Client).insert(rows));
    }
  }
}

describe('servers: fan-out over tenants on two PostgreSQL servers', function () {
  this.timeout(60_000);
  const second = useSecondServer();

  it("queryAcrossTenants runs in each tenant on its own server (current_database() is its server's); where.server scopes it", async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await fleet(tenants);
      const all = await tenants.queryAcrossTenants<{ db: string; n: number }>('SELECT current_database() AS db, count(*)::int AS n FROM client');
      expect(all.failures).to.deep.equal([]);
      expect(all.rows).to.deep.equal([
        ...ON_A.map((tenant, i) => ({ tenant, db: a.name, n: i + 1 })),
        ...ON_B.map((tenant, i) => ({ tenant, db: b.name, n: i + 1 })),
      ]);
      const onA = await tenants.queryAcrossTenants<{ db: string }>('SELECT current_database() AS db', [], { where: { server: 'a' } });
      expect(onA.rows).to.deep.equal(ON_A.map((tenant) => ({ tenant, db: a.name })));
      expect(onA.totals).to.include({ tenants: 3, done: 3 });
      const onB = await tenants.queryAcrossTenants<{ db: string }>('SELECT current_database() AS db', [], { where: { server: ['b'] } });
      expect(onB.rows).to.deep.equal(ON_B.map((tenant) => ({ tenant, db: b.name })));
      const named = await tenants.queryAcrossTenants('SELECT current_database() AS db', [], { tenants: ['fo-a1', 'fo-b1'], where: { server: 'b' } });
      expect(named.rows).to.deep.equal([{ tenant: 'fo-b1', db: b.name }]);
      await expect(tenants.queryAcrossTenants('SELECT 1', [], { where: { server: 'c' } })).to.be.rejectedWith(InvalidArgumentError);
      const summed = await tenants.aggregateAcrossTenants('SELECT current_database() AS db, count(*) AS clients FROM client', [], {
        groupBy: ['db'],
        aggregates: { clients: 'sum' },
      });
      expect(summed.groups.map((g) => [g.db, String(g.clients)]).sort()).to.deep.equal(
        [
          [a.name, '6'],
          [b.name, '6'],
        ].sort(),
      );
    });
  });

  it('forEachTenant covers both servers and reports the tenants whose work failed, on either server; where.server scopes it', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await fleet(tenants);
      const report = await tenants.forEachTenant(async (tenant) => {
        if (tenant.slug === 'fo-a2' || tenant.slug === 'fo-b3') throw new Error(`refused for ${tenant.slug}`);
        // Fails in PostgreSQL, on b.
        if (tenant.slug === 'fo-b1') await tenantContext.query('SELECT * FROM no_such_table');
        const [row] = await tenantContext.query<Array<{ db: string }>>('SELECT current_database() AS db');
        return `${tenant.server}:${row!.db}`;
      });
      expect(report.results.map((r) => [r.slug, r.status, r.value ?? r.error?.message])).to.deep.equal([
        ['fo-a1', 'done', `a:${a.name}`],
        ['fo-a2', 'failed', 'refused for fo-a2'],
        ['fo-a3', 'done', `a:${a.name}`],
        ['fo-b1', 'failed', report.results[3]!.error?.message],
        ['fo-b2', 'done', `b:${b.name}`],
        ['fo-b3', 'failed', 'refused for fo-b3'],
      ]);
      expect(report.results[3]!.error?.code).to.equal('42P01');
      expect(report.totals).to.include({ tenants: 6, done: 3, failed: 3, skipped: 0 });
      const onB = await tenants.forEachTenant((tenant) => tenant.server, { where: { server: 'b' } });
      expect(onB.results.map((r) => [r.slug, r.value])).to.deep.equal(ON_B.map((slug) => [slug, 'b']));
    });
  });

  it('forEachTenant concurrency is per server: with concurrency 1, one tenant of each server at a time, the two side by side', async () => {
    await withTwoServers(second, async ({ open }) => {
      const tenants = await open();
      await fleet(tenants);
      const running: Record<string, number> = { a: 0, b: 0 };
      const most: Record<string, number> = { a: 0, b: 0 };
      let overall = 0;
      let mostOverall = 0;
      await tenants.forEachTenant(
        async (tenant) => {
          running[tenant.server]! += 1;
          overall += 1;
          most[tenant.server] = Math.max(most[tenant.server]!, running[tenant.server]!);
          mostOverall = Math.max(mostOverall, overall);
          try {
            await tenantContext.query('SELECT pg_sleep(0.3)');
          } finally {
            running[tenant.server]! -= 1;
            overall -= 1;
          }
        },
        { concurrency: 1 },
      );
      expect(most).to.deep.equal({ a: 1, b: 1 });
      expect(mostOverall).to.equal(2);
    });
  });
});
