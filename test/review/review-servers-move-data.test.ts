import { expect } from 'chai';
import type { QueryRunner } from 'typeorm';
import { Client } from '../../entities';
import { tenantMigrations } from '../../migrations';
import { TenancyError, tenantContext, type TenantDataSourceManager } from '../../src';
import { migration } from '../support/tenant-migrations';
import { serverOptions, useSecondServer, withTwoServers, type ServerDatabase } from '../support/second-server';

/**
 * Adversarial review of moveTenant: do rows of every kind arrive identical,
 * and do the objects of the tenant schema survive?
 */

const Oddities = migration('ReviewOddities', undefined, async (runner: QueryRunner) => {
  await runner.query(`CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`);
  await runner.query(`CREATE TABLE oddity (
      id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      j jsonb, b bytea, ia int[], ta text[], m mood, n numeric(30,10), ts timestamptz, iv interval,
      t text, f double precision, u uuid, bits bit varying(10), r int4range,
      doubled bigint GENERATED ALWAYS AS (coalesce(length(t), 0) * 2) STORED,
      touched int NOT NULL DEFAULT 0)`);
  await runner.query(`CREATE TABLE nopk (k text, v int)`);
  await runner.query(`CREATE TABLE measure (at date NOT NULL, v int) PARTITION BY RANGE (at)`);
  await runner.query(`CREATE TABLE measure_2020 PARTITION OF measure FOR VALUES FROM ('2020-01-01') TO ('2021-01-01')`);
  await runner.query(`CREATE TABLE measure_2021 PARTITION OF measure FOR VALUES FROM ('2021-01-01') TO ('2022-01-01')`);
  await runner.query(`CREATE SEQUENCE ticket_seq START 100`);
  await runner.query(`CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.touched := NEW.touched + 1; RETURN NEW; END $$`);
  await runner.query(`CREATE TRIGGER oddity_bump BEFORE INSERT OR UPDATE ON oddity FOR EACH ROW EXECUTE FUNCTION bump()`);
  await runner.query(`CREATE VIEW oddity_view AS SELECT id, t FROM oddity`);
});

const ODD_ROWS = `INSERT INTO oddity (j, b, ia, ta, m, n, ts, iv, t, f, u, bits, r) VALUES
  ('{"a": [1, 2, {"b": null}], "é": "\\u00e9x"}'::jsonb, '\\x00ff10'::bytea, '{1,NULL,3}', '{"a,b","c\\"d",NULL,""}', 'happy',
   12345678901234567890.0123456789, '2021-03-28 02:30:00+05:45', '1 mon 2 days 03:04:05.678', E'tab\\there\\nnewline \\\\ back', 0.1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', B'101', '[1,5)'),
  (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  ('"str"', '', '{}', '{}', 'sad', -0.0000000001, 'infinity', '-178000000 years', '', 'NaN', NULL, B'', 'empty'),
  ('[]', '\\x5c2e', '{-2147483648}', '{"\\\\N"}', 'ok', 'NaN', '-infinity', '0', E'\\\\N', '-Infinity', NULL, NULL, '(,)')`;

async function rowsText(server: ServerDatabase, schema: string): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const table of ['oddity', 'nopk', 'measure', 'client']) {
    // Under fixed settings, so both servers print the same text for the same values.
    const rows = await server.query<{ r: string }>(
      `SELECT (SELECT string_agg(x::text, '|' ORDER BY x::text) FROM "${schema}"."${table}" x) AS r, set_config('TimeZone', 'UTC', false)`,
    );
    out[table] = [rows[0]!.r];
  }
  return out;
}

