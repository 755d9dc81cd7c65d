import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Raw, type DataSource } from 'typeorm';
import { Client } from '../../entities';
import { RawSqlRefusedError, TenantDroppedError, TenantRoleEscapeError, tenantContext, type TenantDataSourceManager } from '../../src';
import { tenantRoleName } from '../../src/naming/derived-schema-name';
import { usePgBouncer } from '../support/pgbouncer-hooks';
import { adminQuery, databaseUrl, openManager, sleep, uniqueSlug } from '../support/fixtures';
import { LEGACY_EMAIL, schemaOf, withLegacyPublicClient } from '../support/legacy-public-client';

/*
 * Adversarial isolation tests. Tenant A's code does something hostile inside
 * `manager.run(a, ...)`; then tenant B (and A again) runs on the SAME pooled
 * connection (pool size 1). Every test asserts what a correct implementation
 * guarantees: B's statements land in B's schema, nothing is read from or
 * written to public, and no session state of A survives its run.
 */

const q = (slug: string): string => `"${schemaOf(slug)}"`;
const CLIENT_COLUMNS = '(id serial PRIMARY KEY, name text, email text, internal_note text, plan_id int)';

interface Tenants {
  readonly manager: TenantDataSourceManager;
  readonly a: string;
  readonly b: string;
}

async function setup(url: string = databaseUrl(), overrides: Record<string, unknown> = {}): Promise<Tenants> {
  const manager = await openManager({
    dataSource: { type: 'postgres', url, poolSize: 1 },
    registryTable: `adv_${randomBytes(4).toString('hex')}`,
    // The drop races here re-create a name at once: what they test is the in-process fence (drop-fencing.test.ts tests the delay).
    slugReuseDelayMs: 0,
    ...overrides,
  });
  const [a, b] = [uniqueSlug('adva'), uniqueSlug('advb')];
  await manager.createTenant(a);
  await manager.createTenant(b);
  return { manager, a, b };
}

/** The rejection of `p`, or a failure when it resolves. */
const rejection = (p: Promise<unknown>): Promise<Error & { code?: string }> =>
  p.then(() => Promise.reject(new Error('expected a rejection, got a result')), (error: Error & { code?: string }) => error);

const raw = <T = any>(sql: string, params?: unknown[]): Promise<T> => tenantContext.query<T>(sql, params);

async function emails(schema: string): Promise<string[]> {
  const rows = await adminQuery<{ email: string }>(`SELECT email FROM "${schema}".client ORDER BY id`);
  return rows.map((r) => r.email);
}

/**
 * The connection's session state as a QueryBuilder query sees it, plus what
 * raw SQL resolves `client` to. (A QueryBuilder query with hand-written
 * fragments like these is fenced, so the search_path it would see is the
 * fence's; where names resolve is checked through `raw_client`.)
 */
const SESSION_PROBES: ReadonlyArray<[string, string]> = [
  ['current_user', 'current_user::text'],
  ['session_user', 'session_user::text'],
  ['statement_timeout', "pg_catalog.current_setting('statement_timeout')"],
  ['read_only', "pg_catalog.current_setting('default_transaction_read_only')"],
  ['custom', "coalesce(pg_catalog.current_setting('adv.tenant', true), '')"],
  ['prepared', '(SELECT count(*)::int FROM pg_catalog.pg_prepared_statements)'],
  ['cursors', '(SELECT count(*)::int FROM pg_catalog.pg_cursors)'],
  ['listening', '(SELECT count(*)::int FROM pg_catalog.pg_listening_channels())'],
  ['advisory_locks', "(SELECT count(*)::int FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())"],
  ['temp_relations', '(SELECT count(*)::int FROM pg_catalog.pg_class WHERE relnamespace = pg_my_temp_schema())'],
];

async function sessionState(): Promise<Record<string, unknown>> {
  const qb = tenantContext.getManager().createQueryBuilder().fromDummy();
  for (const [alias, expr] of SESSION_PROBES) qb.addSelect(expr, alias);
  const state = await qb.getRawOne();
  const resolved = await raw<Array<{ schema: string }>>("SELECT relnamespace::regnamespace::text AS schema FROM pg_class WHERE oid = 'client'::regclass").then(
    (rows) => rows[0]!.schema,
    (error: Error) => `error: ${error.message}`,
  );
  return { ...state, raw_client: resolved };
}

