/**
 * Review of issue 11, sqlComment: statements whose text starts oddly still
 * run, and carry the right tenant (guards; these pass).
 */
import { expect } from 'chai';
import { Client } from '../../entities';
import { tenantContext } from '../../src';
import { databaseUrl, openManager, uniqueSlug } from '../support/fixtures';

describe('review11 sqlComment: odd statement starts and pool reuse', () => {
  it('raw SQL starting with "--" or a block comment, ending in "--", raw in a transaction, a generated count: all run; the pooled connection reused by another tenant names that tenant', async () => {
    const manager = await openManager({ sqlComment: true, dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 1 } } as never);
    const [a, b] = [uniqueSlug('rv11qa'), uniqueSlug('rv11qb')];
    await manager.createTenant(a);
    await manager.createTenant(b);
    const out = await manager.run(a, async () => {
      const ds = tenantContext.getManager();
      const r1 = await ds.query('-- a leading line comment\nSELECT 1 AS x');
      const r2 = await ds.query('/* mine */ SELECT 2 AS x');
      const r3 = await ds.query("-- ends in a comment\nSELECT 3 AS x -- trailing");
      // (QueryBuilder.stream() needs pg-query-stream, not installed here: not probed.)
      const inTx = await tenantContext.transaction(async (em) => (await em.query('-- in a transaction\nSELECT count(*)::int AS n FROM client'))[0].n);
      const built = await tenantContext.getRepository(Client).count();
      return [r1[0].x, r2[0].x, r3[0].x, inTx, built];
    });
    expect(out).to.deep.equal([1, 2, 3, 0, 0]);
    // One connection in the pool: b's statements run on the connection a just used.
    const seen = await manager.run(b, async () => {
      const [{ query }] = (await tenantContext.query('SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()')) as { query: string }[];
      return query;
    });
    expect(seen.startsWith(`/*tenant='${b}'*/ `), seen).to.equal(true);
    for (const slug of [a, b]) await manager.dropTenant(slug, { force: true });
  });
});