describe('review: moveTenant carries every kind of row and object', function () {
  this.timeout(90_000);
  const second = useSecondServer();

  it('rows of every type (jsonb, bytea, arrays, enum, numeric, timestamptz, odd text, NULLs), generated/identity columns, a table without a key, a partitioned table: identical after a -> b -> a; identity, sequence, trigger and view work', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open({ tenantMigrations: [...tenantMigrations, Oddities] });
      await tenants.createTenant('odd');
      await tenants.run('odd', async () => {
        await tenantContext.query(ODD_ROWS);
        await tenantContext.query(`UPDATE oddity SET t = t WHERE m = 'happy'`); // touched 2
        await tenantContext.query(`INSERT INTO nopk VALUES ('dup', 1), ('dup', 1), (NULL, NULL)`);
        await tenantContext.query(`INSERT INTO measure VALUES ('2020-05-05', 1), ('2021-06-06', 2)`);
        await tenantContext.query(`SELECT nextval('ticket_seq'), nextval('ticket_seq')`);
        await tenantContext.getRepository(Client).insert({ name: 'C\ttab', email: 'c@x.test' });
      });
      await a.query("SET TimeZone TO 'UTC'");
      const before = await rowsText(a, 'odd');
      const res1 = await tenants.moveTenant('odd', { server: 'b' });
      expect(res1.moved).to.equal(true);
      expect(await a.hasSchema('odd')).to.equal(false);
      expect(await rowsText(b, 'odd')).to.deep.equal(before);
      await tenants.moveTenant('odd', { server: 'a' });
      expect(await b.hasSchema('odd')).to.equal(false);
      expect(await rowsText(a, 'odd')).to.deep.equal(before);

      const after = await tenants.run('odd', async () => ({
        id: (await tenantContext.query<Array<{ id: number; touched: number }>>(`INSERT INTO oddity (t) VALUES ('new') RETURNING id, touched`))[0],
        ticket: (await tenantContext.query<Array<{ v: string }>>(`SELECT nextval('ticket_seq')::text AS v`))[0]!.v,
        view: (await tenantContext.query<Array<{ n: number }>>(`SELECT count(*)::int AS n FROM oddity_view`))[0]!.n,
        measure: (await tenantContext.query<Array<{ n: number }>>(`SELECT count(*)::int AS n FROM measure`))[0]!.n,
      }));
      expect(after).to.deep.equal({ id: { id: 5, touched: 1 }, ticket: '102', view: 5, measure: 2 });
      // The touched counter of the updated row was not bumped again by the load (triggers off while loading).
      const [{ touched }] = await a.query<{ touched: number }>(`SELECT touched FROM odd.oddity WHERE m = 'happy'`);
      expect(touched).to.equal(2);
    });
  });

  it("objects a tenant made in its own schema outside the migrations (a view, a function, a comment) are not silently lost by a move: the move keeps them or refuses", async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await tenants.createTenant('maker');
      await tenants.run('maker', async () => {
        await tenantContext.getRepository(Client).insert({ name: 'X', email: 'x@x.test' });
        await tenantContext.query(`CREATE VIEW my_report AS SELECT count(*) AS n FROM client`);
        await tenantContext.query(`CREATE FUNCTION my_fn() RETURNS int LANGUAGE sql AS 'SELECT 42'`);
        await tenantContext.query(`COMMENT ON TABLE client IS 'customer list, do not truncate'`);
      });
      const outcome = await tenants.moveTenant('maker', { server: 'b' }).then(
        () => 'moved',
        (error: unknown) => error,
      );
      if (outcome !== 'moved') {
        // Refusing is fine, but then the tenant is where it was, with its objects.
        expect(await a.query(`SELECT to_regclass('maker.my_report') IS NOT NULL AS v`)).to.deep.equal([{ v: true }]);
        return;
      }
      const kept = await b.query<{ view: boolean; fn: boolean; comment: string | null }>(
        `SELECT to_regclass('maker.my_report') IS NOT NULL AS view, to_regprocedure('maker.my_fn()') IS NOT NULL AS fn,
                obj_description(to_regclass('maker.client'), 'pg_class') AS comment`,
      );
      expect(kept).to.deep.equal([{ view: true, fn: true, comment: 'customer list, do not truncate' }]);
    });
  });

  it('a sequence value handed out during the freeze (reads go on, nextval is a read) is never handed out again on the target', async () => {
    await withTwoServers(second, async ({ open }) => {
      const tenants = await open();
      await tenants.createTenant('seq');
      await tenants.run('seq', () => tenantContext.getRepository(Client).insert({ name: 'A', email: 'a@x.test' }));
      let handedOut: number | undefined;
      let pending: Promise<void> | undefined;
      await tenants.moveTenant('seq', {
        server: 'b',
        onProgress: (p) => {
          if (p.step === 'copying' && pending === undefined) {
            pending = tenants
              .run('seq', () => tenantContext.query<Array<{ v: number }>>(`SELECT nextval('client_id_seq')::int AS v`))
              .then((rows) => {
                handedOut = rows[0]!.v;
              });
          }
        },
      });
      await pending;
      expect(handedOut, 'nextval ran during the freeze').to.be.a('number');
      const [{ id }] = await tenants.run('seq', () => tenantContext.query<Array<{ id: number }>>(`INSERT INTO client (name, email) VALUES ('B', 'b@x.test') RETURNING id`));
      expect(id).to.be.greaterThan(handedOut!);
    });
  });

  async function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([work, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: still running after ${ms} ms (deadlock?)`)), ms)))]);
    } finally {
      clearTimeout(timer);
    }
  }

  it('with poolSize 1 on every server, a move either completes or fails at once with a TenancyError saying the pool is too small (never a hang ending in a raw pool timeout)', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants: TenantDataSourceManager = await open({
        servers: { a: serverOptions(a.url, 1), b: serverOptions(b.url, 1) },
      });
      await tenants.createTenant('tiny', { server: 'a' });
      await tenants.run('tiny', () => tenantContext.getRepository(Client).insert({ name: 'A', email: 'a@x.test' }));
      const started = Date.now();
      const there = await withTimeout(tenants.moveTenant('tiny', { server: 'b' }), 60_000, 'move a -> b with poolSize 1').catch((e: unknown) => e);
      const ms = Date.now() - started;
      if (there instanceof Error) {
        expect(there, `after ${ms} ms: ${String(there)}`).to.be.instanceOf(TenancyError);
        expect(ms, `failed after ${ms} ms: ${String(there)}`).to.be.lessThan(2000);
      }
      expect((await tenants.getTenant('tiny'))!.server).to.be.oneOf(['a', 'b']);
    });
  });

  it('a tenant one migration behind moves at its own head: the target is not migrated further, migrationStatus still shows the pending one, and migrateTenants then applies it on b with the ledger in step', async () => {
    await withTwoServers(second, async ({ a, b, open, manager }) => {
      const old = await open();
      await old.createTenant('behind');
      await old.run('behind', () => tenantContext.getRepository(Client).insert({ name: 'A', email: 'a@x.test' }));
      await old.destroy();
      const Later = migration('ReviewLater', undefined, async (r) => {
        await r.query(`ALTER TABLE client ADD COLUMN review_later int`);
      });
      const tenants = manager({ tenantMigrations: [...tenantMigrations, Later], pendingMigrations: 'serve' } as never);
      await tenants.initialize();
      await tenants.moveTenant('behind', { server: 'b' });
      const status = await tenants.migrationStatus();
      expect(status.map((s) => [s.slug, s.pending.length])).to.deep.equal([['behind', 1]]);
      expect(await b.query(`SELECT count(*)::int AS n FROM information_schema.columns WHERE table_schema = 'behind' AND column_name = 'review_later'`)).to.deep.equal([{ n: 0 }]);
      const report = await tenants.migrateTenants();
      expect(report.results.map((r) => r.status)).to.deep.equal(['migrated']);
      expect((await tenants.migrationStatus())[0]!.pending).to.deep.equal([]);
      const own = (await b.query<{ name: string }>(`SELECT name FROM behind.migrations ORDER BY name`)).map((r) => r.name);
      const ledger = (await a.query<{ name: string }>(`SELECT name FROM public.tenants_migrations WHERE slug = 'behind' ORDER BY name`)).map((r) => r.name);
      expect(ledger).to.deep.equal(own);
    });
  });
});
