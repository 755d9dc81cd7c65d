import { expect } from 'chai';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { gunzipSync, gzipSync } from 'node:zlib';
import type { MigrationInterface, QueryRunner } from 'typeorm';
import { Client, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { InvalidArgumentError, TenantAlreadyExistsError, TenantArchiveError, TenantNotActiveError, tenantContext, type TenantDataSourceManager } from '../../src';
import { withFreshDatabase, type FreshDatabase } from '../support/fresh-database';

/** A tenant table of many types, a self-reference, a trigger, an identity and a generated column, plus a table its migration fills. */
class CreateDocuments1700000000010 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`CREATE TABLE status_kind (code text PRIMARY KEY, label text NOT NULL)`);
    await queryRunner.query(`INSERT INTO status_kind VALUES ('new', 'New'), ('done', 'Done')`);
    await queryRunner.query(`CREATE TABLE doc (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      seq bigint GENERATED ALWAYS AS IDENTITY,
      title text NOT NULL,
      title_len int GENERATED ALWAYS AS (length(title)) STORED,
      body jsonb, tags text[], data bytea, amount numeric(30,10), ratio float8,
      happened timestamptz, day date, span interval, flag boolean, nothing text,
      status text REFERENCES status_kind(code),
      parent_id uuid REFERENCES doc(id),
      client_id int REFERENCES client(id))`);
    await queryRunner.query(`CREATE TABLE doc_log (id serial PRIMARY KEY, doc_id uuid NOT NULL)`);
    await queryRunner.query(`CREATE FUNCTION log_doc() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO doc_log (doc_id) VALUES (NEW.id); RETURN NEW; END $$`);
    await queryRunner.query(`CREATE TRIGGER doc_logged AFTER INSERT ON doc FOR EACH ROW EXECUTE FUNCTION log_doc()`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE doc_log, doc, status_kind');
    await queryRunner.query('DROP FUNCTION log_doc()');
  }
}

/** A later migration than the model's: an archive made without it comes out with it applied. */
class AddClientPhone1700000000020 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('ALTER TABLE client ADD COLUMN phone varchar');
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('ALTER TABLE client DROP COLUMN phone');
  }
}

const MODEL = { entities: [Client, Project, Plan], tenantMigrations: [...tenantMigrations, CreateDocuments1700000000010], sharedMigrations };

