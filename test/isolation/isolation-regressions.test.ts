import { expect } from 'chai';
import { Table, TableForeignKey, type MigrationInterface, type QueryRunner } from 'typeorm';
import { Client } from '../../entities';
import { tenantMigrations } from '../../migrations';
import {
  InvalidTenantNameError,
  TenancyConfigurationError,
  TenantNotFoundError,
  tenantContext,
  type TenantDataSourceManager,
} from '../../src';
import { adminQuery, databaseUrl, newManager, openManager, sleep, uniqueSlug } from '../support/fixtures';
import { LEGACY_EMAIL, emailsIn, schemaOf, tenantWithClient, withLegacyPublicClient } from '../support/legacy-public-client';

/**
 * Regression tests for the isolation holes found on main at 95794c9, one per
 * hole, named after it. Each failed there. Holes 8 (the query result cache)
 * and 12 (extensions) have suites of their own: query-result-cache.test.ts
 * and extensions.test.ts.
 */

describe('isolation regressions (holes found at 95794c9)', () => {
  it('raw SQL outside tenantContext.query fell back to public: every entry point now resolves in the tenant', async () => {
    await withLegacyPublicClient(async () => {
      const manager = await openManager();
      const slug = await tenantWithClient(manager, 'rawentry');
      const read = 'SELECT email FROM client ORDER BY email';
      const insert = (label: string): [string, string[]] => ['INSERT INTO client (name, email) VALUES ($1, $2)', [label, `${label}@${slug}.test`]];
      const seen = await manager.run(slug, async () => {
        const dataSource = await manager.getDataSource(slug);
        const results: Record<string, unknown> = {
          managerQuery: await tenantContext.getManager().query(read),
          repositoryQuery: await tenantContext.getRepository(Client).query(read),
          dataSourceQuery: await dataSource.query(read),
          sqlTag: await dataSource.sql`SELECT email FROM client WHERE email = ${`seed@${slug}.test`}`,
          transactionQuery: await tenantContext.transaction((em) => em.query(read)),
        };
        await tenantContext.getManager().query(...insert('em'));
        await tenantContext.getRepository(Client).query(...insert('repo'));
        await tenantContext.transaction((em) => em.query(...insert('tx')));
        const runner = tenantContext.getManager().connection.createQueryRunner();
        try {
          results.runnerOutside = await runner.query(read);
          await runner.startTransaction();
          await runner.query(...insert('runner'));
          results.runnerInside = await runner.query(read);
          await runner.commitTransaction();
        } finally {
          await runner.release();
        }
        return results;
      });
      const seed = [{ email: `seed@${slug}.test` }];
      expect(seen.managerQuery).to.deep.equal(seed);
      expect(seen.repositoryQuery).to.deep.equal(seed);
      expect(seen.dataSourceQuery).to.deep.equal(seed);
      expect(seen.sqlTag).to.deep.equal(seed);
      expect(seen.transactionQuery).to.deep.equal(seed);
      expect(seen.runnerOutside).to.have.length(4);
      expect(seen.runnerInside).to.have.length(5);
      expect(await emailsIn(schemaOf(slug))).to.deep.equal(
        ['em', 'repo', 'runner', 'seed', 'tx'].map((label) => `${label}@${slug}.test`),
      );
    });
  });

  it('QueryBuilder string table names (a table with no entity) resolved through the search_path: now qualified with the tenant schema', async () => {
    const manager = await openManager();
    const slug = await tenantWithClient(manager, 'qbstring');
    const schema = schemaOf(slug);
    await adminQuery(`CREATE TABLE "${schema}".audit_note (note text)`);
    await adminQuery(`INSERT INTO "${schema}".audit_note VALUES ('tenant')`);
    await adminQuery('CREATE TABLE public.audit_note (note text)');
    await adminQuery("INSERT INTO public.audit_note VALUES ('legacy')");
    try {
      const rows = await manager.run(slug, async () => {
        const em = tenantContext.getManager();
        await em.createQueryBuilder().insert().into('audit_note', ['note']).values({ note: 'qb' }).execute();
        await em.createQueryBuilder().update('audit_note').set({ note: 'tenant-updated' }).where('note = :n', { n: 'tenant' }).execute();
        return em.createQueryBuilder().select('a.note', 'note').from('audit_note', 'a').orderBy('a.note').getRawMany();
      });
      expect(rows.map((r) => r.note)).to.deep.equal(['qb', 'tenant-updated']);
      expect((await adminQuery<{ note: string }>(`SELECT note FROM "${schema}".audit_note ORDER BY note`)).map((r) => r.note)).to.deep.equal(['qb', 'tenant-updated']);
      expect((await adminQuery<{ note: string }>('SELECT note FROM public.audit_note')).map((r) => r.note)).to.deep.equal(['legacy']);
    } finally {
      await adminQuery('DROP TABLE public.audit_note');
    }
  });

  it('a QueryBuilder fragment naming a quoted unqualified table passed as generated and read public: now fenced to the tenant', async () => {
    await withLegacyPublicClient(async () => {
      const manager = await openManager();
      const slug = await tenantWithClient(manager, 'qbquoted');
      const rows = await manager.run(slug, () =>
        tenantContext
          .getManager()
          .createQueryBuilder()
          .select('c.email', 'email')
          .from(Client, 'c')
          .where(`EXISTS (SELECT 1 FROM "client" "l" WHERE "l"."email" = '${LEGACY_EMAIL}')`)
          .getRawMany(),
      );
      expect(rows, 'the fragment searched the tenant, which has no legacy row').to.deep.equal([]);
    });
  });

  it('a QueryBuilder fragment hiding SQL behind a comment set session state unfenced: now fenced and reset', async () => {
    const manager = await openManager({ dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 1 } });
    const a = await tenantWithClient(manager, 'qbcomment');
    const b = await tenantWithClient(manager, 'qbcomment');
    await manager.run(a, () =>
      tenantContext
        .getManager()
        .createQueryBuilder()
        .select('c.id', 'id')
        .from(Client, 'c')
        .where(`true -- "\n AND set_config('typeorm_tenants_test.poison', 'a', false) IS NOT NULL --"`)
        .getRawMany(),
    );
    const [seen] = await manager.run(b, () => tenantContext.query(`SELECT current_setting('typeorm_tenants_test.poison', true) AS v`));
    expect(seen.v ?? '', "A's setting does not reach B on the same connection").to.equal('');
  });

  it('raw statements sent at once on one QueryRunner outside a transaction shared one fence: they now take turns', async () => {
    await withLegacyPublicClient(async () => {
      const manager = await openManager();
      const slug = await tenantWithClient(manager, 'rawturns');
      await manager.run(slug, async () => {
        const runner = tenantContext.getManager().connection.createQueryRunner();
        try {
          // The INSERT is sent while the first statement runs: it must not end
          // up after the first one's COMMIT, outside any fence.
          const slow = runner.query('SELECT pg_sleep(0.2)');
          await sleep(50);
          await Promise.all([slow, runner.query('INSERT INTO client (name, email) VALUES ($1, $2)', ['late', `late@${slug}.test`])]);
        } finally {
          await runner.release();
        }
      });
      expect(await emailsIn(schemaOf(slug))).to.deep.equal([`late@${slug}.test`, `seed@${slug}.test`]);
    });
  });

  it('a seed hook wrote into the calling tenant: tenantContext inside it now serves the new tenant', async () => {
    const manager = await openManager();
    const caller = await tenantWithClient(manager, 'seedcaller');
    const fresh = uniqueSlug('seedfresh');
    await manager.run(caller, () =>
      manager.createTenant(fresh, {
        seed: async () => {
          expect(tenantContext.current()?.slug).to.equal(fresh);
          await tenantContext.getRepository(Client).save({ name: 'seeded', email: `seeded@${fresh}.test` });
          await tenantContext.query('INSERT INTO client (name, email) VALUES ($1, $2)', ['raw', `raw@${fresh}.test`]);
        },
      }),
    );
    expect(await emailsIn(schemaOf(fresh))).to.deep.equal([`raw@${fresh}.test`, `seeded@${fresh}.test`]);
    expect(await emailsIn(schemaOf(caller))).to.deep.equal([`seed@${caller}.test`]);
  });

  it('a failing seed hook that used tenantContext leaves nothing behind', async () => {
    const manager = await openManager();
    const fresh = uniqueSlug('seedfail');
    await expect(
      manager.createTenant(fresh, {
        seed: async () => {
          await tenantContext.getRepository(Client).save({ name: 'x', email: 'x@x.test' });
          throw new Error('seed failed');
        },
      }),
    ).to.be.rejectedWith(/seed failed/);
    expect(await adminQuery('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schemaOf(fresh)])).to.have.length(0);
    expect(await manager.getTenant(fresh)).to.equal(undefined);
  });

  it('a querySearchPath schema could be taken as a tenant slug: such names are now reserved', async () => {
    const manager = await openManager({ querySearchPath: ['ext_reserved'] });
    await expect(manager.createTenant('ext_reserved')).to.be.rejectedWith(InvalidTenantNameError, /querySearchPath/);
    await expect(manager.createTenant('ext-reserved')).to.be.rejectedWith(InvalidTenantNameError, /querySearchPath/);
    await expect(manager.run('ext_reserved', async () => undefined)).to.be.rejectedWith(InvalidTenantNameError);
    expect(await adminQuery("SELECT 1 FROM pg_namespace WHERE nspname = 'ext_reserved'")).to.have.length(0);
  });

  it('unknown slugs evicted cached tenants: a failed lookup now evicts nothing', async () => {
    const manager = await openManager({ maxDataSources: 3 });
    const slugs = [await tenantWithClient(manager, 'evict'), await tenantWithClient(manager, 'evict'), await tenantWithClient(manager, 'evict')];
    for (const slug of slugs) await manager.run(slug, async () => undefined);
    const before = manager.stats();
    expect(before.cachedDataSources).to.equal(3);
    const unknown = Array.from({ length: 10 }, () => uniqueSlug('nosuch'));
    const outcomes = await Promise.allSettled(unknown.map((slug) => manager.run(slug, async () => undefined)));
    for (const outcome of outcomes) {
      expect(outcome.status).to.equal('rejected');
      expect((outcome as PromiseRejectedResult).reason).to.be.instanceOf(TenantNotFoundError);
    }
    const after = manager.stats();
    expect(after.evictions, 'no cached tenant was evicted').to.equal(before.evictions);
    expect(after.cachedDataSources).to.equal(3);
    for (const slug of slugs) await manager.run(slug, async () => undefined);
    expect(manager.stats().misses, 'the three tenants are still cached').to.equal(before.misses + unknown.length);
  });

  it('a tenant migration\'s foreign key to a shared table, written as in a single-schema app, pointed into the tenant schema', async () => {
    const manager = await openManager({ tenantMigrations: [...tenantMigrations, CreateSubscription1700000000500] });
    const slug = uniqueSlug('fkshared');
    await manager.createTenant(slug);
    const [fk] = await adminQuery<{ target: string }>(
      `SELECT confrelid::regclass::text AS target FROM pg_constraint
        WHERE contype = 'f' AND conrelid = $1::regclass`,
      [`"${schemaOf(slug)}".subscription`],
    );
    expect(fk?.target).to.equal('plan'); // regclass prints public.plan as "plan": it is the shared table
    const [{ schema }] = await adminQuery<{ schema: string }>(
      `SELECT n.nspname AS schema FROM pg_constraint c JOIN pg_class t ON t.oid = c.confrelid JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE c.contype = 'f' AND c.conrelid = $1::regclass`,
      [`"${schemaOf(slug)}".subscription`],
    );
    expect(schema).to.equal('public');
    await manager.revertTenant(slug);
    expect(await adminQuery('SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2', [schemaOf(slug), 'subscription'])).to.have.length(0);
  });
});

/** A tenant table with a foreign key to the shared "plan", named without a schema (createForeignKey and the Table option). */
class CreateSubscription1700000000500 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.createTable(
      new Table({
        name: 'subscription',
        columns: [
          { name: 'id', type: 'int', isPrimary: true, isGenerated: true, generationStrategy: 'increment' },
          { name: 'plan_id', type: 'int' },
        ],
      }),
    );
    await queryRunner.createForeignKey('subscription', new TableForeignKey({ columnNames: ['plan_id'], referencedTableName: 'plan', referencedColumnNames: ['id'] }));
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.dropTable('subscription', true, true);
  }
}