/**
 * Runs B after A's hostile act on the same connection: B's session state must
 * equal its baseline, its raw INSERT and its repository save must land in B,
 * A's table must keep only A's rows.
 */
async function expectBUnaffected(t: Tenants, baseline: Record<string, unknown>, aRows: string[] = []): Promise<void> {
  const tag = randomBytes(3).toString('hex');
  await t.manager.run(t.b, async () => {
    expect(await sessionState(), "B's session state after A's run").to.deep.equal(baseline);
    await raw('INSERT INTO client (name, email) VALUES ($1, $2)', ['raw', `raw-${tag}@b`]);
    await tenantContext.getRepository(Client).save({ name: 'repo', email: `repo-${tag}@b` });
    const seen = await tenantContext.getRepository(Client).find({ order: { id: 'ASC' } });
    expect(seen.map((c) => c.email)).to.include.members([`raw-${tag}@b`, `repo-${tag}@b`]);
    expect(seen.map((c) => c.email).filter((e) => !e.endsWith('@b')), 'B reads only its rows').to.deep.equal([]);
  });
  expect(await emails(schemaOf(t.b))).to.include.members([`raw-${tag}@b`, `repo-${tag}@b`]);
  expect(await emails(schemaOf(t.a)), "A's table").to.deep.equal(aRows);
}

async function baselineOf(t: Tenants): Promise<Record<string, unknown>> {
  return t.manager.run(t.b, sessionState);
}

/** Hostile raw SQL in A's run (the call may fail: that is allowed), then B must be unaffected. */
function hostileRawCases(): Array<[string, (a: string, b: string) => Promise<unknown>]> {
  return [
    ['CREATE TEMP TABLE client (standalone)', () => raw(`CREATE TEMP TABLE client ${CLIENT_COLUMNS}`)],
    [
      'CREATE TEMP TABLE client ON COMMIT PRESERVE ROWS in tenantContext.transaction',
      () =>
        tenantContext.transaction(async () => {
          await raw(`CREATE TEMP TABLE client ${CLIENT_COLUMNS} ON COMMIT PRESERVE ROWS`);
          await raw("INSERT INTO pg_temp.client (name, email) VALUES ('fake', 'fake@temp')");
        }),
    ],
    ['SET search_path TO "<b>"', (_a, b) => raw(`SET search_path TO ${q(b)}`)],
    [
      "set_config('search_path', '<b>', false) in transaction()",
      (_a, b) => tenantContext.transaction((em) => em.query(`SELECT set_config('search_path', '${q(b)}', false)`)),
    ],
    ['SET ROLE pg_monitor', () => raw('SET ROLE pg_monitor')],
    ['SET default_transaction_read_only = on', () => raw('SET default_transaction_read_only = on')],
    ['SET statement_timeout = 1', () => raw('SET statement_timeout = 1')],
    ["SET adv.tenant = 'a' (a custom setting)", () => raw("SET adv.tenant = 'a'")],
    ['PREPARE adv_x AS SELECT * FROM client', () => raw('PREPARE adv_x AS SELECT * FROM client')],
    ['LISTEN adv_chan', () => raw('LISTEN adv_chan')],
    ['DECLARE adv_c CURSOR WITH HOLD FOR SELECT * FROM client', () => raw('DECLARE adv_c CURSOR WITH HOLD FOR SELECT * FROM client')],
    [
      "DO $$ BEGIN EXECUTE 'SET search_path TO public'; END $$",
      () => raw("DO $$ BEGIN EXECUTE 'SET search_path TO public'; END $$"),
    ],
    ["DO block: set_config('search_path', '<b>', false)", (_a, b) => raw(`DO $$ BEGIN PERFORM set_config('search_path', '${q(b)}', false); END $$`)],
    ["multi-statement 'SELECT 1; SET search_path TO public'", () => raw('SELECT 1; SET search_path TO public')],
    ['SET SESSION AUTHORIZATION pg_monitor', () => raw('SET SESSION AUTHORIZATION pg_monitor')],
    ['user QueryRunner: SET search_path TO public, released', async () => {
      const qr = tenantContext.getManager().connection.createQueryRunner();
      try {
        await qr.query('SET search_path TO public');
      } finally {
        await qr.release();
      }
    }],
  ];
}

