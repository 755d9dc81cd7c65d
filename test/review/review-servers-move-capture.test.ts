import { expect } from 'chai';
import { Client, Project } from '../../entities';
import { tenantContext, type TenantDataSourceManager } from '../../src';
import { sleep } from '../support/fixtures';
import { useSecondServer, withTwoServers } from '../support/second-server';

/**
 * Adversarial review of the change capture of moveTenant (statement
 * triggers noting written tables into typeorm_tenants_moves.touched, whose
 * primary key is (move_id, table_name), with ON CONFLICT DO NOTHING).
 */

async function fillClientsAndProjects(tenants: TenantDataSourceManager, slug: string, rows: number): Promise<void> {
  await tenants.run(slug, async () => {
    await tenantContext.query(`INSERT INTO client (name, email) SELECT 'n' || g, 'e' || g || '@x.test' FROM generate_series(1, $1) g`, [rows]);
    await tenantContext.query(`INSERT INTO project (name, client_id) SELECT 'p' || g, g FROM generate_series(1, $1) g`, [rows]);
  });
}

/** Resolves once the move reports its first copied table (the capture triggers are in place then). */
function copying(): { onProgress: (p: { step: string }) => void; started: Promise<void> } {
  let resolve!: () => void;
  const started = new Promise<void>((r) => (resolve = r));
  return {
    started,
    onProgress: (p) => {
      if (p.step === 'copying') resolve();
    },
  };
}

