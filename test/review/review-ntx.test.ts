/**
 * Adversarial review of `transaction = false` tenant migrations and of the
 * `logger` option (commit 91a2ecb). Each probe asserts the behaviour the
 * library should have: a failing probe is a finding.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { expect } from 'chai';
import { Client as PgClient } from 'pg';
import { TableIndex } from 'typeorm';
import { InvalidArgumentError, tenantContext, tenantSchemaOf, type FleetTenantResult, type TenancyLogEntry } from '../../src';
import { concurrentStatementOf } from '../../src/migration/concurrent-statements';
import { adminQuery, databaseUrl, schemaExists, sleep, uniqueSlug } from '../support/fixtures';
import { usePgBouncer } from '../support/pgbouncer-hooks';
import { baseTenants, indexState, lineOf, migration, nextStamp, openWith as open, recorded, relationsNamed, schemaOf } from '../support/tenant-migrations';


function cic(index: string): Function {
  return migration(
    'RvCic',
    false,
    async (runner) => {
      await runner.query(`CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "${index}" ON "${tenantSchemaOf(runner)}".client (email)`);
    },
    async (runner) => {
      await runner.query(`DROP INDEX CONCURRENTLY IF EXISTS "${tenantSchemaOf(runner)}"."${index}"`);
    },
  );
}

async function decoy(): Promise<string> {
  const table = `rv_decoy_${nextStamp()}`;
  await adminQuery(`CREATE TABLE public.${table} (email text)`);
  return table;
}

describe('review: transaction = false migrations, escaping the tenant', () => {
  it('parser: a nested block comment hides the real target (PostgreSQL nests /* */, the tokenizer does not)', () => {
    const sql = 'CREATE INDEX CONCURRENTLY i ON /* /* */ acme.client */ public.plan (name)';
    const statement = concurrentStatementOf(sql);
    // PostgreSQL reads: CREATE INDEX CONCURRENTLY i ON public.plan (name)
    expect(statement?.schema).to.not.equal('acme');
  });

  it('parser: a -- comment ends at a carriage return for PostgreSQL, not for the tokenizer', () => {
    const sql = 'CREATE INDEX CONCURRENTLY i ON -- x\rpublic.plan (name) /*\n acme.client (email) */';
    const statement = concurrentStatementOf(sql);
    // PostgreSQL reads: CREATE INDEX CONCURRENTLY i ON public.plan (name)
    expect(statement?.schema).to.not.equal('acme');
  });

  it('fleet run: CREATE INDEX CONCURRENTLY on a public table through a nested comment is refused and builds nothing', async () => {
    const [slug] = await baseTenants(1, 'rv-nest');
    const table = await decoy();
    const escape = migration('RvNestedComment', false, async (runner) => {
      await runner.query(`CREATE INDEX CONCURRENTLY "IDX_rv_nest" ON /* /* */ "${tenantSchemaOf(runner)}".client */ public.${table} (email)`);
    });
    const manager = await open([escape]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(await relationsNamed('IDX_rv_nest'), 'no index built in public').to.deep.equal([]);
    expect(line.status).to.equal('failed');
  });

  it('fleet run: CREATE INDEX CONCURRENTLY on a public table through a \\r-terminated -- comment is refused and builds nothing', async () => {
    const [slug] = await baseTenants(1, 'rv-cr');
    const table = await decoy();
    const escape = migration('RvCrComment', false, async (runner) => {
      await runner.query(`CREATE INDEX CONCURRENTLY "IDX_rv_cr" ON -- x\rpublic.${table} (email) /*\n "${tenantSchemaOf(runner)}".client (email) */`);
    });
    const manager = await open([escape]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(await relationsNamed('IDX_rv_cr'), 'no index built in public').to.deep.equal([]);
    expect(line.status).to.equal('failed');
  });

  it('fleet run: a pasted SQL script "BEGIN; CREATE TABLE ...; COMMIT;" does not create its table in public', async () => {
    const [slug] = await baseTenants(1, 'rv-script');
    const table = `rv_script_${nextStamp()}`;
    const script = migration('RvPastedScript', false, async (runner) => {
      await runner.query(`BEGIN; CREATE TABLE ${table} (id int); COMMIT;`);
    });
    const manager = await open([script]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    const where = await relationsNamed(table);
    expect(where, `line: ${JSON.stringify(line)}`).to.not.include('public');
  });

  it('fleet run: a multi-statement string with a COMMIT in it does not run its tail unguarded in public', async () => {
    const [slug] = await baseTenants(1, 'rv-multi');
    const table = `rv_multi_${nextStamp()}`;
    const script = migration('RvMultiStatement', false, async (runner) => {
      await runner.query(`CREATE TABLE rv_multi_first (id int); COMMIT; CREATE TABLE ${table} (id int)`);
    });
    const manager = await open([script]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(await relationsNamed(table), `line: ${JSON.stringify(line)}`).to.not.include('public');
  });

  it('createTenant: a "SELECT 1; COMMIT; CREATE TABLE ..." string in a transaction = false migration (in-transaction form) keeps createTenant all-or-nothing and out of public', async () => {
    const table = `rv_ct_script_${nextStamp()}`;
    const script = migration('RvPastedScriptCreate', false, async (runner) => {
      await runner.query(`SELECT 1; COMMIT; CREATE TABLE ${table} (id int)`);
    });
    const failing = migration('RvFailsAfter', undefined, async (runner) => {
      await runner.query('SELECT 1/0');
    });
    const manager = await open([script, failing]);
    const slug = uniqueSlug('rv-ct-script');
    await manager.createTenant(slug).catch(() => undefined);
    const registry = await adminQuery(`SELECT 1 FROM public.tenants WHERE slug = $1`, [slug]);
    expect({ schemaKept: await schemaExists(schemaOf(slug)), tableIn: await relationsNamed(table), registryRows: registry.length }, 'nothing of the failed createTenant is kept').to.deep.equal({
      schemaKept: false,
      tableIn: [],
      registryRows: 0,
    });
  });

  it('transactional migration (same root cause, predates this commit): "SELECT 1; COMMIT; CREATE TABLE ..." in createTenant keeps it all-or-nothing and out of public', async () => {
    const table = `rv_ct_tx_${nextStamp()}`;
    const script = migration('RvPastedScriptCreateTx', undefined, async (runner) => {
      await runner.query(`SELECT 1; COMMIT; CREATE TABLE ${table} (id int)`);
    });
    const failing = migration('RvFailsAfterTx', undefined, async (runner) => {
      await runner.query('SELECT 1/0');
    });
    const manager = await open([script, failing]);
    const slug = uniqueSlug('rv-ct-tx');
    await manager.createTenant(slug).catch(() => undefined);
    const registry = await adminQuery(`SELECT 1 FROM public.tenants WHERE slug = $1`, [slug]);
    expect({ schemaKept: await schemaExists(schemaOf(slug)), tableIn: await relationsNamed(table), registryRows: registry.length }, 'nothing of the failed createTenant is kept').to.deep.equal({
      schemaKept: false,
      tableIn: [],
      registryRows: 0,
    });
  });

  it('transactional migration (same root cause, predates this commit): a table created through queryRunner.connection.query in public is refused', async () => {
    const [slug] = await baseTenants(1, 'rv-conn-tx');
    const table = `rv_conn_tx_${nextStamp()}`;
    const escape = migration('RvOtherConnectionTx', undefined, async (runner) => {
      await runner.connection.query(`CREATE TABLE public.${table} (id int)`);
    });
    const manager = await open([escape]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(await relationsNamed(table), `line: ${JSON.stringify(line)}`).to.deep.equal([]);
  });

  it('fleet run: an unqualified CIC through queryRunner.connection (another connection) is refused', async () => {
    const [slug] = await baseTenants(1, 'rv-conn');
    const table = await decoy();
    const escape = migration('RvOtherConnection', false, async (runner) => {
      await runner.connection.query(`CREATE INDEX CONCURRENTLY "IDX_rv_conn" ON public.${table} (email)`);
    });
    const manager = await open([escape]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(await relationsNamed('IDX_rv_conn'), `line: ${JSON.stringify(line)}`).to.deep.equal([]);
  });

  for (const [label, sql] of [
    ['three-part name naming public', (s: string, t: string) => `CREATE INDEX CONCURRENTLY "IDX_rv_3p" ON ${'"%DB%"'}.public.${t} (email)`],
    ['quoted "public" with a dot in the table name', (_s: string, t: string) => `CREATE INDEX CONCURRENTLY "IDX_rv_q" ON "public"."${t}" (email)`],
    ['U&"" unicode-escaped schema', (_s: string, t: string) => `CREATE INDEX CONCURRENTLY "IDX_rv_u" ON U&"\\0070ublic".${t} (email)`],
    ['ON ONLY public', (_s: string, t: string) => `CREATE INDEX CONCURRENTLY "IDX_rv_only" ON ONLY public.${t} (email)`],
    ['tenant name as the database part', (s: string, t: string) => `CREATE INDEX CONCURRENTLY "IDX_rv_db" ON "${s}".public.${t} (email)`],
    ['REINDEX SCHEMA public', () => `REINDEX SCHEMA CONCURRENTLY public`],
    ['DROP INDEX of a shared index', () => `DROP INDEX CONCURRENTLY IF EXISTS public."rv_shared_idx"`],
  ] as const) {
    it(`fleet run: ${label} is refused`, async () => {
      const [slug] = await baseTenants(1, 'rv-name');
      const table = await decoy();
      await adminQuery(`CREATE INDEX IF NOT EXISTS rv_shared_idx ON public.${table} (email)`);
      const [{ db }] = await adminQuery<{ db: string }>('SELECT current_database() AS db');
      const statement = sql(schemaOf(slug!), table).replace('%DB%', db!);
      const escape = migration('RvName', false, async (runner) => {
        await runner.query(statement);
      });
      const manager = await open([escape]);
      const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
      expect(line.status, JSON.stringify(line)).to.equal('failed');
      for (const index of ['IDX_rv_3p', 'IDX_rv_q', 'IDX_rv_u', 'IDX_rv_only', 'IDX_rv_db']) expect(await relationsNamed(index)).to.deep.equal([]);
      expect(await relationsNamed('rv_shared_idx')).to.deep.equal(['public']);
    });
  }
});

describe('review: transaction = false migrations, what they leave behind', () => {
  it('session settings a migration makes (SET application_name, statement_timeout) do not stay on pooled connections', async () => {
    const [slug] = await baseTenants(1, 'rv-sess');
    const marker = `rv-poisoned-${nextStamp()}`;
    const setter = migration('RvSessionSet', false, async (runner) => {
      await runner.query(`SET application_name = '${marker}'`);
      await runner.query('SET statement_timeout = 0');
      await runner.query(`CREATE INDEX CONCURRENTLY IF NOT EXISTS rv_sess_idx ON "${tenantSchemaOf(runner)}".client (email)`);
    });
    const manager = await open([setter]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(line.status, JSON.stringify(line)).to.equal('migrated');
    const leaked = await adminQuery(`SELECT pid, state FROM pg_stat_activity WHERE application_name = $1`, [marker]);
    expect(leaked, 'a pooled connection still carries the migration\'s session settings').to.deep.equal([]);
  });

  it('session settings of a transaction = false migration that then fails do not stay on pooled connections', async () => {
    const [slug] = await baseTenants(1, 'rv-sessf');
    const marker = `rv-poisoned-f-${nextStamp()}`;
    const setter = migration('RvSessionSetFails', false, async (runner) => {
      await runner.query(`SET application_name = '${marker}'`);
      await runner.query('SET statement_timeout = 1');
      await runner.query('SELECT 1/0');
    });
    const manager = await open([setter]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(line.status, JSON.stringify(line)).to.equal('failed');
    const leaked = await adminQuery(`SELECT pid, state FROM pg_stat_activity WHERE application_name = $1`, [marker]);
    expect(leaked, "a pooled connection still carries the failed migration's session settings").to.deep.equal([]);
  });

  it("after such a failed migration, the application's next queries on the pool are not cancelled by its statement_timeout", async () => {
    const [slug, other] = await baseTenants(2, 'rv-sessi');
    const setter = migration('RvSessionTimeoutFails', false, async (runner) => {
      await runner.query('SET statement_timeout = 1');
      await runner.query('SELECT 1/0');
    });
    const manager = await open([setter]);
    expect(lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!).status).to.equal('failed');
    const errors: string[] = [];
    // Enough at once to check out every idle connection of the pool.
    await Promise.all(
      Array.from({ length: 8 }, () =>
        manager.run(other!, () => tenantContext.query('SELECT pg_sleep(0.05)')).catch((error: Error) => errors.push(error.message)),
      ),
    );
    expect(errors).to.deep.equal([]);
  });

  it('a tenant with a partitioned-table index created ON ONLY (invalid by design) still migrates, and that index is kept', async () => {
    const partitioned = migration('RvPartitioned', undefined, async (runner) => {
      await runner.query('CREATE TABLE rv_event (id int, at date) PARTITION BY RANGE (at)');
      await runner.query(`CREATE TABLE rv_event_2026 PARTITION OF rv_event FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`);
      await runner.query('CREATE INDEX rv_event_at_idx ON ONLY rv_event (at)');
    });
    const base = await open([partitioned]);
    const slug = uniqueSlug('rv-part');
    await base.createTenant(slug);
    await base.destroy();
    expect(await indexState(schemaOf(slug), 'rv_event_at_idx')).to.equal('invalid');

    const manager = await open([partitioned, cic('rv_part_email')]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug] })).results, slug);
    expect(line.status, JSON.stringify(line)).to.equal('migrated');
    expect(await indexState(schemaOf(slug), 'rv_event_at_idx'), 'the ON ONLY index was not dropped').to.equal('invalid');
  });

  it('an invalid index unrelated to the migration (a failed build of a hand-made index) is reported but not taken for this migration\'s', async () => {
    // Documented: "An invalid index built by hand ... would be dropped too". This only checks the report says so.
    const [slug] = await baseTenants(1, 'rv-hand');
    const schema = schemaOf(slug!);
    await adminQuery(`INSERT INTO "${schema}".client (name, email) VALUES ('a', 'x@x'), ('b', 'x@x')`);
    await adminQuery(`CREATE UNIQUE INDEX CONCURRENTLY rv_hand_idx ON "${schema}".client (email)`).catch(() => undefined);
    expect(await indexState(schema, 'rv_hand_idx')).to.equal('invalid');
    const logs: TenancyLogEntry[] = [];
    const manager = await open([cic('rv_hand_other')], { logger: (entry) => logs.push(entry) });
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    // The unique build of the migration fails on the same duplicate; rv_hand_idx was dropped before it.
    expect(line.status).to.equal('failed');
    const warn = logs.filter((l) => l.kind === 'invalid-index');
    expect(warn.length, JSON.stringify(logs.map((l) => [l.kind, l.message]))).to.be.greaterThan(0);
    expect(warn.every((l) => l.schema === schema && l.tenant === slug)).to.equal(true);
  });

  it('TypeORM Table API: queryRunner.createIndex with isConcurrent works in a fleet run and in createTenant', async () => {
    const [slug] = await baseTenants(1, 'rv-api');
    const api = migration(
      'RvTableApi',
      false,
      async (runner) => {
        await runner.createIndex('client', new TableIndex({ name: 'IDX_rv_api', columnNames: ['name'], isConcurrent: true }));
      },
      async (runner) => {
        await runner.dropIndex('client', 'IDX_rv_api');
      },
    );
    const manager = await open([api]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(line.status, JSON.stringify(line)).to.equal('migrated');
    expect(await indexState(schemaOf(slug!), 'IDX_rv_api')).to.equal('valid');
    const fresh = uniqueSlug('rv-api-new');
    await manager.createTenant(fresh);
    expect(await indexState(schemaOf(fresh), 'IDX_rv_api')).to.equal('valid');
    const reverted = lineOf((await manager.revertTenants({ tenants: [slug!] })).results, slug!);
    expect(reverted.status, JSON.stringify(reverted)).to.equal('reverted');
    expect(await indexState(schemaOf(slug!), 'IDX_rv_api')).to.equal('missing');
    expect(await recorded(slug!, api.name)).to.deep.equal({ own: false, ledger: false });
  });

  it('Promise.all of a table and a concurrent index in one transaction = false migration', async () => {
    const [slug] = await baseTenants(1, 'rv-par');
    const parallel = migration('RvParallel', false, async (runner) => {
      const schema = tenantSchemaOf(runner);
      await Promise.all([
        runner.query('CREATE TABLE rv_par_t (id int)'),
        runner.query(`CREATE INDEX CONCURRENTLY IF NOT EXISTS rv_par_idx ON "${schema}".client (name)`),
      ]);
    });
    const manager = await open([parallel]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(line.status, JSON.stringify(line)).to.equal('migrated');
    expect(await relationsNamed('rv_par_t')).to.deep.equal([schemaOf(slug!)]);
  });

  it('Promise.all of two unqualified statements (the second started while the first runs) stays in the tenant and guarded', async () => {
    const [slug] = await baseTenants(1, 'rv-par2');
    const a = `rv_par_a_${nextStamp()}`;
    const b = `rv_par_b_${nextStamp()}`;
    const parallel = migration('RvParallel2', false, async (runner) => {
      // The second starts while the first statement runs: its statement lands after the first's COMMIT.
      await Promise.all([runner.query(`CREATE TABLE ${a} AS SELECT 1 AS id FROM pg_sleep(0.3)`), sleep(100).then(() => runner.query(`CREATE TABLE ${b} (id int)`))]);
    });
    const manager = await open([parallel]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(await relationsNamed(a), JSON.stringify(line)).to.not.include('public');
    expect(await relationsNamed(b), JSON.stringify(line)).to.not.include('public');
  });

  it('Promise.all of two unqualified statements (same tick) stays in the tenant', async () => {
    const [slug] = await baseTenants(1, 'rv-par3');
    const a = `rv_par3_a_${nextStamp()}`;
    const b = `rv_par3_b_${nextStamp()}`;
    const parallel = migration('RvParallel3', false, async (runner) => {
      await Promise.all([runner.query(`CREATE TABLE ${a} (id int)`), runner.query(`CREATE TABLE ${b} (id int)`)]);
    });
    const manager = await open([parallel]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(await relationsNamed(a), JSON.stringify(line)).to.not.include('public');
    expect(await relationsNamed(b), JSON.stringify(line)).to.not.include('public');
  });

  it('a migration that opens its own transaction (startTransaction) and leaves it open fails, and nothing of it is kept or recorded', async () => {
    const [slug] = await baseTenants(1, 'rv-open');
    const leaves = migration('RvLeavesOpen', false, async (runner) => {
      await runner.startTransaction();
      await runner.query('CREATE TABLE rv_open_t (id int)');
    });
    const manager = await open([leaves]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(line.status).to.equal('failed');
    expect(await relationsNamed('rv_open_t')).to.deep.equal([]);
    expect(await recorded(slug!, leaves.name)).to.deep.equal({ own: false, ledger: false });
  });

  it('a raw BEGIN left open by the migration is not silently committed with the record', async () => {
    const [slug] = await baseTenants(1, 'rv-rawbegin');
    const leaves = migration('RvRawBegin', false, async (runner) => {
      await runner.query('BEGIN');
      await runner.query(`INSERT INTO "${tenantSchemaOf(runner)}".client (name, email) VALUES ('rv-raw', 'rv@x')`);
    });
    const manager = await open([leaves]);
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    // Either refused (left a transaction open) or the INSERT ran as its own statement; never "migrated" with the transaction state unknown.
    const rows = await adminQuery(`SELECT 1 FROM "${schemaOf(slug!)}".client WHERE name = 'rv-raw'`);
    if (line.status === 'migrated') expect(rows).to.have.length(1);
    else expect(await recorded(slug!, leaves.name)).to.deep.equal({ own: false, ledger: false });
  });

  it('the connection dies right after up() (before the record): not recorded, the rerun completes; ledger agrees with the tenant', async () => {
    const [slug] = await baseTenants(1, 'rv-kill');
    let kill = true;
    const killed = migration('RvKilledAfterUp', false, async (runner) => {
      await runner.query(`CREATE INDEX CONCURRENTLY IF NOT EXISTS rv_kill_idx ON "${tenantSchemaOf(runner)}".client (email)`);
      if (kill) {
        kill = false;
        const [{ pid }] = await runner.query('SELECT pg_backend_pid() AS pid');
        await adminQuery('SELECT pg_terminate_backend($1)', [pid]);
        await sleep(200);
      }
    });
    const manager = await open([killed]);
    const first = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(first.status, JSON.stringify(first)).to.equal('failed');
    expect(await recorded(slug!, killed.name)).to.deep.equal({ own: false, ledger: false });
    const rerun = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(rerun.status, JSON.stringify(rerun)).to.equal('migrated');
    expect(await recorded(slug!, killed.name)).to.deep.equal({ own: true, ledger: true });
    const status = (await manager.migrationStatus()).find((s) => s.slug === slug);
    expect(status?.pending).to.deep.equal([]);
  });

  it('a failing down() of a transaction = false migration keeps its record in the tenant and the ledger', async () => {
    const [slug] = await baseTenants(1, 'rv-down');
    const failingDown = migration(
      'RvFailingDown',
      false,
      async (runner) => {
        await runner.query(`CREATE INDEX CONCURRENTLY IF NOT EXISTS rv_down_idx ON "${tenantSchemaOf(runner)}".client (email)`);
      },
      async (runner) => {
        await runner.query('DROP INDEX CONCURRENTLY rv_down_idx'); // unqualified: refused
      },
    );
    const manager = await open([failingDown]);
    expect(lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!).status).to.equal('migrated');
    const line = lineOf((await manager.revertTenants({ tenants: [slug!] })).results, slug!);
    expect(line.status).to.equal('failed');
    expect(line.error?.code).to.equal('NON_TRANSACTIONAL_STATEMENT_REFUSED');
    expect(await recorded(slug!, failingDown.name)).to.deep.equal({ own: true, ledger: true });
    expect(await indexState(schemaOf(slug!), 'rv_down_idx')).to.equal('valid');
  });

  it('createTenant with REINDEX SCHEMA CONCURRENTLY of the tenant (a recognised concurrent statement) succeeds', async () => {
    const reindex = migration('RvReindexSchema', false, async (runner) => {
      await runner.query(`REINDEX SCHEMA CONCURRENTLY "${tenantSchemaOf(runner)}"`);
    });
    const manager = await open([reindex]);
    const slug = uniqueSlug('rv-reidx');
    await manager.createTenant(slug);
    expect(await recorded(slug, reindex.name)).to.deep.equal({ own: true, ledger: true });
  });
});

describe('review: transaction = false migrations, concurrency and pools', () => {
  it('two processes migrating the same fleet at once: every tenant migrated once, no failed line, no line failed by the lock timeout', async function () {
    this.timeout(120_000);
    const slugs = await baseTenants(2, 'rv-two');
    const migrationClass = cic('rv_two_email');
    const lockTimeoutMs = 15_000;
    const first = await open([migrationClass], { lockTimeoutMs });
    const second = await open([migrationClass], { lockTimeoutMs });
    // Before the fix each tenant stalled until the lock timeout, then failed with 55P03.
    const [a, b] = await Promise.all([first.migrateTenants({ tenants: slugs, concurrency: 1 }), second.migrateTenants({ tenants: slugs, concurrency: 1 })]);
    const lines = [...a.results, ...b.results];
    expect(lines.filter((l) => l.status === 'failed'), JSON.stringify(lines)).to.deep.equal([]);
    for (const slug of slugs) {
      expect(lines.filter((l) => l.slug === slug && l.status === 'migrated')).to.have.length(1);
      expect(await indexState(schemaOf(slug), 'rv_two_email')).to.equal('valid');
    }
  });

  it('two processes at once with lockTimeoutMs: 0 (wait forever) do not deadlock (the waiting lock statement holds a snapshot the build waits for)', async function () {
    this.timeout(120_000);
    const slugs = await baseTenants(1, 'rv-two0');
    const migrationClass = cic('rv_two0_email');
    const first = await open([migrationClass], { lockTimeoutMs: 0 });
    const second = await open([migrationClass], { lockTimeoutMs: 0 });
    const both = Promise.all([first.migrateTenants({ tenants: slugs }), second.migrateTenants({ tenants: slugs })]);
    const outcome = await Promise.race([both.then(() => 'done' as const), sleep(20_000).then(() => 'stuck' as const)]);
    if (outcome === 'stuck') {
      // Unblock: end the backend waiting for the advisory lock, so the build can finish and the managers close.
      await adminQuery(
        `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
      );
      await both.catch(() => undefined);
    }
    expect(outcome, 'both runs finished within 20 s').to.equal('done');
  });

  it('explicit concurrency above half the pool is refused up front, naming the fix (two connections per tenant); half the pool completes every tenant', async function () {
    this.timeout(120_000);
    const slugs = await baseTenants(4, 'rv-pool', { dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 2 } });
    const manager = await open([cic('rv_pool_email')], { dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 2, connectTimeoutMS: 5_000 } });
    const refused = await manager.migrateTenants({ tenants: slugs, concurrency: 2 }).then(
      () => expect.fail('concurrency 2 over a pool of 2 should be refused'),
      (error: unknown) => error,
    );
    expect(refused).to.be.instanceOf(InvalidArgumentError);
    expect((refused as Error).message).to.include('transaction = false').and.include('at most 1');
    expect((await manager.migrationStatus()).filter((s) => slugs.includes(s.slug)).every((s) => s.pending.length === 1), 'nothing ran').to.equal(true);
    const report = await manager.migrateTenants({ tenants: slugs, concurrency: 1 });
    expect(report.results.map((r) => [r.status, r.error?.message]), JSON.stringify(report.results)).to.deep.equal(slugs.map(() => ['migrated', undefined]));
  });

  it('default concurrency with a small pool completes every tenant', async function () {
    this.timeout(120_000);
    const slugs = await baseTenants(5, 'rv-pooldef', { dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 3 } });
    const manager = await open([cic('rv_pooldef_email')], { dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 3, connectTimeoutMS: 5_000 } });
    const report = await manager.migrateTenants({ tenants: slugs });
    expect(report.results.filter((r) => r.status !== 'migrated'), JSON.stringify(report.results)).to.deep.equal([]);
  });

  it('a concurrent build is not blocked by an unrelated tenant created at the same time beyond that creation', async function () {
    this.timeout(60_000);
    const [slug] = await baseTenants(1, 'rv-cc');
    const manager = await open([cic('rv_cc_email')]);
    const [report] = await Promise.all([manager.migrateTenants({ tenants: [slug!] }), manager.createTenant(uniqueSlug('rv-cc-new'))]);
    expect(lineOf(report.results, slug!).status).to.equal('migrated');
  });
});

describe('review: the logger with transaction = false migrations', () => {
  it('the logger gets a migration entry for a transaction = false migration, with the tenant schema, as TypeORM logs every executed migration', async () => {
    const [slug] = await baseTenants(1, 'rv-log');
    const logs: TenancyLogEntry[] = [];
    const migrationClass = cic('rv_log_email');
    const transactional = migration('RvLogTx', undefined, async (runner) => {
      await runner.query('CREATE TABLE rv_log_t (id int)');
    });
    const manager = await open([transactional, migrationClass], { logger: (entry) => logs.push(entry), dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 10, logging: ['schema', 'migration'] } });
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(line.status).to.equal('migrated');
    const migrationLogs = logs.filter((l) => l.source === 'typeorm' && /executed successfully/.test(l.message)).map((l) => ({ schema: l.schema, message: l.message }));
    const tx = migrationLogs.filter((l) => l.message.includes(transactional.name));
    expect(tx.length, JSON.stringify(migrationLogs)).to.be.greaterThan(0);
    const ntx = migrationLogs.filter((l) => l.message.includes(migrationClass.name));
    expect(ntx.length, JSON.stringify(migrationLogs)).to.be.greaterThan(0);
    expect(ntx.every((l) => l.schema === schemaOf(slug!))).to.equal(true);
  });

  it('a failing transaction = false migration is logged like a failing transactional one (TypeORM\'s "Migration ... failed")', async () => {
    const [slug] = await baseTenants(1, 'rv-logf');
    await adminQuery(`INSERT INTO "${schemaOf(slug!)}".client (name, email) VALUES ('a', 'd@x'), ('b', 'd@x')`);
    const logs: TenancyLogEntry[] = [];
    const migrationClass = cic('rv_logf_email');
    const manager = await open([migrationClass], { logger: (entry) => logs.push(entry) });
    const line = lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!);
    expect(line.status).to.equal('failed');
    const failed = logs.filter((l) => l.message.includes(migrationClass.name) && /fail/i.test(l.message));
    expect(failed.length, JSON.stringify(logs.map((l) => [l.kind, l.schema, l.message]))).to.be.greaterThan(0);
    expect(failed.some((l) => l.schema === schemaOf(slug!))).to.equal(true);
  });
});

describe('review: the CLI with transaction = false migrations and loggers', () => {
  const buildRoot = resolve(__dirname, '../..');
  const cliMain = join(buildRoot, 'src/cli/main.js');
  const fixtureConfig = join(buildRoot, 'test/cli/fixtures/tenancy.config.js');

  function configWith(dataSourceExtra: Record<string, unknown>): string {
    const dir = mkdtempSync(join(tmpdir(), 'rv-cli-'));
    const file = join(dir, 'tenancy.config.js');
    writeFileSync(
      file,
      `const base = require(${JSON.stringify(fixtureConfig)}).default;\n` +
        `module.exports = { ...base, dataSource: { ...base.dataSource, ...${JSON.stringify(dataSourceExtra)} } };\n`,
    );
    return file;
  }

  function run(config: string, args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const child = spawn(process.execPath, [cliMain, '--config', config, ...args], {
      env: { ...process.env, DATABASE_URL: databaseUrl(), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    return new Promise((done, fail) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        fail(new Error(`CLI timed out: ${stderr}`));
      }, 90_000);
      child.on('close', (code) => {
        clearTimeout(timer);
        done({ code, stdout, stderr });
      });
    });
  }

  async function fleet(registryTable: string, count: number): Promise<string[]> {
    const base = await open([], { registryTable });
    const slugs: string[] = [];
    for (let i = 0; i < count; i += 1) {
      const slug = uniqueSlug('rv-cli');
      await base.createTenant(slug);
      slugs.push(slug);
    }
    await base.destroy();
    return slugs.sort();
  }

  for (const logger of ['simple-console', 'advanced-console'] as const) {
    it(`migrate --json with dataSource.logger '${logger}' and logging 'all': stdout stays one JSON document`, async function () {
      this.timeout(120_000);
      const registry = `rv_cli_${nextStamp()}`;
      await fleet(registry, 1);
      const config = configWith({ logger, logging: 'all' });
      const result = await run(config, ['migrate', '--json'], { TENANCY_REGISTRY_TABLE: registry, TENANCY_EXTRA_MIGRATION: 'concurrent' });
      expect(result.code, result.stderr).to.equal(0);
      expect(() => JSON.parse(result.stdout), result.stdout.slice(0, 500)).to.not.throw();
    });
  }

  it('migrate --json: a failed concurrent build reports invalidIndexes and the detail; the rerun reports the repair and an invalid-index log with the schema', async function () {
    this.timeout(180_000);
    const registry = `rv_cli_${nextStamp()}`;
    const [broken, clean] = await fleet(registry, 2);
    await adminQuery(`INSERT INTO "${schemaOf(broken!)}".client (name, email) VALUES ('a', 'd@x'), ('b', 'd@x')`);
    const env = { TENANCY_REGISTRY_TABLE: registry, TENANCY_EXTRA_MIGRATION: 'concurrent' };
    const config = configWith({});
    const first = await run(config, ['migrate', '--json'], env);
    expect(first.code, first.stderr).to.equal(1);
    const report = JSON.parse(first.stdout) as { results: FleetTenantResult[]; logs: Array<{ kind: string; schema?: string; tenant?: string }> };
    const failed = lineOf(report.results, broken!);
    expect(failed.status).to.equal('failed');
    expect(failed.error?.invalidIndexes).to.deep.equal(['client_email_cic']);
    expect(failed.error?.detail).to.include('d@x');
    expect(lineOf(report.results, clean!).status).to.equal('migrated');
    expect(report.logs.filter((l) => l.kind === 'invalid-index').map((l) => [l.schema, l.tenant])).to.deep.equal([[schemaOf(broken!), broken]]);

    await adminQuery(`DELETE FROM "${schemaOf(broken!)}".client WHERE name = 'b'`);
    const second = await run(config, ['migrate', '--json'], env);
    expect(second.code, second.stderr).to.equal(0);
    const again = JSON.parse(second.stdout) as { results: FleetTenantResult[]; logs: Array<{ kind: string; schema?: string }> };
    expect(lineOf(again.results, broken!).invalidIndexes).to.deep.equal([{ index: 'client_email_cic', rebuilt: true }]);
    expect(lineOf(again.results, clean!).status).to.equal('up-to-date');
    expect(again.logs.filter((l) => l.kind === 'invalid-index').map((l) => l.schema)).to.deep.equal([schemaOf(broken!)]);
  });

  it('migrate (text, piped): a failed concurrent build names the invalid index on the tenant line', async function () {
    this.timeout(120_000);
    const registry = `rv_cli_${nextStamp()}`;
    const [broken] = await fleet(registry, 1);
    await adminQuery(`INSERT INTO "${schemaOf(broken!)}".client (name, email) VALUES ('a', 'd@x'), ('b', 'd@x')`);
    const result = await run(configWith({}), ['migrate'], { TENANCY_REGISTRY_TABLE: registry, TENANCY_EXTRA_MIGRATION: 'concurrent' });
    expect(result.code).to.equal(1);
    expect(result.stdout + result.stderr).to.contain('client_email_cic');
  });
});

describe('review: transaction = false migrations behind PgBouncer (transaction pooling)', function () {
  this.timeout(60_000);
  const bouncer = usePgBouncer({ poolSize: 3 });

  it("a migration's session SET does not reach other clients' server connections", async () => {
    const url = bouncer().url;
    const dataSource = { type: 'postgres' as const, url, poolSize: 4 };
    const [slug] = await baseTenants(1, 'rv-pgb', { dataSource });
    const marker = `rv-pgb-${nextStamp()}`;
    const setter = migration('RvPgbSet', false, async (runner) => {
      await runner.query(`SET application_name = '${marker}'`);
      await runner.query(`CREATE INDEX CONCURRENTLY IF NOT EXISTS rv_pgb_idx ON "${tenantSchemaOf(runner)}".client (email)`);
    });
    const manager = await open([setter], { dataSource });
    expect(lineOf((await manager.migrateTenants({ tenants: [slug!] })).results, slug!).status).to.equal('migrated');
    await manager.destroy();
    // Another client of the bouncer gets one of its server connections.
    const other = new PgClient({ connectionString: url });
    await other.connect();
    try {
      const names = new Set<string>();
      for (let i = 0; i < 6; i += 1) names.add((await other.query('SHOW application_name')).rows[0].application_name);
      expect([...names]).to.not.include(marker);
    } finally {
      await other.end();
    }
  });
});
