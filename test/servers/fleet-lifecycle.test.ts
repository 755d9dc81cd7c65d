import { expect } from 'chai';
import { Client } from '../../entities';
import { tenantMigrations } from '../../migrations';
import {
  InvalidArgumentError,
  TenantAlreadyExistsError,
  TenantNotActiveError,
  TenantProvisioningError,
  tenantContext,
  type FleetReport,
  type TenantDataSourceManager,
} from '../../src';
import { archiveSchemaName } from '../../src/naming/derived-schema-name';
import { migration } from '../support/tenant-migrations';
import { withTwoServers, type ServerDatabase, useSecondServer } from '../support/second-server';

/** A tenant migration adding table `note`, and its name. */
function noteMigration(): { readonly name: string; readonly class: Function } {
  const made = migration(
    'AddNote',
    undefined,
    async (runner) => {
      await runner.query('CREATE TABLE note (id serial PRIMARY KEY, body text NOT NULL)');
    },
    async (runner) => {
      await runner.query('DROP TABLE note');
    },
  );
  return { name: made.name, class: made };
}

const lines = (report: FleetReport): Array<[string, string, readonly string[]]> => report.results.map((r) => [r.slug, r.status, r.applied]);

async function hasTable(server: ServerDatabase, schema: string, table: string): Promise<boolean> {
  const [row] = await server.query<{ found: boolean }>('SELECT to_regclass($1) IS NOT NULL AS found', [`"${schema}"."${table}"`]);
  return row!.found;
}

/** Pending migrations by slug, from the ledger. */
async function pendingBySlug(manager: TenantDataSourceManager): Promise<Record<string, readonly string[]>> {
  return Object.fromEntries((await manager.migrationStatus()).map((s) => [s.slug, s.pending]));
}

/** A deferred constraint trigger on the home registry that fails the home commit of `events` (a crash between the two commits). */
async function failHomeCommits(home: ServerDatabase, events: string): Promise<() => Promise<void>> {
  await home.query(`CREATE FUNCTION public.fail_home_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'home commit fails (test)'; END $$`);
  await home.query(
    `CREATE CONSTRAINT TRIGGER fail_home_commit AFTER ${events} ON public.tenants DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.fail_home_commit()`,
  );
  return async () => {
    await home.query('DROP TRIGGER fail_home_commit ON public.tenants');
    await home.query('DROP FUNCTION public.fail_home_commit()');
  };
}

