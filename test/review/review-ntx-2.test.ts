/**
 * Second adversarial review of `transaction = false` tenant migrations: the
 * fixes of commit 5884b48 (lexer, MigrationEscapeError, refuseOtherConnections,
 * runInBareForm, RESET ALL, pollAdvisoryLock, the concurrency refusal). Each
 * probe asserts the behaviour the library should have: a failing probe is a
 * finding.
 */
import { expect } from 'chai';
import { tenantContext, tenantSchemaOf } from '../../src';
import { splitStatements, transactionControlIn } from '../../src/migration/concurrent-statements';
import { adminQuery, databaseUrl, schemaExists, sleep, uniqueSlug } from '../support/fixtures';
import { baseTenants, lineOf, migration, nextStamp, openWith as open, relationsNamed, schemaOf } from '../support/tenant-migrations';
import { Client, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { withFreshDatabase } from '../support/fresh-database';


function cic(index: string): Function {
  return migration('Rv2Cic', false, async (runner) => {
    await runner.query(`CREATE INDEX CONCURRENTLY IF NOT EXISTS "${index}" ON "${tenantSchemaOf(runner)}".client (email)`);
  });
}

describe('review 2: runInBareForm, transaction control passed through', () => {
  it('fleet run: startTransaction() then a raw COMMIT, then an unqualified CREATE TABLE, does not create the table in public', async () => {
    const [slug] = await baseTenants(1, 'rv2-rawcommit');
    const table = `rv2_rawcommit_${nextStamp()}`;
    const escape = migration('Rv2RawCommit', false, async (runner) => {
      await runner.startTransaction();
      await runner.query(`UPDATE client SET name = name`);
      await runner.query('COMMIT'); // instead of runner.commitTransaction(): TypeORM still thinks a transaction is open
      await runner.query(`CREATE TABLE ${table} (id int)`);
    });
    const manager = await open([escape]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(await relationsNamed(table), `line: ${JSON.stringify(line)}`).to.not.include('public');
  });

  it('fleet run: startTransaction(), a raw ROLLBACK in a catch, then the migration goes on: its next statement stays in the tenant', async () => {
    const [slug] = await baseTenants(1, 'rv2-rawrb');
    const table = `rv2_rawrb_${nextStamp()}`;
    const escape = migration('Rv2RawRollback', false, async (runner) => {
      await runner.startTransaction();
      try {
        await runner.query('SELECT 1/0');
      } catch {
        await runner.query('ROLLBACK');
      }
      await runner.query(`CREATE TABLE ${table} (id int)`);
    });
    const manager = await open([escape]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(await relationsNamed(table), `line: ${JSON.stringify(line)}`).to.not.include('public');
  });

  it('fleet run: a raw BEGIN ... COMMIT in the migration is atomic (a failure inside it keeps none of its rows)', async () => {
    const [slug] = await baseTenants(1, 'rv2-atomic');
    const atomic = migration('Rv2RawBeginAtomic', false, async (runner) => {
      await runner.query('BEGIN');
      await runner.query(`INSERT INTO client (name, email) VALUES ('rv2-atomic', 'a@x')`);
      await runner.query('SELECT 1/0');
      await runner.query('COMMIT');
    });
    const manager = await open([atomic]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(line.status).to.equal('failed');
    const rows = await adminQuery(`SELECT 1 FROM "${schemaOf(slug!)}".client WHERE name = 'rv2-atomic'`);
    expect(rows, 'the INSERT of the failed BEGIN ... COMMIT block was committed on its own').to.deep.equal([]);
  });
});

describe('review 2: transactionControlIn / splitStatements, legitimate SQL refused', () => {
  it('lexer: a SQL-standard function body (BEGIN ATOMIC ... END) is one statement with no transaction control', () => {
    const sql = 'CREATE FUNCTION total(a int, b int) RETURNS int LANGUAGE SQL BEGIN ATOMIC SELECT a + b; END';
    expect(transactionControlIn(sql)).to.equal(undefined);
    expect(splitStatements(sql).statements).to.have.length(1);
  });

  it('createTenant: a transactional tenant migration creating a BEGIN ATOMIC function succeeds', async () => {
    const fn = migration('Rv2BeginAtomic', undefined, async (runner) => {
      await runner.query('CREATE FUNCTION rv2_total(a int, b int) RETURNS int LANGUAGE SQL BEGIN ATOMIC SELECT a + b; END');
    });
    const manager = await open([fn]);
    const slug = uniqueSlug('rv2-atomicfn');
    await manager.createTenant(slug);
    const rows = await adminQuery(`SELECT "${schemaOf(slug)}".rv2_total(1, 2) AS v`);
    expect(rows).to.deep.equal([{ v: 3 }]);
  });

  it('fleet run: a transaction = false migration creating a BEGIN ATOMIC procedure (one statement) migrates', async () => {
    const [slug] = await baseTenants(1, 'rv2-atomicp');
    const fn = migration('Rv2BeginAtomicBare', false, async (runner) => {
      await runner.query(`CREATE PROCEDURE rv2_touch() LANGUAGE SQL BEGIN ATOMIC UPDATE client SET name = name; UPDATE client SET email = email; END`);
      await runner.query(`CREATE INDEX CONCURRENTLY IF NOT EXISTS rv2_atomicp_idx ON "${tenantSchemaOf(runner)}".client (email)`);
    });
    const manager = await open([fn]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(line.status, JSON.stringify(line)).to.equal('migrated');
  });

  it('fleet run: REINDEX (CONCURRENTLY) TABLE of a tenant table (the PostgreSQL 14+ option form) migrates', async () => {
    const [slug] = await baseTenants(1, 'rv2-reidxopt');
    const reindex = migration('Rv2ReindexOption', false, async (runner) => {
      await runner.query(`REINDEX (CONCURRENTLY) TABLE "${tenantSchemaOf(runner)}".client`);
    });
    const manager = await open([reindex]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(line.status, JSON.stringify(line)).to.equal('migrated');
  });
});

describe('review 2: transactionControlIn, standard_conforming_strings = off', () => {
  it('createTenant: under standard_conforming_strings = off, "SELECT \'a\\\'\'; COMMIT; CREATE TABLE public.x ..." is refused and createTenant stays all-or-nothing', async () => {
    const table = `rv2_scs_${nextStamp()}`;
    const script = migration('Rv2ScsOff', undefined, async (runner) => {
      await runner.query('SET LOCAL standard_conforming_strings = off');
      // PostgreSQL (backslash escapes in '...'): SELECT 'a'''; COMMIT; CREATE TABLE ...; SELECT 1 -- '
      // The lexer (backslash ordinary): one SELECT of one string literal.
      await runner.query(`SELECT 'a\\''; COMMIT; CREATE TABLE public.${table} (id int); SELECT 1 -- '`);
    });
    const failing = migration('Rv2ScsFailsAfter', undefined, async (runner) => {
      await runner.query('SELECT 1/0');
    });
    const manager = await open([script, failing]);
    const slug = uniqueSlug('rv2-scs');
    await manager.createTenant(slug).catch(() => undefined);
    const registry = await adminQuery(`SELECT 1 FROM public.tenants WHERE slug = $1`, [slug]);
    expect({ schemaKept: await schemaExists(schemaOf(slug)), tableIn: await relationsNamed(table), registryRows: registry.length }).to.deep.equal({
      schemaKept: false,
      tableIn: [],
      registryRows: 0,
    });
  });
});

describe('review 2: what a transaction = false migration leaves on pooled connections', () => {
  before(async () => {
    await adminQuery(`DO $$ BEGIN CREATE ROLE rv2_admin NOLOGIN SUPERUSER; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
  });

  it('SET ROLE in a transaction = false migration does not stay on the pooled connection (RESET ALL does not reset the role)', async () => {
    const [slug, other] = await baseTenants(2, 'rv2-role');
    const setter = migration('Rv2SetRole', false, async (runner) => {
      await runner.query(`CREATE INDEX CONCURRENTLY IF NOT EXISTS rv2_role_idx ON "${tenantSchemaOf(runner)}".client (email)`);
      // A superuser role, so the library's own record on this connection still works.
      await runner.query('SET ROLE rv2_admin');
    });
    const manager = await open([setter]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(line.status, JSON.stringify(line)).to.equal('migrated');
    // Enough at once to check out every idle connection of the pool.
    const users = await Promise.all(
      Array.from({ length: 10 }, () =>
        manager.run(other!, async () => {
          const [row] = await tenantContext.query('SELECT current_user AS u, pg_sleep(0.05)');
          return row.u as string;
        }),
      ),
    );
    expect([...new Set(users)], "a pooled connection serves requests as the migration's role").to.deep.equal(['postgres']);
  });
});

describe('review 2: the tenant lock against other lock takers', () => {
  it('lockTimeoutMs 0: suspendTenant() during a concurrent build of the same tenant does not deadlock (it waits in the server with a snapshot the build waits for)', async function () {
    this.timeout(90_000);
    // A database of its own: a concurrent build waits for every older snapshot in its database, other tests' included.
    await withFreshDatabase({ entities: [Client, Project, Plan], tenantMigrations, sharedMigrations }, async (db) => {
      const base = db.manager();
      await base.initialize();
      const slug = uniqueSlug('rv2-susp');
      await base.createTenant(slug);
      await base.destroy();
      const slow = migration('Rv2SlowCic', false, async (runner) => {
        await runner.query('SELECT pg_sleep(1.5)');
        await runner.query(`CREATE INDEX CONCURRENTLY IF NOT EXISTS rv2_susp_idx ON "${tenantSchemaOf(runner)}".client (email)`);
      });
      const manager = db.manager({ tenantMigrations: [...tenantMigrations, slow], lockTimeoutMs: 0 });
      await manager.initialize();
      const run = manager.migrateTenants({ tenants: [slug] });
      await sleep(600);
      const suspend = manager.suspendTenant(slug);
      const both = Promise.all([run, suspend]);
      const outcome = await Promise.race([both.then(() => 'done' as const, () => 'failed' as const), sleep(20_000).then(() => 'stuck' as const)]);
      let sessions = '';
      if (outcome === 'stuck') {
        // Say who the build waits for, then end the build so the managers can close.
        sessions = JSON.stringify(
          await db.query(
            `SELECT pid, state, backend_xmin::text AS xmin, wait_event_type, wait_event, left(query, 100) AS query
               FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`,
          ),
        );
        await db.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'CREATE INDEX CONCURRENTLY%' AND pid <> pg_backend_pid()`,
        );
        await both.catch(() => undefined);
      }
      expect(outcome, `the run and the suspension both finished within 20 s; sessions: ${sessions}`).to.equal('done');
    });
  });

  it('default lockTimeoutMs: suspendTenant() during a concurrent build of the same tenant succeeds once the run is done', async function () {
    this.timeout(90_000);
    const [slug] = await baseTenants(1, 'rv2-susp2');
    const slow = migration('Rv2SlowCic2', false, async (runner) => {
      await runner.query('SELECT pg_sleep(1.5)');
      await runner.query(`CREATE INDEX CONCURRENTLY IF NOT EXISTS rv2_susp2_idx ON "${tenantSchemaOf(runner)}".client (email)`);
    });
    const manager = await open([slow]);
    const run = manager.migrateTenants({ tenants: [slug!] });
    await sleep(600);
    const suspended = await manager.suspendTenant(slug!).then(
      (record) => record.status,
      (error: Error) => `error: ${error.message}`,
    );
    const report = await run;
    expect({ suspended, line: lineOf(report.results, slug!).status }).to.deep.equal({ suspended: 'suspended', line: 'migrated' });
  });
});

describe('review 2: a lock taker that waits keeps no transaction open between tries', () => {
  it('suspendTenant() waiting for the tenant lock spends the wait outside a transaction (an index build that looked while a try ran need not wait for it)', async function () {
    this.timeout(60_000);
    const [slug] = await baseTenants(1, 'rv2-gap');
    const manager = await open([], { lockTimeoutMs: 0 });
    const { Client: PgClient } = await import('pg');
    const holder = new PgClient({ connectionString: databaseUrl() });
    await holder.connect();
    try {
      await holder.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', [`typeorm-tenants:schema:${schemaOf(slug!)}`]);
      const suspend = manager.suspendTenant(slug!);
      // Every other backend of this database (the manager's pool: the poller among them), sampled while suspendTenant waits.
      await sleep(100);
      const samples: string[] = [];
      for (let i = 0; i < 60; i += 1) {
        await sleep(20);
        const rows = await adminQuery<{ state: string }>(
          `SELECT state FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'
              AND pid <> $1 AND application_name <> 'typeorm-tenants-test-admin'`,
          [(holder as unknown as { processID: number }).processID],
        );
        samples.push(rows.some((row) => row.state === 'idle in transaction') ? 'idle in transaction' : 'none in transaction');
      }
      const stillWaiting = await Promise.race([suspend.then(() => false), sleep(10).then(() => true)]);
      await holder.query('SELECT pg_advisory_unlock_all()');
      expect((await suspend).status).to.equal('suspended');
      expect(stillWaiting, 'suspendTenant waited for the lock all along').to.equal(true);
      const inTransaction = samples.filter((state) => state === 'idle in transaction').length;
      // Before the fix every sample found one: the poller's one transaction for the whole wait.
      expect(inTransaction, `samples: ${samples.join(', ')}`).to.be.lessThan(samples.length / 2);
    } finally {
      await holder.end();
    }
  });
});

describe('review 2: the concurrency refusal', () => {
  it('a pool sized with dataSource.extra.max (pg\'s own option, which the shared pool honours) is taken into account', async function () {
    this.timeout(120_000);
    const dataSource = { type: 'postgres' as const, url: databaseUrl(), extra: { max: 20 } };
    const slugs = await baseTenants(2, 'rv2-extra', { dataSource });
    const manager = await open([cic('rv2_extra_email')], { dataSource });
    const report = await manager.migrateTenants({ tenants: slugs, concurrency: 8 }).then(
      (r) => r.results.map((l) => l.status),
      (error: Error) => `refused: ${error.message}`,
    );
    expect(report).to.deep.equal(['migrated', 'migrated']);
  });

  it('reconcileMigrationLedger (one connection per tenant, no migration) with concurrency = poolSize is not refused', async function () {
    this.timeout(120_000);
    const dataSource = { type: 'postgres' as const, url: databaseUrl(), poolSize: 4 };
    const slugs = await baseTenants(2, 'rv2-recon', { dataSource });
    const manager = await open([cic('rv2_recon_email')], { dataSource });
    const outcome = await manager.reconcileMigrationLedger({ tenants: slugs, concurrency: 4 } as never).then(
      () => 'ok',
      (error: Error) => `refused: ${error.message}`,
    );
    expect(outcome).to.equal('ok');
  });
});

describe('review 2: lexer cost on large migrations', () => {
  it('transactionControlIn on a 4 MB seed INSERT (run for every tenant migration statement) takes well under 10 s (a quadratic lexer would take minutes)', () => {
    const values = Array.from({ length: 100_000 }, (_, i) => `(${i}, 'name ${i} with ''quote''', E'esc\\\\${i}', "x")`).join(', ');
    const sql = `INSERT INTO seed (id, name, esc, q) VALUES ${values}`;
    const started = Date.now();
    expect(transactionControlIn(sql)).to.equal(undefined);
    expect(Date.now() - started).to.be.lessThan(10_000);
  });
});
