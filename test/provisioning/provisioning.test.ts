import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Column, Entity, JoinColumn, ManyToOne, PrimaryGeneratedColumn, QueryFailedError, type MigrationInterface, type QueryRunner, type Relation } from 'typeorm';
import { Client } from '../../entities';
import { tenantMigrations } from '../../migrations';
import {
  TenantAlreadyExistsError,
  TenantProvisioningError,
  TenantScoped,
  tenantContext,
  type TenantDataSourceManager,
} from '../../src';
import { adminQuery, newManager, openManager, schemaExists, tablesOf, uniqueSlug } from '../support/fixtures';

const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

async function migrationNames(schema: string): Promise<string[]> {
  const rows = await adminQuery<{ name: string }>(`SELECT name FROM "${schema}".migrations ORDER BY id`);
  return rows.map((r) => r.name);
}

async function registryRows(slug: string, schema = 'public'): Promise<number> {
  const [row] = await adminQuery<{ n: number }>(`SELECT count(*)::int AS n FROM "${schema}".tenants WHERE slug = $1`, [slug]);
  return row!.n;
}

/** A tenant migration that fails: it reads a table that does not exist (SQLSTATE 42P01). */
class FailingStep1700000009999 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('SELECT * FROM no_such_table_x');
  }

  async down(): Promise<void> {}
}

// A model of its own for the non-public shared schema tests: the example
// tenant migrations reference public.plan.
let sharedThingUps = 0;

/** Shared migration in raw SQL with an unqualified name: must land in the shared schema. */
class CreateProvThing1700000100000 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    sharedThingUps += 1;
    await queryRunner.query('CREATE TABLE prov_thing (id serial PRIMARY KEY, label varchar NOT NULL)');
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE prov_thing');
  }
}

/** Tenant migration in raw SQL: "prov_note" lands in the tenant, "prov_thing" resolves to the shared schema. */
class CreateProvNote1700000100001 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(
      'CREATE TABLE prov_note (id serial PRIMARY KEY, body varchar NOT NULL, thing_id integer REFERENCES prov_thing (id))',
    );
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE prov_note');
  }
}

@Entity('prov_thing')
class ProvThing {
  @PrimaryGeneratedColumn() id!: number;
  @Column() label!: string;
}

@TenantScoped()
@Entity('prov_note')
class ProvNote {
  @PrimaryGeneratedColumn() id!: number;
  @Column() body!: string;

  @ManyToOne(() => ProvThing, { nullable: true })
  @JoinColumn({ name: 'thing_id' })
  thing?: Relation<ProvThing> | null;
}

