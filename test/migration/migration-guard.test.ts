import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Client as PgClient } from 'pg';
import type { MigrationInterface, QueryRunner } from 'typeorm';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { TenancyConfigurationError, TenantMigrationError, TenantProvisioningError, type TenantDataSourceManagerOptions } from '../../src';
import { MigrationOutsideTenantError } from '../../src/errors';
import type { MigrationGuardMode } from '../../src/migration/migration-guard';
import { TenantDataSourceManager } from '../../src';
import { adminQuery, databaseUrl, openManager, schemaExists, uniqueSlug } from '../support/fixtures';

let stamp = 1_800_000_000_000;

/** A tenant migration class named `<Name><timestamp>` whose up() and down() run the given SQL. */
function migration(name: string, up: readonly string[], down: readonly string[] = []): Function {
  const className = `${name}${(stamp += 1)}`;
  const holder = {
    [className]: class implements MigrationInterface {
      async up(runner: QueryRunner): Promise<void> {
        for (const sql of up) await runner.query(sql);
      }
      async down(runner: QueryRunner): Promise<void> {
        for (const sql of down) await runner.query(sql);
      }
    },
  };
  return holder[className]!;
}

const rand = (): string => randomBytes(4).toString('hex');
const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

async function exists(sql: string, params: unknown[] = []): Promise<boolean> {
  return (await adminQuery(sql, params)).length > 0;
}

/** The guard error at the bottom of a library error's cause chain. */
function guardErrorIn(error: unknown): MigrationOutsideTenantError {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current !== undefined; depth += 1) {
    if (current instanceof MigrationOutsideTenantError) return current;
    current = (current as { cause?: unknown }).cause;
  }
  throw new Error(`No MigrationOutsideTenantError in ${String(error)}`);
}

async function planColumns(): Promise<string[]> {
  const rows = await adminQuery<{ column_name: string }>(
    "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'plan' ORDER BY column_name",
  );
  return rows.map((r) => r.column_name);
}

const GUARDED: readonly MigrationGuardMode[] = ['catalog', 'event-trigger'];

