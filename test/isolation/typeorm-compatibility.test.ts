import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { In, IsNull, Like, Not, Raw, type QueryRunner } from 'typeorm';
import {
  CrossTenantAccessError,
  RawSqlRefusedError,
  TenantContextMissingError,
  TenantDataSourceManager,
  tenantContext,
} from '../../src';
import { usePgBouncer } from '../support/pgbouncer-hooks';
import { deleteRedisKeys, redisCache } from '../support/redis';
import { adminQuery, databaseUrl, managerOptions, tablesOf, uniqueSlug } from '../support/fixtures';
import {
  BookStatus,
  CompatAuthor,
  CompatAuthorStats,
  CompatBook,
  CompatCategory,
  CompatEvent,
  CompatEventSubscriber,
  CompatFolder,
  CompatNode,
  CompatPlan,
  CompatProfile,
  CompatShelf,
  CompatShelfItem,
  CompatTag,
  compatEntities,
  subscriberLog,
} from './compat-model';
import { compatSharedMigrations, compatTenantMigrations } from './compat-migrations';

/**
 * Walks TypeORM's public API through tenant DataSources the way a TypeORM
 * user would, and checks both what comes back and where rows physically are.
 * Every tenant runs next to "legacy" tables of the same names in "public"
 * (and a same-named function there): they must never be read or written.
 */

const schemaOf = (slug: string): string => slug.replace(/-/g, '_');
const token = (): string => randomBytes(4).toString('hex');
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Legacy same-named tables in "public", created before the manager starts. */
const LEGACY_DDL = [
  'CREATE TABLE public.compat_author (id serial PRIMARY KEY, name text NOT NULL, plan_id int)',
  "INSERT INTO public.compat_author (name) VALUES ('LEGACY')",
  `CREATE TABLE public.compat_book (id serial PRIMARY KEY, title text NOT NULL, status text, author_id int,
     "dimsWidth" int, "dimsHeight" int, created_at timestamptz DEFAULT '2000-01-01', deleted_at timestamptz, version int DEFAULT 1)`,
  "INSERT INTO public.compat_book (title, author_id) SELECT 'LEGACY', g FROM generate_series(1, 20) g",
  'CREATE TABLE public.compat_tag (id serial PRIMARY KEY, label text NOT NULL)',
  "INSERT INTO public.compat_tag (label) VALUES ('LEGACY')",
  'CREATE TABLE public.compat_book_tag (book_id int NOT NULL, tag_id int NOT NULL)',
  'INSERT INTO public.compat_book_tag SELECT b, t FROM generate_series(1, 3) b, (SELECT generate_series(1, 30) UNION ALL SELECT generate_series(1000, 1010)) AS s(t)',
  'CREATE TABLE public.compat_audit (id serial PRIMARY KEY, note text NOT NULL)',
  "INSERT INTO public.compat_audit (note) VALUES ('LEGACY')",
  'CREATE TABLE public.compat_category_closure (id_ancestor int NOT NULL, id_descendant int NOT NULL)',
  'INSERT INTO public.compat_category_closure VALUES (1, 1), (1, 2), (2, 2)',
  'CREATE TABLE public.compat_shelf_item (id serial PRIMARY KEY, label text NOT NULL, shelf_id int)',
  "INSERT INTO public.compat_shelf_item (label, shelf_id) SELECT 'LEGACY', g FROM generate_series(1, 5) g",
  'CREATE TABLE public.compat_legacy_only (id int)',
  'INSERT INTO public.compat_legacy_only VALUES (1)',
  // A same-named function in public: raw SQL must find the querySearchPath one (x2), never this one (x1000).
  'CREATE FUNCTION public.compat_twice(v int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT v * 1000 $$',
  'CREATE SCHEMA compat_ext',
  'CREATE FUNCTION compat_ext.compat_twice(v int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT v * 2 $$',
  'CREATE TABLE compat_ext.compat_lookup (code text)',
  "INSERT INTO compat_ext.compat_lookup VALUES ('from-extras')",
];
const LEGACY_TABLES = [
  'compat_author',
  'compat_book',
  'compat_tag',
  'compat_book_tag',
  'compat_audit',
  'compat_category_closure',
  'compat_shelf_item',
  'compat_legacy_only',
];

async function dropLegacy(): Promise<void> {
  for (const table of LEGACY_TABLES) await adminQuery(`DROP TABLE IF EXISTS public.${table}`);
  await adminQuery('DROP FUNCTION IF EXISTS public.compat_twice(int)');
  await adminQuery('DROP SCHEMA IF EXISTS compat_ext CASCADE');
}

async function createLegacy(): Promise<void> {
  await dropLegacy();
  for (const sql of LEGACY_DDL) await adminQuery(sql);
}

async function legacySnapshot(): Promise<string> {
  const parts: Record<string, unknown> = {};
  for (const table of LEGACY_TABLES) parts[table] = await adminQuery(`SELECT * FROM public.${table} t ORDER BY t::text`);
  const columns = await adminQuery(
    "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name LIKE 'compat%' ORDER BY 1, 2",
  );
  const types = await adminQuery("SELECT typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public' AND typname LIKE 'compat%' ORDER BY 1");
  return JSON.stringify({ parts, columns, types });
}

/** Notes of a schema's compat_audit, in insertion order. */
async function notesIn(schema: string, like = '%'): Promise<string[]> {
  const rows = await adminQuery<{ note: string }>(`SELECT note FROM "${schema}".compat_audit WHERE note LIKE $1 ORDER BY id`, [like]);
  return rows.map((r) => r.note);
}

function codeOf(error: unknown): string | undefined {
  return (error as { code?: string; driverError?: { code?: string } }).driverError?.code ?? (error as { code?: string }).code;
}

function hasPgQueryStream(): boolean {
  try {
    require.resolve('pg-query-stream');
    return true;
  } catch {
    return false;
  }
}

async function collect(stream: AsyncIterable<Record<string, unknown>>): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  for await (const row of stream) rows.push(row);
  return rows;
}

describe('TypeORM compatibility through tenant DataSources', function () {
  this.timeout(60_000);
  compatibilitySuite(databaseUrl);
});

describe('TypeORM compatibility through tenant DataSources, behind PgBouncer (transaction pooling, two server connections)', function () {
  this.timeout(60_000);
  const bouncer = usePgBouncer({ poolSize: 2 });
  compatibilitySuite(() => bouncer().url);
});