describe('Provisioning: tenant migrations, rollback, races, shared migrations', () => {
  it('creates 5 tenants one after another, each with its own tables and migrations rows; nothing lands in public', async () => {
    const manager = await openManager();
    const slugs = Array.from({ length: 5 }, () => uniqueSlug('mig'));
    for (const slug of slugs) await manager.createTenant(slug);

    for (const slug of slugs) {
      const schema = schemaOf(slug);
      expect(await tablesOf(schema), `tables of ${schema}`).to.deep.equal(['client', 'migrations', 'project']);
      expect(await migrationNames(schema), `migrations rows of ${schema}`).to.deep.equal([
        'CreateClient1700000000001',
        'CreateProject1700000000002',
      ]);
      // The Table-API migration's foreign key points at the shared plan; the raw
      // SQL migration's at the tenant's own client table.
      const fks = await adminQuery<{ source: string; target: string }>(
        `SELECT conrelid::regclass::text AS source, confrelid::regclass::text AS target
           FROM pg_constraint WHERE contype = 'f' AND connamespace = $1::regnamespace ORDER BY 1`,
        [schema],
      );
      expect(fks, `foreign keys of ${schema}`).to.deep.equal([
        { source: `${schema}.client`, target: 'plan' },
        { source: `${schema}.project`, target: `${schema}.client` },
      ]);
      // And the data paths work: each tenant sees only its own rows.
      await manager.run(slug, async () => {
        const client = await tenantContext.getRepository(Client).save({ name: slug, email: `${slug}@x.test` });
        await tenantContext.query('INSERT INTO project (name, client_id) VALUES ($1, $2)', [`p-${slug}`, client.id]);
      });
    }
    for (const slug of slugs) {
      const rows = await adminQuery<{ name: string }>(`SELECT name FROM "${schemaOf(slug)}".project`);
      expect(rows.map((r) => r.name)).to.deep.equal([`p-${slug}`]);
    }

    // The trap: public.migrations exists (shared migrations) and must hold only those.
    expect(await migrationNames('public')).to.deep.equal(['CreatePlan1700000000000']);
    const publicTables = await tablesOf('public');
    expect(publicTables).to.include.members(['migrations', 'plan', 'tenants']);
    expect(publicTables).to.not.include('client');
    expect(publicTables).to.not.include('project');
  });

  it('a failing migration rolls everything back and names the migration; the slug can be created afterwards', async () => {
    const failing = await openManager({ tenantMigrations: [...tenantMigrations, FailingStep1700000009999] });
    const slug = uniqueSlug('fail');
    const schema = schemaOf(slug);

    const error = await failing.createTenant(slug).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error, 'createTenant rejected').to.be.instanceOf(TenantProvisioningError);
    const provisioning = error as TenantProvisioningError;
    expect(provisioning.message).to.include('FailingStep1700000009999');
    expect(provisioning.migration).to.equal('FailingStep1700000009999');
    expect(provisioning.slug).to.equal(slug);
    expect(provisioning.sqlState).to.equal('42P01');
    const cause = provisioning.cause as { code?: unknown; message?: unknown; driverError?: { code?: unknown } } | undefined;
    expect(cause, 'the original error is the cause').to.be.instanceOf(Error);
    expect(String(cause!.message)).to.include('no_such_table_x');
    expect(cause!.code).to.equal('42P01');
    if (cause instanceof QueryFailedError) expect((cause.driverError as { code?: unknown }).code).to.equal('42P01');

    expect(await schemaExists(schema), 'no schema is left').to.equal(false);
    expect(await failing.getTenant(slug), 'no registry row is left').to.equal(undefined);
    expect(await registryRows(slug)).to.equal(0);
    const [{ n }] = await adminQuery<{ n: number }>('SELECT count(*)::int AS n FROM information_schema.tables WHERE table_schema = $1', [schema]);
    expect(n, 'no tables are left').to.equal(0);
    expect(failing.stats().cachedDataSources).to.equal(0);

    // The same slug, with migrations that work.
    const good = await openManager();
    const record = await good.createTenant(slug);
    expect(record).to.include({ slug, schemaName: schema, status: 'active' });
    expect(await tablesOf(schema)).to.deep.equal(['client', 'migrations', 'project']);
    expect(await migrationNames(schema)).to.deep.equal(['CreateClient1700000000001', 'CreateProject1700000000002']);
    expect(await good.run(slug, () => tenantContext.getRepository(Client).count())).to.equal(0);
  });

  describe('concurrent createTenant of one slug', () => {
    async function expectOneWinner(outcomes: PromiseSettledResult<unknown>[], slug: string): Promise<void> {
      const fulfilled = outcomes.filter((o) => o.status === 'fulfilled');
      const rejected = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
      expect(fulfilled, 'exactly one call succeeds').to.have.length(1);
      expect(rejected).to.have.length(outcomes.length - 1);
      for (const r of rejected) {
        expect(r.reason, String(r.reason)).to.be.instanceOf(TenantAlreadyExistsError);
      }
      const schema = schemaOf(slug);
      const [{ n }] = await adminQuery<{ n: number }>('SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = $1', [schema]);
      expect(n, 'one schema').to.equal(1);
      expect(await registryRows(slug), 'one registry row').to.equal(1);
      expect(await tablesOf(schema)).to.deep.equal(['client', 'migrations', 'project']);
      expect(await migrationNames(schema), 'migrations ran once').to.deep.equal(['CreateClient1700000000001', 'CreateProject1700000000002']);
    }

    it('10 parallel calls on one manager: one succeeds, 9 get TenantAlreadyExistsError', async () => {
      const manager = await openManager();
      const slug = uniqueSlug('race');
      const outcomes = await Promise.allSettled(Array.from({ length: 10 }, () => manager.createTenant(slug)));
      await expectOneWinner(outcomes, slug);
      expect(await manager.run(slug, () => tenantContext.getRepository(Client).count())).to.equal(0);
    });

    it('two managers racing, 5 calls each: one succeeds, 9 get TenantAlreadyExistsError', async () => {
      const [m1, m2] = await Promise.all([openManager(), openManager()]);
      const slug = uniqueSlug('race2');
      const calls: Promise<unknown>[] = [];
      for (let i = 0; i < 5; i += 1) calls.push(m1.createTenant(slug), m2.createTenant(slug));
      const outcomes = await Promise.allSettled(calls);
      await expectOneWinner(outcomes, slug);
      expect(await m1.run(slug, () => tenantContext.getRepository(Client).count())).to.equal(0);
      expect(await m2.run(slug, () => tenantContext.getRepository(Client).count())).to.equal(0);
    });
  });

  it('shared migrations run once, at initialize(), even when 3 managers initialise a fresh shared schema at once', async () => {
    const sharedSchema = `shared_${randomBytes(5).toString('hex')}`;
    const options = {
      sharedSchema,
      entities: [ProvThing, ProvNote],
      sharedMigrations: [CreateProvThing1700000100000],
      tenantMigrations: [CreateProvNote1700000100001],
    };
    sharedThingUps = 0;
    const publicMigrationsBefore = await migrationNames('public').catch(() => [] as string[]);
    const managers = [newManager(options), newManager(options), newManager(options)];
    await Promise.all(managers.map((m) => m.initialize()));

    expect(sharedThingUps, 'the shared migration ran once').to.equal(1);
    expect(await migrationNames(sharedSchema)).to.deep.equal(['CreateProvThing1700000100000']);
    expect(await tablesOf(sharedSchema)).to.include.members(['migrations', 'prov_thing', 'tenants']);
    expect(await tablesOf('public'), 'the shared migration did not land in public').to.not.include('prov_thing');
    expect(await migrationNames('public').catch(() => [] as string[]), 'public.migrations untouched').to.deep.equal(publicMigrationsBefore);

    // Initialising again, or another manager later, runs nothing more.
    await managers[0]!.initialize();
    const late = await openManager(options);
    expect(sharedThingUps).to.equal(1);
    expect(await migrationNames(sharedSchema)).to.deep.equal(['CreateProvThing1700000100000']);

    // Tenants: raw, unqualified tenant migration SQL lands in the tenant and
    // references the shared table through the tenant-first search_path.
    const [m1, m2] = managers as [TenantDataSourceManager, TenantDataSourceManager, TenantDataSourceManager];
    const a = uniqueSlug('sh');
    const b = uniqueSlug('sh');
    await m1.createTenant(a);
    await m2.createTenant(b);
    for (const slug of [a, b]) {
      const schema = schemaOf(slug);
      expect(await tablesOf(schema)).to.deep.equal(['migrations', 'prov_note']);
      expect(await migrationNames(schema)).to.deep.equal(['CreateProvNote1700000100001']);
      const [fk] = await adminQuery<{ target: string }>(
        "SELECT confrelid::regclass::text AS target FROM pg_constraint WHERE contype = 'f' AND conrelid = $1::regclass",
        [`"${schema}".prov_note`],
      );
      expect(fk?.target, 'the tenant table references the shared one').to.equal(`${sharedSchema}.prov_thing`);
      expect(await registryRows(slug, sharedSchema), 'the registry lives in the shared schema').to.equal(1);
    }

    // Runtime: shared entity pinned to the shared schema inside a tenant DataSource.
    const note = await late.run(a, () =>
      tenantContext.transaction(async () => {
        const thing = await tenantContext.getRepository(ProvThing).save({ label: 'shared thing' });
        return tenantContext.getRepository(ProvNote).save({ body: 'hello', thing });
      }),
    );
    const things = await adminQuery<{ id: number }>(`SELECT id FROM "${sharedSchema}".prov_thing WHERE label = 'shared thing'`);
    expect(things).to.have.length(1);
    const notes = await adminQuery<{ body: string; thing_id: number }>(`SELECT body, thing_id FROM "${schemaOf(a)}".prov_note`);
    expect(notes).to.deep.equal([{ body: 'hello', thing_id: things[0]!.id }]);
    expect(note.id).to.be.a('number');
    expect(await m2.run(b, () => tenantContext.getRepository(ProvNote).count()), 'tenant b sees none of a\'s notes').to.equal(0);
  });
});
