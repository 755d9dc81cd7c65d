import { expect } from 'chai';
import { Client } from '../../entities';
import { tenantMigrations } from '../../migrations';
import { DatabaseUnreachableError, tenantContext, type FleetReport, type TenantDataSourceManager } from '../../src';
import { sleep } from '../support/fixtures';
import { migration } from '../support/tenant-migrations';
import { withTwoServers, useSecondServer } from '../support/second-server';

/** Not a speed assertion: a refused connection fails at once, and this bound only catches a hang (a 2-core machine under load). */
const FAIL_FAST_BOUND_MS = 5_000;

const lines = (report: FleetReport): Array<[string, string, string | undefined]> => report.results.map((r) => [r.slug, r.status, r.error?.code]);

/** Waits until the pool of `server` has dropped the connections the stopped server closed (it reports each to onPoolError). */
async function poolEmptied(tenants: TenantDataSourceManager, server: string): Promise<void> {
  for (let i = 0; i < 100 && tenants.stats().servers[server]!.total > 0; i += 1) await sleep(50);
  expect(tenants.stats().servers[server]!.total, `pool of ${server} after its server stopped`).to.equal(0);
}

/** How a call settled, and after how long. */
async function timed(call: () => Promise<unknown>): Promise<{ error: unknown; ms: number }> {
  const started = performance.now();
  const error = await call().then(
    () => undefined,
    (caught: unknown) => caught,
  );
  return { error, ms: performance.now() - started };
}

