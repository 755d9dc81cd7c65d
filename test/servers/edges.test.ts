import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import type { MigrationInterface, QueryRunner } from 'typeorm';
import { Client } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import {
  InvalidArgumentError,
  TenancyConfigurationError,
  TenantAlreadyExistsError,
  TenantMigrationPendingError,
  TenantMigrationError,
  TenantProvisioningError,
  tenantContext,
  tenantSchemaOf,
  type FleetReport,
  type TenantDataSourceManager,
} from '../../src';
import { tenantRoleName } from '../../src/naming/derived-schema-name';
import { AddClientPhone1700000000003 } from '../support/extra-migrations';
import { sleep } from '../support/fixtures';
import { migration } from '../support/tenant-migrations';
import { serverOptions, startSecondServer, withTwoServers, type SecondServer, type ServerDatabase } from '../support/second-server';

const lines = (report: FleetReport): Array<[string, string, string | undefined]> => report.results.map((r) => [r.slug, r.status, r.error?.code]);

async function pendingBySlug(manager: TenantDataSourceManager): Promise<Record<string, readonly string[]>> {
  return Object.fromEntries((await manager.migrationStatus()).map((s) => [s.slug, s.pending]));
}

/** The names in a tenant's own migrations table, sorted. */
async function ownMigrations(server: ServerDatabase, schema: string): Promise<string[]> {
  return (await server.query<{ name: string }>(`SELECT name FROM "${schema}".migrations ORDER BY name`)).map((r) => r.name);
}

/** The ledger's names for a tenant, sorted. */
async function ledgerOf(home: ServerDatabase, slug: string, registry = 'tenants'): Promise<string[]> {
  return (await home.query<{ name: string }>(`SELECT name FROM public."${registry}_migrations" WHERE slug = $1 ORDER BY name`, [slug])).map((r) => r.name);
}