describe('servers: fleet migrations, lifecycle and crash recovery across two PostgreSQL servers', function () {
  this.timeout(60_000);
  const second = useSecondServer();

  it('migrateTenants and revertTenants reach the tenants of both servers, each table on its own server, the ledger in step; where.server scopes them', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const before = await open();
      for (const slug of ['fa-1', 'fa-2']) await before.createTenant(slug, { server: 'a' });
      for (const slug of ['fb-1', 'fb-2']) await before.createTenant(slug, { server: 'b' });
      await before.destroy();
      const note = noteMigration();
      const tenants = await open({ tenantMigrations: [...tenantMigrations, note.class] });
      expect(await pendingBySlug(tenants)).to.deep.equal({ 'fa-1': [note.name], 'fa-2': [note.name], 'fb-1': [note.name], 'fb-2': [note.name] });
      await expect(tenants.migrateTenants({ where: { server: 'c' } })).to.be.rejectedWith(InvalidArgumentError);

      const onB = await tenants.migrateTenants({ where: { server: 'b' } });
      expect(lines(onB)).to.deep.equal([
        ['fb-1', 'migrated', [note.name]],
        ['fb-2', 'migrated', [note.name]],
      ]);
      expect(await pendingBySlug(tenants)).to.deep.equal({ 'fa-1': [note.name], 'fa-2': [note.name], 'fb-1': [], 'fb-2': [] });
      for (const schema of ['fb_1', 'fb_2']) {
        expect(await hasTable(b, schema, 'note'), schema).to.equal(true);
        expect(await b.query(`SELECT name FROM "${schema}".migrations WHERE name = $1`, [note.name])).to.have.length(1);
      }
      for (const schema of ['fa_1', 'fa_2']) expect(await hasTable(a, schema, 'note'), schema).to.equal(false);
      // The ledger is on the home server, a.
      expect(await a.query('SELECT slug FROM public.tenants_migrations WHERE name = $1 ORDER BY slug', [note.name])).to.deep.equal([{ slug: 'fb-1' }, { slug: 'fb-2' }]);

      const all = await tenants.migrateTenants();
      expect(lines(all)).to.deep.equal([
        ['fa-1', 'migrated', [note.name]],
        ['fa-2', 'migrated', [note.name]],
        ['fb-1', 'up-to-date', []],
        ['fb-2', 'up-to-date', []],
      ]);
      expect(Object.values(await pendingBySlug(tenants))).to.deep.equal([[], [], [], []]);
      for (const schema of ['fa_1', 'fa_2']) expect(await hasTable(a, schema, 'note'), schema).to.equal(true);
      // No table of a tenant leaked to the other server.
      for (const schema of ['fa_1', 'fa_2']) expect(await b.hasSchema(schema), schema).to.equal(false);
      for (const schema of ['fb_1', 'fb_2']) expect(await a.hasSchema(schema), schema).to.equal(false);
      await tenants.run('fb-2', () => tenantContext.query("INSERT INTO note (body) VALUES ('on b')"));
      expect(await b.query('SELECT body FROM fb_2.note')).to.deep.equal([{ body: 'on b' }]);

      const reverted = await tenants.revertTenants();
      expect(lines(reverted)).to.deep.equal(['fa-1', 'fa-2', 'fb-1', 'fb-2'].map((slug) => [slug, 'reverted', [note.name]]));
      for (const schema of ['fa_1', 'fa_2']) expect(await hasTable(a, schema, 'note'), schema).to.equal(false);
      for (const schema of ['fb_1', 'fb_2']) expect(await hasTable(b, schema, 'note'), schema).to.equal(false);
      expect(await pendingBySlug(tenants)).to.deep.equal({ 'fa-1': [note.name], 'fa-2': [note.name], 'fb-1': [note.name], 'fb-2': [note.name] });
      expect(await a.query('SELECT slug FROM public.tenants_migrations WHERE name = $1', [note.name])).to.deep.equal([]);

      await tenants.migrateTenants();
      const revertedOnB = await tenants.revertTenants({ where: { server: 'b' } });
      expect(lines(revertedOnB)).to.deep.equal([
        ['fb-1', 'reverted', [note.name]],
        ['fb-2', 'reverted', [note.name]],
      ]);
      expect(await pendingBySlug(tenants)).to.deep.equal({ 'fa-1': [], 'fa-2': [], 'fb-1': [note.name], 'fb-2': [note.name] });
      for (const schema of ['fa_1', 'fa_2']) expect(await hasTable(a, schema, 'note'), schema).to.equal(true);
      for (const schema of ['fb_1', 'fb_2']) expect(await hasTable(b, schema, 'note'), schema).to.equal(false);
      const reconciled = await tenants.reconcileMigrationLedger();
      expect(reconciled.totals.failed).to.equal(0);
      expect(await pendingBySlug(tenants)).to.deep.equal({ 'fa-1': [], 'fa-2': [], 'fb-1': [note.name], 'fb-2': [note.name] });
    });
  });

  it('fleet concurrency is per server: with concurrency 1, one tenant of each server migrates at a time, the two servers side by side', async () => {
    await withTwoServers(second, async ({ open }) => {
      const before = await open();
      for (const slug of ['ca-1', 'ca-2']) await before.createTenant(slug, { server: 'a' });
      for (const slug of ['cb-1', 'cb-2']) await before.createTenant(slug, { server: 'b' });
      await before.destroy();
      const running = new Map<string, number>();
      const most = new Map<string, number>();
      let overall = 0;
      let mostOverall = 0;
      const slow = migration('SlowStep', undefined, async (runner) => {
        const [{ db }] = (await runner.query('SELECT current_database() AS db')) as [{ db: string }];
        running.set(db, (running.get(db) ?? 0) + 1);
        overall += 1;
        most.set(db, Math.max(most.get(db) ?? 0, running.get(db)!));
        mostOverall = Math.max(mostOverall, overall);
        try {
          await runner.query('SELECT pg_sleep(0.5)');
        } finally {
          running.set(db, running.get(db)! - 1);
          overall -= 1;
        }
      });
      const tenants = await open({ tenantMigrations: [...tenantMigrations, slow] });
      const report = await tenants.migrateTenants({ concurrency: 1 });
      expect(report.totals).to.include({ tenants: 4, migrated: 4, failed: 0 });
      expect([...most.values()]).to.deep.equal([1, 1]);
      expect(mostOverall).to.equal(2);
    });
  });

  it('suspend, resume, archive, restore and drop a tenant of the non-home server: its schema changes on its server, its record on the home one; the slug can be created again', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const first = await open();
      await first.createTenant('far', { server: 'b' });
      await first.createTenant('near', { server: 'a' });
      await first.run('far', () => tenantContext.getRepository(Client).insert({ name: 'Far', email: 'far@b.test' }));
      const archived = archiveSchemaName('far');

      expect((await first.suspendTenant('far')).status).to.equal('suspended');
      expect(await a.query("SELECT status FROM public.tenants WHERE slug = 'far'")).to.deep.equal([{ status: 'suspended' }]);
      await expect(first.run('far', () => 1)).to.be.rejectedWith(TenantNotActiveError);
      expect(await b.hasSchema('far')).to.equal(true);
      expect((await first.resumeTenant('far')).status).to.equal('active');
      expect(await first.run('far', () => tenantContext.getRepository(Client).count())).to.equal(1);

      expect((await first.archiveTenant('far')).status).to.equal('archived');
      expect(await b.hasSchema('far')).to.equal(false);
      expect(await b.hasSchema(archived)).to.equal(true);
      expect(await a.hasSchema(archived)).to.equal(false);
      expect(await b.query(`SELECT email FROM "${archived}".client`)).to.deep.equal([{ email: 'far@b.test' }]);
      expect(await a.query("SELECT status, server FROM public.tenants WHERE slug = 'far'")).to.deep.equal([{ status: 'archived', server: 'b' }]);
      await first.destroy();

      // Restored by code with one more migration: it runs on b, and the home ledger records it.
      const note = noteMigration();
      const tenants = await open({ tenantMigrations: [...tenantMigrations, note.class] });
      expect((await tenants.restoreTenant('far')).status).to.equal('active');
      expect(await b.hasSchema(archived)).to.equal(false);
      expect(await b.query('SELECT email FROM far.client')).to.deep.equal([{ email: 'far@b.test' }]);
      expect(await hasTable(b, 'far', 'note')).to.equal(true);
      expect((await pendingBySlug(tenants))['far']).to.deep.equal([]);
      expect(await tenants.run('far', () => tenantContext.getRepository(Client).count())).to.equal(1);

      await expect(tenants.dropTenant('far')).to.be.rejected; // active: needs force
      await tenants.dropTenant('far', { force: true });
      expect(await b.hasSchema('far')).to.equal(false);
      expect(await b.hasSchema(archived)).to.equal(false);
      expect(await a.query("SELECT slug FROM public.tenants WHERE slug = 'far'")).to.deep.equal([]);
      expect(await a.query("SELECT slug FROM public.tenants_migrations WHERE slug = 'far'")).to.deep.equal([]);
      expect(await tenants.getTenant('far')).to.equal(undefined);
      // The home tenant was not touched by any of it.
      expect(await a.tablesOf('near')).to.include.members(['client', 'project']);

      expect((await tenants.createTenant('far', { server: 'b' })).server).to.equal('b');
      expect(await tenants.run('far', () => tenantContext.getRepository(Client).count())).to.equal(0);
      // Archived on b, then dropped: the archive schema goes on b.
      await tenants.archiveTenant('far');
      expect(await b.hasSchema(archived)).to.equal(true);
      await tenants.dropTenant('far');
      expect(await b.hasSchema(archived)).to.equal(false);
      expect(await tenants.getTenant('far')).to.equal(undefined);
    });
  });

  it('archive, restore and drop off the home server whose home commit fails: the schema changed on b, the registry did not; calling the operation again completes it', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const first = await open();
      await first.createTenant('torn', { server: 'b' });
      await first.run('torn', () => tenantContext.getRepository(Client).insert({ name: 'T', email: 't@b.test' }));
      const archived = archiveSchemaName('torn');

      let restore = await failHomeCommits(a, 'UPDATE');
      await expect(first.archiveTenant('torn')).to.be.rejectedWith(/home commit fails/);
      await restore();
      expect(await b.hasSchema(archived)).to.equal(true);
      expect((await first.getTenant('torn'))?.status).to.equal('active');
      expect((await first.archiveTenant('torn')).status).to.equal('archived');
      expect(await b.hasSchema(archived)).to.equal(true);
      expect(await b.hasSchema('torn')).to.equal(false);
      await first.destroy();

      // Restored by code with one more migration: b commits the rename and the migration, the registry and the ledger do not.
      const note = noteMigration();
      const tenants = await open({ tenantMigrations: [...tenantMigrations, note.class] });
      restore = await failHomeCommits(a, 'UPDATE');
      await expect(tenants.restoreTenant('torn')).to.be.rejectedWith(/home commit fails/);
      await restore();
      expect(await b.hasSchema('torn')).to.equal(true);
      expect(await hasTable(b, 'torn', 'note')).to.equal(true);
      expect((await tenants.getTenant('torn'))?.status).to.equal('archived');
      expect((await pendingBySlug(tenants))['torn']).to.deep.equal([note.name]);
      expect((await tenants.restoreTenant('torn')).status).to.equal('active');
      expect((await pendingBySlug(tenants))['torn']).to.deep.equal([]);
      expect(await tenants.run('torn', () => tenantContext.getRepository(Client).count())).to.equal(1);

      restore = await failHomeCommits(a, 'DELETE');
      await expect(tenants.dropTenant('torn', { force: true })).to.be.rejectedWith(/home commit fails/);
      await restore();
      expect(await b.hasSchema('torn')).to.equal(false);
      expect((await tenants.getTenant('torn'))?.status).to.equal('dropping');
      await tenants.dropTenant('torn');
      expect(await tenants.getTenant('torn')).to.equal(undefined);
      expect(await a.query("SELECT slug FROM public.tenants_migrations WHERE slug = 'torn'")).to.deep.equal([]);
    });
  });

  it('createTenant off the home server whose home commit failed leaves a marked schema on b that the next createTenant of the name drops; an unmarked stray schema is refused and left alone', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      // A real torn creation: the tenant's transaction commits on b, then the registry's on a fails.
      const restore = await failHomeCommits(a, 'INSERT');
      await expect(tenants.createTenant('torn', { server: 'b' })).to.be.rejectedWith(TenantProvisioningError, /home commit fails/);
      await restore();
      expect(await b.hasSchema('torn')).to.equal(true);
      const [{ mark }] = await b.query<{ mark: string | null }>("SELECT obj_description('torn'::regnamespace, 'pg_namespace') AS mark");
      // The registry's identity is in its table's comment on the home server.
      const [{ identity }] = await a.query<{ identity: string }>("SELECT obj_description('public.tenants'::regclass, 'pg_class') AS identity");
      const registryId = identity.replace(/^typeorm-tenants registry /, '');
      expect(registryId).to.match(/^[0-9a-f-]{36}$/);
      expect(mark).to.equal(`typeorm-tenants: schema of tenant "torn" of registry ${registryId}`);
      expect(await tenants.getTenant('torn')).to.equal(undefined);
      await b.query("INSERT INTO torn.client (name, email) VALUES ('ghost', 'ghost@b.test')");
      expect((await tenants.createTenant('torn', { server: 'b' })).server).to.equal('b');
      expect(await b.query('SELECT * FROM torn.client')).to.deep.equal([]);
      expect((await pendingBySlug(tenants))['torn']).to.deep.equal([]);

      // Made by hand as the library marks them: the remains of a creation, dropped.
      await b.query('CREATE SCHEMA orphan');
      await b.query('CREATE TABLE orphan.leftover (x int)');
      await b.query('INSERT INTO orphan.leftover VALUES (1)');
      await b.query(`COMMENT ON SCHEMA orphan IS 'typeorm-tenants: schema of tenant "orphan" of registry ${registryId}'`);
      expect((await tenants.createTenant('orphan', { server: 'b' })).server).to.equal('b');
      expect(await b.tablesOf('orphan')).to.deep.equal(['client', 'migrations', 'project']);
      expect(await tenants.run('orphan', () => tenantContext.getRepository(Client).count())).to.equal(0);

      // Not marked (or marked by someone else): never the library's to drop.
      for (const [schema, comment] of [
        ['stray', null],
        ['billing', 'owned by the billing team'],
        // Marked by the library for another registry sharing server b.
        ['other', 'typeorm-tenants: schema of tenant "other" of registry 00000000-0000-4000-8000-000000000000'],
      ] as const) {
        await b.query(`CREATE SCHEMA ${schema}`);
        await b.query(`CREATE TABLE ${schema}.keep (x int)`);
        await b.query(`INSERT INTO ${schema}.keep VALUES (7)`);
        if (comment !== null) await b.query(`COMMENT ON SCHEMA ${schema} IS '${comment}'`);
        await expect(tenants.createTenant(schema, { server: 'b' })).to.be.rejectedWith(TenantAlreadyExistsError);
        expect(await b.tablesOf(schema), schema).to.deep.equal(['keep']);
        expect(await b.query(`SELECT x FROM ${schema}.keep`), schema).to.deep.equal([{ x: 7 }]);
        const [row] = await b.query<{ mark: string | null }>(`SELECT obj_description('${schema}'::regnamespace, 'pg_namespace') AS mark`);
        expect(row!.mark, schema).to.equal(comment);
        expect(await tenants.getTenant(schema), schema).to.equal(undefined);
        expect(await a.query('SELECT 1 FROM public.tenants_migrations WHERE slug = $1', [schema]), schema).to.deep.equal([]);
      }
    });
  });
});
