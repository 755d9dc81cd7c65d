import { expect } from 'chai';
import { tenantContext, type TenantDataSourceManager } from '../../src';
import { serverOptions, withTwoServers, useSecondServer } from '../support/second-server';

const PER_SERVER = 100;
const POOL_A = 4;
const POOL_B = 6;

/** Creates `slugs` on `server`, `concurrency` at a time. */
async function createOn(tenants: TenantDataSourceManager, slugs: readonly string[], server: string, concurrency: number): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < slugs.length) {
      const slug = slugs[next++]!;
      await tenants.createTenant(slug, { server });
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

describe('servers: one pool per server', function () {
  this.timeout(90_000);
  const second = useSecondServer();

  it(`${2 * PER_SERVER} tenants on two servers queried all at once: each server's connections to its database never exceed its own poolSize (${POOL_A} and ${POOL_B}); stats().servers says the same`, async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open({ servers: { a: serverOptions(a.url, POOL_A), b: serverOptions(b.url, POOL_B) } });
      const onA = Array.from({ length: PER_SERVER }, (_, i) => `ca-${i}`);
      const onB = Array.from({ length: PER_SERVER }, (_, i) => `cb-${i}`);
      await Promise.all([createOn(tenants, onA, 'a', 2), createOn(tenants, onB, 'b', 2)]);
      const counts = await a.query<{ server: string | null; n: number }>('SELECT server, count(*)::int AS n FROM public.tenants GROUP BY 1 ORDER BY 1');
      expect(counts).to.deep.equal([
        { server: 'b', n: PER_SERVER },
        { server: null, n: PER_SERVER },
      ]);
      expect(await b.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_namespace WHERE nspname LIKE 'cb\\_%'")).to.deep.equal([{ n: PER_SERVER }]);
      expect(await a.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_namespace WHERE nspname LIKE 'cb\\_%'")).to.deep.equal([{ n: 0 }]);

      const most = { a: 0, b: 0, statsA: 0, statsB: 0, waiting: 0 };
      let done = false;
      const sample = async (): Promise<void> => {
        while (!done) {
          const [na, nb] = await Promise.all([a.connections(), b.connections()]);
          most.a = Math.max(most.a, na);
          most.b = Math.max(most.b, nb);
          const stats = tenants.stats();
          most.statsA = Math.max(most.statsA, stats.servers.a!.total);
          most.statsB = Math.max(most.statsB, stats.servers.b!.total);
          most.waiting = Math.max(most.waiting, stats.servers.a!.waiting + stats.servers.b!.waiting);
        }
      };
      const sampling = sample();
      let answers: string[];
      try {
        answers = await Promise.all(
          [...onA, ...onB].map((slug) =>
            tenants.run(slug, async () => {
              const [row] = await tenantContext.query<Array<{ db: string }>>('SELECT current_database() AS db, pg_sleep(0.02)');
              return row!.db;
            }),
          ),
        );
      } finally {
        done = true;
        await sampling;
      }
      expect(answers.slice(0, PER_SERVER).every((db) => db === a.name), 'tenants of a answer from a').to.equal(true);
      expect(answers.slice(PER_SERVER).every((db) => db === b.name), 'tenants of b answer from b').to.equal(true);
      expect(most.a, 'connections to a').to.be.at.most(POOL_A);
      expect(most.b, 'connections to b').to.be.at.most(POOL_B);
      // Both pools were really used to the full at once, not one after the other.
      expect(most.a, 'connections to a').to.equal(POOL_A);
      expect(most.b, 'connections to b').to.equal(POOL_B);
      expect(most.statsA).to.equal(POOL_A);
      expect(most.statsB).to.equal(POOL_B);
      expect(most.waiting).to.be.greaterThan(0);
      const stats = tenants.stats();
      expect(Object.keys(stats.servers)).to.deep.equal(['a', 'b']);
      expect(stats.servers.a).to.include({ max: POOL_A, waiting: 0 });
      expect(stats.servers.b).to.include({ max: POOL_B, waiting: 0 });
      expect(stats.pool).to.include({ max: POOL_A + POOL_B, total: stats.servers.a!.total + stats.servers.b!.total, idle: stats.servers.a!.idle + stats.servers.b!.idle });
      expect(stats.cachedDataSources).to.equal(2 * PER_SERVER);
    });
  });

  it('a warm pool keeps spares on each server, and a tenant created on b claims one of b\'s spares (a\'s are untouched)', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open({ warmPool: { size: 2 } });
      await tenants.refillWarmPool();
      expect(await tenants.warmPoolStatus()).to.deep.equal({ total: 4, ready: 4, servers: { a: { total: 2, ready: 2 }, b: { total: 2, ready: 2 } } });
      const spares = async (server: typeof a): Promise<string[]> =>
        (await server.query<{ name: string }>("SELECT nspname AS name FROM pg_namespace WHERE nspname LIKE 'typeorm\\_tenants\\_warm\\_%' ORDER BY 1")).map((r) => r.name);
      const [onA, onB] = [await spares(a), await spares(b)];
      expect([onA.length, onB.length]).to.deep.equal([2, 2]);
      expect(await a.query('SELECT schema_name FROM public.tenants_warm ORDER BY 1')).to.deep.equal(onA.map((schema_name) => ({ schema_name })));
      expect(await b.query('SELECT schema_name FROM public.tenants_warm ORDER BY 1')).to.deep.equal(onB.map((schema_name) => ({ schema_name })));

      await tenants.createTenant('warm-b', { server: 'b' });
      const leftOnB = await spares(b);
      expect(onB.filter((schema) => !leftOnB.includes(schema)), 'one of b\'s spares was claimed').to.have.length(1);
      expect(await spares(a)).to.deep.equal(onA);
      expect(await b.tablesOf('warm_b')).to.deep.equal(['client', 'migrations', 'project']);
      expect(await a.hasSchema('warm_b')).to.equal(false);
      await tenants.refillWarmPool();
      expect((await tenants.warmPoolStatus()).servers).to.deep.equal({ a: { total: 2, ready: 2 }, b: { total: 2, ready: 2 } });
      expect(await tenants.run('warm-b', () => tenantContext.query<Array<{ db: string }>>('SELECT current_database() AS db'))).to.deep.equal([{ db: b.name }]);
    });
  });
});