describe('servers: edges of tenants off the home server', function () {
  this.timeout(60_000);
  let second: SecondServer;
  let directory: string;
  before(async function () {
    this.timeout(120_000);
    second = await startSecondServer();
    directory = await mkdtemp(join(tmpdir(), 'servers-edges-'));
  });
  after(async function () {
    this.timeout(60_000);
    await rm(directory, { recursive: true, force: true });
    await second?.destroy();
  });

  // Two registries over the same servers (registryTable, as the CLI tests use) are each other's
  // strangers: on the home server a taken schema name is a TenantAlreadyExistsError, and on b too
  // (the mark of a schema names its registry, so another registry's live tenant is never taken for an orphan).
  it('createTenant on b never drops a live tenant schema of another registry on the same servers (the orphan mark must say whose it is)', async () => {
    await withTwoServers(second, async ({ b, open }) => {
      const billing = await open({ registryTable: 'billing_tenants' });
      await billing.createTenant('acme', { server: 'b' });
      await billing.createTenant('initech', { server: 'a' });
      await billing.run('acme', () => tenantContext.getRepository(Client).insert({ name: 'Keep me', email: 'keep@acme.test' }));
      const crm = await open({ registryTable: 'crm_tenants' });
      // On the home server: the name is taken.
      await expect(crm.createTenant('initech', { server: 'a' })).to.be.rejectedWith(TenantAlreadyExistsError);
      // On b: it must be taken as well, and billing's rows must survive.
      const outcome = await crm.createTenant('acme', { server: 'b' }).then(
        () => 'created',
        (error: unknown) => error,
      );
      expect(await b.query('SELECT email FROM acme.client')).to.deep.equal([{ email: 'keep@acme.test' }]);
      expect(outcome).to.be.instanceOf(TenantAlreadyExistsError);
    });
  });

  it('exportTenant of a tenant on b and importTenant({ server }) onto the other server carry the rows and the sequences', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await tenants.createTenant('from-b', { server: 'b' });
      await tenants.run('from-b', () => tenantContext.getRepository(Client).insert([{ name: 'B1', email: 'b1@x.test' }, { name: 'B2', email: 'b2@x.test' }]));
      const file = join(directory, 'from-b.gz');
      await tenants.exportTenant('from-b', file);
      const onA = await tenants.importTenant('to-a', file, { server: 'a' });
      expect(onA.server).to.equal('a');
      expect(await a.query('SELECT email FROM to_a.client ORDER BY id')).to.deep.equal([{ email: 'b1@x.test' }, { email: 'b2@x.test' }]);
      expect(await b.hasSchema('to_a')).to.equal(false);
      const [{ id }] = await tenants.run('to-a', () => tenantContext.query<Array<{ id: number }>>("INSERT INTO client (name, email) VALUES ('A3', 'a3@x.test') RETURNING id"));
      expect(id).to.equal(3);

      const back = join(directory, 'to-a.gz');
      await tenants.exportTenant('to-a', back);
      expect((await tenants.importTenant('to-b', back, { server: 'b' })).server).to.equal('b');
      expect(await b.query('SELECT email FROM to_b.client ORDER BY id')).to.deep.equal([{ email: 'b1@x.test' }, { email: 'b2@x.test' }, { email: 'a3@x.test' }]);
      expect(await a.hasSchema('to_b')).to.equal(false);
      expect(await ledgerOf(a, 'to-b')).to.deep.equal(await ownMigrations(b, 'to_b'));
    });
  });

  it("under isolation: 'role' a tenant on b runs as its own role on b, and cannot read another tenant's schema there; dropTenant drops the role on b", async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open({ isolation: 'role' });
      await tenants.createTenant('rb-1', { server: 'b' });
      await tenants.createTenant('rb-2', { server: 'b' });
      await tenants.run('rb-2', () => tenantContext.getRepository(Client).insert({ name: 'Secret', email: 's@rb2.test' }));
      const role = tenantRoleName(b.name, 'rb_1');
      const [who] = await tenants.run('rb-1', () => tenantContext.query<Array<{ who: string; db: string }>>('SELECT current_user AS who, current_database() AS db'));
      expect(who).to.deep.equal({ who: role, db: b.name });
      const refused = await tenants.run('rb-1', () => tenantContext.query('SELECT * FROM rb_2.client')).catch((error: unknown) => error);
      expect(refused).to.be.instanceOf(Error);
      expect(JSON.stringify(refused) + String(refused)).to.match(/42501|permission denied|CROSS_TENANT/i);
      expect(await b.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role])).to.have.length(1);
      expect(await a.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role])).to.have.length(0);
      await tenants.dropTenant('rb-1', { force: true });
      await tenants.dropTenant('rb-2', { force: true });
      expect(await b.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role])).to.have.length(0);
    });
  });

  it('the migration guard holds on b: a tenant migration creating a table in the shared schema fails every tenant, on both servers, and leaves nothing', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const before = await open();
      await before.createTenant('ga', { server: 'a' });
      await before.createTenant('gb', { server: 'b' });
      await before.destroy();
      const escape = migration('Escape', undefined, async (runner) => {
        await runner.query('CREATE TABLE public.escaped (id int)');
      });
      const tenants = await open({ tenantMigrations: [...tenantMigrations, escape] });
      const report = await tenants.migrateTenants();
      expect(lines(report)).to.deep.equal([
        ['ga', 'failed', 'MIGRATION_OUTSIDE_TENANT'],
        ['gb', 'failed', 'MIGRATION_OUTSIDE_TENANT'],
      ]);
      for (const server of [a, b]) expect(await server.query("SELECT to_regclass('public.escaped')::text AS t"), server.name).to.deep.equal([{ t: null }]);
      expect(await pendingBySlug(tenants)).to.deep.equal({ ga: [escape.name], gb: [escape.name] });
    });
  });

  it('a migration failing in one tenant of b rolls that tenant back on b (ledger unchanged) while the others migrate', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const before = await open();
      for (const slug of ['mb-1', 'mb-2']) await before.createTenant(slug, { server: 'b' });
      await before.createTenant('ma-1', { server: 'a' });
      await before.run('mb-2', () => tenantContext.getRepository(Client).insert({ name: 'Upper', email: 'UPPER@x.test' }));
      await before.destroy();
      const tenants = await open({ tenantMigrations: [...tenantMigrations, AddClientPhone1700000000003] });
      const report = await tenants.migrateTenants();
      expect(lines(report)).to.deep.equal([
        ['ma-1', 'migrated', undefined],
        ['mb-1', 'migrated', undefined],
        ['mb-2', 'failed', '23514'],
      ]);
      const columns = async (schema: string): Promise<number> =>
        (await b.query("SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND column_name = 'phone'", [schema])).length;
      expect([await columns('mb_1'), await columns('mb_2')]).to.deep.equal([1, 0]);
      for (const slug of ['mb-1', 'mb-2']) expect(await ledgerOf(a, slug), slug).to.deep.equal(await ownMigrations(b, slug.replace('-', '_')));
      expect((await pendingBySlug(tenants))['mb-2']).to.deep.equal(['AddClientPhone1700000000003']);
    });
  });

  it('transaction = false migrations on b: the ledger ends equal to what b committed, after a success and after a failure between segments', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const before = await open();
      await before.createTenant('sb', { server: 'b' });
      await before.destroy();
      const table = migration('SegTable', undefined, async (runner) => {
        await runner.query('CREATE TABLE seg (id int, code text)');
      });
      const index = migration(
        'SegIndex',
        false,
        async (runner) => {
          await runner.query(`CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS seg_code ON "${tenantSchemaOf(runner)}".seg (code)`);
        },
        async (runner) => {
          await runner.query(`DROP INDEX CONCURRENTLY IF EXISTS "${tenantSchemaOf(runner)}".seg_code`);
        },
      );
      let fail = true;
      const after = migration('SegAfter', undefined, async (runner) => {
        if (fail) throw new Error('SegAfter fails (test)');
        await runner.query('CREATE TABLE seg_after (id int)');
      });
      const tenants = await open({ tenantMigrations: [...tenantMigrations, table, index, after] });
      const failed = await tenants.migrateTenants();
      expect(failed.results.map((r) => [r.slug, r.status])).to.deep.equal([['sb', 'failed']]);
      const own = await ownMigrations(b, 'sb');
      expect(own).to.include.members([table.name, index.name]);
      expect(own).to.not.include(after.name);
      expect(await ledgerOf(a, 'sb')).to.deep.equal(own);
      expect((await pendingBySlug(tenants))['sb']).to.deep.equal([after.name]);
      fail = false;
      const done = await tenants.migrateTenants();
      expect(done.results.map((r) => [r.slug, r.status, r.applied])).to.deep.equal([['sb', 'migrated', [after.name]]]);
      expect(await ledgerOf(a, 'sb')).to.deep.equal(await ownMigrations(b, 'sb'));
      expect((await pendingBySlug(tenants))['sb']).to.deep.equal([]);
      expect(await b.query("SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = 'sb.seg_code'::regclass")).to.deep.equal([{ valid: true }]);
    });
  });

  it("reconcileMigrationLedger repairs the ledger of a tenant on b from b's own migrations table", async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await tenants.createTenant('rl', { server: 'b' });
      await a.query("DELETE FROM public.tenants_migrations WHERE slug = 'rl'");
      await a.query("INSERT INTO public.tenants_migrations (slug, name) VALUES ('rl', 'Bogus1700000000009')");
      const report = await tenants.reconcileMigrationLedger();
      expect(report.totals.failed).to.equal(0);
      expect(await ledgerOf(a, 'rl')).to.deep.equal(await ownMigrations(b, 'rl'));
      expect((await pendingBySlug(tenants))['rl']).to.deep.equal([]);
    });
  });

  it('a seed of a tenant on b writes on b, in the creation transaction: a seed that throws leaves nothing on either server', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await tenants.createTenant('seeded', {
        server: 'b',
        seed: async ({ manager, query }) => {
          await manager.getRepository(Client).insert({ name: 'Seed', email: 'seed@b.test' });
          await query("INSERT INTO client (name, email) VALUES ('Raw', 'raw@b.test')");
          await tenantContext.getRepository(Client).insert({ name: 'Ctx', email: 'ctx@b.test' });
        },
      });
      expect(await b.query('SELECT email FROM seeded.client ORDER BY id')).to.deep.equal([{ email: 'seed@b.test' }, { email: 'raw@b.test' }, { email: 'ctx@b.test' }]);
      const failing = tenants.createTenant('unseeded', {
        server: 'b',
        seed: async ({ manager }) => {
          await manager.getRepository(Client).insert({ name: 'Half', email: 'half@b.test' });
          throw new Error('seed fails (test)');
        },
      });
      await expect(failing).to.be.rejectedWith(/seed fails/);
      expect([await a.hasSchema('unseeded'), await b.hasSchema('unseeded')]).to.deep.equal([false, false]);
      expect(await tenants.getTenant('unseeded')).to.equal(undefined);
      expect(await a.query("SELECT 1 FROM public.tenants_migrations WHERE slug = 'unseeded'")).to.deep.equal([]);
    });
  });

  it('a shared migration added later reaches every server at initialize() (and migrateShared())', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const first = await open();
      await first.destroy();
      class CreateRegion1700000000005 implements MigrationInterface {
        async up(runner: QueryRunner): Promise<void> {
          await runner.query('CREATE TABLE region (code text PRIMARY KEY)');
        }
        async down(runner: QueryRunner): Promise<void> {
          await runner.query('DROP TABLE region');
        }
      }
      const tenants = await open({ sharedMigrations: [...sharedMigrations, CreateRegion1700000000005] });
      for (const server of [a, b]) {
        expect(await server.query("SELECT to_regclass('public.region')::text AS t"), server.name).to.deep.equal([{ t: 'region' }]);
        expect(await server.query('SELECT name FROM public.migrations ORDER BY name'), server.name).to.deep.equal([
          { name: 'CreatePlan1700000000000' },
          { name: 'CreateRegion1700000000005' },
        ]);
      }
      expect(await tenants.migrateShared()).to.deep.equal([]);
    });
  });

  it('a registry made with dataSource (server NULL) opened with servers keeps its tenants on the home server, served, and new ones can go to b', async () => {
    await withTwoServers(second, async ({ a, b, manager, open }) => {
      const single = manager({ servers: undefined, dataSource: serverOptions(a.url) });
      await single.initialize();
      const old = await single.createTenant('old-one');
      expect(old.server).to.equal('default');
      await single.run('old-one', () => tenantContext.getRepository(Client).insert({ name: 'Old', email: 'old@a.test' }));
      await single.destroy();
      expect(await a.query("SELECT server FROM public.tenants WHERE slug = 'old-one'")).to.deep.equal([{ server: null }]);

      const tenants = await open({ servers: { main: serverOptions(a.url), b: serverOptions(b.url) } });
      expect((await tenants.getTenant('old-one'))?.server).to.equal('main');
      expect(await tenants.run('old-one', () => tenantContext.getRepository(Client).count())).to.equal(1);
      // One tenant on main, none on b: the default placement picks b.
      expect((await tenants.createTenant('new-one')).server).to.equal('b');
      expect((await tenants.migrateTenants()).results.map((r) => [r.slug, r.status])).to.deep.equal([
        ['new-one', 'up-to-date'],
        ['old-one', 'up-to-date'],
      ]);
    });
  });

  it('restoreTenant of a tenant on b whose pending migration fails: TenantMigrationError, still archived, its archive schema intact on b', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const first = await open();
      await first.createTenant('frozen', { server: 'b' });
      await first.run('frozen', () => tenantContext.getRepository(Client).insert({ name: 'F', email: 'FROZEN@b.test' }));
      await first.archiveTenant('frozen');
      await first.destroy();
      const tenants = await open({ tenantMigrations: [...tenantMigrations, AddClientPhone1700000000003] });
      await expect(tenants.restoreTenant('frozen')).to.be.rejectedWith(TenantMigrationError);
      expect((await tenants.getTenant('frozen'))?.status).to.equal('archived');
      expect(await b.hasSchema('frozen')).to.equal(false);
      const archived = (await b.query<{ name: string }>("SELECT nspname AS name FROM pg_namespace WHERE nspname LIKE 'typeorm\\_tenants\\_archive\\_%'")).map((r) => r.name);
      expect(archived).to.have.length(1);
      expect(await b.query(`SELECT email FROM "${archived[0]}".client`)).to.deep.equal([{ email: 'FROZEN@b.test' }]);
      expect(await ledgerOf(a, 'frozen')).to.deep.equal(await ownMigrations(b, archived[0]!));
    });
  });

  it('destroy() closes the pool of every server: no connection of the manager is left on either database', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await tenants.createTenant('da', { server: 'a' });
      await tenants.createTenant('db', { server: 'b' });
      await Promise.all(['da', 'db'].map((slug) => tenants.run(slug, () => tenantContext.query('SELECT pg_sleep(0.05)'))));
      expect(await b.connections()).to.be.greaterThan(0);
      await tenants.destroy();
      for (let i = 0; i < 100 && (await a.connections()) + (await b.connections()) > 0; i += 1) await sleep(50);
      expect([await a.connections(), await b.connections()]).to.deep.equal([0, 0]);
      expect(tenants.stats().servers).to.deep.equal({});
    });
  });

  it('a provisioning failure in a tenant migration on b leaves no schema on b and no row on the home server', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const broken = migration('Broken', undefined, async (runner) => {
        await runner.query('CREATE TABLE ok_so_far (id int)');
        await runner.query('SELECT * FROM no_such_table');
      });
      const tenants = await open({ tenantMigrations: [...tenantMigrations, broken] });
      await expect(tenants.createTenant('nope', { server: 'b' })).to.be.rejectedWith(TenantProvisioningError);
      expect([await a.hasSchema('nope'), await b.hasSchema('nope')]).to.deep.equal([false, false]);
      expect(await a.query("SELECT 1 FROM public.tenants WHERE slug = 'nope'")).to.deep.equal([]);
    });
  });
  it('a tenant on a server the options no longer name: its run is a TenancyConfigurationError naming the server, fleet runs report it failed, the others are served', async () => {
    await withTwoServers(second, async ({ a, open }) => {
      const both = await open();
      await both.createTenant('stays', { server: 'a' });
      await both.createTenant('stranded', { server: 'b' });
      await both.destroy();
      const tenants = await open({ servers: { a: serverOptions(a.url) } });
      expect((await tenants.getTenant('stranded'))?.server).to.equal('b');
      await expect(tenants.run('stranded', () => 1)).to.be.rejectedWith(TenancyConfigurationError, /server "b"/);
      expect(await tenants.run('stays', () => tenantContext.getRepository(Client).count())).to.equal(0);
      const report = await tenants.migrateTenants();
      expect(report.results.map((r) => [r.slug, r.status])).to.deep.equal([
        ['stays', 'up-to-date'],
        ['stranded', 'up-to-date'],
      ]);
      const fanned = await tenants.forEachTenant((tenant) => tenant.slug);
      expect(fanned.results.map((r) => [r.slug, r.status])).to.deep.equal([
        ['stays', 'done'],
        ['stranded', 'failed'],
      ]);
      await expect(tenants.listTenants({ where: { server: 'b' } })).to.be.rejectedWith(InvalidArgumentError);
    });
  });

  it("pendingMigrations: 'refuse' refuses a tenant on b until migrateTenants({ where: { server: 'b' } }) migrated it, then serves it at once; getDataSource() is b's", async () => {
    await withTwoServers(second, async ({ b, open }) => {
      const first = await open();
      await first.createTenant('late-b', { server: 'b' });
      await first.destroy();
      const note = migration('AddNote', undefined, async (runner) => {
        await runner.query('CREATE TABLE note (id int)');
      });
      const tenants = await open({ pendingMigrations: 'refuse', tenantMigrations: [...tenantMigrations, note] });
      await expect(tenants.run('late-b', () => 1)).to.be.rejectedWith(TenantMigrationPendingError);
      await tenants.migrateTenants({ where: { server: 'b' } });
      expect(await tenants.run('late-b', () => tenantContext.query('SELECT count(*)::int AS n FROM note'))).to.deep.equal([{ n: 0 }]);
      const dataSource = await tenants.getDataSource('late-b');
      expect(await dataSource.query('SELECT current_database() AS db')).to.deep.equal([{ db: b.name }]);
    });
  });
});