/** True when another connection can take advisory lock `key` (it then releases it). */
async function lockIsFree(key: number): Promise<boolean> {
  const [row] = await adminQuery<{ got: boolean }>('SELECT pg_try_advisory_lock($1) AS got, pg_advisory_unlock($1)', [key]);
  return row!.got;
}

/** A transaction that leaves session-level state, then fails at COMMIT (a deferred unique violation). */
async function failingCommitWithState(key: number): Promise<unknown> {
  return tenantContext
    .transaction(async () => {
      await raw('PREPARE adv_fc AS SELECT 1');
      await raw('SELECT pg_advisory_lock($1)', [key]);
      await raw('CREATE TEMP TABLE adv_d (id int UNIQUE DEFERRABLE INITIALLY DEFERRED)');
      await raw('INSERT INTO adv_d VALUES (1), (1)');
    })
    .catch((e: unknown) => e);
}

describe('adversarial isolation (schema mode, one pooled connection)', function () {
  this.timeout(60_000);
  let t: Tenants;
  beforeEach(async () => {
    t = await setup();
    await t.manager.run(t.a, () => tenantContext.getRepository(Client).save({ name: 'A', email: 'a1@a' }));
  });

  for (const [name, act] of hostileRawCases()) {
    it(`A's raw ${name}: nothing reaches B on the same connection`, async () => {
      const baseline = await baselineOf(t);
      await t.manager.run(t.a, () => act(t.a, t.b).catch(() => undefined));
      await expectBUnaffected(t, baseline, ['a1@a']);
      // A again: its own raw unqualified SQL is still fenced to A.
      await t.manager.run(t.a, async () => expect(await sessionState()).to.deep.equal({ ...baseline, raw_client: schemaOf(t.a) }));
    });
  }

  it("a temp table named client in A's transaction does not shadow A's own client for raw SQL in that transaction (pg_temp last)", async () => {
    await t.manager.run(t.a, () =>
      tenantContext.transaction(async () => {
        await raw(`CREATE TEMP TABLE client ${CLIENT_COLUMNS}`);
        await raw("INSERT INTO client (name, email) VALUES ('x', 'a2@a')");
        expect((await raw<Array<{ n: number }>>('SELECT count(*)::int AS n FROM pg_temp.client'))[0]!.n).to.equal(0);
      }),
    );
    expect(await emails(schemaOf(t.a))).to.deep.equal(['a1@a', 'a2@a']);
  });

  it("A's multi-statement string fails with 42601 and runs none of its statements", async () => {
    const error = await t.manager.run(t.a, () => rejection(raw("INSERT INTO client (name, email) VALUES ('m', 'm@a'); SET search_path TO public")));
    expect(error.code).to.equal('42601');
    expect(await emails(schemaOf(t.a))).to.deep.equal(['a1@a']);
  });

  it("A's PREPARE / DECLARE WITH HOLD cannot be used by B: EXECUTE and FETCH fail in B", async () => {
    await t.manager.run(t.a, async () => {
      await raw('PREPARE adv_p AS SELECT email FROM client');
      await raw('DECLARE adv_h CURSOR WITH HOLD FOR SELECT email FROM client');
    });
    await t.manager.run(t.b, async () => {
      expect((await rejection(raw('EXECUTE adv_p'))).code).to.equal('26000');
      expect((await rejection(raw('FETCH ALL FROM adv_h'))).code).to.equal('34000');
    });
  });

  it("A's session advisory lock is released at the end of its statement: another connection can take it", async () => {
    const key = 42_000_000 + Math.floor(Math.random() * 1_000_000);
    await t.manager.run(t.a, () => raw('SELECT pg_advisory_lock($1)', [key]));
    expect(await lockIsFree(key)).to.equal(true);
  });

  it("raw COMMIT inside tenantContext.transaction is refused; nothing after it runs; B gets a clean connection", async () => {
    const baseline = await baselineOf(t);
    const error = await t.manager.run(t.a, () =>
      rejection(
        tenantContext.transaction(async () => {
          await raw('SET search_path TO public');
          await raw('COMMIT');
          await raw("INSERT INTO client (name, email) VALUES ('after', 'after-commit@a')");
        }),
      ),
    );
    expect(error).to.be.instanceOf(RawSqlRefusedError);
    expect(error.code).to.equal('RAW_SQL_REFUSED');
    await expectBUnaffected(t, baseline, ['a1@a']);
  });

  it('raw COMMIT inside a user QueryRunner transaction is refused and the connection is not reused', async () => {
    const baseline = await baselineOf(t);
    const pidBefore = await t.manager.run(t.a, async () => (await raw('SELECT pg_backend_pid() AS pid'))[0].pid);
    await t.manager.run(t.a, async () => {
      const qr = tenantContext.getManager().connection.createQueryRunner();
      try {
        await qr.startTransaction();
        await qr.query("SET LOCAL adv.tenant = 'a'");
        await qr.query('SET statement_timeout = 1');
        const error = await rejection(qr.query('COMMIT'));
        expect(error).to.be.instanceOf(RawSqlRefusedError);
      } finally {
        await qr.release();
      }
    });
    const pidAfter = await t.manager.run(t.b, async () => (await raw('SELECT pg_backend_pid() AS pid'))[0].pid);
    expect(pidAfter, 'a refused connection is destroyed').to.not.equal(pidBefore);
    await expectBUnaffected(t, baseline, ['a1@a']);
  });

  it("a transaction that takes a session advisory lock and PREPAREs, then fails at COMMIT: nothing outlives it", async () => {
    const baseline = await baselineOf(t);
    const key = 45_000_000 + Math.floor(Math.random() * 1_000_000);
    expect(await t.manager.run(t.a, () => failingCommitWithState(key))).to.have.property('code', '23505');
    // Checked before B runs: B's own raw SQL would release the lock with its trailer.
    const lockFree = await lockIsFree(key);
    const after = await t.manager.run(t.b, sessionState);
    expect({ ...after, lockFree }).to.deep.equal({ ...baseline, lockFree: true });
  });

  it('a DataSource held past its run and evicted from the cache (maxDataSources) cannot write into a re-created tenant', async () => {
    const m = await setup(databaseUrl(), { maxDataSources: 1 });
    const x = uniqueSlug('advx');
    await m.manager.createTenant(x);
    const held = await m.manager.run(x, async () => tenantContext.getManager().connection);
    await m.manager.run(m.a, () => tenantContext.query('SELECT 1')); // evicts x
    await sleep(100);
    await m.manager.dropTenant(x, { force: true });
    await m.manager.createTenant(x);
    await held.query("INSERT INTO client (name, email) VALUES ('h', 'held@x')").catch(() => undefined);
    await held.getRepository(Client).save({ name: 'h', email: 'held-repo@x' }).catch(() => undefined);
    expect(await emails(schemaOf(x)), 'the new x').to.deep.equal([]);
  });

  it('raw COMMIT AND CHAIN keeps a transaction open: a later unqualified statement must still resolve in the tenant', async () => {
    await withLegacyPublicClient(async () => {
      const outcome = await t.manager.run(t.a, () =>
        tenantContext
          .transaction(async () => {
            await raw('SELECT 1');
            await raw('COMMIT AND CHAIN');
            await raw("INSERT INTO client (name, email) VALUES ('chain', 'chain@a')");
            return raw<Array<{ schema: string }>>("SELECT relnamespace::regnamespace::text AS schema FROM pg_class WHERE oid = 'client'::regclass");
          })
          .catch((e: unknown) => e),
      );
      if (!(outcome instanceof Error)) expect((outcome as Array<{ schema: string }>)[0]!.schema).to.equal(schemaOf(t.a));
      expect(await emails(schemaOf(t.a))).to.not.include(LEGACY_EMAIL);
    });
  });

  it('raw ROLLBACK TO SAVEPOINT (undoing the SET LOCAL made inside it), then unqualified SQL in the same transaction resolves in the tenant', async () => {
    await withLegacyPublicClient(async () => {
      await t.manager.run(t.a, () =>
        tenantContext.transaction(async (em) => {
          await em.transaction(async (inner) => {
            await inner.query('SELECT 1 FROM client'); // the fence is set inside savepoint typeorm_1
            await inner.query('ROLLBACK TO SAVEPOINT typeorm_1');
            await inner.query("INSERT INTO client (name, email) VALUES ('sp', 'a-sp1@a')");
          });
          await em.query("INSERT INTO client (name, email) VALUES ('sp', 'a-sp2@a')");
          await em.query('SAVEPOINT mine');
          await em.query('ROLLBACK TO SAVEPOINT mine');
          const rows = await em.query('SELECT email FROM client ORDER BY id');
          expect(rows.map((r: { email: string }) => r.email)).to.deep.equal(['a1@a', 'a-sp1@a', 'a-sp2@a']);
        }),
      );
      expect(await emails(schemaOf(t.a))).to.deep.equal(['a1@a', 'a-sp1@a', 'a-sp2@a']);
    });
  });

  it('a user QueryRunner that starts a transaction and is released without commit: nothing committed, B not inside it', async () => {
    const baseline = await baselineOf(t);
    await t.manager.run(t.a, async () => {
      const qr = tenantContext.getManager().connection.createQueryRunner();
      await qr.startTransaction();
      await qr.manager.save(Client, { name: 'gen', email: 'uncommitted-gen@a' });
      await qr.release();
      const qr2 = tenantContext.getManager().connection.createQueryRunner();
      await qr2.startTransaction();
      await qr2.query("INSERT INTO client (name, email) VALUES ('raw', 'uncommitted-raw@a')");
      await qr2.query('SET statement_timeout = 1');
      await qr2.release();
    });
    await expectBUnaffected(t, baseline, ['a1@a']);
  });

  it('queryRunner.query(sql, [], true) with raw unqualified SQL is fenced (a legacy public.client is never touched)', async () => {
    await withLegacyPublicClient(async () => {
      await t.manager.run(t.a, async () => {
        const qr = tenantContext.getManager().connection.createQueryRunner();
        try {
          await qr.query("INSERT INTO client (name, email) VALUES ('s', 'structured@a')", [], true);
          const read = await qr.query('SELECT email FROM client ORDER BY id', [], true);
          expect(read.records.map((r: { email: string }) => r.email)).to.deep.equal(['a1@a', 'structured@a']);
        } finally {
          await qr.release();
        }
      });
      expect(await emails(schemaOf(t.a))).to.deep.equal(['a1@a', 'structured@a']);
    });
  });

  it("SQL built by the driver's escapeQueryWithParameters is not trusted as generated (public.client untouched)", async () => {
    await withLegacyPublicClient(async () => {
      await t.manager.run(t.a, async () => {
        const ds = tenantContext.getManager().connection as DataSource;
        const [sql, params] = ds.driver.escapeQueryWithParameters("INSERT INTO client (name, email) VALUES ('e', 'escaped@a')", {});
        const qr = ds.createQueryRunner();
        try {
          await qr.query(sql, params, true).catch(() => undefined);
        } finally {
          await qr.release();
        }
      });
    });
  });

  it("QueryBuilder string tables (.from('client'), .insert().into('client')) resolve in the tenant with a public.client present", async () => {
    await withLegacyPublicClient(async () => {
      await t.manager.run(t.a, async () => {
        const em = tenantContext.getManager();
        await em.createQueryBuilder().insert().into('client').values({ name: 'qb', email: 'qb@a' }).execute();
        const rows = await em.createQueryBuilder().select('*').from('client', 'c').orderBy('c.id').getRawMany();
        expect(rows.map((r: { email: string }) => r.email)).to.deep.equal(['a1@a', 'qb@a']);
      });
      expect(await emails(schemaOf(t.a))).to.deep.equal(['a1@a', 'qb@a']);
    });
  });

  describe('SQL fragments inside QueryBuilder / find options (they pass as "generated")', () => {
    it('a subquery in .addSelect / Raw() / .where naming an unqualified table reads the tenant, not public.client', async () => {
      await withLegacyPublicClient(async () => {
        await t.manager.run(t.a, async () => {
          const em = tenantContext.getManager();
          const viaSelect = await em.createQueryBuilder().select("(SELECT string_agg(email, ',') FROM client)", 'emails').fromDummy().getRawOne();
          expect(viaSelect.emails, '.addSelect subquery').to.equal('a1@a');
          const viaRaw = await tenantContext.getRepository(Client).find({ where: { email: Raw((alias) => `${alias} IN (SELECT email FROM client)`) } });
          expect(viaRaw.map((c) => c.email), 'Raw() find operator').to.deep.equal(['a1@a']);
          const viaWhere = await em.createQueryBuilder(Client, 'c').where('EXISTS (SELECT 1 FROM client x WHERE x.email = :e)', { e: LEGACY_EMAIL }).getCount();
          expect(viaWhere, '.where subquery').to.equal(0);
        });
      });
    });

    it('a data-modifying CTE (addCommonTableExpression) with an unqualified table writes the tenant, not public.client', async () => {
      await withLegacyPublicClient(async () => {
        await t.manager.run(t.a, async () => {
          await tenantContext
            .getManager()
            .createQueryBuilder()
            .addCommonTableExpression("INSERT INTO client (name, email) VALUES ('cte', 'cte@a') RETURNING id", 'ins')
            .select('ins.id', 'id')
            .from('ins', 'ins')
            .getRawMany()
            .catch(() => undefined);
        });
      });
    });

    it("A poisons the connection through QueryBuilder fragments (set_config search_path/role/read-only/custom, advisory lock): B's session is unaffected", async () => {
      const baseline = await baselineOf(t);
      const key = 43_000_000 + Math.floor(Math.random() * 1_000_000);
      await t.manager.run(t.a, async () => {
        const poison = (expr: string) => tenantContext.getManager().createQueryBuilder().select(expr, 'x').fromDummy().getRawOne();
        await poison(`set_config('search_path', '${q(t.a)}', false)`);
        await poison("set_config('adv.tenant', 'a', false)");
        await poison(`pg_advisory_lock(${key})`);
        await poison("set_config('default_transaction_read_only', 'on', false)");
        await poison("set_config('role', 'pg_monitor', false)");
      });
      const lockFree = await lockIsFree(key);
      const after = await t.manager.run(t.b, sessionState);
      expect({ ...after, lockFree }, "B's session after A's fragments").to.deep.equal({ ...baseline, lockFree: true });
    });

    it("A's QueryBuilder fragment with several statements (no parameters: simple protocol) creates a temp client that B's honest fragment would read", async () => {
      await t.manager.run(t.a, () =>
        tenantContext
          .getManager()
          .createQueryBuilder()
          .select('1', 'one')
          .fromDummy()
          .where(`true; CREATE TEMP TABLE client ${CLIENT_COLUMNS}; INSERT INTO client (name, email) VALUES ('fake', 'fake@a'); SELECT 1`)
          .getRawMany()
          .catch(() => undefined),
      );
      await t.manager.run(t.b, async () => {
        await tenantContext.getRepository(Client).save({ name: 'B', email: 'b1@b' });
        const honest = await tenantContext.getManager().createQueryBuilder().select("(SELECT string_agg(email, ',') FROM client)", 'emails').fromDummy().getRawOne();
        expect(honest.emails, "B's fragment read").to.equal('b1@b');
      });
    });

    it("A sets the session search_path to A's schema through a fragment: B's honest fragment then reads A's rows", async () => {
      await t.manager.run(t.a, () =>
        tenantContext.getManager().createQueryBuilder().select(`set_config('search_path', '${q(t.a)}', false)`, 'x').fromDummy().getRawOne(),
      );
      await t.manager.run(t.b, async () => {
        await tenantContext.getRepository(Client).save({ name: 'B', email: 'b1@b' });
        const leaked = await tenantContext.getManager().createQueryBuilder().select("(SELECT string_agg(email, ',') FROM client)", 'emails').fromDummy().getRawOne();
        expect(leaked.emails, "B's fragment must not read A's table").to.equal('b1@b');
        const rows = await tenantContext.getRepository(Client).find({ where: { email: Raw((alias) => `${alias} IN (SELECT email FROM client)`) } });
        expect(rows.map((c) => c.email), 'Raw() in B').to.deep.equal(['b1@b']);
      });
    });
  });

  describe('the drop race', () => {
    it('a run that outlives dropTenant(x, {force}) + createTenant(x) gets TenantDroppedError; the new x stays empty; a new run serves the new x', async () => {
      const x = uniqueSlug('advx');
      await t.manager.createTenant(x);
      await t.manager.run(x, () => tenantContext.getRepository(Client).save({ name: 'old', email: 'old@x' }));
      let held: DataSource | undefined;
      const running = t.manager.run(x, async () => {
        held = tenantContext.getManager().connection;
        await raw('SELECT 1');
        await sleep(400);
        return tenantContext.getRepository(Client).save({ name: 'late', email: 'late@x' });
      });
      await sleep(100);
      await t.manager.dropTenant(x, { force: true });
      await t.manager.createTenant(x);
      const error = await rejection(running);
      expect(error).to.be.instanceOf(TenantDroppedError);
      expect(error.code).to.equal('TENANT_DROPPED');
      expect(await emails(schemaOf(x)), 'the new x').to.deep.equal([]);
      // Every path of the held DataSource is refused, raw and generated, and its runners too.
      for (const attempt of [
        () => held!.query("INSERT INTO client (name, email) VALUES ('h', 'held-raw@x')"),
        () => held!.getRepository(Client).save({ name: 'h', email: 'held-repo@x' }),
        () => held!.createQueryBuilder().insert().into(Client).values({ name: 'h', email: 'held-qb@x' }).execute(),
      ]) {
        expect(await rejection(attempt())).to.be.instanceOf(TenantDroppedError);
      }
      expect(await emails(schemaOf(x))).to.deep.equal([]);
      await t.manager.run(x, () => tenantContext.getRepository(Client).save({ name: 'new', email: 'new@x' }));
      expect(await emails(schemaOf(x))).to.deep.equal(['new@x']);
    });
  });
});

