import { expect } from 'chai';
import { Client } from '../../entities';
import { tenantMigrations } from '../../migrations';
import { TenancyError, TenantAlreadyExistsError, TenantMovedError, tenantContext, type TenantDataSourceManager } from '../../src';
import { sleep } from '../support/fixtures';
import { migration } from '../support/tenant-migrations';
import { fillClients, copiesOn, useSecondServer, withTwoServers, type ServerDatabase } from '../support/second-server';

/** Adversarial review: moves racing writers, other moves, creations, drops, archives and migrations. */

/** Where the tenant is: its registry server, and which servers hold its schema. */
async function whereIs(tenants: TenantDataSourceManager, a: ServerDatabase, b: ServerDatabase, slug: string, schema: string) {
  const record = await tenants.getTenant(slug);
  return { registry: record?.server, status: record?.status, onA: await copiesOn(a, schema), onB: await copiesOn(b, schema) };
}

describe('review: moveTenant under races', function () {
  this.timeout(90_000);
  const second = useSecondServer();

  it('a write that waited on the freeze rejects with TenantMovedError (as documented), and its row is nowhere', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await tenants.createTenant('w1', { server: 'a' });
      await fillClients(tenants, 'w1', 20_000);
      let writer: Promise<unknown> | undefined;
      await tenants.moveTenant('w1', {
        server: 'b',
        onProgress: (p) => {
          if (p.step === 'copying' && writer === undefined) {
            writer = tenants
              .run('w1', () => tenantContext.getRepository(Client).insert({ name: 'late', email: 'late@x.test' }))
              .then(
                () => 'acknowledged',
                (error: unknown) => error,
              );
          }
        },
      });
      const outcome = await writer;
      const onB = await b.query<{ n: number }>(`SELECT count(*)::int AS n FROM w1.client WHERE email = 'late@x.test'`);
      if (outcome === 'acknowledged') {
        expect(onB).to.deep.equal([{ n: 1 }]);
      } else {
        expect(onB).to.deep.equal([{ n: 0 }]);
        expect(outcome, `the waiting write failed with ${String(outcome)}`).to.be.instanceOf(TenantMovedError);
      }
      expect(await copiesOn(a, 'w1')).to.deep.equal([]);
    });
  });

  it('a transaction opened before the freeze (a read, then a write after the freeze began): its write is either on the target or refused, never in the old copy; the run then retried lands on b', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await tenants.createTenant('tx1', { server: 'a' });
      await fillClients(tenants, 'tx1', 5000);
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      let readDone!: () => void;
      const read = new Promise<void>((resolve) => (readDone = resolve));
      const inTx = tenants
        .run('tx1', () =>
          tenantContext.transaction(async (em) => {
            await em.query('SELECT count(*) FROM client');
            readDone();
            await gate;
            await em.getRepository(Client).insert({ name: 'tx', email: 'tx@x.test' });
          }),
        )
        .then(
          () => 'acknowledged',
          (error: unknown) => error,
        );
      await read;
      const moving = tenants.moveTenant('tx1', {
        server: 'b',
        onProgress: (p) => {
          if (p.step === 'copying') release();
        },
      });
      const [moved, outcome] = await Promise.all([moving, inTx]);
      expect(moved.moved).to.equal(true);
      const onB = (await b.query<{ n: number }>(`SELECT count(*)::int AS n FROM tx1.client WHERE email = 'tx@x.test'`))[0]!.n;
      if (outcome === 'acknowledged') expect(onB).to.equal(1);
      else {
        expect(onB).to.equal(0);
        expect(outcome).to.be.instanceOf(TenancyError);
      }
      expect(await copiesOn(a, 'tx1')).to.deep.equal([]);
      await tenants.run('tx1', () => tenantContext.getRepository(Client).insert({ name: 'again', email: 'again@x.test' }));
      expect(await b.query(`SELECT count(*)::int AS n FROM tx1.client WHERE email = 'again@x.test'`)).to.deep.equal([{ n: 1 }]);
    });
  });

  it('a second manager whose cached record still names a: its write after the move is a TenantMovedError (nothing on a), and its next run reaches b', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const mover = await open();
      const other = await open({ tenantRecordTtlMs: 60_000 });
      await mover.createTenant('stale', { server: 'a' });
      await other.run('stale', () => tenantContext.getRepository(Client).insert({ name: 'first', email: 'first@x.test' }));
      await mover.moveTenant('stale', { server: 'b' });
      const outcome = await other.run('stale', () => tenantContext.getRepository(Client).insert({ name: 'x', email: 'x@x.test' })).catch((e: unknown) => e);
      expect(outcome).to.be.instanceOf(TenantMovedError);
      expect(await copiesOn(a, 'stale')).to.deep.equal([]);
      await other.run('stale', () => tenantContext.getRepository(Client).insert({ name: 'y', email: 'y@x.test' }));
      expect((await b.query<{ e: string }>(`SELECT email AS e FROM stale.client ORDER BY id`)).map((r) => r.e)).to.deep.equal(['first@x.test', 'y@x.test']);
    });
  });

  it('the same tenant moved to b twice at once: one moves, the other reports moved: false; rows once on b, nothing left on a', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      const other = await open();
      await tenants.createTenant('twice', { server: 'a' });
      await fillClients(tenants, 'twice', 3000);
      const results = await Promise.allSettled([tenants.moveTenant('twice', { server: 'b' }), other.moveTenant('twice', { server: 'b' })]);
      const summary = results.map((r) => (r.status === 'fulfilled' ? r.value.moved : String(r.reason)));
      expect(summary.sort()).to.deep.equal([false, true]);
      expect(await whereIs(tenants, a, b, 'twice', 'twice')).to.deep.equal({ registry: 'b', status: 'active', onA: [], onB: ['twice'] });
      expect(await b.query(`SELECT count(*)::int AS n FROM twice.client`)).to.deep.equal([{ n: 3000 }]);
    });
  });

  it('moves to b and back to a at once (two managers): the tenant ends on one server with its rows, no copy left elsewhere', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      const other = await open();
      await tenants.createTenant('pingpong', { server: 'a' });
      await fillClients(tenants, 'pingpong', 3000);
      const results = await Promise.allSettled([
        tenants.moveTenant('pingpong', { server: 'b' }),
        (async () => {
          await sleep(30);
          return other.moveTenant('pingpong', { server: 'a' });
        })(),
      ]);
      for (const r of results) if (r.status === 'rejected') throw r.reason;
      const where = await whereIs(tenants, a, b, 'pingpong', 'pingpong');
      const home = where.registry === 'a' ? a : b;
      expect(where.registry === 'a' ? where.onA : where.onB).to.deep.equal(['pingpong']);
      expect(where.registry === 'a' ? where.onB : where.onA).to.deep.equal([]);
      expect(await home.query(`SELECT count(*)::int AS n FROM pingpong.client`)).to.deep.equal([{ n: 3000 }]);
    });
  });

  it('createTenant of one slug on a and on b at once: exactly one is created, the other is TenantAlreadyExistsError, the schema on one server only', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const one = await open();
      const two = await open();
      for (let i = 0; i < 5; i += 1) {
        const slug = `dup-${i}`;
        const results = await Promise.allSettled([one.createTenant(slug, { server: 'a' }), two.createTenant(slug, { server: 'b' })]);
        const ok = results.filter((r) => r.status === 'fulfilled');
        const bad = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
        expect(ok).to.have.length(1);
        expect(bad[0]!.reason).to.be.instanceOf(TenantAlreadyExistsError);
        const schema = slug.replace('-', '_');
        const where = [(await a.hasSchema(schema)) ? 'a' : '', (await b.hasSchema(schema)) ? 'b' : ''].filter(Boolean);
        expect(where).to.deep.equal([(await one.getTenant(slug))!.server]);
      }
    });
  });

  it('dropTenant({ force }) during a move: the tenant ends dropped (or, if the drop was refused, moved) with no schema or moved copy left on either server', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      const other = await open();
      await tenants.createTenant('dropme', { server: 'a' });
      await fillClients(tenants, 'dropme', 20_000);
      let drop: Promise<unknown> | undefined;
      const move = tenants
        .moveTenant('dropme', {
          server: 'b',
          onProgress: (p) => {
            if (p.step === 'copying' && drop === undefined) drop = other.dropTenant('dropme', { force: true }).then(() => 'dropped', (e: unknown) => e);
          },
        })
        .then((r) => r, (e: unknown) => e);
      const [moved, dropped] = [await move, await drop];
      const where = await whereIs(tenants, a, b, 'dropme', 'dropme');
      if (dropped === 'dropped') {
        expect(where, `move: ${String((moved as Error)?.message ?? JSON.stringify(moved))}`).to.deep.equal({ registry: undefined, status: undefined, onA: [], onB: [] });
      } else {
        expect(dropped).to.be.instanceOf(TenancyError);
        expect(where).to.deep.equal({ registry: 'b', status: 'active', onA: [], onB: ['dropme'] });
      }
    });
  });

  it('archiveTenant during a move: afterwards the registry, the schema and the server agree (archived where the registry says, or moved and active)', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      const other = await open();
      await tenants.createTenant('arch', { server: 'a' });
      await fillClients(tenants, 'arch', 20_000);
      let archive: Promise<unknown> | undefined;
      const moved = await tenants
        .moveTenant('arch', {
          server: 'b',
          onProgress: (p) => {
            if (p.step === 'copying' && archive === undefined) archive = other.archiveTenant('arch').then(() => 'archived', (e: unknown) => e);
          },
        })
        .then((r) => r, (e: unknown) => e);
      const archived = await archive;
      const record = (await tenants.getTenant('arch'))!;
      expect(moved).to.not.be.instanceOf(Error);
      expect(record.server).to.equal('b');
      if (archived === 'archived') {
        expect(record.status).to.equal('archived');
        // The archived schema must be on b, where the registry says the tenant is; restoring it must work.
        await tenants.restoreTenant('arch');
        expect(await b.query(`SELECT count(*)::int AS n FROM arch.client`)).to.deep.equal([{ n: 20_000 }]);
      } else {
        expect(record.status).to.equal('active');
      }
      expect(await copiesOn(a, 'arch')).to.deep.equal([]);
    });
  });

  it('migrateTenants during a move: the tenant ends migrated (or pending) on b, its migrations table and the ledger equal', async () => {
    await withTwoServers(second, async ({ a, b, open, manager }) => {
      const old = await open();
      await old.createTenant('mig', { server: 'a' });
      await fillClients(old, 'mig', 20_000);
      await old.destroy();
      const Later = migration('ReviewRaceLater', undefined, async (r) => {
        await r.query(`ALTER TABLE client ADD COLUMN review_race int`);
      });
      const tenants = manager({ tenantMigrations: [...tenantMigrations, Later] });
      await tenants.initialize();
      const other = manager({ tenantMigrations: [...tenantMigrations, Later] });
      await other.initialize();
      let fleet: Promise<unknown> | undefined;
      const moved = await tenants
        .moveTenant('mig', {
          server: 'b',
          onProgress: (p) => {
            if (p.step === 'copying' && fleet === undefined) fleet = other.migrateTenants().then((r) => r, (e: unknown) => e);
          },
        })
        .then((r) => r, (e: unknown) => e);
      const report = await fleet;
      expect(moved).to.not.be.instanceOf(Error);
      expect(report).to.not.be.instanceOf(Error);
      const own = (await b.query<{ name: string }>(`SELECT name FROM mig.migrations ORDER BY name`)).map((r) => r.name);
      const ledger = (await a.query<{ name: string }>(`SELECT name FROM public.tenants_migrations WHERE slug = 'mig' ORDER BY name`)).map((r) => r.name);
      expect(ledger, JSON.stringify(report)).to.deep.equal(own);
      expect(await copiesOn(a, 'mig')).to.deep.equal([]);
    });
  });
});
