import { expect } from 'chai';
import { Column, Entity, PrimaryGeneratedColumn, type MigrationInterface, type QueryRunner } from 'typeorm';
import {
  InvalidTenantNameError,
  TenancyConfigurationError,
  TenantScoped,
  tenantContext,
} from '../../src';
import { setRoleDefault, withFreshDatabase, type FreshDatabase } from '../support/fresh-database';
import { warningsDuring } from '../support/process-warnings';

/**
 * Hole 12: extensions TypeORM installs for columns (uuid-ossp for
 * `@PrimaryGeneratedColumn('uuid')`, citext, hstore) were never installed,
 * so `createTenant` failed on a fresh database. Now `initialize()` installs
 * them once, in the extensions schema, and every search path the library sets
 * names that schema. Each test runs on a database of its own, created here,
 * so "fresh" means fresh.
 */

@Entity('ext_badge')
@TenantScoped()
class Badge {
  @PrimaryGeneratedColumn('uuid') id!: string;
  @Column('citext') email!: string;
  @Column('hstore', { nullable: true }) attributes!: Record<string, string> | null;
}

/** Shared, with a uuid key as well: the shared migration uses the extension too. */
@Entity('ext_region')
class Region {
  @PrimaryGeneratedColumn('uuid') id!: string;
  @Column() name!: string;
}

/** Written as TypeORM's migration:generate writes them: extension types and functions unqualified. */
class CreateRegion1791000000000 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE TABLE ext_region (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), name varchar NOT NULL)');
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE ext_region');
  }
}

class CreateBadge1791000000001 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(
      'CREATE TABLE ext_badge (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), email citext NOT NULL UNIQUE, attributes hstore)',
    );
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE ext_badge');
  }
}

/** Tenant notes with two audit triggers: one naming its table unqualified, one through TG_TABLE_SCHEMA. */
@Entity('ext_note')
@TenantScoped()
class Note {
  @PrimaryGeneratedColumn() id!: number;
  @Column() body!: string;
  @Column({ default: false }) unqualifiedAudit!: boolean;
}

class CreateNoteWithTriggers1791000000002 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE TABLE ext_note (id serial PRIMARY KEY, body varchar NOT NULL, "unqualifiedAudit" boolean NOT NULL DEFAULT false)');
    await queryRunner.query('CREATE TABLE note_audit (body varchar NOT NULL, via text NOT NULL)');
    await queryRunner.query(`CREATE FUNCTION note_audit_unqualified() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO note_audit (body, via) VALUES (NEW.body, 'unqualified'); RETURN NEW; END $$`);
    await queryRunner.query(`CREATE FUNCTION note_audit_own_schema() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN EXECUTE format('INSERT INTO %I.note_audit (body, via) VALUES ($1, $2)', TG_TABLE_SCHEMA) USING NEW.body, 'own-schema'; RETURN NEW; END $$`);
    await queryRunner.query('CREATE TRIGGER audit_unqualified AFTER INSERT ON ext_note FOR EACH ROW WHEN (NEW."unqualifiedAudit") EXECUTE FUNCTION note_audit_unqualified()');
    await queryRunner.query('CREATE TRIGGER audit_own_schema AFTER INSERT ON ext_note FOR EACH ROW WHEN (NOT NEW."unqualifiedAudit") EXECUTE FUNCTION note_audit_own_schema()');
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE ext_note');
    await queryRunner.query('DROP TABLE note_audit');
    await queryRunner.query('DROP FUNCTION note_audit_unqualified');
    await queryRunner.query('DROP FUNCTION note_audit_own_schema');
  }
}

/** The model most tests here use on their fresh database. */
const MODEL = { entities: [Badge, Region], tenantMigrations: [CreateBadge1791000000001], sharedMigrations: [CreateRegion1791000000000] };

async function extensionSchemas(db: FreshDatabase): Promise<Record<string, string>> {
  const rows = await db.query<{ name: string; schema: string }>(
    `SELECT e.extname AS name, n.nspname AS schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql'`,
  );
  return Object.fromEntries(rows.map((row) => [row.name, row.schema]));
}