/** Every row of every table of `schema` as text, table by table, in a stable order. */
async function contentsOf(db: FreshDatabase, schema: string): Promise<Record<string, string[]>> {
  const tables = await db.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1`,
    [schema],
  );
  const out: Record<string, string[]> = {};
  for (const { name } of tables) {
    const rows = await db.query<{ row: string }>(`SELECT to_jsonb(t)::text AS row FROM "${schema}"."${name}" t ORDER BY 1`);
    out[name] = rows.map((r) => r.row);
  }
  return out;
}

async function seedSource(tenants: TenantDataSourceManager, slug: string): Promise<void> {
  await tenants.createTenant(slug, { name: 'Source Corp' });
  await tenants.run(slug, async () => {
    await tenantContext.getRepository(Client).insert([
      { name: 'Ada', email: 'ada@source.test' },
      { name: 'Tab\there, new\nline, back\\slash, "quotes", \u00e9\u00e8 \u{1F600}', email: 'odd@source.test', internalNote: '\\.\n\\.' },
    ]);
    const [first] = await tenantContext.query<Array<{ id: number }>>('SELECT min(id) AS id FROM client');
    const [parent] = await tenantContext.query<Array<{ id: string }>>(
      `INSERT INTO doc (title, body, tags, data, amount, ratio, happened, day, span, flag, status, client_id)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'new', $11) RETURNING id`,
      ['\\.', { nested: { a: [1, 2.5, null, 'x\ny'] } }, ['a', 'b,c', '"d"', null], Buffer.from([0, 1, 2, 255, 10, 92]), '12345678901234567890.0123456789',
        0.1 + 0.2, '2026-03-29T01:30:00.123456+02:00', '2024-02-29', '1 year 2 mons 3 days 04:05:06.789', true, first!.id],
    );
    await tenantContext.query(`INSERT INTO doc (title, parent_id, ratio, status) VALUES ('child', $1, 'NaN', 'done'), ('inf', $1, '-Infinity', NULL)`, [parent!.id]);
  });
}

describe('exportTenant / importTenant: one tenant as a portable archive', () => {
  let directory: string;
  beforeEach(async () => {
    directory = await mkdtemp(join(tmpdir(), 'tenant-archive-'));
  });
  afterEach(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  it('a round trip copies every row of every table exactly, sequences, identities and triggers go on from where they were, and the source is untouched', async () => {
    await withFreshDatabase(MODEL, async (db) => {
      const tenants = db.manager();
      await tenants.initialize();
      await seedSource(tenants, 'source');
      const before = await contentsOf(db, 'source');
      const file = join(directory, 'source.tenant.gz');
      const manifest = await tenants.exportTenant('source', file);
      expect(manifest.slug).to.equal('source');
      expect(manifest.migrations).to.deep.equal(MODEL.tenantMigrations.map((m) => m.name));
      // Load order: a table after those its foreign keys reference, by name among the ready ones.
      expect(manifest.tables.map((t) => t.name)).to.deep.equal(['client', 'doc_log', 'project', 'status_kind', 'doc']);
      expect(manifest.tables.find((t) => t.name === 'doc')!.columns).to.not.include('title_len'); // generated: computed again
      expect((await stat(file)).size).to.be.greaterThan(0);

      const copy = await tenants.importTenant('copy', file);
      expect(copy).to.include({ slug: 'copy', schemaName: 'copy', name: 'Source Corp', status: 'active' });
      const after = await contentsOf(db, 'copy');
      // Every table, every row, every value (the copy's migrations table is its own, written by its migrations).
      delete before.migrations;
      delete after.migrations;
      expect(after).to.deep.equal(before);
      expect(after.status_kind).to.have.length(2); // the migration's own rows, not doubled
      expect(after.doc_log).to.have.length(3); // the trigger did not fire again while the rows were loaded
      expect(await contentsOf(db, 'source')).to.deep.include({ doc: before.doc, client: before.client });

      await tenants.run('copy', async () => {
        const client = await tenantContext.getRepository(Client).save({ name: 'New', email: 'new@copy.test' });
        expect(client.id).to.equal(3); // the sequence continues past the copied ids
        await tenantContext.query(`INSERT INTO doc (title) VALUES ('after import')`);
        const [doc] = await tenantContext.query<Array<{ seq: string; title_len: number }>>(`SELECT seq::text, title_len FROM doc WHERE title = 'after import'`);
        expect(doc).to.deep.equal({ seq: '4', title_len: 12 });
        const [{ logs }] = await tenantContext.query<Array<{ logs: number }>>('SELECT count(*)::int AS logs FROM doc_log');
        expect(logs).to.equal(4); // the trigger is enabled again
      });
      const registry = await db.query<{ slug: string }>(`SELECT slug FROM public.tenants ORDER BY slug`);
      expect(registry.map((r) => r.slug)).to.deep.equal(['copy', 'source']);
    });
  });

  it('an archive copies a customer into another database (staging) and an archive of an older head comes out migrated', async () => {
    await withFreshDatabase(MODEL, async (production) => {
      const tenants = production.manager();
      await tenants.initialize();
      await seedSource(tenants, 'acme');
      const file = join(directory, 'acme.tenant.gz');
      await tenants.exportTenant('acme', file);
      const source = await contentsOf(production, 'acme');
      await withFreshDatabase({ ...MODEL, tenantMigrations: [...MODEL.tenantMigrations, AddClientPhone1700000000020] }, async (staging) => {
        const later = staging.manager();
        await later.initialize();
        const imported = await later.importTenant('acme-staging', file, { name: 'Acme (staging)' });
        expect(imported.name).to.equal('Acme (staging)');
        const copied = await contentsOf(staging, 'acme_staging');
        expect(copied.doc).to.deep.equal(source.doc);
        // The later migration ran over the imported rows: every client has the new column.
        const phones = await staging.query<{ phone: string | null }>('SELECT phone FROM acme_staging.client ORDER BY id');
        expect(phones).to.deep.equal([{ phone: null }, { phone: null }]);
        const applied = await staging.query<{ name: string }>('SELECT name FROM acme_staging.migrations ORDER BY id');
        expect(applied.map((m) => m.name).at(-1)).to.equal('AddClientPhone1700000000020');
        expect((await later.migrationStatus()).find((s) => s.slug === 'acme-staging')!.pending).to.deep.equal([]);

        // Back the other way: an archive with a migration this code lacks is refused, nothing created.
        const newer = join(directory, 'newer.tenant.gz');
        await later.exportTenant('acme-staging', newer);
        const error = await tenants.importTenant('from-newer', newer).catch((e: unknown) => e);
        expect(error).to.be.instanceOf(TenantArchiveError);
        expect((error as Error).message).to.include('AddClientPhone1700000000020');
        expect(await tenants.getTenant('from-newer')).to.equal(undefined);
        expect(await production.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'from_newer'`)).to.deep.equal([]);
      });
    });
  });

  it('a changed row, a cut-short archive, a file that is no archive and a manifest naming other tables are refused, and nothing is created', async () => {
    await withFreshDatabase(MODEL, async (db) => {
      const tenants = db.manager();
      await tenants.initialize();
      await seedSource(tenants, 'src');
      const file = join(directory, 'src.tenant.gz');
      await tenants.exportTenant('src', file);
      const text = gunzipSync(await readFile(file)).toString('utf8');

      const variants: Array<[string, Buffer, string]> = [
        ['changed', gzipSync(Buffer.from(text.replace('ada@source.test', 'eve@source.test'))), 'do not match its manifest'],
        ['removed row', gzipSync(Buffer.from(text.replace(/^1\tAda\t.*\n/m, ''))), 'do not match its manifest'],
        ['cut short', (await readFile(file)).subarray(0, Math.floor((await readFile(file)).length / 2)), 'cannot be read'],
        ['no archive', Buffer.from('id,name\n1,Ada\n'), 'cannot be read'],
        ['not ours', gzipSync(Buffer.from('hello\n')), 'does not start as a typeorm-tenants archive'],
        [
          'other tables',
          gzipSync(Buffer.from(text.replace('"name":"client"', '"name":"client\\"; DROP TABLE src.client; --"'))),
          'are not those the tenant migrations create',
        ],
        ['trailing data', gzipSync(Buffer.from(`${text}1\textra\n`)), 'after its last table'],
      ];
      for (const [label, bytes, message] of variants) {
        const path = join(directory, `${label.replace(/ /g, '-')}.gz`);
        await writeFile(path, bytes);
        const error = await tenants.importTenant('bad', path).catch((e: unknown) => e);
        expect(error, label).to.be.instanceOf(TenantArchiveError);
        expect((error as Error).message, label).to.include(message).and.include('Nothing was created');
        expect(await tenants.getTenant('bad'), label).to.equal(undefined);
        expect(await db.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'bad'`), label).to.deep.equal([]);
      }
      expect(await db.query<{ n: number }>('SELECT count(*)::int AS n FROM src.client')).to.deep.equal([{ n: 2 }]);
    });
  });

  it('exports to a stream while the service writes to the tenant: the archive is one snapshot, and it imports with its checksums', async () => {
    await withFreshDatabase(MODEL, async (db) => {
      const tenants = db.manager();
      await tenants.initialize();
      await seedSource(tenants, 'busy');
      let writing = true;
      let written = 0;
      const writer = (async () => {
        while (writing) {
          await tenants.run('busy', () => tenantContext.getRepository(Client).insert({ name: `W${written}`, email: `w${written}@busy.test` }));
          written += 1;
        }
      })();
      const stream = new PassThrough();
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      const manifest = await tenants.exportTenant('busy', stream);
      writing = false;
      await writer;
      const path = join(directory, 'busy.gz');
      await writeFile(path, Buffer.concat(chunks));
      await tenants.importTenant('busy-copy', path);
      const rows = Number(manifest.tables.find((t) => t.name === 'client')!.rows);
      expect(await db.query<{ n: number }>('SELECT count(*)::int AS n FROM busy_copy.client')).to.deep.equal([{ n: rows }]);
      expect(written).to.be.greaterThan(0);
    });
  });

  it('refuses to overwrite a file, an archived tenant, and a taken slug (the tenant holding it untouched)', async () => {
    await withFreshDatabase(MODEL, async (db) => {
      const tenants = db.manager();
      await tenants.initialize();
      await seedSource(tenants, 'one');
      const file = join(directory, 'exists.gz');
      await writeFile(file, 'keep me');
      const exists = await tenants.exportTenant('one', file).catch((e: unknown) => e);
      expect(exists).to.be.instanceOf(InvalidArgumentError);
      expect(await readFile(file, 'utf8')).to.equal('keep me');

      const good = join(directory, 'one.gz');
      await tenants.exportTenant('one', good);
      await tenants.createTenant('two');
      await expect(tenants.importTenant('two', good)).to.be.rejectedWith(TenantAlreadyExistsError);
      expect(await db.query<{ n: number }>('SELECT count(*)::int AS n FROM two.client')).to.deep.equal([{ n: 0 }]);

      await tenants.suspendTenant('one');
      await tenants.archiveTenant('one');
      await expect(tenants.exportTenant('one', join(directory, 'archived.gz'))).to.be.rejectedWith(TenantNotActiveError);
    });
  });
});