describe('migrationGuard: a tenant migration may only touch its tenant', () => {
  for (const mode of GUARDED) {
    describe(`'${mode}'`, () => {
      const open = (overrides: Partial<TenantDataSourceManagerOptions> = {}) => openManager({ migrationGuard: mode, ...overrides });

      /** createTenant with one extra migration: refused, the tenant not created, the migration and the object named. */
      async function refused(bad: Function, expected: { kind: string; name: string }): Promise<MigrationOutsideTenantError> {
        const manager = await open({ tenantMigrations: [...tenantMigrations, bad] });
        const slug = uniqueSlug('guard');
        const error = await manager.createTenant(slug).then(
          () => expect.fail('createTenant should have been refused'),
          (e: unknown) => e,
        );
        expect(error).to.be.instanceOf(TenantProvisioningError);
        const provisioning = error as TenantProvisioningError;
        expect(provisioning.migration).to.equal(bad.name);
        const guard = guardErrorIn(error);
        expect(guard.code).to.equal('MIGRATION_OUTSIDE_TENANT');
        expect(guard.migration).to.equal(bad.name);
        expect(guard.schemaName).to.equal(schemaOf(slug));
        expect(guard.objects).to.deep.include({ kind: expected.kind, schema: 'public', name: expected.name });
        expect(provisioning.message).to.include(bad.name).and.include(expected.name).and.include('sharedMigrations');
        expect(await schemaExists(schemaOf(slug))).to.equal(false);
        expect(await exists('SELECT 1 FROM public.tenants WHERE slug = $1', [slug])).to.equal(false);
        return guard;
      }

      it('refuses CREATE TYPE "public".x; the type is not left behind', async () => {
        const type = `guard_mood_${rand()}`;
        await refused(migration('PublicType', [`CREATE TYPE "public".${type} AS ENUM ('a', 'b')`]), { kind: 'type', name: type });
        expect(await exists('SELECT 1 FROM pg_type WHERE typname = $1', [type])).to.equal(false);
      });

      it('refuses CREATE TABLE public.y', async () => {
        const table = `guard_leak_${rand()}`;
        await refused(migration('PublicTable', [`CREATE TABLE public.${table} (id int PRIMARY KEY, note text)`]), { kind: 'table', name: table });
        expect(await exists("SELECT 1 FROM pg_class WHERE relname = $1", [table])).to.equal(false);
      });

      it('refuses ALTER TABLE public.plan ADD COLUMN; the shared table is untouched', async () => {
        const before = await planColumns();
        const column = `guard_col_${rand()}`;
        await refused(
          migration('AlterPlan', [`ALTER TABLE public.plan ADD COLUMN ${column} int`]),
          mode === 'catalog' ? { kind: 'column', name: `plan.${column}` } : { kind: 'table', name: 'plan' },
        );
        expect(await planColumns()).to.deep.equal(before);
      });

      it('refuses CREATE INDEX ON public.plan', async () => {
        const index = `guard_idx_${rand()}`;
        await refused(migration('IndexPlan', [`CREATE INDEX ${index} ON public.plan (name)`]), { kind: 'index', name: index });
        expect(await exists('SELECT 1 FROM pg_class WHERE relname = $1', [index])).to.equal(false);
      });

      it('refuses CREATE FUNCTION public.f()', async () => {
        const fn = `guard_fn_${rand()}`;
        await refused(migration('PublicFunction', [`CREATE FUNCTION public.${fn}() RETURNS int LANGUAGE sql AS 'SELECT 1'`]), { kind: 'function', name: `${fn}()` });
        expect(await exists('SELECT 1 FROM pg_proc WHERE proname = $1', [fn])).to.equal(false);
      });

      // Only the event triggers see it; 'catalog' cannot tell such rows apart (documented gap).
      if (mode === 'event-trigger') it('refuses an object made inside a savepoint of the migration', async () => {
        const table = `guard_sp_${rand()}`;
        await refused(
          migration('SavepointTable', ['SAVEPOINT inner_step', `CREATE TABLE public.${table} (id int)`, 'RELEASE SAVEPOINT inner_step']),
          { kind: 'table', name: table },
        );
      });

      it('lets a tenant table reference a shared table no trigger pointed at yet (its pg_class row is rewritten)', async () => {
        const target = `guard_target_${rand()}`;
        await adminQuery(`CREATE TABLE public.${target} (id int PRIMARY KEY)`);
        const manager = await open({
          tenantMigrations: [...tenantMigrations, migration('ReferenceShared', [`CREATE TABLE ref (id int PRIMARY KEY, target_id int REFERENCES public.${target} (id))`, 'CREATE TYPE mood AS ENUM (\'a\')', 'CREATE FUNCTION local_fn() RETURNS int LANGUAGE sql AS \'SELECT 1\'', 'CREATE TEMP TABLE scratch (x text)'])],
        });
        const slug = uniqueSlug('guard-ok');
        await manager.createTenant(slug);
        expect(await exists('SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2', [schemaOf(slug), 'ref'])).to.equal(true);
        await manager.dropTenant(slug, { force: true });
      });

      it('fleet migrate: the tenant whose migration leaves its schema is rolled back and reported, the others go on', async () => {
        const registryTable = `guard_fleet_${rand()}`;
        const base = await open({ registryTable });
        const slugs = [uniqueSlug('gf'), uniqueSlug('gf'), uniqueSlug('gf')].sort();
        for (const slug of slugs) await base.createTenant(slug);
        const victim = slugs[1]!;
        const leak = `guard_fleet_leak_${rand()}`;
        // Refused in one tenant only: it names the shared schema when migrating that tenant.
        const badName = `FleetLeak${(stamp += 1)}`;
        const Bad = class implements MigrationInterface {
          name = badName;
          async up(runner: QueryRunner): Promise<void> {
            await runner.query('CREATE TABLE fleet_note (id int)');
            const [{ schema }] = await runner.query('SELECT current_schema() AS schema');
            if (schema === schemaOf(victim)) await runner.query(`CREATE TABLE public.${leak} (id int)`);
          }
          async down(runner: QueryRunner): Promise<void> {
            await runner.query('DROP TABLE fleet_note');
          }
        };
        Object.defineProperty(Bad, 'name', { value: badName });
        const next = await open({ registryTable, tenantMigrations: [...tenantMigrations, Bad] });
        const report = await next.migrateTenants();
        const lines = new Map(report.results.map((r) => [r.slug, r]));
        expect(lines.get(victim)!.status).to.equal('failed');
        expect(lines.get(victim)!.error!.code).to.equal('MIGRATION_OUTSIDE_TENANT');
        expect(lines.get(victim)!.error!.migration).to.equal(Bad.name);
        expect(lines.get(victim)!.error!.message).to.include(leak);
        for (const slug of slugs.filter((s) => s !== victim)) expect(lines.get(slug)!.status).to.equal('migrated');
        expect(await exists('SELECT 1 FROM pg_class WHERE relname = $1', [leak])).to.equal(false);
        expect(await exists("SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = 'fleet_note'", [schemaOf(victim)])).to.equal(false);
      });

      it("revert: a down() that creates an object in the shared schema is refused and the tenant is unchanged", async () => {
        const leak = `guard_down_${rand()}`;
        const Step = migration('DownLeak', ['CREATE TABLE down_note (id int)'], ['DROP TABLE down_note', `CREATE TABLE public.${leak} (id int)`]);
        const manager = await open({ tenantMigrations: [...tenantMigrations, Step] });
        const slug = uniqueSlug('guard-rv');
        await manager.createTenant(slug);
        const error = await manager.revertTenant(slug).then(() => expect.fail('revert should have been refused'), (e: unknown) => e);
        expect(error).to.be.instanceOf(TenantMigrationError);
        expect((error as TenantMigrationError).migration).to.equal(Step.name);
        expect(guardErrorIn(error).objects).to.deep.include({ kind: 'table', schema: 'public', name: leak });
        expect(await exists('SELECT 1 FROM pg_class WHERE relname = $1', [leak])).to.equal(false);
        expect(await exists("SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = 'down_note'", [schemaOf(slug)])).to.equal(true);
      });

      it('warm pool: a refill whose migration leaves the spare schema is refused and leaves no spare', async () => {
        const registryTable = `guard_warm_${rand()}`;
        const leak = `guard_warm_leak_${rand()}`;
        const errors: Error[] = [];
        const manager = await open({
          registryTable,
          warmPool: { size: 1 },
          onBackgroundError: (error) => errors.push(error),
          tenantMigrations: [...tenantMigrations, migration('WarmLeak', [`CREATE TABLE public.${leak} (id int)`])],
        });
        const error = await manager.refillWarmPool().then(() => expect.fail('refill should fail'), (e: unknown) => e);
        expect(guardErrorIn(error).objects).to.deep.include({ kind: 'table', schema: 'public', name: leak });
        expect((await manager.warmPoolStatus()).total).to.equal(0);
        expect(await exists('SELECT 1 FROM pg_class WHERE relname = $1', [leak])).to.equal(false);
      });

      it('warm pool: spares made and claimed under the guard (no false alarm)', async () => {
        const manager = await open({ registryTable: `guard_warm_${rand()}`, warmPool: { size: 1 }, onBackgroundError: () => undefined });
        await manager.refillWarmPool();
        expect((await manager.warmPoolStatus()).ready).to.equal(1);
        const slug = uniqueSlug('guard-w');
        await manager.createTenant(slug);
        expect(await schemaExists(schemaOf(slug))).to.equal(true);
      });

      it('restore: a pending migration that leaves the schema is refused; the tenant stays archived', async () => {
        const registryTable = `guard_restore_${rand()}`;
        const base = await open({ registryTable });
        const slug = uniqueSlug('guard-rs');
        await base.createTenant(slug);
        await base.archiveTenant(slug);
        const leak = `guard_restore_leak_${rand()}`;
        const Bad = migration('RestoreLeak', [`CREATE TYPE public.${leak} AS ENUM ('x')`]);
        const next = await open({ registryTable, tenantMigrations: [...tenantMigrations, Bad] });
        const error = await next.restoreTenant(slug).then(() => expect.fail('restore should fail'), (e: unknown) => e);
        expect(error).to.be.instanceOf(TenantMigrationError);
        expect((error as TenantMigrationError).migration).to.equal(Bad.name);
        expect(guardErrorIn(error).objects).to.deep.include({ kind: 'type', schema: 'public', name: leak });
        expect((await adminQuery<{ status: string }>(`SELECT status FROM public.${registryTable} WHERE slug = $1`, [slug]))[0]!.status).to.equal('archived');
        // With good migrations the restore goes through under the guard.
        const good = await open({ registryTable, tenantMigrations: [...tenantMigrations, migration('RestoreOk', ['CREATE TABLE restored_note (id int)'])] });
        expect((await good.restoreTenant(slug)).status).to.equal('active');
      });

      it("isolation: 'role': the library's grants after the migrations are not taken for a migration's", async () => {
        const manager = await open({ isolation: 'role' });
        const slug = uniqueSlug('guard-role');
        await manager.createTenant(slug);
        await manager.run(slug, async () => undefined);
        await manager.dropTenant(slug, { force: true });
      });

      it('shared migrations are not guarded', async () => {
        const table = `guard_shared_${rand()}`;
        const SharedStep = migration('SharedTable', [`CREATE TABLE public.${table} (id int)`]);
        const manager = await open({ sharedMigrations: [...sharedMigrations, SharedStep] });
        expect(manager.sharedDataSource.isInitialized).to.equal(true);
        expect(await exists('SELECT 1 FROM pg_class WHERE relname = $1', [table])).to.equal(true);
        // Leave the shared schema as other suites expect it.
        await manager.destroy();
        await adminQuery(`DROP TABLE public.${table}`);
        await adminQuery('DELETE FROM public.migrations WHERE name = $1', [SharedStep.name]);
      });
    });
  }

  describe("'event-trigger' only", () => {
    it('triggers, rules and policies on the tenant\'s own tables are its own (they have no schema: their table\'s counts), also when dropped; one on a shared table is refused', async () => {
      const fn = `CREATE FUNCTION touch_note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$`;
      const Own = migration(
        'OwnTriggerRulePolicy',
        [
          'CREATE TABLE tr_note (id int)',
          fn,
          'CREATE TRIGGER tr_note_touch BEFORE INSERT ON tr_note FOR EACH ROW EXECUTE FUNCTION touch_note()',
          'CREATE RULE tr_note_rule AS ON UPDATE TO tr_note DO ALSO NOTHING',
          'CREATE POLICY tr_note_policy ON tr_note USING (true)',
        ],
        ['DROP POLICY tr_note_policy ON tr_note', 'DROP RULE tr_note_rule ON tr_note', 'DROP TRIGGER tr_note_touch ON tr_note', 'DROP TABLE tr_note', 'DROP FUNCTION touch_note()'],
      );
      const manager = await openManager({ migrationGuard: 'event-trigger', tenantMigrations: [...tenantMigrations, Own] });
      const slug = uniqueSlug('guard-tr');
      await manager.createTenant(slug);
      const reverted = await manager.revertTenants({ tenants: [slug] });
      expect(reverted.results.map((r) => [r.status, r.error?.message])).to.deep.equal([['reverted', undefined]]);
      const OnShared = migration('TriggerOnPlan', [fn, 'CREATE TRIGGER plan_touch BEFORE INSERT ON public.plan FOR EACH ROW EXECUTE FUNCTION touch_note()']);
      const other = await openManager({ migrationGuard: 'event-trigger', tenantMigrations: [...tenantMigrations, OnShared] });
      const error = await other.createTenant(uniqueSlug('guard-trp')).then(() => expect.fail('should be refused'), (e: unknown) => e);
      expect(guardErrorIn(error).objects.map((o) => o.kind)).to.include('trigger');
      expect(await exists(`SELECT 1 FROM pg_trigger WHERE tgname = 'plan_touch'`)).to.equal(false);
    });

    it('refuses DROP TABLE public.z; z is still there', async () => {
      const z = `guard_z_${rand()}`;
      await adminQuery(`CREATE TABLE public.${z} (id int)`);
      const Bad = migration('DropShared', [`DROP TABLE public.${z}`]);
      const manager = await openManager({ migrationGuard: 'event-trigger', tenantMigrations: [...tenantMigrations, Bad] });
      const slug = uniqueSlug('guard-dz');
      const error = await manager.createTenant(slug).then(() => expect.fail('should be refused'), (e: unknown) => e);
      expect((error as TenantProvisioningError).migration).to.equal(Bad.name);
      const guard = guardErrorIn(error);
      expect(guard.action).to.equal('DROP');
      expect(guard.objects).to.deep.include({ kind: 'table', schema: 'public', name: z });
      expect(await exists('SELECT 1 FROM pg_class WHERE relname = $1', [z])).to.equal(true);
      expect(await schemaExists(schemaOf(slug))).to.equal(false);
    });

    it('refuses an unqualified DROP in a down() that resolves to the shared schema', async () => {
      const z = `guard_uq_${rand()}`;
      await adminQuery(`CREATE TABLE public.${z} (id int)`);
      // up() never made the table in the tenant: down()'s unqualified name finds the shared one through the search path.
      const Step = migration('UnqualifiedDrop', ['CREATE TABLE uq_note (id int)'], ['DROP TABLE uq_note', `DROP TABLE ${z}`]);
      const manager = await openManager({ migrationGuard: 'event-trigger', tenantMigrations: [...tenantMigrations, Step] });
      const slug = uniqueSlug('guard-uq');
      await manager.createTenant(slug);
      const report = await manager.revertTenants({ tenants: [slug] });
      expect(report.results[0]!.status).to.equal('failed');
      expect(report.results[0]!.error!.code).to.equal('MIGRATION_OUTSIDE_TENANT');
      expect(report.results[0]!.error!.migration).to.equal(Step.name);
      expect(await exists('SELECT 1 FROM pg_class WHERE relname = $1', [z])).to.equal(true);
    });

    it("'catalog' does not see drops (documented): the same down() goes through", async () => {
      const z = `guard_uqc_${rand()}`;
      await adminQuery(`CREATE TABLE public.${z} (id int)`);
      const Step = migration('UnqualifiedDropCatalog', ['CREATE TABLE uq_note (id int)'], ['DROP TABLE uq_note', `DROP TABLE ${z}`]);
      const manager = await openManager({ migrationGuard: 'catalog', tenantMigrations: [...tenantMigrations, Step] });
      const slug = uniqueSlug('guard-uqc');
      await manager.createTenant(slug);
      const report = await manager.revertTenants({ tenants: [slug] });
      expect(report.results[0]!.status).to.equal('reverted');
      expect(await exists('SELECT 1 FROM pg_class WHERE relname = $1', [z])).to.equal(false);
    });

    it('the triggers do nothing outside a tenant migration (no setting)', async () => {
      await openManager({ migrationGuard: 'event-trigger' });
      const name = `guard_free_${rand()}`;
      await adminQuery(`CREATE TABLE public.${name} (id int)`);
      await adminQuery(`DROP TABLE public.${name}`);
      const triggers = await adminQuery<{ evtname: string }>("SELECT evtname FROM pg_event_trigger WHERE evtname LIKE 'typeorm_tenants_guard_%' ORDER BY 1");
      expect(triggers.map((t) => t.evtname)).to.deep.equal(['typeorm_tenants_guard_ddl', 'typeorm_tenants_guard_drop']);
    });

    it('refuses an unknown migrationGuard value', () => {
      expect(() => new TenantDataSourceManager({ dataSource: { type: 'postgres', url: databaseUrl() }, entities: [class Plain {}], migrationGuard: 'lint' as never })).to.throw(
        TenancyConfigurationError,
        /migrationGuard/,
      );
    });
  });

  describe('a role that is not a superuser', () => {
    const role = `guard_app_${rand()}`;
    const database = `guard_db_${rand()}`;
    // The embedded server asks for passwords (the machine's trusts local connections): give the role one.
    const password = randomBytes(8).toString('hex');
    const urlOf = (user: string): string => {
      const url = new URL(databaseUrl());
      // The superuser keeps the test server's own credentials.
      if (user !== role) return Object.assign(url, { pathname: `/${database}` }).toString();
      url.username = user;
      url.password = password;
      url.pathname = `/${database}`;
      return url.toString();
    };
    const options = (user: string, mode: MigrationGuardMode, extra: Partial<TenantDataSourceManagerOptions> = {}) =>
      ({ dataSource: { type: 'postgres', url: urlOf(user), poolSize: 4, installExtensions: false }, migrationGuard: mode, ...extra }) as const;

    before(async () => {
      await adminQuery(`CREATE ROLE ${role} LOGIN CREATEDB CREATEROLE PASSWORD '${password}'`);
      await adminQuery(`CREATE DATABASE ${database} OWNER ${role}`);
    });

    after(async () => {
      const admin = new PgClient({ connectionString: databaseUrl() });
      await admin.connect();
      try {
        await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [database]);
        await admin.query(`DROP DATABASE IF EXISTS ${database}`);
        await admin.query(`DROP ROLE IF EXISTS ${role}`);
      } finally {
        await admin.end();
      }
    });

    it("initialize() with 'event-trigger' fails with TenancyConfigurationError naming the option and the alternatives", async () => {
      const error = await openManager(options(role, 'event-trigger')).then(() => expect.fail('should fail'), (e: unknown) => e);
      expect(error).to.be.instanceOf(TenancyConfigurationError);
      expect((error as Error).message).to.include('migrationGuard').and.include("'catalog'").and.include("'off'").and.include('superuser');
    });

    it("'catalog' needs no privilege", async () => {
      const manager = await openManager(options(role, 'catalog', { tenantMigrations: [...tenantMigrations, migration('NoPriv', [`CREATE TABLE public.np_${rand()} (id int)`])] }));
      await expect(manager.createTenant(uniqueSlug('np'))).to.be.rejectedWith(TenantProvisioningError, /outside the tenant schema/);
    });

    it('once a superuser installed the triggers, the role starts, and the triggers refuse its migrations too', async () => {
      const url = new URL(databaseUrl());
      const superuser = decodeURIComponent(url.username) || 'postgres';
      await (await openManager(options(superuser, 'event-trigger'))).destroy();
      const manager = await openManager(options(role, 'event-trigger', { tenantMigrations: [...tenantMigrations, migration('NoPrivEt', [`CREATE TABLE public.npe_${rand()} (id int)`])] }));
      const error = await manager.createTenant(uniqueSlug('npe')).then(() => expect.fail('should fail'), (e: unknown) => e);
      expect(guardErrorIn(error).action).to.equal('CREATE TABLE');
    });
  });
});