describe('extensions the entities need (hole 12)', () => {
  it('are installed once, in the extensions schema, on a fresh database; tenants are created and use them', async () => {
    await withFreshDatabase(MODEL, async (db) => {
      await setRoleDefault(db);
      const manager = db.manager();
      await manager.initialize();
      expect(await extensionSchemas(db)).to.deep.equal({ 'uuid-ossp': 'extensions', citext: 'extensions', hstore: 'extensions' });
      // Nothing of the extensions went into the shared schema.
      const inPublic = await db.query(`SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'`);
      expect(inPublic).to.deep.equal([]);
      const [region] = await db.query<{ id: string }>(`INSERT INTO public.ext_region (name) VALUES ('eu') RETURNING id`);
      expect(region.id).to.match(/^[0-9a-f-]{36}$/);

      await manager.createTenant('alpha');
      await manager.createTenant('beta');
      const found = await manager.run('alpha', async () => {
        const badges = tenantContext.getRepository(Badge);
        const saved = await badges.save(badges.create({ email: 'Ann@Example.Test', attributes: { level: 'gold' } }));
        expect(saved.id).to.match(/^[0-9a-f-]{36}$/);
        // citext's case-insensitive "=" in generated SQL (it resolves through the role default).
        return badges.findOneBy({ email: 'ann@example.test' });
      });
      expect(found?.attributes).to.deep.equal({ level: 'gold' });
      // Raw SQL through every entry point resolves the extensions' functions, types and operators.
      const raw = await manager.run('beta', async () => {
        await tenantContext.getManager().query(`INSERT INTO ext_badge (id, email, attributes) VALUES (uuid_generate_v4(), $1, 'a=>1'::hstore)`, [
          'Bob@Example.Test',
        ]);
        return {
          citext: await tenantContext.query(`SELECT count(*)::int AS n FROM ext_badge WHERE email = 'BOB@example.test'::citext`),
          hstore: await tenantContext.transaction((em) => em.query(`SELECT attributes -> 'a' AS a FROM ext_badge`)),
        };
      });
      expect(raw.citext).to.deep.equal([{ n: 1 }]);
      expect(raw.hstore).to.deep.equal([{ a: '1' }]);
      // Each row is where its tenant is.
      expect(await db.query(`SELECT email::text FROM alpha.ext_badge`)).to.deep.equal([{ email: 'Ann@Example.Test' }]);
      expect(await db.query(`SELECT email::text FROM beta.ext_badge`)).to.deep.equal([{ email: 'Bob@Example.Test' }]);
    });
  });

  it('with the recommended role default, a trigger naming a table unqualified fails closed on generated SQL instead of reaching public; one using TG_TABLE_SCHEMA lands in the tenant', async () => {
    await withFreshDatabase(MODEL, async (db) => {
      await setRoleDefault(db);
      await db.query('CREATE TABLE public.note_audit (body varchar NOT NULL, via text NOT NULL)');
      const manager = db.manager({
        entities: [Note],
        tenantMigrations: [CreateNoteWithTriggers1791000000002],
        sharedMigrations: [],
        warmPool: { size: 1 },
      });
      await manager.initialize();
      await manager.refillWarmPool();
      const spares = async (): Promise<string[]> =>
        (await db.query<{ name: string }>(`SELECT nspname AS name FROM pg_namespace WHERE nspname LIKE 'typeorm\\_tenants\\_warm\\_%'`)).map((r) => r.name);
      const [spare] = await spares();
      expect(spare, 'a spare is ready').to.be.a('string');
      await manager.createTenant('delta'); // claims the spare: its schema is renamed to "delta"
      expect(await spares(), 'the spare was claimed').not.to.include(spare);
      const outcome = await manager.run('delta', async () => {
        const notes = tenantContext.getRepository(Note);
        await notes.insert({ body: 'by insert' });
        await notes.save(notes.create({ body: 'by save' }));
        const unqualified = await Promise.all([
          notes.insert({ body: 'unqualified insert', unqualifiedAudit: true }).then(() => 'written', (e: { code?: string }) => e.code),
          notes.save(notes.create({ body: 'unqualified save', unqualifiedAudit: true })).then(() => 'written', (e: { code?: string }) => e.code),
        ]);
        // From raw SQL the fence's path applies: the unqualified trigger resolves in the tenant.
        await tenantContext.query(`INSERT INTO ext_note (body, "unqualifiedAudit") VALUES ('raw', true)`);
        return unqualified;
      });
      expect(outcome, 'generated statements firing the unqualified trigger fail with 42P01').to.deep.equal(['42P01', '42P01']);
      expect(await db.query('SELECT * FROM public.note_audit'), 'public is never reached').to.deep.equal([]);
      expect(await db.query('SELECT body, via FROM delta.note_audit ORDER BY body')).to.deep.equal([
        { body: 'by insert', via: 'own-schema' },
        { body: 'by save', via: 'own-schema' },
        { body: 'raw', via: 'unqualified' },
      ]);
      expect(await db.query('SELECT body FROM delta.ext_note ORDER BY body')).to.deep.equal([{ body: 'by insert' }, { body: 'by save' }, { body: 'raw' }]);
    });
  });

  it('work for tenant roles under isolation: role', async () => {
    await withFreshDatabase(MODEL, async (db) => {
      await setRoleDefault(db);
      const manager = db.manager({ isolation: 'role' });
      await manager.initialize();
      await manager.createTenant('gamma');
      const rows = await manager.run('gamma', async () => {
        await tenantContext.getRepository(Badge).save({ email: 'Cy@Example.Test', attributes: { k: 'v' } });
        return tenantContext.query(
          `SELECT current_user AS who, (email = 'cy@example.test'::citext) AS same, attributes -> 'k' AS k, uuid_generate_v4() IS NOT NULL AS uuid FROM ext_badge`,
        );
      });
      expect(rows).to.have.length(1);
      expect(rows[0]).to.include({ same: true, k: 'v', uuid: true });
      expect(rows[0].who).to.match(/^typeorm_tenants_r_/);
    });
  });

  it('refuses to start with citext when the default search_path misses the extensions schema (find() would compare case-sensitively), saying what to run', async () => {
    await withFreshDatabase(MODEL, async (db) => {
      const manager = db.manager();
      const error = await manager.initialize().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).to.be.instanceOf(TenancyConfigurationError);
      expect((error as Error).message).to.contain('case-sensitive').and.contain('IN DATABASE').and.contain('SET search_path TO "extensions"');
      // The failed start rolled back: nothing was installed, no registry was made.
      expect(await extensionSchemas(db)).to.deep.equal({});
      expect(await db.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'extensions'`)).to.deep.equal([]);
    });
  });

  it('warns (without citext) when the default search_path misses the extensions schema, and still serves', async () => {
    await withFreshDatabase(MODEL, async (db) => {
      const manager = db.manager({ entities: [Region], tenantMigrations: [] });
      const warnings = await warningsDuring('TenancyConfigurationWarning', () => manager.initialize());
      expect(warnings).to.have.length(1);
      expect(warnings[0]).to.contain('"extensions"').and.contain('uuid-ossp').and.contain('ALTER ROLE');
      expect(await extensionSchemas(db)).to.deep.equal({ 'uuid-ossp': 'extensions' });
    });
  });

  it('leaves an extension already installed elsewhere where it is, and warns how to move it', async () => {
    await withFreshDatabase(MODEL, async (db) => {
      await setRoleDefault(db);
      await db.query('CREATE EXTENSION hstore SCHEMA public');
      const manager = db.manager();
      const warnings = await warningsDuring('TenancyConfigurationWarning', () => manager.initialize());
      expect(await extensionSchemas(db)).to.deep.equal({ 'uuid-ossp': 'extensions', citext: 'extensions', hstore: 'public' });
      expect(warnings.join('\n')).to.contain('"hstore" is installed in schema "public" (the shared schema)').and.contain(
        'ALTER EXTENSION "hstore" SET SCHEMA "extensions"',
      );
    });
  });

  it('an extension that cannot be installed stops initialize() with the statement a superuser should run', async () => {
    await withFreshDatabase(MODEL, async (db) => {
      const manager = db.manager({
        dataSource: { type: 'postgres', url: db.url, poolSize: 2, extensions: ['typeorm_tenants_no_such_extension'] },
        entities: [Region],
        tenantMigrations: [],
      });
      const error = await manager.initialize().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).to.be.instanceOf(TenancyConfigurationError);
      expect((error as Error).message).to.contain('"typeorm_tenants_no_such_extension"').and.contain('CREATE EXTENSION IF NOT EXISTS');
    });
  });

  it('installExtensions: false installs nothing; the extensions schema is a reserved name and cannot be the shared schema', async () => {
    await withFreshDatabase(MODEL, async (db) => {
      await setRoleDefault(db);
      const manager = db.manager({
        dataSource: { type: 'postgres', url: db.url, poolSize: 2, installExtensions: false },
        entities: [Region],
        sharedMigrations: [],
        tenantMigrations: [],
      });
      await manager.initialize();
      expect(await extensionSchemas(db)).to.deep.equal({});
      await expect(manager.createTenant('extensions')).to.be.rejectedWith(InvalidTenantNameError, 'extensions schema');
      expect(() => db.manager({ sharedSchema: 'shared_x', extensionsSchema: 'shared_x' })).to.throw(TenancyConfigurationError, 'must differ');
      const custom = db.manager({ extensionsSchema: 'ext_custom', entities: [Region], tenantMigrations: [], sharedMigrations: [] });
      await custom.initialize();
      await expect(custom.createTenant('ext_custom')).to.be.rejectedWith(InvalidTenantNameError);
    });
  });
});