describe('servers: a server that is down', function () {
  this.timeout(90_000);
  const second = useSecondServer();

  it('initialize() while a non-home server is down rejects with DatabaseUnreachableError naming it and leaves no connection open; once it is back, initialize() again succeeds', async () => {
    await withTwoServers(second, async ({ a, b, manager }) => {
      await second.stop();
      const tenants = manager();
      const { error, ms } = await timed(() => tenants.initialize());
      expect(error).to.be.instanceOf(DatabaseUnreachableError);
      expect((error as Error).message).to.contain('could not connect to server "b"');
      expect(ms).to.be.below(FAIL_FAST_BOUND_MS);
      // The home server's pool, opened alongside, was closed again.
      for (let i = 0; i < 100 && (await a.connections()) > 0; i += 1) await sleep(50);
      expect(await a.connections()).to.equal(0);
      await second.start();
      await tenants.initialize();
      expect((await tenants.createTenant('late', { server: 'b' })).server).to.equal('b');
      expect(await b.hasSchema('late')).to.equal(true);
    });
  });

  it('its tenants fail fast with DatabaseUnreachableError naming server "b", the home server\'s keep working, fleet runs report b\'s tenants failed and go on; once it is back, everything works again', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const poolErrors: Error[] = [];
      const onPoolError = (error: Error): void => {
        poolErrors.push(error);
      };
      const first = await open({ onPoolError });
      for (const slug of ['up-1', 'up-2']) await first.createTenant(slug, { server: 'a' });
      for (const slug of ['down-1', 'down-2']) await first.createTenant(slug, { server: 'b' });
      for (const slug of ['up-1', 'down-1']) await first.run(slug, () => tenantContext.getRepository(Client).insert({ name: slug, email: `${slug}@x.test` }));
      await first.destroy();

      const note = migration('AddNote', undefined, async (runner) => {
        await runner.query('CREATE TABLE note (id int)');
      });
      const tenants = await open({ onPoolError, tenantMigrations: [...tenantMigrations, note] });
      // down-1 is served (its DataSource cached, a connection of b's pool idle) before b goes down; down-2 never was.
      expect(await tenants.run('down-1', () => tenantContext.getRepository(Client).count())).to.equal(1);

      await second.stop();
      await poolEmptied(tenants, 'b');
      const password = new URL(b.url).password;
      for (const slug of ['down-1', 'down-2']) {
        const { error, ms } = await timed(() => tenants.run(slug, () => tenantContext.getRepository(Client).count()));
        expect(error, slug).to.be.instanceOf(DatabaseUnreachableError);
        const unreachable = error as DatabaseUnreachableError;
        expect(unreachable.code).to.equal('DATABASE_UNREACHABLE');
        expect(unreachable.statusCode).to.equal(503);
        expect(unreachable.message).to.contain('could not connect to server "b" (postgres://postgres@127.0.0.1:');
        expect(unreachable.message).to.contain(`/${b.name})`);
        expect(unreachable.message).to.not.contain(password);
        expect(ms, `${slug} failed after ${Math.round(ms)} ms`).to.be.below(FAIL_FAST_BOUND_MS);
      }
      // The home server's tenants, the registry and the ledger are all on a: served as before.
      expect(await tenants.run('up-1', () => tenantContext.getRepository(Client).count())).to.equal(1);
      expect(await tenants.run('up-2', () => tenantContext.query<Array<{ db: string }>>('SELECT current_database() AS db'))).to.deep.equal([{ db: a.name }]);
      expect((await tenants.listTenants()).map((r) => [r.slug, r.server])).to.deep.equal([
        ['down-1', 'b'],
        ['down-2', 'b'],
        ['up-1', 'a'],
        ['up-2', 'a'],
      ]);
      expect((await tenants.createTenant('up-3', { server: 'a' })).server).to.equal('a');
      const refused = await timed(() => tenants.createTenant('down-3', { server: 'b' }));
      expect(refused.error).to.be.instanceOf(DatabaseUnreachableError);
      expect((refused.error as Error).message).to.contain('server "b"');
      expect(await tenants.getTenant('down-3')).to.equal(undefined);

      const during = await tenants.migrateTenants();
      expect(lines(during)).to.deep.equal([
        ['down-1', 'failed', 'DATABASE_UNREACHABLE'],
        ['down-2', 'failed', 'DATABASE_UNREACHABLE'],
        ['up-1', 'migrated', undefined],
        ['up-2', 'migrated', undefined],
        ['up-3', 'up-to-date', undefined],
      ]);
      expect(during.results[0]!.error?.message).to.contain('server "b"');
      const status = Object.fromEntries((await tenants.migrationStatus()).map((s) => [s.slug, s.pending]));
      expect(status).to.deep.equal({ 'down-1': [note.name], 'down-2': [note.name], 'up-1': [], 'up-2': [], 'up-3': [] });
      const across = await tenants.queryAcrossTenants<{ db: string }>('SELECT current_database() AS db');
      expect(across.rows.map((r) => r.tenant)).to.deep.equal(['up-1', 'up-2', 'up-3']);
      expect(across.failures.map((f) => [f.slug, f.error.code])).to.deep.equal([
        ['down-1', 'DATABASE_UNREACHABLE'],
        ['down-2', 'DATABASE_UNREACHABLE'],
      ]);

      // Lifecycle: an archive changes nothing anywhere; a drop stops at "dropping" (not served), completed once b is back.
      const archiving = await timed(() => tenants.archiveTenant('down-1'));
      expect(archiving.error).to.be.instanceOf(DatabaseUnreachableError);
      expect((await tenants.getTenant('down-1'))?.status).to.equal('active');
      const dropping = await timed(() => tenants.dropTenant('down-2', { force: true }));
      expect(dropping.error).to.be.instanceOf(DatabaseUnreachableError);
      expect((await tenants.getTenant('down-2'))?.status).to.equal('dropping');

      await second.start();
      expect(await tenants.run('down-1', () => tenantContext.getRepository(Client).count())).to.equal(1);
      expect(await b.hasSchema('down_2')).to.equal(true);
      await tenants.dropTenant('down-2');
      expect(await b.hasSchema('down_2')).to.equal(false);
      expect(await tenants.getTenant('down-2')).to.equal(undefined);
      expect((await tenants.createTenant('down-2', { server: 'b' })).server).to.equal('b');
      const after = await tenants.migrateTenants();
      expect(lines(after)).to.deep.equal([
        ['down-1', 'migrated', undefined],
        // Made again just above, with every migration.
        ['down-2', 'up-to-date', undefined],
        ['up-1', 'up-to-date', undefined],
        ['up-2', 'up-to-date', undefined],
        ['up-3', 'up-to-date', undefined],
      ]);
      expect(await b.query("SELECT to_regclass('down_1.note')::text AS note")).to.deep.equal([{ note: 'down_1.note' }]);
      expect(await b.query("SELECT to_regclass('down_2.note')::text AS note")).to.deep.equal([{ note: 'down_2.note' }]);
      expect((await tenants.createTenant('down-3', { server: 'b' })).server).to.equal('b');
      expect(await tenants.run('down-3', () => tenantContext.query<Array<{ db: string }>>('SELECT current_database() AS db'))).to.deep.equal([{ db: b.name }]);
      // The closed idle connection was reported, not thrown.
      expect(poolErrors.length).to.be.at.least(1);
    });
  });
});
