import { expect } from 'chai';
import { Client, Plan } from '../../entities';
import { tenantContext } from '../../src';
import { useSecondServer, withTwoServers } from '../support/second-server';

/** Adversarial review: a tenant on b reaching what it should not, through the usual TypeORM paths. */

describe('review: isolation of tenants on a second server', function () {
  this.timeout(90_000);
  const second = useSecondServer();

  it('unqualified names, QueryBuilder with string table names, and a transaction in a tenant on b only ever reach its own schema on b', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await tenants.createTenant('home-t', { server: 'a' });
      await tenants.createTenant('far-1', { server: 'b' });
      await tenants.createTenant('far-2', { server: 'b' });
      await tenants.run('home-t', () => tenantContext.getRepository(Client).insert({ name: 'H', email: 'h@x.test' }));
      await tenants.run('far-2', () => tenantContext.getRepository(Client).insert({ name: 'F2', email: 'f2@x.test' }));
      await tenants.run('far-1', () => tenantContext.getRepository(Client).insert({ name: 'F1', email: 'f1@x.test' }));
      const seen = await tenants.run('far-1', async () => {
        const raw = await tenantContext.query<Array<{ email: string }>>('SELECT email FROM client');
        const qb = await tenantContext.getRepository(Client).manager.createQueryBuilder().select('c.email', 'email').from('client', 'c').getRawMany();
        const inTx = await tenantContext.transaction((em) => em.query('SELECT email FROM client'));
        const db = await tenantContext.query<Array<{ d: string }>>('SELECT current_database() AS d');
        return { raw, qb, inTx, db: db[0]!.d };
      });
      expect(seen).to.deep.equal({ raw: [{ email: 'f1@x.test' }], qb: [{ email: 'f1@x.test' }], inTx: [{ email: 'f1@x.test' }], db: b.name });
      // Nothing of far-1 on a, nothing of home-t on b.
      expect(await a.hasSchema('far_1')).to.equal(false);
      expect(await b.hasSchema('home_t')).to.equal(false);
    });
  });

  it("shared entities inside a run of a tenant on b read b's shared schema; sharedDataSource reads a's; neither sees tenant rows, and an unqualified shared table name does not resolve to public", async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await tenants.createTenant('far', { server: 'b' });
      const planTable = (await a.query<{ s: string; t: string }>(`SELECT table_schema AS s, table_name AS t FROM information_schema.tables WHERE table_name = 'plan'`))[0]!;
      await a.query(`DELETE FROM "${planTable.s}".plan`);
      await b.query(`DELETE FROM "${planTable.s}".plan`);
      await a.query(`INSERT INTO "${planTable.s}".plan (code, name, monthly_price_cents) VALUES ('on-a', 'A plan', 1)`);
      await b.query(`INSERT INTO "${planTable.s}".plan (code, name, monthly_price_cents) VALUES ('on-b', 'B plan', 2)`);
      const inRun = await tenants.run('far', () => tenantContext.getRepository(Plan).find());
      expect(inRun.map((p) => p.code)).to.deep.equal(['on-b']);
      const viaShared = await tenants.sharedDataSource.getRepository(Plan).find();
      expect(viaShared.map((p) => p.code)).to.deep.equal(['on-a']);
      const unqualified = await tenants.run('far', () => tenantContext.query('SELECT code FROM plan')).catch((e: unknown) => e);
      // Either refused (the shared table is not on the tenant's search_path) or b's own row; never a's.
      if (Array.isArray(unqualified)) expect(unqualified).to.deep.equal([{ code: 'on-b' }]);
      else expect(String(unqualified)).to.match(/does not exist/);
    });
  });

  it('the query result cache (kept on the home server) never serves a tenant on b the cached result of a tenant on a, for the same SQL', async () => {
    await withTwoServers(second, async ({ open }) => {
      const tenants = await open({ cache: { type: 'database', duration: 60_000 } } as never);
      await tenants.createTenant('ca', { server: 'a' });
      await tenants.createTenant('cb', { server: 'b' });
      await tenants.run('ca', () => tenantContext.getRepository(Client).insert({ name: 'A', email: 'a@x.test' }));
      await tenants.run('cb', () => tenantContext.getRepository(Client).insert({ name: 'B', email: 'b@x.test' }));
      const read = (slug: string) => tenants.run(slug, () => tenantContext.getRepository(Client).find({ cache: true, order: { id: 'ASC' } }));
      expect((await read('ca')).map((c) => c.email)).to.deep.equal(['a@x.test']);
      expect((await read('cb')).map((c) => c.email)).to.deep.equal(['b@x.test']);
      expect((await read('ca')).map((c) => c.email)).to.deep.equal(['a@x.test']);
      // After a move of cb to a and a move of ca to b: still each its own.
      await tenants.moveTenant('cb', { server: 'a' });
      await tenants.moveTenant('ca', { server: 'b' });
      expect((await read('cb')).map((c) => c.email)).to.deep.equal(['b@x.test']);
      expect((await read('ca')).map((c) => c.email)).to.deep.equal(['a@x.test']);
    });
  });

  it("under isolation: 'role', a tenant moved with keepSource cannot be reached by another tenant's role through the kept copy, on either server", async () => {
    await withTwoServers(second, async ({ a, open }) => {
      const tenants = await open({ isolation: 'role' });
      await tenants.createTenant('keeper', { server: 'a' });
      await tenants.createTenant('snoop', { server: 'a' });
      await tenants.run('keeper', () => tenantContext.getRepository(Client).insert({ name: 'Secret', email: 's@k.test' }));
      const result = await tenants.moveTenant('keeper', { server: 'b', keepSource: true });
      expect(result.keptSchema).to.be.a('string');
      expect(await a.hasSchema(result.keptSchema!)).to.equal(true);
      const peek = await tenants.run('snoop', () => tenantContext.query(`SELECT * FROM "${result.keptSchema}".client`)).catch((e: unknown) => e);
      expect(peek).to.be.instanceOf(Error);
      const onB = await tenants.run('keeper', () => tenantContext.query<Array<{ email: string }>>('SELECT email FROM client'));
      expect(onB).to.deep.equal([{ email: 's@k.test' }]);
      // Moving back to a (where the role is left for the kept copy): see review-servers-move-errors.test.ts.
    });
  });
});
