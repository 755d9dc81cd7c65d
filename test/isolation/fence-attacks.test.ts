import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Raw } from 'typeorm';
import { Client, Project } from '../../entities';
import { TenantRoleEscapeError, tenantContext, type TenantDataSourceManager } from '../../src';
import { adminQuery, databaseUrl, openManager } from '../support/fixtures';
import { LEGACY_EMAIL, schemaOf, tenantWithClient, withLegacyPublicClient } from '../support/legacy-public-client';

/**
 * Attacks on the raw-SQL fence: QueryBuilder / find-options input whose SQL
 * the generated-SQL classifier (src/data-source/generated-sql.ts) accepts as
 * "only generated", so it runs unfenced under the connection's own
 * search_path ("$user", public). Each test asserts the SAFE behaviour.
 */


const open = (overrides: Record<string, unknown> = {}): Promise<TenantDataSourceManager> =>
  openManager({ dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 1 }, ...overrides });

async function withPublicTable(ddl: string, fill: string, drop: string, work: () => Promise<void>): Promise<void> {
  await adminQuery(ddl);
  await adminQuery(fill);
  try {
    await work();
  } finally {
    await adminQuery(drop);
  }
}

describe('fence attacks: generated-SQL classifier and session state', () => {
  // ---------------------------------------------------------------- holes (1): unqualified names reaching public

  it('a parenthesised join tree: its first relation, unqualified, resolves in the tenant (addSelect and Raw())', async () => {
    await withLegacyPublicClient(async () => {
      const manager = await open();
      const slug = await tenantWithClient(manager, 'paren');
      const s = schemaOf(slug);
      const tree = `("client" "x" LEFT JOIN "${s}"."project" "p" ON false)`;
      const [viaSelect, viaRaw] = await manager.run(slug, async () => {
        const repo = tenantContext.getRepository(Client);
        const selected = await repo
          .createQueryBuilder('c')
          .select(`(SELECT "x"."email" FROM ${tree} ORDER BY "x"."email" LIMIT 1)`, 'leak')
          .getRawMany<{ leak: string }>();
        const found = await repo.find({ where: { email: Raw((a) => `${a} IN (SELECT "x"."email" FROM ${tree})`) } });
        return [selected.map((r) => r.leak), found.map((c) => c.email)];
      });
      expect(viaSelect, 'addSelect subquery reads the tenant, not public').to.deep.equal([`seed@${slug}.test`]);
      expect(viaRaw, 'Raw() subquery reads the tenant, not public').to.deep.equal([`seed@${slug}.test`]);
    });
  });

  it('a FROM-list item after a join condition (`ON false, "client" "z"`) resolves in the tenant', async () => {
    await withLegacyPublicClient(async () => {
      const manager = await open();
      const slug = await tenantWithClient(manager, 'comma');
      const emails = await manager.run(slug, async () => {
        const rows = await tenantContext
          .getRepository(Client)
          .createQueryBuilder('c')
          .select('"z"."email"', 'email')
          .leftJoin(Project, 'p', 'false, "client" "z"')
          .getRawMany<{ email: string }>();
        return rows.map((r) => r.email);
      });
      expect(emails).to.deep.equal([`seed@${slug}.test`]);
    });
  });

  it('a bare relation name that is one of the whitelisted words (`FROM share`) resolves in the tenant', async () => {
    await withPublicTable(
      'CREATE TABLE public.share (email text)',
      `INSERT INTO public.share VALUES ('${LEGACY_EMAIL}')`,
      'DROP TABLE public.share',
      async () => {
        const manager = await open();
        const slug = await tenantWithClient(manager, 'bare');
        const found = await manager.run(slug, async () => {
          await tenantContext.query('CREATE TABLE share (email text)');
          await tenantContext.query('INSERT INTO share VALUES ($1)', [`seed@${slug}.test`]);
          const rows = await tenantContext
            .getRepository(Client)
            .createQueryBuilder('c')
            .where('"c"."email" IN (SELECT "s"."email" FROM share "s")')
            .getMany();
          return rows.map((c) => c.email);
        });
        expect(found, 'the subquery read the tenant\'s share table').to.deep.equal([`seed@${slug}.test`]);
      },
    );
  });

  it("a schema-qualified SQL function in FROM: the unqualified names inside query_to_xml's query resolve in the tenant", async () => {
    await withLegacyPublicClient(async () => {
      const manager = await open();
      const slug = await tenantWithClient(manager, 'qxml');
      const xml = await manager.run(slug, async () => {
        const direct = await tenantContext
          .getRepository(Client)
          .createQueryBuilder('c')
          .select('(SELECT "q"::"text" FROM "pg_catalog"."query_to_xml"(:sql, true, false, :ns) "q")', 'xml')
          .setParameters({ sql: 'SELECT email FROM client', ns: '' })
          .getRawMany<{ xml: string }>();
        return direct.map((r) => r.xml).join('');
      });
      expect(xml, 'the query inside query_to_xml read public').not.to.contain(LEGACY_EMAIL);
      expect(xml, 'the query inside query_to_xml read the tenant').to.contain(`seed@${slug}.test`);
    });
  });

  // ---------------------------------------------------------------- holes (2): session state left on the pooled connection

  it('settings and advisory locks taken through a pg_catalog function in a generated statement do not reach the next tenant', async () => {
    const manager = await open();
    const a = await tenantWithClient(manager, 'sta');
    const b = await tenantWithClient(manager, 'stb');
    await manager.run(a, async () => {
      const qb = tenantContext.getRepository(Client).createQueryBuilder('c');
      await qb
        .where('EXISTS (SELECT 1 FROM "pg_catalog"."set_config"(:k, :v, false))', { k: 'fence.leak', v: `from-${a}` })
        .andWhere('EXISTS (SELECT 1 FROM "pg_catalog"."pg_advisory_lock"(:n))', { n: 4242 })
        .getMany();
    });
    const [seen] = await manager.run(b, () =>
      tenantContext.query(
        "SELECT current_setting('fence.leak', true) AS v, pg_backend_pid() AS pid, " +
          "(SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS locks",
      ),
    );
    expect(seen.v ?? '', `tenant B sees tenant A's session setting (${JSON.stringify(seen)})`).not.to.equal(`from-${a}`);
    expect(seen.locks, "tenant B's connection still holds tenant A's advisory lock").to.equal(0);
  });

  // ---------------------------------------------------------------- holes (3): role mode

  it("isolation 'role': a generated statement that resets the role raises TenantRoleEscapeError; the next one cannot read another tenant", async () => {
    const manager = await open({ isolation: 'role', registryTable: `role_${randomBytes(4).toString('hex')}` });
    const a = await tenantWithClient(manager, 'rla');
    const b = await tenantWithClient(manager, 'rlb');
    const seen: string[] = [];
    const outcome = await manager
      .run(a, () =>
        tenantContext.transaction(async (em) => {
          await em
            .getRepository(Client)
            .createQueryBuilder('c')
            .where('EXISTS (SELECT 1 FROM "pg_catalog"."set_config"(:k, :v, false))', { k: 'role', v: 'none' })
            .getMany();
          const rows = await em.createQueryBuilder().select('"x"."email"', 'email').from(`${schemaOf(b)}.client`, 'x').getRawMany();
          seen.push(...rows.map((r: { email: string }) => r.email));
        }),
      )
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(seen, "tenant B's rows read under the escaped role").to.deep.equal([]);
    expect(outcome).to.be.instanceOf(TenantRoleEscapeError);
  });

  // ---------------------------------------------------------------- the fence holds

  it('fenced shapes: quoted/bare/joined/comma-listed/U&/commented/CTE references to "client" all read the tenant', async () => {
    await withLegacyPublicClient(async () => {
      const manager = await open();
      const slug = await tenantWithClient(manager, 'held');
      const s = schemaOf(slug);
      const subqueries = [
        'SELECT "email" FROM "client"',
        'SELECT email FROM client',
        `SELECT "x"."email" FROM "${s}"."client" "p" RIGHT JOIN "client" "x" ON true`,
        `SELECT "x"."email" FROM "${s}"."client" "p", "client" "x"`,
        'SELECT "email" FROM U&"client"',
        'SELECT "email" FROM "client"/**/',
        'SELECT "email" FROM "client" -- \n',
        `SELECT "x"."email" FROM "${s}"."client" "p" FULL JOIN "client" "x" ON true`,
        `SELECT "x"."email" FROM "${s}"."client" "p" CROSS JOIN "client" "x"`,
        `SELECT "x"."email" FROM "${s}"."client" "p" INNER JOIN LATERAL (SELECT "email" FROM "client") "x" ON true`,
        'WITH "w" AS (SELECT "email" FROM "client") SELECT "w"."email" FROM "w"',
        'SELECT "x"."email" FROM "client" AS "x"',
        'SELECT "email" FROM ONLY "client"',
        `SELECT "x"."email" FROM "${s}"."client" "p" INNER JOIN "client" "x" USING ("email")`,
        'SELECT (("client")."email") FROM "client"',
      ];
      const results = await manager.run(slug, async () => {
        const out: Record<string, unknown> = {};
        for (const sub of subqueries) {
          out[sub] = await tenantContext
            .getRepository(Client)
            .find({ where: { email: Raw((alias) => `${alias} IN (${sub})`) } })
            .then((rows) => rows.map((c) => c.email), (error: Error) => `error: ${error.message}`);
        }
        // set({ col: () => ... }) and orderBy strings holding an unqualified subquery.
        await tenantContext
          .getRepository(Client)
          .createQueryBuilder()
          .update()
          .set({ internalNote: () => '(SELECT "email" FROM "client" ORDER BY "email" LIMIT 1)' })
          .execute();
        out.setFn = (await tenantContext.getRepository(Client).find()).map((c) => c.internalNote);
        out.orderBy = (
          await tenantContext
            .getRepository(Client)
            .createQueryBuilder('c')
            .orderBy('(SELECT count(*) FROM "client" "z" WHERE "z"."email" = \'' + LEGACY_EMAIL + '\')')
            .addSelect('(SELECT count(*) FROM "client" "z" WHERE "z"."email" = \'' + LEGACY_EMAIL + '\')', 'n')
            .getRawMany<{ n: string }>()
        ).map((r) => r.n);
        return out;
      });
      const seed = [`seed@${slug}.test`];
      if (process.env.FENCE_DEBUG) console.log(results);
      for (const sub of subqueries) expect(results[sub], sub).to.satisfy((v: unknown) => typeof v === 'string' || JSON.stringify(v) === JSON.stringify(seed));
      expect(results.setFn).to.deep.equal(seed);
      expect(results.orderBy).to.deep.equal(['0']);
    });
  });
});