describe("adversarial isolation ('role' mode, direct pool, one connection)", function () {
  this.timeout(60_000);
  let t: Tenants;
  let roleA: string;
  let roleB: string;
  beforeEach(async () => {
    t = await setup(databaseUrl(), { isolation: 'role' });
    const [{ db }] = await adminQuery<{ db: string }>('SELECT current_database() AS db');
    roleA = tenantRoleName(db!, schemaOf(t.a));
    roleB = tenantRoleName(db!, schemaOf(t.b));
    await t.manager.run(t.a, () => tenantContext.getRepository(Client).save({ name: 'A', email: 'a1@a' }));
    await t.manager.run(t.b, () => tenantContext.getRepository(Client).save({ name: 'B', email: 'b1@b' }));
  });

  const escapes: Array<[string, (b: string) => string]> = [
    ['RESET ROLE', () => 'RESET ROLE'],
    ["SET ROLE <B's role>", () => `SET ROLE "${roleB}"`],
    ["set_config('role', <B's role>, false)", () => `SELECT set_config('role', '${roleB}', false)`],
    ['SET SESSION AUTHORIZATION DEFAULT', () => 'SET SESSION AUTHORIZATION DEFAULT'],
    ['DO block: RESET ROLE, copy B into A', (b) => `DO $$ BEGIN RESET ROLE; INSERT INTO client (name, email) SELECT name, email FROM ${q(b)}.client; END $$`],
  ];

  for (const [name, sql] of escapes) {
    it(`${name}: TenantRoleEscapeError, nothing committed, B untouched`, async () => {
      const error = await t.manager.run(t.a, () =>
        rejection(
          tenantContext.transaction(async () => {
            await raw("INSERT INTO client (name, email) VALUES ('before', 'before@a')");
            await raw(sql(t.b));
            await raw(`INSERT INTO ${q(t.b)}.client (name, email) VALUES ('evil', 'evil@a')`);
          }),
        ),
      );
      expect(error).to.be.instanceOf(TenantRoleEscapeError);
      expect(error.code).to.equal('TENANT_ROLE_ESCAPED');
      expect(await emails(schemaOf(t.a))).to.deep.equal(['a1@a']);
      expect(await emails(schemaOf(t.b))).to.deep.equal(['b1@b']);
      const who = await t.manager.run(t.b, async () => (await raw('SELECT current_user::text AS u, session_user::text AS s'))[0]);
      expect(who.u).to.equal(roleB);
    });
  }

  it("QueryBuilder fragments in a transaction: set_config('role', 'none') then a read of B's table is refused", async () => {
    const outcome = await t.manager.run(t.a, () =>
      tenantContext
        .transaction(async (em) => {
          await em.createQueryBuilder().select("set_config('role', 'none', true)", 'x').fromDummy().getRawOne();
          return em.createQueryBuilder().select(`(SELECT string_agg(email, ',') FROM ${q(t.b)}.client)`, 'emails').fromDummy().getRawOne();
        })
        .catch((e: unknown) => e),
    );
    expect(JSON.stringify(outcome ?? null)).to.not.include('b1@b');
  });
});

