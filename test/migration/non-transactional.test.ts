import { expect } from 'chai';
import { Client as PgClient } from 'pg';
import { Client, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import {
  InvalidArgumentError,
  NonTransactionalStatementError,
  TenancyConfigurationError,
  TenantProvisioningError,
  tenantSchemaOf,
  type TenantDataSourceManagerOptions,
} from '../../src';
import { concurrentStatementOf } from '../../src/migration/concurrent-statements';
import { adminQuery, databaseUrl, openManager, schemaExists, sleep, uniqueSlug } from '../support/fixtures';
import { withFreshDatabase } from '../support/fresh-database';
import { usePgBouncer } from '../support/pgbouncer-hooks';
import { indexState, lineOf, migration, nextStamp, recorded, schemaOf } from '../support/tenant-migrations';


/** A `transaction = false` migration building a unique index on client(email) concurrently, idempotent as the README asks. */
function concurrentEmailIndex(index: string, observed?: { transactionActive?: boolean; lockHeldElsewhere?: boolean }): Function {
  return migration(
    'ClientEmailIndex',
    false,
    async (runner) => {
      if (observed !== undefined) {
        observed.transactionActive = runner.isTransactionActive;
        const [{ held }] = await runner.query(
          `SELECT count(*)::int AS held FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()`,
        );
        observed.lockHeldElsewhere = held > 0;
      }
      await runner.query(`CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "${index}" ON "${tenantSchemaOf(runner)}".client (email)`);
    },
    async (runner) => {
      await runner.query(`DROP INDEX CONCURRENTLY IF EXISTS "${tenantSchemaOf(runner)}"."${index}"`);
    },
  );
}

/** The first error of `type` in a cause chain. */
function causeOf<T>(error: unknown, type: abstract new (...args: never[]) => T): T {
  let current: unknown = error;
  for (let depth = 0; depth < 6 && current !== undefined; depth += 1) {
    if (current instanceof type) return current;
    current = (current as { cause?: unknown }).cause;
  }
  throw new Error(`No ${type.name} in the cause chain of ${String(error)}`);
}

describe('concurrentStatementOf: the statements a transaction = false migration sends bare', () => {
  const cases: Array<[string, string | undefined, string]> = [
    ['CREATE INDEX CONCURRENTLY idx ON "acme".client (email)', 'acme', 'CREATE INDEX CONCURRENTLY'],
    ['create unique index concurrently if not exists "IDX" on only acme.client using btree (email)', 'acme', 'CREATE UNIQUE INDEX CONCURRENTLY'],
    ['CREATE INDEX CONCURRENTLY ON Acme.Client (email)', 'acme', 'CREATE INDEX CONCURRENTLY'],
    ['/* note */ CREATE INDEX -- c\n CONCURRENTLY i ON db.acme.client (x)', 'acme', 'CREATE INDEX CONCURRENTLY'],
    ['CREATE INDEX CONCURRENTLY i ON client (x)', undefined, 'CREATE INDEX CONCURRENTLY'],
    ['CREATE INDEX CONCURRENTLY i ON "Odd""Schema".client (x)', 'Odd"Schema', 'CREATE INDEX CONCURRENTLY'],
    ['DROP INDEX CONCURRENTLY IF EXISTS "acme"."IDX_email"', 'acme', 'DROP INDEX CONCURRENTLY'],
    ['DROP INDEX CONCURRENTLY "IDX_email"', undefined, 'DROP INDEX CONCURRENTLY'],
    ['REINDEX (VERBOSE) INDEX CONCURRENTLY public.idx', 'public', 'REINDEX INDEX CONCURRENTLY'],
    ['REINDEX TABLE CONCURRENTLY acme.client', 'acme', 'REINDEX TABLE CONCURRENTLY'],
    ['REINDEX SCHEMA CONCURRENTLY acme', 'acme', 'REINDEX SCHEMA CONCURRENTLY'],
  ];
  for (const [sql, schema, action] of cases) {
    it(`${JSON.stringify(sql)}: ${action}, schema ${String(schema)}`, () => {
      const statement = concurrentStatementOf(sql);
      expect(statement?.action).to.equal(action);
      expect(statement?.schema).to.equal(schema);
      expect(statement!.inTransaction).not.to.match(/concurrently/i);
      expect(statement!.inTransaction.replace(/\s+/g, ' ')).to.equal(sql.replace(/\s*\bconcurrently\b/i, '').replace(/\s+/g, ' '));
    });
  }
  for (const sql of [
    'CREATE INDEX idx ON client (email)',
    'SELECT 1',
    "INSERT INTO t VALUES ('CREATE INDEX CONCURRENTLY x ON y')",
    'ALTER TABLE client ADD COLUMN concurrently int',
    'VACUUM client',
  ]) {
    it(`${JSON.stringify(sql)} is not one`, () => {
      expect(concurrentStatementOf(sql)).to.equal(undefined);
    });
  }
});

describe('Migrations with transaction = false', () => {
  const open = (extra: Function[], overrides: Partial<TenantDataSourceManagerOptions> = {}) =>
    openManager({ tenantMigrations: [...tenantMigrations, ...extra], ...overrides });

  describe('in fleet runs', () => {
    it('run outside the tenant transaction, with CONCURRENTLY, while the tenant lock is held elsewhere; recorded in the migrations table and the ledger', async () => {
      const before = await open([]);
      const slugs = [uniqueSlug('ntx-a'), uniqueSlug('ntx-b')];
      for (const slug of slugs) await before.createTenant(slug);
      await before.destroy();

      const observed: { transactionActive?: boolean; lockHeldElsewhere?: boolean } = {};
      const transactional = migration('AddClientPhoneNtx', undefined, async (runner) => {
        await runner.query('ALTER TABLE client ADD COLUMN phone_ntx varchar');
      });
      const index = 'IDX_ntx_email';
      const cic = concurrentEmailIndex(index, observed);
      const manager = await open([transactional, cic]);
      const report = await manager.migrateTenants({ tenants: slugs });
      for (const slug of slugs) {
        const line = lineOf(report.results, slug);
        expect(line.status, JSON.stringify(line)).to.equal('migrated');
        expect(line.applied).to.deep.equal([transactional.name, cic.name]);
        expect(await indexState(schemaOf(slug), index)).to.equal('valid');
        expect(await recorded(slug, cic.name)).to.deep.equal({ own: true, ledger: true });
        expect(await recorded(slug, transactional.name)).to.deep.equal({ own: true, ledger: true });
      }
      expect(observed.transactionActive).to.equal(false);
      expect(observed.lockHeldElsewhere).to.equal(true);
      expect((await manager.migrationStatus()).filter((s) => slugs.includes(s.slug)).every((s) => s.pending.length === 0)).to.equal(true);
      // Nothing pending: a second run reports every tenant up to date.
      const again = await manager.migrateTenants({ tenants: slugs });
      expect(again.results.map((r) => r.status)).to.deep.equal(['up-to-date', 'up-to-date']);
    });

    it('a failed concurrent build is not recorded, keeps the migrations committed before it, reports the invalid index; the rerun drops it and builds it again', async () => {
      const base = await open([]);
      const slug = uniqueSlug('ntx-fail');
      await base.createTenant(slug);
      await base.destroy();
      const schema = schemaOf(slug);
      await adminQuery(`INSERT INTO "${schema}".client (name, email) VALUES ('a', 'dup@x'), ('b', 'dup@x')`);

      const index = 'IDX_ntx_dup_email';
      const before = migration('BeforeIndexNtx', undefined, async (runner) => {
        await runner.query('CREATE TABLE ntx_before (id int)');
      });
      const cic = concurrentEmailIndex(index);
      const after = migration('AfterIndexNtx', undefined, async (runner) => {
        await runner.query('CREATE TABLE ntx_after (id int)');
      });
      const manager = await open([before, cic, after]);
      const failed = lineOf((await manager.migrateTenants({ tenants: [slug] })).results, slug);
      expect(failed.status).to.equal('failed');
      expect(failed.applied).to.deep.equal([before.name]);
      expect(failed.error?.migration).to.equal(cic.name);
      expect(failed.error?.code).to.equal('23505');
      expect(failed.error?.detail).to.include('dup@x');
      expect(failed.error?.invalidIndexes).to.deep.equal([index]);
      expect(await indexState(schema, index)).to.equal('invalid');
      expect(await recorded(slug, before.name)).to.deep.equal({ own: true, ledger: true });
      expect(await recorded(slug, cic.name)).to.deep.equal({ own: false, ledger: false });
      expect(await recorded(slug, after.name)).to.deep.equal({ own: false, ledger: false });
      expect((await adminQuery(`SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'ntx_after'`, [schema])).length).to.equal(0);

      await adminQuery(`DELETE FROM "${schema}".client WHERE name = 'b'`);
      const fixed = lineOf((await manager.migrateTenants({ tenants: [slug] })).results, slug);
      expect(fixed.status, JSON.stringify(fixed)).to.equal('migrated');
      expect(fixed.applied).to.deep.equal([cic.name, after.name]);
      expect(fixed.invalidIndexes).to.deep.equal([{ index, rebuilt: true }]);
      expect(await indexState(schema, index)).to.equal('valid');
      expect(await recorded(slug, cic.name)).to.deep.equal({ own: true, ledger: true });
      expect(await recorded(slug, after.name)).to.deep.equal({ own: true, ledger: true });
    });

    it('a concurrent build whose backend dies midway (a crash) leaves an invalid index; the rerun finishes it', async function () {
      this.timeout(60_000);
      const base = await open([]);
      const slug = uniqueSlug('ntx-crash');
      await base.createTenant(slug);
      await base.destroy();
      const schema = schemaOf(slug);
      const index = 'IDX_ntx_crash_email';
      const cic = concurrentEmailIndex(index);
      const manager = await open([cic]);

      // An open write transaction on the table makes the build wait after it has committed its catalog entry.
      const writer = new PgClient({ connectionString: databaseUrl() });
      await writer.connect();
      try {
        await writer.query('BEGIN');
        await writer.query(`INSERT INTO "${schema}".client (name, email) VALUES ('w', 'w@x')`);
        const run = manager.migrateTenants({ tenants: [slug] });
        let builder: number | undefined;
        for (let i = 0; i < 500 && builder === undefined; i += 1) {
          const rows = await adminQuery<{ pid: number }>(
            `SELECT pid FROM pg_stat_activity WHERE query LIKE 'CREATE UNIQUE INDEX CONCURRENTLY%' AND query LIKE $1 AND state = 'active' AND datname = current_database()`,
            [`%"${schema}".client%`],
          );
          builder = rows[0]?.pid;
          if (builder === undefined) await sleep(20);
        }
        expect(builder, 'the concurrent build started').to.be.a('number');
        await adminQuery('SELECT pg_terminate_backend($1)', [builder]);
        const crashed = lineOf((await run).results, slug);
        expect(crashed.status).to.equal('failed');
        expect(crashed.error?.migration).to.equal(cic.name);
      } finally {
        await writer.query('ROLLBACK').catch(() => undefined);
        await writer.end();
      }
      expect(await indexState(schema, index)).to.equal('invalid');
      expect(await recorded(slug, cic.name)).to.deep.equal({ own: false, ledger: false });

      const rerun = lineOf((await manager.migrateTenants({ tenants: [slug] })).results, slug);
      expect(rerun.status, JSON.stringify(rerun)).to.equal('migrated');
      expect(rerun.invalidIndexes).to.deep.equal([{ index, rebuilt: true }]);
      expect(await indexState(schema, index)).to.equal('valid');
      expect(await recorded(slug, cic.name)).to.deep.equal({ own: true, ledger: true });
    });

    it('an unqualified concurrent statement is refused before it is sent; one naming another schema too; nothing is built anywhere', async () => {
      const base = await open([]);
      const slug = uniqueSlug('ntx-unq');
      await base.createTenant(slug);
      await base.destroy();
      await adminQuery('CREATE TABLE IF NOT EXISTS public.ntx_decoy (email text)');

      const unqualified = migration('UnqualifiedCic', false, async (runner) => {
        await runner.query('CREATE INDEX CONCURRENTLY "IDX_ntx_unq" ON client (email)');
      });
      let manager = await open([unqualified]);
      let line = lineOf((await manager.migrateTenants({ tenants: [slug] })).results, slug);
      expect(line.status).to.equal('failed');
      expect(line.error?.code).to.equal('NON_TRANSACTIONAL_STATEMENT_REFUSED');
      expect(line.error?.message).to.include(`"${schemaOf(slug)}".client`).and.include('tenantSchemaOf');
      expect((await adminQuery(`SELECT 1 FROM pg_class WHERE relname = 'IDX_ntx_unq'`)).length).to.equal(0);
      await manager.destroy();

      const elsewhere = migration('ElsewhereCic', false, async (runner) => {
        await runner.query('CREATE INDEX CONCURRENTLY "IDX_ntx_decoy" ON public.ntx_decoy (email)');
      });
      manager = await open([elsewhere]);
      line = lineOf((await manager.migrateTenants({ tenants: [slug] })).results, slug);
      expect(line.status).to.equal('failed');
      expect(line.error?.code).to.equal('MIGRATION_OUTSIDE_TENANT');
      expect((await adminQuery(`SELECT 1 FROM pg_class WHERE relname = 'IDX_ntx_decoy'`)).length).to.equal(0);
      expect(await recorded(slug, elsewhere.name)).to.deep.equal({ own: false, ledger: false });
    });

    for (const guard of ['event-trigger', 'catalog'] as const) {
      it(`its other statements run with the tenant's search path and the '${guard}' guard, each in a transaction of its own`, async () => {
        const base = await open([], { migrationGuard: guard });
        const slug = uniqueSlug('ntx-path');
        await base.createTenant(slug);
        await base.destroy();
        const schema = schemaOf(slug);
        const table = `ntx_public_${nextStamp()}`;

        const unqualified = migration('UnqualifiedTableNtx', false, async (runner) => {
          await runner.query('CREATE TABLE ntx_audit (id int)');
          await runner.query('INSERT INTO ntx_audit VALUES (1)');
        });
        let manager = await open([unqualified], { migrationGuard: guard });
        expect(lineOf((await manager.migrateTenants({ tenants: [slug] })).results, slug).status).to.equal('migrated');
        expect(await adminQuery(`SELECT id FROM "${schema}".ntx_audit`)).to.deep.equal([{ id: 1 }]);
        expect((await adminQuery(`SELECT 1 FROM pg_tables WHERE schemaname = 'public' AND tablename = 'ntx_audit'`)).length).to.equal(0);
        await manager.destroy();

        const outside = migration('PublicTableNtx', false, async (runner) => {
          await runner.query(`CREATE TABLE public.${table} (id int)`);
        });
        manager = await open([unqualified, outside], { migrationGuard: guard });
        const line = lineOf((await manager.migrateTenants({ tenants: [slug] })).results, slug);
        expect(line.status).to.equal('failed');
        expect(line.error?.code).to.equal('MIGRATION_OUTSIDE_TENANT');
        expect(line.error?.migration).to.equal(outside.name);
        expect((await adminQuery(`SELECT 1 FROM pg_tables WHERE tablename = $1`, [table])).length).to.equal(0);
      });
    }

    it('revert undoes a transaction = false migration outside a transaction (DROP INDEX CONCURRENTLY) and removes its record; migrating again rebuilds it', async () => {
      const base = await open([]);
      const slug = uniqueSlug('ntx-rev');
      await base.createTenant(slug);
      await base.destroy();
      const schema = schemaOf(slug);
      const index = 'IDX_ntx_rev_email';
      const cic = concurrentEmailIndex(index);
      const manager = await open([cic]);
      expect(lineOf((await manager.migrateTenants({ tenants: [slug] })).results, slug).status).to.equal('migrated');

      const reverted = lineOf((await manager.revertTenants({ tenants: [slug] })).results, slug);
      expect(reverted.status).to.equal('reverted');
      expect(reverted.applied).to.deep.equal([cic.name]);
      expect(await indexState(schema, index)).to.equal('missing');
      expect(await recorded(slug, cic.name)).to.deep.equal({ own: false, ledger: false });

      // The next revert undoes a transactional migration as usual.
      const second = lineOf((await manager.revertTenants({ tenants: [slug] })).results, slug);
      expect(second.applied).to.deep.equal([tenantMigrations[tenantMigrations.length - 1]!.name]);

      const again = lineOf((await manager.migrateTenants({ tenants: [slug] })).results, slug);
      expect(again.applied).to.deep.equal([tenantMigrations[tenantMigrations.length - 1]!.name, cic.name]);
      expect(await indexState(schema, index)).to.equal('valid');
    });

    it('complete under a default isolation of REPEATABLE READ (the lock is held in READ COMMITTED, which does not block the build)', async function () {
      this.timeout(60_000);
      const index = 'IDX_ntx_rr_email';
      await withFreshDatabase({ entities: [Client, Project, Plan], tenantMigrations, sharedMigrations }, async (db) => {
        await db.query(`ALTER DATABASE "${db.name}" SET default_transaction_isolation TO 'repeatable read'`);
        const slug = uniqueSlug('ntx-rr');
        const first = db.manager({ migrationGuard: 'off' });
        await first.initialize();
        await first.createTenant(slug);
        await first.destroy();
        const cic = concurrentEmailIndex(index);
        const manager = db.manager({ migrationGuard: 'off', tenantMigrations: [...tenantMigrations, cic] });
        await manager.initialize();
        const line = lineOf((await manager.migrateTenants({ tenants: [slug] })).results, slug);
        expect(line.status, JSON.stringify(line)).to.equal('migrated');
        const rows = await db.query<{ valid: boolean }>(
          `SELECT i.indisvalid AS valid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = $1`,
          [index],
        );
        expect(rows).to.deep.equal([{ valid: true }]);
      });
    });
  });

  describe('behind PgBouncer (transaction pooling)', function () {
    this.timeout(60_000);
    const bouncer = usePgBouncer({ poolSize: 3 });

    it('a fleet run builds the index concurrently and records it', async () => {
      const url = bouncer().url;
      const base = await open([], { dataSource: { type: 'postgres', url, poolSize: 4 } });
      const slug = uniqueSlug('ntx-bouncer');
      await base.createTenant(slug);
      await base.destroy();
      const index = 'IDX_ntx_bouncer_email';
      const cic = concurrentEmailIndex(index);
      const manager = await open([cic], { dataSource: { type: 'postgres', url, poolSize: 4 } });
      const line = lineOf((await manager.migrateTenants({ tenants: [slug] })).results, slug);
      expect(line.status, JSON.stringify(line)).to.equal('migrated');
      expect(await indexState(schemaOf(slug), index)).to.equal('valid');
      expect(await recorded(slug, cic.name)).to.deep.equal({ own: true, ledger: true });
    });
  });

  describe('in createTenant, the warm pool and restore: inside the one transaction, CONCURRENTLY removed', () => {
    it('createTenant builds the index in its transaction and stays all-or-nothing', async () => {
      const index = 'IDX_ntx_create_email';
      const cic = concurrentEmailIndex(index);
      const failing = migration('FailsAfterIndexNtx', undefined, async (runner) => {
        await runner.query('SELECT 1/0');
      });
      const manager = await open([cic]);
      const slug = uniqueSlug('ntx-create');
      await manager.createTenant(slug);
      expect(await indexState(schemaOf(slug), index)).to.equal('valid');
      expect(await recorded(slug, cic.name)).to.deep.equal({ own: true, ledger: true });
      await manager.destroy();

      const broken = await open([cic, failing]);
      const lost = uniqueSlug('ntx-create-fail');
      const error = await broken.createTenant(lost).then(
        () => expect.fail('createTenant should fail'),
        (e: unknown) => e,
      );
      expect(error).to.be.instanceOf(TenantProvisioningError);
      expect((error as TenantProvisioningError).migration).to.equal(failing.name);
      expect(await schemaExists(schemaOf(lost))).to.equal(false);
    });

    it('a statement that cannot run in a transaction fails createTenant with a NonTransactionalStatementError; nothing is kept', async () => {
      const vacuum = migration('VacuumClientNtx', false, async (runner) => {
        await runner.query(`VACUUM "${tenantSchemaOf(runner)}".client`);
      });
      const manager = await open([vacuum]);
      const slug = uniqueSlug('ntx-vacuum');
      const error = await manager.createTenant(slug).then(
        () => expect.fail('createTenant should fail'),
        (e: unknown) => e,
      );
      expect(error).to.be.instanceOf(TenantProvisioningError);
      expect((error as TenantProvisioningError).migration).to.equal(vacuum.name);
      const refused = causeOf(error, NonTransactionalStatementError);
      expect(refused.code).to.equal('NON_TRANSACTIONAL_STATEMENT_REFUSED');
      expect(refused.message).to.include('VACUUM').and.include('createTenant');
      expect(await schemaExists(schemaOf(slug))).to.equal(false);
    });

    it('warm-pool spares get the index (renamed with the spare when claimed), and restoreTenant applies it on the way back', async function () {
      this.timeout(60_000);
      const index = 'IDX_ntx_pool_email';
      const cic = concurrentEmailIndex(index);
      const registryTable = `ntx_pool_${nextStamp()}`;
      const base = await open([], { registryTable });
      const archived = uniqueSlug('ntx-arch');
      await base.createTenant(archived);
      await base.archiveTenant(archived);
      await base.destroy();

      const manager = await open([cic], { registryTable, warmPool: { size: 1 } });
      await manager.refillWarmPool();
      const slug = uniqueSlug('ntx-pool');
      await manager.createTenant(slug);
      expect(await indexState(schemaOf(slug), index)).to.equal('valid');
      expect(await recorded(slug, cic.name, registryTable)).to.deep.equal({ own: true, ledger: true });

      await manager.restoreTenant(archived);
      expect(await indexState(schemaOf(archived), index)).to.equal('valid');
      expect(await recorded(archived, cic.name, registryTable)).to.deep.equal({ own: true, ledger: true });
    });

    it("migrations that set TypeORM's transaction = true run in createTenant as any other (TypeORM refuses the override in one transaction)", async () => {
      const explicit = migration('ExplicitTransactionNtx', true, async (runner) => {
        await runner.query('CREATE TABLE ntx_explicit (id int)');
      });
      const manager = await open([explicit]);
      const slug = uniqueSlug('ntx-explicit');
      await manager.createTenant(slug);
      expect((await adminQuery(`SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'ntx_explicit'`, [schemaOf(slug)])).length).to.equal(1);
    });
  });

  it('a shared migration with transaction = false is refused at initialize(), naming it; nothing of initialize() is kept', async () => {
    const sharedIndex = migration('SharedPlanIndexNtx', false, async (runner) => {
      await runner.query('CREATE INDEX CONCURRENTLY plan_name_ntx ON public.plan (name)');
    });
    await withFreshDatabase({ entities: [Client, Project, Plan], tenantMigrations, sharedMigrations: [...sharedMigrations, sharedIndex] }, async (db) => {
      const error = await db.manager().initialize().then(
        () => expect.fail('initialize() should refuse it'),
        (e: unknown) => e,
      );
      const refused = causeOf(error, TenancyConfigurationError);
      expect(refused.message).to.include(sharedIndex.name).and.include('transaction = false');
      expect(await db.query(`SELECT 1 FROM pg_class WHERE relname = 'plan_name_ntx'`)).to.deep.equal([]);
      // initialize() is one transaction: the shared migrations before it were rolled back with it.
      expect(await db.query(`SELECT to_regclass('public.migrations') AS migrations, to_regclass('public.plan') AS plan`)).to.deep.equal([
        { migrations: null, plan: null },
      ]);
    });
  });

  it('tenantSchemaOf refuses a runner that is not a tenant DataSource of the manager', async () => {
    const manager = await open([]);
    const runner = manager.sharedDataSource.createQueryRunner();
    try {
      expect(() => tenantSchemaOf(runner)).to.throw(InvalidArgumentError, /tenant migration/);
    } finally {
      await runner.release();
    }
  });
});
