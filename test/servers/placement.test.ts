import { expect } from 'chai';
import { Client } from '../../entities';
import { InvalidArgumentError, TenancyConfigurationError, TenantAlreadyExistsError, tenantContext } from '../../src';
import type { TenantPlacementContext } from '../../src/manager/manager-options';
import { serverOptions, withTwoServers, type ServerDatabase, useSecondServer } from '../support/second-server';

/** Where a schema is, looked up in both servers' catalogs. */
async function whereIs(a: ServerDatabase, b: ServerDatabase, schema: string): Promise<string[]> {
  return [(await a.hasSchema(schema)) ? 'a' : undefined, (await b.hasSchema(schema)) ? 'b' : undefined].filter((s): s is string => s !== undefined);
}

describe('servers: placement of tenants on two PostgreSQL servers', function () {
  this.timeout(60_000);
  const second = useSecondServer();

  it('default placement fills the server with the fewest tenants (the first on a tie); explicit { server } wins; the schema is on that server only', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      const placed: string[] = [];
      for (const slug of ['p1', 'p2', 'p3', 'p4']) placed.push((await tenants.createTenant(slug)).server);
      expect(placed).to.deep.equal(['a', 'b', 'a', 'b']);
      // a: p1 p3 x1 x2, b: p2 p4: the next two go to b, then the tie goes to a.
      expect((await tenants.createTenant('x1', { server: 'a' })).server).to.equal('a');
      expect((await tenants.createTenant('x2', { server: 'a' })).server).to.equal('a');
      for (const slug of ['p5', 'p6', 'p7']) placed.push((await tenants.createTenant(slug)).server);
      expect(placed.slice(4)).to.deep.equal(['b', 'b', 'a']);
      const expected: Record<string, string> = { p1: 'a', p2: 'b', p3: 'a', p4: 'b', x1: 'a', x2: 'a', p5: 'b', p6: 'b', p7: 'a' };
      for (const [slug, server] of Object.entries(expected)) {
        expect(await whereIs(a, b, slug), slug).to.deep.equal([server]);
        expect(await a.tablesOf(slug).then((t) => t.length > 0), slug).to.equal(server === 'a');
        expect(await b.tablesOf(slug), slug).to.include.members(server === 'b' ? ['client', 'project', 'migrations'] : []);
      }
      expect((await tenants.listTenants()).map((r) => [r.slug, r.server])).to.deep.equal(Object.entries(expected).sort(([x], [y]) => (x < y ? -1 : 1)));
      expect((await tenants.getTenant('p2'))?.server).to.equal('b');
      expect((await tenants.listTenants({ where: { server: 'b' } })).map((r) => r.slug)).to.deep.equal(['p2', 'p4', 'p5', 'p6']);
      expect((await tenants.listTenants({ where: { server: ['a', 'b'] } })).length).to.equal(9);
      await expect(tenants.listTenants({ where: { server: 'c' } })).to.be.rejectedWith(InvalidArgumentError);
    });
  });

  it('the registry, the ledger and the domains are on the home server only (server NULL for home tenants, the name for the others); every server has the shared schema', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await tenants.createTenant('home-one', { server: 'a' });
      await tenants.createTenant('away-one', { server: 'b' });
      await tenants.addTenantDomain('away-one', 'away.example.com', { verified: true });
      expect(await a.query('SELECT slug, server FROM public.tenants ORDER BY slug')).to.deep.equal([
        { slug: 'away-one', server: 'b' },
        { slug: 'home-one', server: null },
      ]);
      const ledger = await a.query<{ slug: string; n: number }>('SELECT slug, count(*)::int AS n FROM public.tenants_migrations GROUP BY slug ORDER BY slug');
      expect(ledger).to.deep.equal([
        { slug: 'away-one', n: 2 },
        { slug: 'home-one', n: 2 },
      ]);
      const [onB] = await b.query<{ registry: string | null; ledger: string | null; plan: string | null }>(
        "SELECT to_regclass('public.tenants')::text AS registry, to_regclass('public.tenants_migrations')::text AS ledger, to_regclass('public.plan')::text AS plan",
      );
      expect(onB).to.deep.equal({ registry: null, ledger: null, plan: 'plan' });
      const domainTables = await b.query("SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relname LIKE 'tenants%'");
      expect(domainTables).to.deep.equal([]);
      // Shared migrations ran on both servers.
      for (const server of [a, b]) {
        expect(await server.query('SELECT name FROM public.migrations ORDER BY name'), server.name).to.deep.equal([{ name: 'CreatePlan1700000000000' }]);
      }
    });
  });

  it('homeServer: "b" puts the registry on b: tenants on a are recorded as "a", those on b as NULL', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open({ homeServer: 'b' });
      await tenants.createTenant('on-a', { server: 'a' });
      await tenants.createTenant('on-b', { server: 'b' });
      expect(await b.query('SELECT slug, server FROM public.tenants ORDER BY slug')).to.deep.equal([
        { slug: 'on-a', server: 'a' },
        { slug: 'on-b', server: null },
      ]);
      expect(await a.query("SELECT to_regclass('public.tenants')::text AS registry")).to.deep.equal([{ registry: null }]);
      expect(await whereIs(a, b, 'on_a')).to.deep.equal(['a']);
      expect(await whereIs(a, b, 'on_b')).to.deep.equal(['b']);
      expect((await tenants.listTenants()).map((r) => [r.slug, r.server])).to.deep.equal([
        ['on-a', 'a'],
        ['on-b', 'b'],
      ]);
    });
  });

  it('a placement function gets the slug and every server with its count, in the order of the options, and is obeyed (not called for an explicit server)', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const calls: TenantPlacementContext[] = [];
      const tenants = await open({
        placement: async (context) => {
          calls.push(JSON.parse(JSON.stringify(context)) as TenantPlacementContext);
          return context.slug.startsWith('eu-') ? 'b' : 'a';
        },
      });
      await tenants.createTenant('eu-one');
      await tenants.createTenant('eu-two');
      await tenants.createTenant('us-one');
      await tenants.createTenant('pinned', { server: 'b' });
      await tenants.createTenant('us-two');
      expect(calls).to.deep.equal([
        { slug: 'eu-one', servers: [{ name: 'a', tenants: 0 }, { name: 'b', tenants: 0 }] },
        { slug: 'eu-two', servers: [{ name: 'a', tenants: 0 }, { name: 'b', tenants: 1 }] },
        { slug: 'us-one', servers: [{ name: 'a', tenants: 0 }, { name: 'b', tenants: 2 }] },
        { slug: 'us-two', servers: [{ name: 'a', tenants: 1 }, { name: 'b', tenants: 3 }] },
      ]);
      for (const [slug, server] of [['eu_one', 'b'], ['eu_two', 'b'], ['us_one', 'a'], ['pinned', 'b'], ['us_two', 'a']] as const) {
        expect(await whereIs(a, b, slug), slug).to.deep.equal([server]);
      }
    });
  });

  it('an unknown server name (option or placement) is an InvalidArgumentError and nothing is created on either server', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      let choice = 'c';
      const tenants = await open({ placement: () => choice });
      await expect(tenants.createTenant('lost', { server: 'c' })).to.be.rejectedWith(InvalidArgumentError, /"a", "b"/);
      await expect(tenants.createTenant('lost')).to.be.rejectedWith(InvalidArgumentError, /"c"/);
      choice = 'A';
      await expect(tenants.createTenant('lost')).to.be.rejectedWith(InvalidArgumentError);
      expect(await whereIs(a, b, 'lost')).to.deep.equal([]);
      expect(await a.query('SELECT slug FROM public.tenants')).to.deep.equal([]);
      expect(await a.query('SELECT slug FROM public.tenants_migrations')).to.deep.equal([]);
      choice = 'b';
      expect((await tenants.createTenant('lost')).server).to.equal('b');
      expect(await whereIs(a, b, 'lost')).to.deep.equal(['b']);
    });
  });

  it('"servers" with "dataSource", a homeServer that is not a server, and a bad server name are TenancyConfigurationErrors', async () => {
    await withTwoServers(second, async ({ a, b, options, manager }) => {
      const both = { ...options(), dataSource: serverOptions(a.url) };
      expect(() => manager(both)).to.throw(TenancyConfigurationError, /not both/);
      expect(() => manager({ homeServer: 'c' })).to.throw(TenancyConfigurationError, /homeServer/);
      expect(() => manager({ servers: { a: serverOptions(a.url), 'b b': serverOptions(b.url) } })).to.throw(TenancyConfigurationError, /b b/);
      expect(() => manager({ servers: {} })).to.throw(TenancyConfigurationError);
      // Nothing was made on either server by the refused managers.
      for (const server of [a, b]) expect(await server.query("SELECT to_regclass('public.plan')::text AS plan"), server.name).to.deep.equal([{ plan: null }]);
    });
  });

  it('rows written through run() land in the tenant schema on its own server only; current_database() is its server\'s database', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await tenants.createTenant('west', { server: 'a' });
      await tenants.createTenant('east', { server: 'b' });
      await Promise.all([
        tenants.run('west', () => tenantContext.getRepository(Client).insert({ name: 'L', email: 'l@west.test' })),
        tenants.run('east', () => tenantContext.getRepository(Client).insert([{ name: 'R1', email: 'r1@east.test' }, { name: 'R2', email: 'r2@east.test' }])),
      ]);
      expect(await a.query('SELECT email FROM "west".client')).to.deep.equal([{ email: 'l@west.test' }]);
      expect(await b.query('SELECT email FROM "east".client ORDER BY email')).to.deep.equal([{ email: 'r1@east.test' }, { email: 'r2@east.test' }]);
      expect(await whereIs(a, b, 'west')).to.deep.equal(['a']);
      expect(await whereIs(a, b, 'east')).to.deep.equal(['b']);
      const [inWest] = await tenants.run('west', () => tenantContext.query<Array<{ db: string }>>('SELECT current_database() AS db'));
      const [inEast] = await tenants.run('east', () => tenantContext.query<Array<{ db: string }>>('SELECT current_database() AS db'));
      expect([inWest!.db, inEast!.db]).to.deep.equal([a.name, b.name]);
      expect(await tenants.run('east', () => tenantContext.getRepository(Client).count())).to.equal(2);
      // A slug taken on one server is taken on every server.
      await expect(tenants.createTenant('west', { server: 'b' })).to.be.rejectedWith(TenantAlreadyExistsError);
      expect(await whereIs(a, b, 'west')).to.deep.equal(['a']);
      expect(await a.query('SELECT email FROM "west".client')).to.deep.equal([{ email: 'l@west.test' }]);
    });
  });
});