describe('adversarial isolation behind PgBouncer (transaction pooling, one server connection)', function () {
  this.timeout(120_000);
  const bouncer = usePgBouncer({ poolSize: 1 });
  let t: Tenants;
  beforeEach(async () => {
    t = await setup(bouncer().url);
    await t.manager.run(t.a, () => tenantContext.getRepository(Client).save({ name: 'A', email: 'a1@a' }));
  });

  for (const [name, act] of hostileRawCases().filter(([n]) => /TEMP|SET search_path|set_config|PREPARE|LISTEN|CURSOR|DO \$\$|multi|statement_timeout|read_only|SET ROLE/.test(n))) {
    it(`A's raw ${name}: nothing reaches B through PgBouncer`, async () => {
      const baseline = await baselineOf(t);
      await t.manager.run(t.a, () => act(t.a, t.b).catch(() => undefined));
      await expectBUnaffected(t, baseline, ['a1@a']);
    });
  }

  it("A's session advisory lock does not outlive its run through PgBouncer", async () => {
    const key = 44_000_000 + Math.floor(Math.random() * 1_000_000);
    await t.manager.run(t.a, () => raw('SELECT pg_advisory_lock($1)', [key]));
    expect(await lockIsFree(key)).to.equal(true);
  });

  it('raw COMMIT in tenantContext.transaction through PgBouncer: refused, B clean (closing the client connection does not reset the server one)', async () => {
    const baseline = await baselineOf(t);
    const error = await t.manager.run(t.a, () =>
      rejection(tenantContext.transaction(async () => {
        await raw('SET search_path TO public');
        await raw('SET ROLE pg_monitor');
        await raw('COMMIT');
      })),
    );
    expect(error).to.be.instanceOf(RawSqlRefusedError);
    await expectBUnaffected(t, baseline, ['a1@a']);
  });

  it('a user QueryRunner released mid-transaction through PgBouncer: nothing committed, B clean', async () => {
    const baseline = await baselineOf(t);
    await t.manager.run(t.a, async () => {
      const qr = tenantContext.getManager().connection.createQueryRunner();
      await qr.startTransaction();
      await qr.query("INSERT INTO client (name, email) VALUES ('u', 'uncommitted@a')");
      await qr.query(`SET search_path TO ${q(t.a)}`);
      await qr.release();
    });
    await expectBUnaffected(t, baseline, ['a1@a']);
  });

  it('a transaction that takes a session advisory lock and PREPAREs, then fails at COMMIT, through PgBouncer: nothing outlives it', async () => {
    const baseline = await baselineOf(t);
    const key = 46_000_000 + Math.floor(Math.random() * 1_000_000);
    expect(await t.manager.run(t.a, () => failingCommitWithState(key))).to.have.property('code', '23505');
    // Checked before B runs: B's own raw SQL would release the lock with its trailer.
    const lockFree = await lockIsFree(key);
    const after = await t.manager.run(t.b, sessionState);
    expect({ ...after, lockFree }).to.deep.equal({ ...baseline, lockFree: true });
  });

  it("A's QueryBuilder fragment set_config('search_path', '<a>', false) through PgBouncer: B's honest fragment must not read A", async () => {
    await t.manager.run(t.a, () =>
      tenantContext.getManager().createQueryBuilder().select(`set_config('search_path', '${q(t.a)}', false)`, 'x').fromDummy().getRawOne(),
    );
    await t.manager.run(t.b, async () => {
      await tenantContext.getRepository(Client).save({ name: 'B', email: 'b1@b' });
      const leaked = await tenantContext.getManager().createQueryBuilder().select("(SELECT string_agg(email, ',') FROM client)", 'emails').fromDummy().getRawOne();
      expect(leaked.emails).to.equal('b1@b');
    });
  });
});