/** The suite, over a connection URL taken when it starts (the database, or a PgBouncer in front of it). */
function compatibilitySuite(url: () => string): void {

  let manager: TenantDataSourceManager;
  let legacy: string;
  const a = uniqueSlug('compat-a');
  const b = uniqueSlug('compat-b');
  const sa = schemaOf(a);
  const sb = schemaOf(b);
  const cachePrefix = `compat-${token()}:`;

  /** Fails when a test changed the legacy tables in "public", after putting them back (so one leak fails one test). */
  const expectLegacyUntouched = async (): Promise<void> => {
    const now = await legacySnapshot();
    if (now !== legacy) await createLegacy();
    expect(now, 'the legacy tables in "public" were read-only and unchanged').to.equal(legacy);
  };

  before(async function () {
    this.timeout(120_000);
    await createLegacy();
    manager = new TenantDataSourceManager(
      managerOptions({
        dataSource: {
          type: 'postgres',
          url: url(),
          poolSize: 4,
          subscribers: [CompatEventSubscriber],
          // TypeORM's query result cache on the machine's Redis, under a key prefix of this suite's own.
          cache: redisCache(cachePrefix),
        },
        entities: compatEntities,
        tenantMigrations: compatTenantMigrations,
        sharedMigrations: compatSharedMigrations,
        querySearchPath: ['compat_ext'],
        registryTable: `compat_tenants_${token()}`,
        maxDataSources: 2,
      }),
    );
    await manager.initialize();
    await manager.createTenant(a);
    await manager.createTenant(b);
    legacy = await legacySnapshot();
  });

  after(async function () {
    this.timeout(120_000);
    await manager?.destroy();
    await deleteRedisKeys(cachePrefix);
    await dropLegacy();
    // Other suites check that public.migrations holds only the example model's shared migrations.
    await adminQuery("DELETE FROM public.migrations WHERE name LIKE 'Compat%'");
  });

  describe('migrations', () => {
    it('Table API and raw unqualified SQL build every table, type and view in the tenant schema; foreign keys without a schema reach the shared table', async () => {
      for (const schema of [sa, sb]) {
        expect(await tablesOf(schema)).to.include.members([
          'compat_author',
          'compat_profile',
          'compat_event',
          'compat_book',
          'compat_tag',
          'compat_book_tag',
          'compat_audit',
          'compat_shelf',
          'compat_shelf_item',
          'compat_category',
          'compat_category_closure',
          'compat_node',
          'compat_folder',
          'migrations',
        ]);
        const fks = await adminQuery<{ tbl: string; ref: string }>(
          `SELECT cn.nspname || '.' || c.relname AS tbl, rn.nspname || '.' || r.relname AS ref
             FROM pg_constraint k
             JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
             JOIN pg_class r ON r.oid = k.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace
            WHERE k.contype = 'f' AND cn.nspname = $1`,
          [schema],
        );
        const refs = fks.map((f) => `${f.tbl} -> ${f.ref}`);
        expect(refs, 'createForeignKey(new TableForeignKey({ referencedTableName: "compat_plan" }))').to.include(
          `${schema}.compat_author -> public.compat_plan`,
        );
        expect(refs, 'Table API inline foreign key to the shared table').to.include(`${schema}.compat_event -> public.compat_plan`);
        expect(refs, 'Table API foreign key to a tenant table, with a legacy public.compat_author present').to.include(
          `${schema}.compat_profile -> ${schema}.compat_author`,
        );
        expect(refs, 'raw SQL REFERENCES compat_author').to.include(`${schema}.compat_book -> ${schema}.compat_author`);
        expect(refs.filter((r) => r.includes('-> public.') && !r.endsWith('-> public.compat_plan')), 'no other foreign key reaches public').to.deep.equal([]);

        const [type] = await adminQuery<{ nspname: string }>(
          `SELECT n.nspname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE a.attrelid = $1::regclass AND a.attname = 'status'`,
          [`"${schema}".compat_book`],
        );
        expect(type!.nspname, 'the enum type of compat_book.status').to.equal(schema);
        const viewUses = await adminQuery<{ t: string }>(
          "SELECT table_schema || '.' || table_name AS t FROM information_schema.view_table_usage WHERE view_schema = $1 AND view_name = 'compat_author_stats' ORDER BY 1",
          [schema],
        );
        expect(viewUses.map((v) => v.t)).to.deep.equal([`${schema}.compat_author`, `${schema}.compat_book`]);
        const applied = await adminQuery<{ name: string }>(`SELECT name FROM "${schema}".migrations ORDER BY id`);
        expect(applied.map((m) => m.name)).to.deep.equal(['CompatTenantTableApi1790000000001', 'CompatTenantRawSql1790000000002']);
        expect(await notesIn(schema, 'migrated')).to.deep.equal(['migrated']);
      }
      // The FK really is enforced against the shared table: a plan in public is accepted, a missing one refused.
      const plan = await CompatPlan.create({ code: `fk-${token()}`, name: 'FK plan' }).save();
      await manager.run(a, async () => {
        await tenantContext.getRepository(CompatAuthor).save({ name: 'With plan', plan });
        const missing = await tenantContext
          .getRepository(CompatAuthor)
          .save({ name: 'Bad plan', plan: { id: 2_000_000_000 } as CompatPlan })
          .catch((e: unknown) => e);
        expect(codeOf(missing)).to.equal('23503');
      });
      await expectLegacyUntouched();
    });
  });

  describe('raw SQL entry points', () => {
    it('DataSource/EntityManager/Repository .query and .sql and tenantContext.query inside a run read and write the tenant table only', async () => {
      const t = token();
      const labels = await manager.run(a, async () => {
        const ds = await manager.getDataSource(a);
        const em = tenantContext.getManager();
        const repo = tenantContext.getRepository(CompatBook);
        const entries: [string, (note: string) => Promise<unknown>][] = [
          ['DataSource.query', (n) => ds.query('INSERT INTO compat_audit (note) VALUES ($1)', [n])],
          ['DataSource.sql', (n) => ds.sql`INSERT INTO compat_audit (note) VALUES (${n})`],
          ['EntityManager.query', (n) => em.query('INSERT INTO compat_audit (note) VALUES ($1)', [n])],
          ['EntityManager.sql', (n) => em.sql`INSERT INTO compat_audit (note) VALUES (${n})`],
          ['Repository.query', (n) => repo.query('INSERT INTO compat_audit (note) VALUES ($1)', [n])],
          ['Repository.sql', (n) => repo.sql`INSERT INTO compat_audit (note) VALUES (${n})`],
          ['tenantContext.query', (n) => tenantContext.query('INSERT INTO compat_audit (note) VALUES ($1)', [n])],
        ];
        for (const [label, write] of entries) await write(`raw-${t}:${label}`);
        const readers: [string, () => Promise<{ note: string }[]>][] = [
          ['DataSource.query', () => ds.query('SELECT note FROM compat_audit ORDER BY id')],
          ['DataSource.sql', () => ds.sql`SELECT note FROM compat_audit ORDER BY id`],
          ['EntityManager.query', () => em.query('SELECT note FROM compat_audit ORDER BY id')],
          ['EntityManager.sql', () => em.sql`SELECT note FROM compat_audit ORDER BY id`],
          ['Repository.query', () => repo.query('SELECT note FROM compat_audit ORDER BY id')],
          ['Repository.sql', () => repo.sql`SELECT note FROM compat_audit ORDER BY id`],
          ['tenantContext.query', () => tenantContext.query('SELECT note FROM compat_audit ORDER BY id')],
        ];
        for (const [label, read] of readers) {
          const notes = (await read()).map((r) => r.note);
          expect(notes, label).to.include('migrated');
          expect(notes, label).to.not.include('LEGACY');
          expect(notes.filter((n) => n.startsWith(`raw-${t}:`)), label).to.have.length(entries.length);
        }
        return entries.map(([label]) => `raw-${t}:${label}`);
      });
      expect(await notesIn(sa, `raw-${t}:%`)).to.deep.equal(labels);
      expect(await notesIn(sb, `raw-${t}:%`)).to.deep.equal([]);
      await expectLegacyUntouched();
    });

    it('a tenant DataSource from getDataSource() used outside any run still fences raw SQL to its tenant', async () => {
      const t = token();
      const [dsA, dsB] = [await manager.getDataSource(a), await manager.getDataSource(b)];
      await dsA.query('INSERT INTO compat_audit (note) VALUES ($1)', [`out-${t}:a1`]);
      await dsB.sql`INSERT INTO compat_audit (note) VALUES (${`out-${t}:b1`})`;
      await dsA.manager.query('INSERT INTO compat_audit (note) VALUES ($1)', [`out-${t}:a2`]);
      await dsB.getRepository(CompatBook).query('INSERT INTO compat_audit (note) VALUES ($1)', [`out-${t}:b2`]);
      await dsA.transaction((em) => em.query('INSERT INTO compat_audit (note) VALUES ($1)', [`out-${t}:a3`]));
      await dsB.transaction(async (em) => {
        await em.save(CompatTag, { label: `out-${t}` });
        await em.sql`INSERT INTO compat_audit (note) VALUES (${`out-${t}:b3`})`;
      });
      const [{ n }] = await dsA.query("SELECT count(*)::int AS n FROM compat_audit WHERE note = 'LEGACY'");
      expect(n).to.equal(0);
      expect(await notesIn(sa, `out-${t}:%`)).to.deep.equal([`out-${t}:a1`, `out-${t}:a2`, `out-${t}:a3`]);
      expect(await notesIn(sb, `out-${t}:%`)).to.deep.equal([`out-${t}:b1`, `out-${t}:b2`, `out-${t}:b3`]);
      expect(await adminQuery(`SELECT label FROM "${sb}".compat_tag WHERE label = $1`, [`out-${t}`])).to.have.length(1);
      await expectLegacyUntouched();
    });

    it("a user's own QueryRunner: raw SQL outside and inside its transaction, commit and rollback, stays in the tenant", async () => {
      const t = token();
      const ds = await manager.getDataSource(a);
      const check = async (qr: QueryRunner): Promise<void> => {
        const rows: { note: string }[] = await qr.query('SELECT note FROM compat_audit ORDER BY id');
        expect(rows.map((r) => r.note)).to.not.include('LEGACY');
      };
      const qr = ds.createQueryRunner();
      try {
        await qr.connect();
        await qr.query('INSERT INTO compat_audit (note) VALUES ($1)', [`qr-${t}:outside`]);
        await check(qr);
        await qr.startTransaction();
        await qr.manager.find(CompatTag, { take: 1 }); // generated SQL first in the transaction
        await qr.query('INSERT INTO compat_audit (note) VALUES ($1)', [`qr-${t}:commit`]);
        await qr.manager.query('INSERT INTO compat_audit (note) VALUES ($1)', [`qr-${t}:manager`]);
        await qr.manager.save(CompatTag, { label: `qr-${t}` });
        const inside: { note: string }[] = await qr.query('SELECT note FROM compat_audit WHERE note LIKE $1 ORDER BY id', [`qr-${t}:%`]);
        expect(inside.map((r) => r.note)).to.deep.equal([`qr-${t}:outside`, `qr-${t}:commit`, `qr-${t}:manager`]);
        await check(qr);
        await qr.commitTransaction();
        await qr.startTransaction();
        await qr.query('INSERT INTO compat_audit (note) VALUES ($1)', [`qr-${t}:rolled-back`]);
        await qr.rollbackTransaction();
        await check(qr); // after a rollback, the next raw statement is still fenced
        await qr.query('INSERT INTO compat_audit (note) VALUES ($1)', [`qr-${t}:after`]);
      } finally {
        await qr.release();
      }
      // The same, from inside a run of the other tenant: the DataSource decides, not the run.
      await manager.run(b, async () => {
        const qrB = (await manager.getDataSource(b)).createQueryRunner();
        try {
          await qrB.startTransaction();
          await qrB.query('INSERT INTO compat_audit (note) VALUES ($1)', [`qr-${t}:b`]);
          await qrB.sql`INSERT INTO compat_audit (note) VALUES (${`qr-${t}:b-sql`})`;
          await qrB.commitTransaction();
        } finally {
          await qrB.release();
        }
      });
      expect(await notesIn(sa, `qr-${t}:%`)).to.deep.equal([`qr-${t}:outside`, `qr-${t}:commit`, `qr-${t}:manager`, `qr-${t}:after`]);
      expect(await notesIn(sb, `qr-${t}:%`)).to.deep.equal([`qr-${t}:b`, `qr-${t}:b-sql`]);
      expect(await adminQuery(`SELECT label FROM "${sa}".compat_tag WHERE label = $1`, [`qr-${t}`])).to.have.length(1);
      await expectLegacyUntouched();
    });

    it('inside tenantContext.transaction every raw entry point joins the transaction (commit keeps all, rollback none)', async () => {
      const t = token();
      const write = async (label: string): Promise<void> => {
        await tenantContext.transaction(async (em) => {
          await em.save(CompatTag, { label: `tx-${t}:${label}` }); // generated SQL before raw SQL
          await em.query('INSERT INTO compat_audit (note) VALUES ($1)', [`tx-${t}:${label}:em`]);
          await tenantContext.query('INSERT INTO compat_audit (note) VALUES ($1)', [`tx-${t}:${label}:ctx`]);
          await tenantContext.getRepository(CompatBook).query('INSERT INTO compat_audit (note) VALUES ($1)', [`tx-${t}:${label}:repo`]);
          await em.sql`INSERT INTO compat_audit (note) VALUES (${`tx-${t}:${label}:sql`})`;
          const [{ n }] = await em.query('SELECT count(*)::int AS n FROM compat_tag WHERE label = $1', [`tx-${t}:${label}`]);
          expect(n, 'raw SQL sees the generated insert of the same transaction').to.equal(1);
          const seen: { note: string }[] = await tenantContext.query('SELECT note FROM compat_audit WHERE note LIKE $1', [`tx-${t}:${label}:%`]);
          expect(seen).to.have.length(4);
          if (label === 'rollback') throw new Error('roll back');
        });
      };
      await manager.run(a, async () => {
        await write('commit');
        await expect(write('rollback')).to.be.rejectedWith('roll back');
        // Savepoints: a nested transaction rolled back keeps the outer one's raw writes.
        await tenantContext.transaction(async (em) => {
          await em.query('INSERT INTO compat_audit (note) VALUES ($1)', [`tx-${t}:outer`]);
          await expect(
            tenantContext.transaction(async (inner) => {
              await inner.query('INSERT INTO compat_audit (note) VALUES ($1)', [`tx-${t}:inner`]);
              throw new Error('inner');
            }),
          ).to.be.rejectedWith('inner');
          await em.query('INSERT INTO compat_audit (note) VALUES ($1)', [`tx-${t}:outer-after`]);
          const [{ n }] = await em.query("SELECT count(*)::int AS n FROM compat_audit WHERE note = 'LEGACY'");
          expect(n, 'after ROLLBACK TO SAVEPOINT raw SQL is still fenced').to.equal(0);
        });
      });
      expect(await notesIn(sa, `tx-${t}:%`)).to.deep.equal([
        `tx-${t}:commit:em`,
        `tx-${t}:commit:ctx`,
        `tx-${t}:commit:repo`,
        `tx-${t}:commit:sql`,
        `tx-${t}:outer`,
        `tx-${t}:outer-after`,
      ]);
      expect(await adminQuery(`SELECT label FROM "${sa}".compat_tag WHERE label LIKE $1`, [`tx-${t}:%`])).to.deep.equal([{ label: `tx-${t}:commit` }]);
      expect(await notesIn(sb, `tx-${t}:%`)).to.deep.equal([]);
      await expectLegacyUntouched();
    });

    it('a multi-statement string is an error through every entry point, and none of its statements runs', async () => {
      const t = token();
      const multi = (n: string): string => `INSERT INTO compat_audit (note) VALUES ('multi-${t}:${n}:1'); INSERT INTO compat_audit (note) VALUES ('multi-${t}:${n}:2')`;
      const ds = await manager.getDataSource(a);
      await manager.run(a, async () => {
        await expect(tenantContext.query(multi('ctx'))).to.be.rejected;
        await expect(tenantContext.getManager().query(multi('em'))).to.be.rejected;
        await expect(ds.query(multi('ds'))).to.be.rejected;
        await expect(tenantContext.transaction((em) => em.query(multi('tx')))).to.be.rejected;
        const qr = ds.createQueryRunner();
        try {
          await qr.startTransaction();
          await expect(qr.query(multi('qr'))).to.be.rejected;
          await qr.rollbackTransaction();
        } finally {
          await qr.release();
        }
        // The tenant is served normally afterwards.
        await tenantContext.query('INSERT INTO compat_audit (note) VALUES ($1)', [`multi-${t}:ok`]);
      });
      expect(await notesIn(sa, `multi-${t}:%`)).to.deep.equal([`multi-${t}:ok`]);
      await expectLegacyUntouched();
    });

    it('unqualified names: tenant first, then querySearchPath extras, then pg_temp, never public', async () => {
      await manager.run(a, async () => {
        const ds = await manager.getDataSource(a);
        expect(await tenantContext.query('SELECT compat_twice(21) AS v')).to.deep.equal([{ v: 42 }]);
        expect(await tenantContext.getManager().query('SELECT compat_twice(5) AS v')).to.deep.equal([{ v: 10 }]);
        expect(await ds.query('SELECT code FROM compat_lookup')).to.deep.equal([{ code: 'from-extras' }]);
        for (const [label, run] of [
          ['tenantContext.query', () => tenantContext.query('SELECT id FROM compat_legacy_only')],
          ['DataSource.query', () => ds.query('SELECT id FROM compat_legacy_only')],
          ['EntityManager.query in a transaction', () => tenantContext.transaction((em) => em.query('SELECT id FROM compat_legacy_only'))],
        ] as const) {
          const error = await run().then(
            () => undefined,
            (e: unknown) => e,
          );
          expect(codeOf(error), `${label}: a table only in public is not found`).to.equal('42P01');
        }
        await tenantContext.transaction(async (em) => {
          await em.query('CREATE TEMP TABLE compat_audit (note text)');
          await em.query("INSERT INTO pg_temp.compat_audit VALUES ('TEMP')");
          const notes: { note: string }[] = await em.query('SELECT note FROM compat_audit');
          expect(notes.map((r) => r.note), 'the tenant table comes before pg_temp').to.include('migrated').and.not.include('TEMP');
          await em.query('CREATE TEMP TABLE compat_tmp_only (v int)');
          await em.query('INSERT INTO compat_tmp_only VALUES (7)');
          expect(await em.query('SELECT v FROM compat_tmp_only')).to.deep.equal([{ v: 7 }]);
        });
        const after = await tenantContext.query('SELECT v FROM compat_tmp_only').catch((e: unknown) => e);
        expect(codeOf(after), 'temp tables do not outlive the fenced transaction').to.equal('42P01');
      });
      expect(await notesIn(sa, 'TEMP')).to.deep.equal([]);
      await expectLegacyUntouched();
    });
  });

  describe('QueryBuilder', () => {
    async function seedAuthor(slug: string, name: string, titles: string[]): Promise<CompatAuthor> {
      return manager.run(slug, async () => {
        const author = await tenantContext.getRepository(CompatAuthor).save({ name });
        for (const title of titles) await tenantContext.getRepository(CompatBook).save({ title, author, dims: { width: 1, height: 1 } });
        return author;
      });
    }

    it('select with joins (tenant and shared), entity subqueries via qb.subQuery(), getRawMany', async () => {
      const t = token();
      const plan = await CompatPlan.create({ code: `qb-${t}`, name: 'QB plan' }).save();
      await manager.run(a, async () => {
        const author = await tenantContext.getRepository(CompatAuthor).save({ name: `qa-${t}`, plan });
        const tag = await tenantContext.getRepository(CompatTag).save({ label: `qt-${t}` });
        await tenantContext.getRepository(CompatBook).save([
          { title: `q1-${t}`, author, tags: [tag], dims: { width: 2, height: 3 } },
          { title: `q2-${t}`, author, tags: [], dims: { width: 4, height: 5 } },
        ]);
      });
      await seedAuthor(b, `qa-${t}`, [`qb-only-${t}`]);

      await manager.run(a, async () => {
        const books = await tenantContext
          .getRepository(CompatBook)
          .createQueryBuilder('b')
          .innerJoinAndSelect('b.author', 'a')
          .leftJoinAndSelect('a.plan', 'p')
          .leftJoinAndSelect('b.tags', 'tg')
          .where('a.name = :name', { name: `qa-${t}` })
          .orderBy('b.title')
          .getMany();
        expect(books.map((x) => x.title)).to.deep.equal([`q1-${t}`, `q2-${t}`]);
        expect(books[0]!.author!.plan!.code).to.equal(`qb-${t}`);
        expect(books[0]!.tags!.map((x) => x.label)).to.deep.equal([`qt-${t}`]);
        expect(books[1]!.dims).to.deep.equal({ width: 4, height: 5 });

        const qb = tenantContext.getRepository(CompatBook).createQueryBuilder('b');
        const viaSub = await qb
          .where(
            '"b"."author_id" IN ' +
              qb.subQuery().select('a.id').from(CompatAuthor, 'a').where('a.name = :name').getQuery(),
          )
          .setParameter('name', `qa-${t}`)
          .orderBy('b.title')
          .getMany();
        expect(viaSub.map((x) => x.title)).to.deep.equal([`q1-${t}`, `q2-${t}`]);

        const raw = await tenantContext
          .getManager()
          .createQueryBuilder(CompatBook, 'b')
          .select('b.title', 'title')
          .addSelect('b.dimsWidth', 'width')
          .addSelect((sub) => sub.select('count(*)::int').from(CompatAuthor, 'a2').where('a2.name = :name'), 'authors')
          .where('b.title LIKE :p', { p: `q%-${t}` })
          .setParameter('name', `qa-${t}`)
          .orderBy('b.title')
          .getRawMany();
        expect(raw).to.deep.equal([
          { title: `q1-${t}`, width: 2, authors: 1 },
          { title: `q2-${t}`, width: 4, authors: 1 },
        ]);
      });
      await manager.run(b, async () => {
        const books = await tenantContext.getRepository(CompatBook).find({ where: { author: { name: `qa-${t}` } }, relations: { author: true } });
        expect(books.map((x) => x.title)).to.deep.equal([`qb-only-${t}`]);
      });
      await expectLegacyUntouched();
    });

    it('string table names: from, join, subquery, insert into, update, delete go to the tenant table', async () => {
      const t = token();
      await seedAuthor(a, `st-${t}`, [`st-${t}`, 'LEGACY']);
      await manager.run(a, async () => {
        const em = tenantContext.getManager();
        await em.createQueryBuilder().insert().into('compat_audit').values({ note: `st-${t}` }).execute();
        await em.createQueryBuilder().insert().into('compat_audit', ['note']).values([{ note: `sti-${t}:1` }, { note: `sti-${t}:2` }]).execute();
        const fromString = await em
          .createQueryBuilder()
          .select('x.note', 'note')
          .from('compat_audit', 'x')
          .where('x.note IN (:...notes)', { notes: [`st-${t}`, 'LEGACY'] })
          .getRawMany();
        expect(fromString).to.deep.equal([{ note: `st-${t}` }]);

        const joined = await em
          .createQueryBuilder(CompatBook, 'b')
          .innerJoin('compat_audit', 'au', 'au.note = b.title')
          .innerJoin('b.author', 'a')
          .where('a.name = :name', { name: `st-${t}` })
          .getMany();
        expect(joined.map((x) => x.title), 'a join on a string table').to.deep.equal([`st-${t}`]);

        const qb = em.createQueryBuilder(CompatBook, 'b');
        const sub = await qb
          .innerJoin('b.author', 'a')
          .where('a.name = :name', { name: `st-${t}` })
          .andWhere('b.title IN ' + qb.subQuery().select('x.note').from('compat_audit', 'x').getQuery())
          .getMany();
        expect(sub.map((x) => x.title), 'a subquery over a string table').to.deep.equal([`st-${t}`]);

        const updated = await em.createQueryBuilder().update('compat_audit').set({ note: `stu-${t}` }).where('note = :n', { n: `sti-${t}:1` }).execute();
        expect(updated.affected).to.equal(1);
        const legacyUpdate = await em.createQueryBuilder().update('compat_audit').set({ note: 'HIJACKED' }).where("note = 'LEGACY'").execute();
        expect(legacyUpdate.affected, 'no LEGACY row in the tenant to update').to.equal(0);
        const deleted = await em.createQueryBuilder().delete().from('compat_audit').where('note = :n', { n: `sti-${t}:2` }).execute();
        expect(deleted.affected).to.equal(1);
        const legacyDelete = await em.createQueryBuilder().delete().from('compat_audit').where("note = 'LEGACY'").execute();
        expect(legacyDelete.affected, 'no LEGACY row in the tenant to delete').to.equal(0);
      });
      expect(await notesIn(sa, `st%-${t}%`)).to.deep.equal([`st-${t}`, `stu-${t}`]);
      expect(await notesIn(sb, `st%-${t}%`)).to.deep.equal([]);
      await expectLegacyUntouched();
    });

    it('CTEs via addCommonTableExpression (QueryBuilder body; CTE names are not qualified)', async () => {
      const t = token();
      await seedAuthor(a, `cte-${t}`, [`cte1-${t}`, `cte2-${t}`]);
      await seedAuthor(b, `cte-${t}`, [`cteb-${t}`]);
      for (const [slug, expected] of [
        [a, [`cte1-${t}`, `cte2-${t}`]],
        [b, [`cteb-${t}`]],
      ] as const) {
        await manager.run(slug, async () => {
          const em = tenantContext.getManager();
          const rows = await em
            .createQueryBuilder()
            .addCommonTableExpression(
              em.createQueryBuilder(CompatBook, 'b').select('b.title', 'title').where('b.title LIKE :p'),
              'picked',
            )
            .select('picked.title', 'title')
            .from('picked', 'picked')
            .setParameter('p', `cte%-${t}`)
            .orderBy('title')
            .getRawMany();
          expect(rows.map((r) => r.title)).to.deep.equal(expected);
        });
      }
      await expectLegacyUntouched();
    });

    it('a CTE whose body is a string with unqualified names (addCommonTableExpression(string)) reads the tenant table, not public', async () => {
      const t = token();
      await seedAuthor(b, `hw-${t}`, [`hw-${t}`]);
      await manager.run(b, async () => {
        const em = tenantContext.getManager();
        // Tenant b has no book titled LEGACY; public.compat_book has 20.
        expect(await em.query("SELECT count(*)::int AS n FROM compat_book WHERE title = 'LEGACY'")).to.deep.equal([{ n: 0 }]);
        const cte = await em
          .createQueryBuilder()
          .addCommonTableExpression("SELECT title FROM compat_book WHERE title IN ('LEGACY', :title)", 'picked')
          .select('picked.title', 'title')
          .from('picked', 'picked')
          .setParameter('title', `hw-${t}`)
          .getRawMany();
        expect(cte, 'a CTE body written as a string').to.deep.equal([{ title: `hw-${t}` }]);
      });
      await expectLegacyUntouched();
    });

    it('hand-written select and where fragments with unqualified names inside a QueryBuilder resolve in the tenant, not public', async () => {
      const t = token();
      await seedAuthor(a, `hwf-${t}`, [`hwf-${t}`]);
      await manager.run(a, async () => {
        const em = tenantContext.getManager();
        const fragment = await em
          .createQueryBuilder(CompatBook, 'b')
          .select('b.title', 'title')
          .addSelect("(SELECT count(*)::int FROM compat_author WHERE name = 'LEGACY')", 'legacy')
          .where('b.title = :title', { title: `hwf-${t}` })
          .andWhere("NOT EXISTS (SELECT 1 FROM compat_audit WHERE note = 'LEGACY')")
          .getRawMany();
        expect(fragment, 'select and where fragments with unqualified names').to.deep.equal([{ title: `hwf-${t}`, legacy: 0 }]);
      });
      await expectLegacyUntouched();
    });

    it('a Raw() find operator with an unqualified subquery resolves in the tenant, not public', async () => {
      const t = token();
      await seedAuthor(a, `raw-op-${t}`, ['LEGACY', `raw-op-${t}`]);
      await manager.run(a, async () => {
        await tenantContext.query('INSERT INTO compat_audit (note) VALUES ($1)', [`raw-op-${t}`]);
        const books = await tenantContext.getRepository(CompatBook).find({
          where: { author: { name: `raw-op-${t}` }, title: Raw((alias) => `${alias} IN (SELECT note FROM compat_audit)`) },
          order: { title: 'ASC' },
        });
        expect(books.map((x) => x.title), 'IN (SELECT note FROM compat_audit) over the tenant audit table').to.deep.equal([`raw-op-${t}`]);
      });
      await expectLegacyUntouched();
    });

    it('a function called in generated SQL resolves like raw SQL (querySearchPath extras), never in public', async () => {
      await manager.run(a, async () => {
        const raw = await tenantContext.query('SELECT compat_twice(1) AS v');
        expect(raw, 'raw SQL').to.deep.equal([{ v: 2 }]);
        const generated = await tenantContext
          .getManager()
          .createQueryBuilder(CompatAuthor, 'a')
          .select('compat_twice(1)', 'v')
          .limit(1)
          .getRawMany();
        expect(generated, 'the same call in a QueryBuilder select').to.deep.equal([{ v: 2 }]);
      });
    });

    it('insert/update/delete/softDelete/restore with entities, version column bumped, and stream inside a transaction', async () => {
      const t = token();
      await manager.run(a, async () => {
        const qb = () => tenantContext.getRepository(CompatBook).createQueryBuilder();
        await qb()
          .insert()
          .into(CompatBook)
          .values([
            { title: `iu1-${t}`, status: BookStatus.Published, dims: { width: 7, height: 8 } },
            { title: `iu2-${t}`, dims: { width: 1, height: 1 } },
            { title: `iu3-${t}`, dims: { width: 1, height: 1 } },
          ])
          .execute();
        const up = await qb().update(CompatBook).set({ status: BookStatus.Retired }).where('title = :x', { x: `iu2-${t}` }).execute();
        expect(up.affected).to.equal(1);
        const soft = await qb().softDelete().where('title = :x', { x: `iu3-${t}` }).execute();
        expect(soft.affected).to.equal(1);
        const visible = await tenantContext.getRepository(CompatBook).find({ where: { title: In([`iu1-${t}`, `iu2-${t}`, `iu3-${t}`]) }, order: { title: 'ASC' } });
        expect(visible.map((x) => [x.title, x.status, x.version])).to.deep.equal([
          [`iu1-${t}`, 'published', 1],
          [`iu2-${t}`, 'retired', 2],
        ]);
        const raw = await qb()
          .select('title')
          .addSelect('status')
          .addSelect('deleted_at IS NOT NULL', 'deleted')
          .withDeleted()
          .where('title LIKE :p', { p: `iu%-${t}` })
          .orderBy('title')
          .getRawMany();
        expect(raw).to.deep.equal([
          { title: `iu1-${t}`, status: 'published', deleted: false },
          { title: `iu2-${t}`, status: 'retired', deleted: false },
          { title: `iu3-${t}`, status: 'draft', deleted: true },
        ]);
        await qb().restore().where('title = :x', { x: `iu3-${t}` }).execute();
        await qb().delete().from(CompatBook).where('title = :x', { x: `iu1-${t}` }).execute();

        await tenantContext.transaction(async (em) => {
          const streamed = em.createQueryBuilder(CompatBook, 'b').select('b.title', 'title').where('b.title LIKE :p', { p: `iu%-${t}` }).orderBy('b.title');
          if (hasPgQueryStream()) {
            const rows = await collect(await streamed.stream());
            expect(rows.map((r) => r.title ?? r.b_title)).to.deep.equal([`iu2-${t}`, `iu3-${t}`]);
            const qr = em.queryRunner!;
            const rawRows = await collect(await qr.stream('SELECT note FROM compat_audit ORDER BY id'));
            expect(rawRows.map((r) => r.note), 'a raw stream inside a transaction').to.include('migrated').and.not.include('LEGACY');
          } else {
            // pg-query-stream is not installed: TypeORM's own error comes through, the transaction goes on.
            await expect(streamed.stream()).to.be.rejectedWith(/pg-query-stream/);
            expect(await em.query('SELECT count(*)::int AS n FROM compat_book WHERE title LIKE $1', [`iu%-${t}`])).to.deep.equal([{ n: 2 }]);
          }
        });
      });
      const ds = await manager.getDataSource(a);
      const qr = ds.createQueryRunner();
      try {
        await expect(qr.stream('SELECT note FROM compat_audit')).to.be.rejectedWith(RawSqlRefusedError);
      } finally {
        await qr.release();
      }
      expect(
        await adminQuery(`SELECT title, status::text AS status, version, deleted_at IS NULL AS live FROM "${sa}".compat_book WHERE title LIKE $1 ORDER BY title`, [`iu%-${t}`]),
      ).to.deep.equal([
        { title: `iu2-${t}`, status: 'retired', version: 2, live: true },
        { title: `iu3-${t}`, status: 'draft', version: 3, live: true },
      ]);
      expect(await adminQuery(`SELECT title FROM "${sb}".compat_book WHERE title LIKE $1`, [`iu%-${t}`])).to.deep.equal([]);
      await expectLegacyUntouched();
    });
  });

  describe('relations', () => {
    it('one-to-one, many-to-one (tenant and shared), one-to-many and many-to-many with a join table, two tenants interleaved', async () => {
      const t = token();
      const plan = await CompatPlan.create({ code: `rel-${t}`, name: 'Rel plan' }).save();
      const inTenant = (slug: string, books: number) =>
        manager.run(slug, async () => {
          const authors = tenantContext.getRepository(CompatAuthor);
          const author = await authors.save({ name: `ra-${t}`, plan });
          await sleep(5);
          await tenantContext.getRepository(CompatProfile).save({ bio: `bio-${slug}`, author });
          const tags = await tenantContext.getRepository(CompatTag).save([{ label: `rt1-${t}` }, { label: `rt2-${t}` }]);
          await sleep(5);
          for (let i = 0; i < books; i += 1) {
            await tenantContext
              .getRepository(CompatBook)
              .save({ title: `rb${i}-${t}`, author, tags: i === 0 ? tags : [tags[1]!], dims: { width: i, height: i } });
            await sleep(1);
          }
          const loaded = await authors.findOneOrFail({
            where: { id: author.id },
            relations: { plan: true, profile: true, books: { tags: true } },
            order: { books: { title: 'ASC' } },
          });
          const profile = await tenantContext.getRepository(CompatProfile).findOneOrFail({ where: { author: { id: author.id } }, relations: { author: true } });
          const tagBooks = await tenantContext.getRepository(CompatTag).find({ where: { label: `rt2-${t}` }, relations: { books: true } });
          // Take one tag off the first book: the join row goes.
          const first = await tenantContext.getRepository(CompatBook).findOneOrFail({ where: { title: `rb0-${t}` }, relations: { tags: true } });
          first.tags = first.tags!.filter((x) => x.label === `rt1-${t}`);
          await tenantContext.getRepository(CompatBook).save(first);
          return { author: loaded, profile, tagBooks, tagIds: tags.map((x) => x.id) };
        });
      const [ra, rb] = await Promise.all([inTenant(a, 3), inTenant(b, 1)]);

      expect(ra.author.plan!.code).to.equal(`rel-${t}`);
      expect(ra.author.profile!.bio).to.equal(`bio-${a}`);
      expect(ra.author.books!.map((x) => [x.title, x.tags!.map((g) => g.label).sort()])).to.deep.equal([
        [`rb0-${t}`, [`rt1-${t}`, `rt2-${t}`]],
        [`rb1-${t}`, [`rt2-${t}`]],
        [`rb2-${t}`, [`rt2-${t}`]],
      ]);
      expect(ra.profile.author.name).to.equal(`ra-${t}`);
      expect(ra.tagBooks[0]!.books!.map((x) => x.title).sort()).to.deep.equal([`rb0-${t}`, `rb1-${t}`, `rb2-${t}`]);
      expect(rb.author.books!.map((x) => x.title)).to.deep.equal([`rb0-${t}`]);
      expect(rb.author.profile!.bio).to.equal(`bio-${b}`);
      expect(rb.tagBooks[0]!.books!.map((x) => x.title)).to.deep.equal([`rb0-${t}`]);

      const joinRows = async (schema: string, ids: number[]) =>
        (await adminQuery<{ n: number }>(`SELECT count(*)::int AS n FROM "${schema}".compat_book_tag WHERE tag_id = ANY($1)`, [ids]))[0]!.n;
      expect(await joinRows(sa, ra.tagIds), 'join rows of tenant a: 4 saved, 1 removed').to.equal(3);
      expect(await joinRows(sb, rb.tagIds), 'join rows of tenant b: 2 saved, 1 removed').to.equal(1);
      const [profileRow] = await adminQuery<{ author: string }>(
        `SELECT a.name AS author FROM "${sa}".compat_profile p JOIN "${sa}".compat_author a ON a.id = p.author_id WHERE p.bio = $1 AND a.name = $2`,
        [`bio-${a}`, `ra-${t}`],
      );
      expect(profileRow).to.deep.equal({ author: `ra-${t}` });
      await expectLegacyUntouched();
    });

    it('lazy relations load in the active run for new and loaded entities, interleaved; another tenant or no run is refused', async () => {
      const t = token();
      const shelfId = 500_000 + Math.floor(Math.random() * 1_000_000);
      // The same shelf id in both tenants, different items.
      for (const [slug, labels] of [
        [a, ['a1', 'a2']],
        [b, ['b1']],
      ] as const) {
        await manager.run(slug, async () => {
          // An explicit id for a generated key: raw SQL (TypeORM 1.1.1's save() drops it and uses the sequence).
          await tenantContext.query('INSERT INTO compat_shelf (id, name) VALUES ($1, $2)', [shelfId, `shelf-${slug}`]);
          const shelf = await tenantContext.getRepository(CompatShelf).findOneByOrFail({ id: shelfId });
          for (const label of labels) {
            const item = new CompatShelfItem();
            item.label = `${label}-${t}`;
            item.shelf = Promise.resolve(shelf); // TypeORM's documented way to set a lazy relation
            await tenantContext.getRepository(CompatShelfItem).save(item);
          }
        });
      }
      expect(await adminQuery(`SELECT label FROM "${sa}".compat_shelf_item WHERE shelf_id = $1 ORDER BY label`, [shelfId])).to.deep.equal([
        { label: `a1-${t}` },
        { label: `a2-${t}` },
      ]);

      const readNew = (slug: string) =>
        manager.run(slug, async () => {
          const shelf = new CompatShelf();
          shelf.id = shelfId;
          await sleep(5);
          return (await shelf.items).map((x) => x.label).sort();
        });
      const readLoaded = (slug: string) =>
        manager.run(slug, async () => {
          const shelf = await tenantContext.getRepository(CompatShelf).findOneByOrFail({ id: shelfId });
          await sleep(5);
          const items = await shelf.items;
          const back = await items[0]!.shelf; // many-to-one, lazy, from a loaded entity
          return { labels: items.map((x) => x.label).sort(), back: back!.name };
        });
      const [na, nb, la, lb] = await Promise.all([readNew(a), readNew(b), readLoaded(a), readLoaded(b)]);
      expect(na).to.deep.equal([`a1-${t}`, `a2-${t}`]);
      expect(nb).to.deep.equal([`b1-${t}`]);
      expect(la).to.deep.equal({ labels: [`a1-${t}`, `a2-${t}`], back: `shelf-${a}` });
      expect(lb).to.deep.equal({ labels: [`b1-${t}`], back: `shelf-${b}` });

      const loadedInA = await manager.run(a, () => tenantContext.getRepository(CompatShelf).findOneByOrFail({ id: shelfId }));
      await manager.run(b, async () => {
        await expect(loadedInA.items).to.be.rejectedWith(CrossTenantAccessError);
      });
      const another = await manager.run(a, () => tenantContext.getRepository(CompatShelf).findOneByOrFail({ id: shelfId }));
      await expect(another.items).to.be.rejectedWith(TenantContextMissingError);
      const fresh = new CompatShelf();
      fresh.id = shelfId;
      await expect(fresh.items).to.be.rejectedWith(TenantContextMissingError);
      // Still readable in its own tenant afterwards.
      expect((await manager.run(a, () => another.items)).map((x) => x.label).sort()).to.deep.equal([`a1-${t}`, `a2-${t}`]);
      await expectLegacyUntouched();
    });
  });

  describe('trees', () => {
    it('closure-table, nested-set and materialized-path trees saved and read in two tenants', async () => {
      const t = token();
      const build = (slug: string, extra: boolean) =>
        manager.run(slug, async () => {
          const em = tenantContext.getManager();
          const out: Record<string, unknown> = {};
          for (const Target of [CompatCategory, CompatNode, CompatFolder] as const) {
            const repo = em.getTreeRepository<CompatCategory>(Target as unknown as typeof CompatCategory);
            const root = await repo.save(repo.create({ name: `root-${t}` }));
            await sleep(2);
            const child = await repo.save(repo.create({ name: `child-${t}`, parent: root }));
            const grand = await repo.save(repo.create({ name: `grand-${t}`, parent: child }));
            if (extra) await repo.save(repo.create({ name: `second-${t}`, parent: root }));
            const descendants = (await repo.findDescendants(root)).map((x) => x.name).sort();
            const ancestors = (await repo.findAncestors(grand)).map((x) => x.name).sort();
            const count = await repo.countDescendants(root);
            const tree = await repo.findDescendantsTree(root);
            const shape = (node: CompatCategory): unknown => ({
              name: node.name,
              children: (node.children ?? []).map(shape).sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y))),
            });
            out[Target.name] = { descendants, ancestors, count, tree: shape(tree), ids: [root.id, child.id, grand.id] };
          }
          return out;
        });
      const [ta, tb] = await Promise.all([build(a, true), build(b, false)]);
      for (const name of ['CompatCategory', 'CompatNode', 'CompatFolder']) {
        expect(ta[name], `${name} in tenant a`).to.deep.include({
          descendants: [`child-${t}`, `grand-${t}`, `root-${t}`, `second-${t}`],
          ancestors: [`child-${t}`, `grand-${t}`, `root-${t}`],
          count: 4,
          tree: {
            name: `root-${t}`,
            children: [
              { name: `child-${t}`, children: [{ name: `grand-${t}`, children: [] }] },
              { name: `second-${t}`, children: [] },
            ],
          },
        });
        expect(tb[name], `${name} in tenant b`).to.deep.include({
          descendants: [`child-${t}`, `grand-${t}`, `root-${t}`],
          count: 3,
          tree: { name: `root-${t}`, children: [{ name: `child-${t}`, children: [{ name: `grand-${t}`, children: [] }] }] },
        });
      }
      // Physically: the closure rows, nested-set bounds and paths are in each tenant's own tables.
      const [rootA, childA, grandA] = (ta.CompatCategory as { ids: number[] }).ids as [number, number, number];
      const closure = await adminQuery<{ id_ancestor: number; id_descendant: number }>(
        `SELECT id_ancestor, id_descendant FROM "${sa}".compat_category_closure WHERE id_descendant = $1 ORDER BY id_ancestor`,
        [grandA],
      );
      expect(closure.map((r) => r.id_ancestor)).to.deep.equal([rootA, childA, grandA].sort((x, y) => x - y));
      const [nodeRoot] = await adminQuery<{ nsleft: number; nsright: number }>(`SELECT nsleft, nsright FROM "${sb}".compat_node WHERE name = $1`, [`root-${t}`]);
      expect(nodeRoot).to.deep.equal({ nsleft: 1, nsright: 6 });
      const [folderIds] = [(tb.CompatFolder as { ids: number[] }).ids];
      const [grandFolder] = await adminQuery<{ mpath: string }>(`SELECT mpath FROM "${sb}".compat_folder WHERE id = $1`, [folderIds![2]]);
      expect(grandFolder!.mpath).to.equal(`${folderIds!.join('.')}.`);
      await expectLegacyUntouched();
    });
  });

  describe('entity features', () => {
    it('a @ViewEntity reads the tenant view', async () => {
      const t = token();
      const setup = (slug: string, n: number) =>
        manager.run(slug, async () => {
          const author = await tenantContext.getRepository(CompatAuthor).save({ name: `view-${t}` });
          const books = await tenantContext.getRepository(CompatBook).save(
            Array.from({ length: n }, (_, i) => ({ title: `v${i}-${t}`, author, dims: { width: 0, height: 0 } })),
          );
          await tenantContext.getRepository(CompatBook).softDelete(books[0]!.id);
          return tenantContext.getRepository(CompatAuthorStats).find({ where: { name: `view-${t}` } });
        });
      const [va, vb] = await Promise.all([setup(a, 4), setup(b, 2)]);
      expect(va.map((v) => v.books)).to.deep.equal([3]);
      expect(vb.map((v) => v.books)).to.deep.equal([1]);
      expect(va[0]!.authorId).to.be.a('number');
      await expectLegacyUntouched();
    });

    it('enum and embedded columns, @VersionColumn, @DeleteDateColumn soft delete and restore through the repository', async () => {
      const t = token();
      await manager.run(a, async () => {
        const repo = tenantContext.getRepository(CompatBook);
        const book = await repo.save(repo.create({ title: `ent-${t}`, status: BookStatus.Published, dims: { width: 3, height: 4 } }));
        expect(book.version).to.equal(1);
        book.dims.width = 30;
        const saved = await repo.save(book);
        expect(saved.version).to.equal(2);
        expect(await repo.findOneBy({ title: `ent-${t}`, status: BookStatus.Published })).to.include({ title: `ent-${t}` });
        expect(await repo.countBy({ title: `ent-${t}`, status: In([BookStatus.Draft, BookStatus.Retired]) })).to.equal(0);
        await repo.softDelete({ id: book.id });
        expect(await repo.findOneBy({ id: book.id })).to.equal(null);
        const withDeleted = await repo.findOneOrFail({ where: { id: book.id, deletedAt: Not(IsNull()) }, withDeleted: true });
        expect(withDeleted.deletedAt).to.be.instanceOf(Date);
        await repo.restore({ id: book.id });
        const back = await repo.findOneByOrFail({ id: book.id });
        expect(back.dims).to.deep.equal({ width: 30, height: 4 });
        await repo.softRemove(back);
        expect(await repo.count({ where: { title: `ent-${t}` } })).to.equal(0);
        expect(await repo.count({ where: { title: `ent-${t}` }, withDeleted: true })).to.equal(1);
        // Optimistic locking on the version column.
        await expect(repo.findOne({ where: { id: book.id }, withDeleted: true, lock: { mode: 'optimistic', version: 1 } })).to.be.rejected;
      });
      const [row] = await adminQuery<Record<string, unknown>>(
        `SELECT status::text AS status, pg_typeof(status)::text AS type, "dimsWidth" AS w, "dimsHeight" AS h, version, deleted_at IS NOT NULL AS deleted
           FROM "${sa}".compat_book WHERE title = $1`,
        [`ent-${t}`],
      );
      expect(row).to.deep.equal({ status: 'published', type: `${sa}.compat_book_status`, w: 30, h: 4, version: 5, deleted: true });
      await expectLegacyUntouched();
    });

    it('uuid primary key (gen_random_uuid), @BeforeInsert listener and a subscriber whose raw SQL lands in the tenant', async () => {
      const t = token();
      const plan = await CompatPlan.create({ code: `ev-${t}`, name: 'Event plan' }).save();
      const before = subscriberLog.length;
      const save = (slug: string, names: string[]) =>
        manager.run(slug, async () => {
          const out: CompatEvent[] = [];
          for (const name of names) {
            const event = new CompatEvent();
            event.name = name;
            event.plan = plan;
            out.push(await tenantContext.getRepository(CompatEvent).save(event));
            await sleep(2);
          }
          await tenantContext.transaction((em) => em.save(CompatEvent, em.create(CompatEvent, { name: `In Tx ${t}` })));
          return out;
        });
      const [ea, eb] = await Promise.all([save(a, [`Hello World ${t}`, `Second ${t}`]), save(b, [`Other ${t}`])]);
      for (const event of [...ea, ...eb]) {
        expect(event.id).to.match(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
        expect(event.stamp).to.equal(`sub:${event.name}`);
      }
      expect(ea[0]!.slug).to.equal(`hello-world-${t}`);
      const rows = await adminQuery<{ id: string; slug: string; stamp: string; plan_id: number }>(
        `SELECT id::text, slug, stamp, plan_id FROM "${sa}".compat_event WHERE name LIKE $1 ORDER BY slug`,
        [`%${t}`],
      );
      expect(rows.map((r) => r.slug)).to.deep.equal([`hello-world-${t}`, `in-tx-${t}`, `second-${t}`]);
      expect(rows.find((r) => r.slug === `hello-world-${t}`)).to.deep.include({ id: ea[0]!.id, stamp: `sub:Hello World ${t}`, plan_id: plan.id });
      expect(await notesIn(sa, `event:%${t}`)).to.deep.equal([`event:Hello World ${t}`, `event:Second ${t}`, `event:In Tx ${t}`]);
      expect(await notesIn(sb, `event:%${t}`)).to.deep.equal([`event:Other ${t}`, `event:In Tx ${t}`]);
      const seen = subscriberLog.slice(before);
      expect(seen.filter((s) => s.name.startsWith('Other')).map((s) => s.schema)).to.deep.equal([sb]);
      expect(seen.filter((s) => s.name.startsWith('Hello')).map((s) => s.schema)).to.deep.equal([sa]);
      await expectLegacyUntouched();
    });

    it('repository.clear() truncates the tenant table only', async () => {
      const t = token();
      await manager.run(b, async () => {
        await tenantContext.getRepository(CompatShelfItem).save({ label: `clear-${t}` });
        await tenantContext.getRepository(CompatShelfItem).clear();
        expect(await tenantContext.getRepository(CompatShelfItem).count()).to.equal(0);
      });
      expect(await adminQuery(`SELECT count(*)::int AS n FROM "${sb}".compat_shelf_item`)).to.deep.equal([{ n: 0 }]);
      expect((await adminQuery(`SELECT count(*)::int AS n FROM "${sa}".compat_shelf_item`))[0]!.n, 'the other tenant keeps its rows').to.be.greaterThan(0);
      await expectLegacyUntouched();
    });

    it('@VirtualColumn with an unqualified query counts the tenant rows', async () => {
      const t = token();
      const tagId = 1000 + Math.floor(Math.random() * 10); // legacy public.compat_book_tag has 3 rows for each of these ids
      const setup = (slug: string, books: number) =>
        manager.run(slug, async () => {
          await tenantContext.query('INSERT INTO compat_tag (id, label) VALUES ($1, $2)', [tagId, `vc-${t}`]);
          const tag = await tenantContext.getRepository(CompatTag).findOneByOrFail({ id: tagId });
          expect(tag.bookCount, 'no book of the tenant has the tag yet').to.equal(0);
          for (let i = 0; i < books; i += 1) await tenantContext.getRepository(CompatBook).save({ title: `vc${i}-${t}`, tags: [tag], dims: { width: 0, height: 0 } });
          const found = await tenantContext.getRepository(CompatTag).findOneByOrFail({ id: tagId });
          const viaJoin = await tenantContext.getRepository(CompatBook).findOneOrFail({ where: { title: `vc0-${t}` }, relations: { tags: true } });
          const viaQb = await tenantContext.getManager().createQueryBuilder(CompatTag, 'tg').where('tg.id = :id', { id: tagId }).getOneOrFail();
          return [found.bookCount, viaJoin.tags![0]!.bookCount, viaQb.bookCount];
        });
      // Both tenants use the same tag id (separate tables).
      const [ca, cb] = await Promise.all([setup(a, 2), setup(b, 1)]);
      expect(ca).to.deep.equal([2, 2, 2]);
      expect(cb).to.deep.equal([1, 1, 1]);
      await manager.run(a, () => tenantContext.getRepository(CompatTag).delete({ id: tagId }));
      await manager.run(b, () => tenantContext.getRepository(CompatTag).delete({ id: tagId }));
      await expectLegacyUntouched();
    });
  });

  describe('query result cache', () => {
    it('find({ cache: { id } }) with one id in two tenants: each its own rows and entry; remove() and clear() stay in the tenant', async () => {
      const t = token();
      const cached = (): Promise<CompatAuthor[]> =>
        tenantContext.getRepository(CompatAuthor).find({ where: { name: Like(`cache-${t}%`) }, order: { name: 'ASC' }, cache: { id: `authors-${t}`, milliseconds: 60_000 } });
      const names = (rows: CompatAuthor[]): string[] => rows.map((row) => row.name);
      await manager.run(a, () => tenantContext.getRepository(CompatAuthor).save({ name: `cache-${t}-a` }));
      await manager.run(b, () => tenantContext.getRepository(CompatAuthor).save({ name: `cache-${t}-b` }));
      expect(names(await manager.run(a, cached))).to.deep.equal([`cache-${t}-a`]);
      expect(names(await manager.run(b, cached))).to.deep.equal([`cache-${t}-b`]);
      // Rows added behind the cache's back stay unseen until the tenant's own entry goes.
      await adminQuery(`INSERT INTO "${sa}".compat_author (name) VALUES ($1)`, [`cache-${t}-a2`]);
      await adminQuery(`INSERT INTO "${sb}".compat_author (name) VALUES ($1)`, [`cache-${t}-b2`]);
      expect(names(await manager.run(a, cached))).to.deep.equal([`cache-${t}-a`]);
      await manager.run(a, () => tenantContext.getManager().connection.queryResultCache!.remove([`authors-${t}`]));
      expect(names(await manager.run(a, cached))).to.deep.equal([`cache-${t}-a`, `cache-${t}-a2`]);
      expect(names(await manager.run(b, cached)), "a's remove() left b's entry").to.deep.equal([`cache-${t}-b`]);
      await manager.run(a, () => tenantContext.getManager().connection.queryResultCache!.clear());
      expect(names(await manager.run(b, cached)), "a's clear() left b's entry").to.deep.equal([`cache-${t}-b`]);
      await manager.run(b, () => tenantContext.getManager().connection.queryResultCache!.clear());
      expect(names(await manager.run(b, cached))).to.deep.equal([`cache-${t}-b`, `cache-${t}-b2`]);
      await expectLegacyUntouched();
    });
  });

  describe('shared Active Record', () => {
    it('works outside and inside runs, after createTenant and after DataSource eviction, always in public', async () => {
      const t = token();
      const codes: string[] = [];
      const saveAr = async (label: string): Promise<void> => {
        const code = `ar-${t}:${label}`;
        codes.push(code);
        const plan = CompatPlan.create({ code, name: label });
        await plan.save();
        expect((await CompatPlan.findOneByOrFail({ code })).name).to.equal(label);
        expect(await CompatPlan.countBy({ code })).to.equal(1);
      };
      await saveAr('outside');
      await manager.run(a, () => saveAr('run-a'));
      // Documented: Active Record calls never join tenantContext.transaction.
      await manager
        .run(b, () =>
          tenantContext.transaction(async () => {
            await saveAr('tx-b');
            throw new Error('rollback');
          }),
        )
        .catch(() => undefined);
      const c = uniqueSlug('compat-c');
      await manager.createTenant(c);
      await saveAr('after-create');
      // maxDataSources is 2: serving a, b and c evicts one of them.
      await manager.run(c, () => saveAr('run-c'));
      await manager.run(a, () => saveAr('run-a-again'));
      await manager.run(b, () => saveAr('run-b'));
      expect(manager.stats().evictions).to.be.greaterThan(0);
      await saveAr('after-eviction');
      // The shared repository from tenantContext outside a run, and a tenant -> shared relation.
      expect(await tenantContext.getRepository(CompatPlan).countBy({ code: In(codes) })).to.equal(codes.length);
      await manager.run(c, async () => {
        const plan = await CompatPlan.findOneByOrFail({ code: `ar-${t}:run-c` });
        await tenantContext.getRepository(CompatAuthor).save({ name: `ar-${t}`, plan });
        const author = await tenantContext.getRepository(CompatAuthor).findOneOrFail({ where: { name: `ar-${t}` }, relations: { plan: true } });
        expect(author.plan!.code).to.equal(`ar-${t}:run-c`);
      });
      const rows = await adminQuery<{ code: string }>('SELECT code FROM public.compat_plan WHERE code LIKE $1 ORDER BY id', [`ar-${t}:%`]);
      expect(rows.map((r) => r.code)).to.deep.equal(codes);
      for (const schema of [sa, sb, schemaOf(c)]) {
        const exists = await adminQuery(`SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'compat_plan'`, [schema]);
        expect(exists, `no compat_plan in ${schema}`).to.deep.equal([]);
      }
      await expectLegacyUntouched();
    });
  });
}