describe('review: moveTenant change capture', function () {
  this.timeout(120_000);
  const second = useSecondServer();

  it('two different tenants of one server moved at once (their first moves) both succeed', async () => {
    await withTwoServers(second, async ({ b, open }) => {
      const tenants = await open();
      const other = await open();
      for (const slug of ['m1', 'm2', 'm3', 'm4']) {
        await tenants.createTenant(slug, { server: 'a' });
        await fillClientsAndProjects(tenants, slug, 200);
      }
      const results = await Promise.allSettled([
        tenants.moveTenant('m1', { server: 'b' }),
        other.moveTenant('m2', { server: 'b' }),
        tenants.moveTenant('m3', { server: 'b' }),
        other.moveTenant('m4', { server: 'b' }),
      ]);
      const failures = results.flatMap((r, i) => (r.status === 'rejected' ? [`m${i + 1}: ${String(r.reason)}`] : []));
      expect(failures).to.deep.equal([]);
      for (const slug of ['m1', 'm2', 'm3', 'm4']) expect(await b.query(`SELECT count(*)::int AS n FROM ${slug}.client`)).to.deep.equal([{ n: 200 }]);
    });
  });

  it('two different tenants moved at once once the moves schema exists (a move already ran on that server): both succeed', async () => {
    await withTwoServers(second, async ({ b, open }) => {
      const tenants = await open();
      const other = await open();
      for (const slug of ['first', 'n1', 'n2', 'n3', 'n4']) {
        await tenants.createTenant(slug, { server: 'a' });
        await fillClientsAndProjects(tenants, slug, 200);
      }
      await tenants.moveTenant('first', { server: 'b' });
      const failures: string[] = [];
      for (let round = 0; round < 3; round += 1) {
        const [from, to] = round % 2 === 0 ? ['a', 'b'] : ['b', 'a'];
        void from;
        const results = await Promise.allSettled(['n1', 'n2', 'n3', 'n4'].map((slug, i) => (i % 2 === 0 ? tenants : other).moveTenant(slug, { server: to! })));
        failures.push(...results.flatMap((r, i) => (r.status === 'rejected' ? [`round ${round} n${i + 1}: ${String(r.reason)}`] : [])));
      }
      expect(failures).to.deep.equal([]);
      void b;
    });
  });

  it('during the copy, two transactions writing client and project in opposite orders both commit (no deadlock from the capture notes)', async () => {
    await withTwoServers(second, async ({ b, open }) => {
      const tenants = await open();
      await tenants.createTenant('dl', { server: 'a' });
      await fillClientsAndProjects(tenants, 'dl', 100_000);
      // Without a move, the two transactions do not conflict at all (different rows).
      const pair = () =>
        Promise.allSettled([
          tenants.run('dl', () =>
            tenantContext.transaction(async (em) => {
              await em.getRepository(Client).insert({ name: 't1', email: 't1@x.test' });
              await sleep(300);
              await em.getRepository(Project).insert({ name: 't1', client: { id: 1 } as Client });
            }),
          ),
          tenants.run('dl', () =>
            tenantContext.transaction(async (em) => {
              await em.getRepository(Project).insert({ name: 't2', client: { id: 2 } as Client });
              await sleep(300);
              await em.getRepository(Client).insert({ name: 't2', email: 't2@x.test' });
            }),
          ),
        ]);
      const control = await pair();
      expect(control.map((r) => (r.status === 'rejected' ? String(r.reason) : 'ok'))).to.deep.equal(['ok', 'ok']);
      const progress = copying();
      const move = tenants.moveTenant('dl', { server: 'b', onProgress: progress.onProgress });
      await progress.started;
      const during = await pair();
      await move;
      expect(during.map((r) => (r.status === 'rejected' ? String(r.reason) : 'ok'))).to.deep.equal(['ok', 'ok']);
      expect(await b.query(`SELECT count(*)::int AS n FROM dl.client WHERE name IN ('t1', 't2')`)).to.deep.equal([{ n: 4 }]);
    });
  });

  it('during the copy, a write to a table is not held up by another open transaction that wrote the same table (writers are not serialised by the capture)', async () => {
    await withTwoServers(second, async ({ open }) => {
      const tenants = await open();
      await tenants.createTenant('ser', { server: 'a' });
      await fillClientsAndProjects(tenants, 'ser', 100_000);
      const progress = copying();
      const move = tenants.moveTenant('ser', { server: 'b', onProgress: progress.onProgress });
      await progress.started;
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      let wrote!: () => void;
      const firstWrote = new Promise<void>((r) => (wrote = r));
      const long = tenants.run('ser', () =>
        tenantContext.transaction(async (em) => {
          await em.getRepository(Client).insert({ name: 'long', email: 'long@x.test' });
          wrote();
          await gate;
        }),
      );
      await firstWrote;
      const started = Date.now();
      const quick = await Promise.race([
        tenants.run('ser', () => tenantContext.getRepository(Client).insert({ name: 'quick', email: 'quick@x.test' })).then(() => Date.now() - started),
        sleep(1500).then(() => 'blocked'),
      ]);
      release();
      await long;
      await move;
      expect(quick, 'a single-row insert during the copy').to.be.a('number');
    });
  });

  it("a tenant's own write during the copy that drops the capture trigger (raw SQL in its run, schema isolation) does not make the move lose acknowledged rows: the move notices or copies them", async () => {
    await withTwoServers(second, async ({ b, open }) => {
      const tenants = await open();
      await tenants.createTenant('evade', { server: 'a' });
      await fillClientsAndProjects(tenants, 'evade', 50_000);
      const progress = copying();
      const move = tenants.moveTenant('evade', { server: 'b', onProgress: progress.onProgress });
      await progress.started;
      // A migration-less ALTER is what a careless tenant tool could do too ("disable all triggers for a bulk load").
      const acknowledged = await tenants
        .run('evade', () =>
          tenantContext.transaction(async (em) => {
            await em.query('ALTER TABLE client DISABLE TRIGGER USER');
            await em.getRepository(Client).insert({ name: 'bulk', email: 'bulk@x.test' });
            await em.query('ALTER TABLE client ENABLE TRIGGER USER');
          }),
        )
        .then(
          () => true,
          () => false,
        );
      const moved = await move.then(
        () => true,
        () => false,
      );
      if (acknowledged && moved) {
        expect(await b.query(`SELECT count(*)::int AS n FROM evade.client WHERE email = 'bulk@x.test'`)).to.deep.equal([{ n: 1 }]);
      }
    });
  });
});
