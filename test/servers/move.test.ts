import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { expect } from 'chai';
import { Client } from '../../entities';
import {
  DatabaseUnreachableError,
  InvalidArgumentError,
  InvalidTenantStateError,
  TenantMoveError,
  TenantMovedError,
  tenantContext,
  type MoveTenantProgress,
  type MoveTenantResult,
  type TenantDataSourceManager,
} from '../../src';
import { CLI_MAIN, finished, type CliResult } from '../cli/cli-support';
import { sleep } from '../support/fixtures';
import { serverOptions, useSecondServer, withTwoServers, type ServerDatabase } from '../support/second-server';
import {
  MOVED_NAME,
  fingerprint,
  holdSchemaRow,
  holdTenantLock,
  moveNotesOn,
  movedCopiesOn,
  movedMark,
  pollingForLock,
  registryId,
  registryServer,
  seedTenant,
  sequenceState,
  tableLocks,
  tenantFingerprint,
  tenantMark,
  userSchemasOn,
  userTriggersOn,
  waitFor,
} from './move-support';

/** An error a write may meet while its tenant moves: refused cleanly, nothing of it written. */
function refusal(error: unknown): string | undefined {
  if (error instanceof TenantMovedError) return 'TenantMovedError';
  const code = (error as { code?: unknown } | undefined)?.code;
  return code === '3F000' || code === '42P01' ? `raw ${String(code)}` : undefined;
}

const insertClient = (tenants: TenantDataSourceManager, slug: string, email: string, name = 'worker'): Promise<unknown> =>
  tenants.run(slug, () => tenantContext.getRepository(Client).insert({ name, email }));

const countClients = (tenants: TenantDataSourceManager, slug: string): Promise<number> => tenants.run(slug, () => tenantContext.getRepository(Client).count());

/** What `promise` gave within `ms`, or BLOCKED (it goes on; its outcome is dropped). */
const BLOCKED = Symbol('blocked');
async function within<T>(ms: number, promise: Promise<T>): Promise<T | typeof BLOCKED> {
  promise.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<typeof BLOCKED>((resolvePromise) => (timer = setTimeout(() => resolvePromise(BLOCKED), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** The messages of an error and its causes, joined. */
function causes(error: unknown): string {
  const messages: string[] = [];
  for (let e = error, depth = 0; e !== undefined && e !== null && depth < 10; e = (e as { cause?: unknown }).cause, depth += 1) {
    messages.push(e instanceof Error ? e.message : String(e));
  }
  return messages.join(' <- ');
}

/** What a server holds of tenants, as a comparable value: its tenant schemas (moved copies and archives included) and the moved copies with their marks. */
async function footprint(db: ServerDatabase): Promise<{ schemas: string[]; moved: Array<{ schema: string; mark: string | null }> }> {
  return { schemas: await userSchemasOn(db), moved: await movedCopiesOn(db) };
}

describe('servers: moveTenant', function () {
  this.timeout(90_000);
  const second = useSecondServer();

  it('copies every row of every table to the other server with sequences continuing, drops the source, switches the registry, reports each table; back with keepSource leaves a marked copy; same server is a no-op; bad server and archived tenant are refused', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await tenants.createTenant('mv', { server: 'a' });
      await tenants.createTenant('mv-neighbour', { server: 'a' });
      await seedTenant(tenants, 'mv', 3000, 2000, 10);
      await seedTenant(tenants, 'mv-neighbour', 5, 5);
      const before = await tenantFingerprint(a, 'mv');
      expect(before.client.rows).to.equal(2990);
      expect(before.project.rows).to.equal(2000);
      const clientSeq = await sequenceState(a, 'mv', 'client_id_seq');
      expect(clientSeq.last).to.equal(3000);
      const migrationsOnA = await a.query('SELECT id, timestamp, name FROM mv.migrations ORDER BY id');
      const neighbour = await tenantFingerprint(a, 'mv-neighbour'.replace('-', '_'));

      const progress: MoveTenantProgress[] = [];
      const result = await tenants.moveTenant('mv', { server: 'b', onProgress: (p) => progress.push(p) });
      expect(result).to.include({ slug: 'mv', from: 'a', to: 'b', moved: true, tables: 2, rows: '4990' });
      expect(result.recopied).to.deep.equal([]); // nothing was written during the copy
      expect(result).to.not.have.property('keptSchema');
      expect(result.freezeMs).to.be.a('number').at.least(0);
      expect(result.freezeMs).to.be.at.most(result.ms);
      expect(result.ms).to.be.above(0);

      // Progress: each table once, counts adding up, then the switch.
      const copying = progress.filter((p) => p.step === 'copying');
      expect(copying.map((p) => p.table).sort()).to.deep.equal(['client', 'project']);
      expect(copying.map((p) => p.tablesDone)).to.deep.equal([1, 2]);
      expect(copying.every((p) => p.tables === 2)).to.equal(true);
      expect(copying.at(-1)!.rowsCopied).to.equal('4990');
      expect(progress.at(-1)).to.deep.include({ step: 'switched', tablesDone: 2, tables: 2, rowsCopied: '4990' });
      expect(progress.map((p) => p.step)).to.deep.equal(['copying', 'copying', 'switched']);

      // Physically: every row on b, equal to the source's; nothing left on a.
      expect(await tenantFingerprint(b, 'mv')).to.deep.equal(before);
      expect(await b.query('SELECT id, timestamp, name FROM mv.migrations ORDER BY id')).to.deep.equal(migrationsOnA);
      expect(await sequenceState(b, 'mv', 'client_id_seq')).to.deep.equal(clientSeq);
      expect(await a.hasSchema('mv')).to.equal(false);
      expect(await movedCopiesOn(a)).to.deep.equal([]);
      expect(await movedCopiesOn(b)).to.deep.equal([]);
      expect(await userSchemasOn(a)).to.deep.equal(['mv_neighbour']);
      expect(await userSchemasOn(b)).to.deep.equal(['mv']);
      expect(await userTriggersOn(b, 'mv')).to.deep.equal([]);
      expect(await moveNotesOn(a)).to.equal(0);
      expect(await registryServer(a, 'mv')).to.equal('b');
      expect((await tenants.getTenant('mv'))!.server).to.equal('b');
      // The neighbour on a is untouched.
      expect(await tenantFingerprint(a, 'mv_neighbour')).to.deep.equal(neighbour);
      expect(await registryServer(a, 'mv-neighbour')).to.equal(null);

      // Served from b; the sequence continues after the source's last value (not max(id), which a deleted tail put lower).
      const inserted = await tenants.run('mv', () => tenantContext.getRepository(Client).save({ name: 'after', email: 'after@mv.test' }));
      expect(inserted.id).to.equal(3001);
      expect(await b.query("SELECT id FROM mv.client WHERE email = 'after@mv.test'")).to.deep.equal([{ id: 3001 }]);
      const project = await tenants.run('mv', () => tenantContext.query<Array<{ id: number }>>("INSERT INTO project (name, client_id) VALUES ('p', 1) RETURNING id"));
      expect(project[0]!.id).to.equal(2001);
      expect(await countClients(tenants, 'mv')).to.equal(2991);
      const onB = await tenantFingerprint(b, 'mv');

      // Back to a, keeping the source: a marked copy stays on b, with the rows.
      const id = await registryId(a);
      const back = await tenants.moveTenant('mv', { server: 'a', keepSource: true });
      expect(back).to.include({ slug: 'mv', from: 'b', to: 'a', moved: true, tables: 2, rows: '4992' });
      expect(back.keptSchema).to.match(MOVED_NAME);
      expect(await tenantFingerprint(a, 'mv')).to.deep.equal(onB);
      expect(await b.hasSchema('mv')).to.equal(false);
      expect(await movedCopiesOn(b)).to.deep.equal([{ schema: back.keptSchema, mark: movedMark(id, 'mv', 'a', true) }]);
      expect(await fingerprint(b, back.keptSchema!, 'client')).to.deep.equal(onB.client);
      expect(await userTriggersOn(b, back.keptSchema!)).to.deep.equal([]);
      expect(await moveNotesOn(b)).to.equal(0);
      expect(await movedCopiesOn(a)).to.deep.equal([]);
      expect(await registryServer(a, 'mv')).to.equal(null);
      expect(await countClients(tenants, 'mv')).to.equal(2991);

      // Already there: nothing moves; a kept copy stays kept.
      const again = await tenants.moveTenant('mv', { server: 'a' });
      expect(again).to.include({ slug: 'mv', from: 'a', to: 'a', moved: false, tables: 0, rows: '0' });
      expect(await movedCopiesOn(b)).to.have.length(1);
      expect(await tenantFingerprint(a, 'mv')).to.deep.equal(onB);

      // A server the manager does not have: refused, nothing changed.
      const aBefore = await footprint(a);
      const bBefore = await footprint(b);
      for (const server of ['c', 'A', '', undefined as unknown as string]) {
        await expect(tenants.moveTenant('mv', { server }), String(server)).to.be.rejectedWith(InvalidArgumentError);
      }
      expect(await footprint(a)).to.deep.equal(aBefore);
      expect(await footprint(b)).to.deep.equal(bBefore);
      expect(await registryServer(a, 'mv')).to.equal(null);

      // An archived tenant is refused; it stays archived where it was.
      await tenants.archiveTenant('mv-neighbour');
      const archivedA = await footprint(a);
      const error = await tenants.moveTenant('mv-neighbour', { server: 'b' }).catch((e: unknown) => e);
      expect(error).to.be.instanceOf(InvalidTenantStateError);
      expect(await footprint(a)).to.deep.equal(archivedA);
      expect(await footprint(b)).to.deep.equal(bBefore);
      expect((await tenants.getTenant('mv-neighbour'))!).to.include({ status: 'archived', server: 'a' });
      await tenants.restoreTenant('mv-neighbour');
      expect(await tenantFingerprint(a, 'mv_neighbour')).to.deep.equal(neighbour);
    });
  });

  it('a suspended tenant moves with its rows and stays suspended; resumed, it is served from b', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await tenants.createTenant('sus', { server: 'a' });
      await seedTenant(tenants, 'sus', 20, 5);
      const before = await tenantFingerprint(a, 'sus');
      await tenants.suspendTenant('sus');
      const result = await tenants.moveTenant('sus', { server: 'b' });
      expect(result).to.include({ moved: true, from: 'a', to: 'b', rows: '25' });
      expect((await tenants.getTenant('sus'))!).to.include({ status: 'suspended', server: 'b' });
      expect(await tenantFingerprint(b, 'sus')).to.deep.equal(before);
      expect(await a.hasSchema('sus')).to.equal(false);
      await tenants.resumeTenant('sus');
      expect(await countClients(tenants, 'sus')).to.equal(20);
    });
  });

  it('under the freeze (paused at the source rename, the target committed): reads are served, writes wait; once the source commits they are refused with TenantMovedError and nothing of theirs is on either server; freezeMs covers the wait', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const options = { servers: { a: serverOptions(a.url, 6), b: serverOptions(b.url, 6) } };
      const tenants = await open(options);
      const other = await open(options); // another process, its record cached
      await tenants.createTenant('frz', { server: 'a' });
      await seedTenant(tenants, 'frz', 10, 3);
      expect(await countClients(other, 'frz')).to.equal(10);
      const before = await tenantFingerprint(a, 'frz');
      const id = await registryId(a);

      // The rename of the source schema waits for this transaction: the move stops there, frozen, its copy committed on b.
      const held = await holdSchemaRow(a, 'frz');
      let move: Promise<MoveTenantResult> | undefined;
      let reads: Array<number | typeof BLOCKED> = [];
      try {
        move = tenants.moveTenant('frz', { server: 'b' });
        move.catch(() => undefined);
        await waitFor('the move to reach the rename of the source', () => held.blocking());
        const heldSince = performance.now();
        expect(await tableLocks(a, 'frz', 'ExclusiveLock', true)).to.include.members(['client', 'project']);
        // The target's copy is committed, complete and marked; the registry still names a.
        expect(await tenantFingerprint(b, 'frz')).to.deep.equal(before);
        expect((await b.query<{ mark: string }>("SELECT obj_description('frz'::regnamespace, 'pg_namespace') AS mark"))[0]!.mark).to.equal(tenantMark(id, 'frz'));
        expect(await registryServer(a, 'frz')).to.equal(null);
        // Reads are served while frozen, from a (looked at once the move is released: a blocked read would hold it up).
        reads = [await within(3_000, countClients(tenants, 'frz')), await within(3_000, countClients(other, 'frz'))];
        const waiting = insertClient(tenants, 'frz', 'waited@frz.test').then(
          () => undefined,
          (e: unknown) => e,
        );
        const waitingOther = insertClient(other, 'frz', 'waited-other@frz.test').then(
          () => undefined,
          (e: unknown) => e,
        );
        await waitFor('both writes to wait on the freeze', async () => (await tableLocks(a, 'frz', 'RowExclusiveLock', false)).filter((t) => t === 'client').length === 2);
        await sleep(200);
        const heldFor = performance.now() - heldSince;
        await held.release();
        const result = await move;
        expect(result).to.include({ moved: true, tables: 2, rows: '13' });
        expect(result.recopied).to.deep.equal([]);
        expect(result.freezeMs).to.be.at.least(heldFor);
        expect(result.freezeMs).to.be.at.most(result.ms);

        for (const [label, settled] of [['mover', await waiting], ['other', await waitingOther]] as const) {
          expect(settled, `${label}: ${String(settled)} (${(settled as { code?: string } | undefined)?.code})`).to.be.instanceOf(TenantMovedError);
          expect(settled, label).to.include({ code: 'TENANT_MOVED', statusCode: 503, retryAfterSeconds: 1, slug: 'frz', server: 'b' });
        }
      } finally {
        await held.release();
        await move?.catch(() => undefined);
      }
      // Neither write landed anywhere.
      expect(await tenantFingerprint(b, 'frz')).to.deep.equal(before);
      expect(await a.hasSchema('frz')).to.equal(false);
      expect(await movedCopiesOn(a)).to.deep.equal([]);
      // Retried, they land on b, once.
      await insertClient(tenants, 'frz', 'waited@frz.test');
      await insertClient(other, 'frz', 'waited-other@frz.test');
      expect(await b.query("SELECT email FROM frz.client WHERE email LIKE 'waited%' ORDER BY email")).to.deep.equal([
        { email: 'waited-other@frz.test' },
        { email: 'waited@frz.test' },
      ]);
      // Last (so that a blocked read is reported after the rest was checked): the reads made in the paused freeze were answered.
      expect(reads.map((read) => (read === BLOCKED ? 'blocked for 3 s' : read)), 'reads during the freeze').to.deep.equal([10, 10]);
    });
  });

  it('writes during the first copy (inserts, updates, deletes) are carried over: the tables written, and those referencing them, are copied again under the freeze', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await tenants.createTenant('cu-client', { server: 'a' });
      await tenants.createTenant('cu-project', { server: 'a' });
      await seedTenant(tenants, 'cu-client', 200, 100);
      await seedTenant(tenants, 'cu-project', 200, 100);
      const write = {
        // client written: project references client, so both go again.
        'cu-client': [
          "UPDATE client SET name = 'changed', internal_note = E'\\x01 \\t' WHERE id <= 5",
          'DELETE FROM client WHERE id IN (150, 151) AND NOT EXISTS (SELECT 1 FROM project WHERE client_id IN (150, 151))',
          "INSERT INTO client (name, email) VALUES ('new', 'new@cu.test')",
          'DELETE FROM project WHERE id > 95',
        ],
        // only project written: client is not copied again.
        'cu-project': ["UPDATE project SET name = 'renamed' WHERE id % 3 = 0", "INSERT INTO project (name, client_id) VALUES ('p-new', 7)"],
      } as const;
      for (const [slug, statements] of Object.entries(write)) {
        const schema = slug.replace('-', '_');
        const progress: MoveTenantProgress[] = [];
        const held = await holdTenantLock(b, schema);
        let expected!: Awaited<ReturnType<typeof tenantFingerprint>>;
        let move: Promise<MoveTenantResult> | undefined;
        try {
          move = tenants.moveTenant(slug, { server: 'b', onProgress: (p) => progress.push(p) });
          move.catch(() => undefined);
          // Waiting on b: its snapshot of a is taken, the capture is on, nothing is frozen.
          await waitFor('the move to wait on b', () => pollingForLock(b));
          expect(await tableLocks(a, schema, 'ExclusiveLock', true)).to.deep.equal([]);
          for (const sql of statements) await tenants.run(slug, () => tenantContext.query(sql));
          expected = await tenantFingerprint(a, schema);
        } finally {
          await held.release();
        }
        const result = await move;
        const recopied = slug === 'cu-client' ? ['client', 'project'] : ['project'];
        expect([...result.recopied].sort(), slug).to.deep.equal(recopied);
        expect(await tenantFingerprint(b, schema), slug).to.deep.equal(expected);
        const catchingUp = progress.filter((p) => p.step === 'catching-up');
        expect(catchingUp, slug).to.have.length(1);
        expect([...catchingUp[0]!.recopied!].sort(), slug).to.deep.equal(recopied);
        expect(progress.map((p) => p.step), slug).to.deep.equal(['copying', 'copying', 'catching-up', 'switched']);
        // Rows count the copies again.
        const first = Number(progress.filter((p) => p.step === 'copying').at(-1)!.rowsCopied);
        const again = recopied.reduce((sum, table) => sum + expected[table as 'client' | 'project'].rows, 0);
        expect(result.rows, slug).to.equal(String(first + again));
        expect(await a.hasSchema(schema)).to.equal(false);
        expect(await userTriggersOn(b, schema)).to.deep.equal([]);
        // The sequences too: the next insert follows the one made during the copy.
        const next = await tenants.run(slug, () => tenantContext.query<Array<{ id: number }>>("INSERT INTO project (name, client_id) VALUES ('after', 8) RETURNING id"));
        expect(next[0]!.id, slug).to.equal(slug === 'cu-client' ? 101 : 102);
      }
      expect(await moveNotesOn(a)).to.equal(0);
      expect(await movedCopiesOn(a)).to.deep.equal([]);
    });
  });

  it('a long read running through the move holds up neither the other reads nor the switch: reads of the tenant are answered at once all along', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const options = { servers: { a: serverOptions(a.url, 6), b: serverOptions(b.url, 6) } };
      const tenants = await open(options);
      const readers = await open(options);
      await tenants.createTenant('long', { server: 'a' });
      await seedTenant(tenants, 'long', 500, 200);
      const before = await tenantFingerprint(a, 'long');
      // A report: 3 s on the tenant's client table (its lock held throughout).
      const report = readers.run('long', () => tenantContext.query<Array<{ n: number }>>('SELECT count(*)::int AS n, pg_sleep(3) FROM client'));
      report.catch(() => undefined);
      await waitFor('the report to run', async () => (await a.query("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'")).length === 1);
      const started = performance.now();
      const move = tenants.moveTenant('long', { server: 'b' });
      let settled = false;
      move.then(
        () => (settled = true),
        () => (settled = true),
      );
      const latencies: number[] = [];
      const answers: string[] = [];
      while (!settled) {
        const asked = performance.now();
        let answer = 'served';
        try {
          await countClients(readers, 'long');
        } catch (error) {
          answer = refusal(error) ?? 'failed';
          if (answer === 'failed') throw error;
        }
        latencies.push(Math.round(performance.now() - asked));
        answers.push(`${latencies.at(-1)} ms ${answer}`);
        await sleep(25);
      }
      const result = await move;
      const reportRows = await report.catch((e: unknown) => e);
      expect(result).to.include({ moved: true, rows: '700' });
      expect(await tenantFingerprint(b, 'long')).to.deep.equal(before);
      expect(latencies.length).to.be.above(0);
      // Not a speed assertion: a read that waits for the report (3 s) shows here; an answered one takes milliseconds.
      expect(Math.max(...latencies), `read latencies (ms) during a move of ${Math.round(performance.now() - started)} ms, freezeMs ${result.freezeMs}: ${answers.join(', ')}`).to.be.below(1_000);
      expect(reportRows).to.deep.equal([{ n: 500, pg_sleep: '' }]);
    });
  });

  it('under load from two managers (4 writers, 2 readers): every acknowledged write is on the target exactly once, no refused write landed anywhere, reads never go back, nothing is left on the source', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const options = { tenantRecordTtlMs: 200, servers: { a: serverOptions(a.url, 8), b: serverOptions(b.url, 8) } };
      const tenants = await open(options);
      const other = await open(options); // another process: its cached record names a until the TTL
      const slug = 'busy';
      await tenants.createTenant(slug, { server: 'a' });
      await seedTenant(tenants, slug, 20_000, 5_000);
      expect(await countClients(other, slug)).to.equal(20_000);

      const acknowledged = new Map<string, { worker: number; at: number }>();
      const refusals = new Map<string, number>();
      const unexpected: unknown[] = [];
      let stop = false;
      let movedAt = Number.POSITIVE_INFINITY;
      const note = (error: unknown): boolean => {
        const kind = refusal(error);
        if (kind === undefined) {
          unexpected.push(error);
          stop = true;
          return false;
        }
        refusals.set(kind, (refusals.get(kind) ?? 0) + 1);
        return true;
      };
      const writer = async (manager: TenantDataSourceManager, worker: number): Promise<void> => {
        for (let n = 0; !stop; n += 1) {
          const email = `w${worker}-${n}@x`;
          for (;;) {
            try {
              await insertClient(manager, slug, email);
              acknowledged.set(email, { worker, at: performance.now() });
              break;
            } catch (error) {
              if (!note(error) || stop) return; // a refused write is never acknowledged: it must be nowhere
              await sleep(2);
            }
          }
        }
      };
      const reads: Array<{ reader: number; count: number }> = [];
      const reader = async (manager: TenantDataSourceManager, index: number): Promise<void> => {
        while (!stop) {
          try {
            reads.push({ reader: index, count: await countClients(manager, slug) });
          } catch (error) {
            if (!note(error)) return;
          }
          await sleep(5);
        }
      };
      const workers = [writer(tenants, 0), writer(tenants, 1), writer(other, 2), writer(other, 3), reader(tenants, 0), reader(other, 1)];
      let result: MoveTenantResult;
      try {
        await sleep(300);
        result = await tenants.moveTenant(slug, { server: 'b' });
        movedAt = performance.now();
        await sleep(400);
      } finally {
        stop = true;
        await Promise.all(workers);
      }
      expect(unexpected.map((e) => `${String(e)} (${(e as { code?: string }).code})`)).to.deep.equal([]);
      // A write or read refused because of the move is refused as TenantMovedError, never as the raw missing-schema error.
      expect([...refusals.keys()].filter((kind) => kind !== 'TenantMovedError'), JSON.stringify(Object.fromEntries(refusals))).to.deep.equal([]);
      expect(result).to.include({ moved: true, from: 'a', to: 'b', tables: 2 });
      // The writers wrote during the first copy: client went again, and project (it references client).
      expect([...result.recopied].sort()).to.deep.equal(['client', 'project']);

      // Every worker wrote before and after the move (the other manager's after its TTL).
      for (const worker of [0, 1, 2, 3]) {
        const mine = [...acknowledged.values()].filter((ack) => ack.worker === worker);
        expect(mine.some((ack) => ack.at < movedAt), `worker ${worker} before`).to.equal(true);
        expect(mine.some((ack) => ack.at > movedAt), `worker ${worker} after`).to.equal(true);
      }
      // On b: exactly the acknowledged writes, each once.
      const rows = await b.query<{ email: string; n: number }>(`SELECT email, count(*)::int AS n FROM busy.client WHERE name = 'worker' GROUP BY email`);
      expect(rows.filter((row) => row.n !== 1)).to.deep.equal([]);
      expect(rows.map((row) => row.email).sort()).to.deep.equal([...acknowledged.keys()].sort());
      expect((await fingerprint(b, slug, 'client')).rows).to.equal(20_000 + acknowledged.size);
      // Reads never went back: each reader's counts only grow.
      for (const index of [0, 1]) {
        const counts = reads.filter((r) => r.reader === index).map((r) => r.count);
        expect(counts.length, `reader ${index}`).to.be.above(2);
        for (let i = 1; i < counts.length; i += 1) expect(counts[i], `reader ${index} read ${i}`).to.be.at.least(counts[i - 1]!);
      }
      // Nothing of the tenant on a.
      expect(await a.hasSchema(slug)).to.equal(false);
      expect(await movedCopiesOn(a)).to.deep.equal([]);
      expect(await userTriggersOn(b, slug)).to.deep.equal([]);
      expect(await moveNotesOn(a)).to.equal(0);
      expect(await registryServer(a, slug)).to.equal('b');
      // For the report: which refusals the writers met.
      if (process.env.MOVE_TEST_VERBOSE !== undefined) console.log('    refusals:', Object.fromEntries(refusals), 'acknowledged:', acknowledged.size, 'freezeMs:', result.freezeMs);
    });
  });

  describe('a failure before the switch leaves everything as it was', () => {
    /** The tenant is on a with exactly `before`, writable, b holds nothing but `bSchemas`. */
    async function untouched(
      tenants: TenantDataSourceManager,
      a: ServerDatabase,
      b: ServerDatabase,
      before: Awaited<ReturnType<typeof tenantFingerprint>>,
      bSchemas: string[],
    ): Promise<void> {
      expect(await tenantFingerprint(a, 'fail')).to.deep.equal(before);
      expect(await registryServer(a, 'fail')).to.equal(null);
      expect((await tenants.getTenant('fail'))!.server).to.equal('a');
      expect(await movedCopiesOn(a)).to.deep.equal([]);
      expect(await userSchemasOn(a)).to.deep.equal(['fail']);
      expect(await userSchemasOn(b)).to.deep.equal(bSchemas);
      expect(await movedCopiesOn(b)).to.deep.equal([]);
      // No capture trigger left on the source's tables, no note of the move.
      expect(await userTriggersOn(a, 'fail')).to.deep.equal([]);
      expect(await moveNotesOn(a)).to.equal(0);
      // Served from a, and not frozen any more.
      expect(await countClients(tenants, 'fail')).to.equal(before.client.rows);
      expect(await tableLocks(a, 'fail', 'ExclusiveLock', true)).to.deep.equal([]);
    }

    it('a stray schema of that name on the target the library did not make: InvalidTenantStateError, the stray schema untouched', async () => {
      await withTwoServers(second, async ({ a, b, open }) => {
        const tenants = await open();
        await tenants.createTenant('fail', { server: 'a' });
        await seedTenant(tenants, 'fail', 300, 100);
        const before = await tenantFingerprint(a, 'fail');
        await b.query('CREATE SCHEMA fail; CREATE TABLE fail.keepme (v text); INSERT INTO fail.keepme VALUES ($$mine$$)');
        const error = await tenants.moveTenant('fail', { server: 'b' }).catch((e: unknown) => e);
        expect(error).to.be.instanceOf(InvalidTenantStateError);
        expect((error as Error).message).to.contain('"fail"');
        await untouched(tenants, a, b, before, ['fail']);
        expect(await b.tablesOf('fail')).to.deep.equal(['keepme']);
        expect(await b.query('SELECT v FROM fail.keepme')).to.deep.equal([{ v: 'mine' }]);
        // Writes go on, on a.
        await insertClient(tenants, 'fail', 'still@a.test');
        expect(await a.query("SELECT count(*)::int AS n FROM fail.client WHERE email = 'still@a.test'")).to.deep.equal([{ n: 1 }]);
        // Once the stray schema is gone, the move goes through.
        await b.query('DROP SCHEMA fail CASCADE');
        expect(await tenants.moveTenant('fail', { server: 'b' })).to.include({ moved: true, rows: '401' });
        expect((await fingerprint(b, 'fail', 'client')).rows).to.equal(301);
      });
    });

    it("the target's migrations fail: the move fails, no schema on the target", async () => {
      await withTwoServers(second, async ({ a, b, open }) => {
        const logged: string[] = [];
        const tenants = await open({ logger: (entry) => void logged.push(entry.message) });
        await tenants.createTenant('fail', { server: 'a' });
        await seedTenant(tenants, 'fail', 300, 100);
        const before = await tenantFingerprint(a, 'fail');
        // The first tenant migration's foreign key names public.plan: without it there, it fails on b.
        await b.query('ALTER TABLE public.plan RENAME TO plan_elsewhere');
        const error = await tenants.moveTenant('fail', { server: 'b' }).catch((e: unknown) => e);
        expect(error).to.be.instanceOf(TenantMoveError);
        expect(error).to.include({ code: 'TENANT_MOVE_FAILED', slug: 'fail', server: 'b', switched: false });
        expect(causes(error)).to.match(/CreateClient1700000000001|public\.plan/);
        await untouched(tenants, a, b, before, []);
        expect(logged.some((message) => message.includes('CreateClient1700000000001'))).to.equal(true);
        await b.query('ALTER TABLE public.plan_elsewhere RENAME TO plan');
        expect(await tenants.moveTenant('fail', { server: 'b' })).to.include({ moved: true, rows: '400' });
      });
    });

    it('a failure midway through the copy (after the first table, in the target transaction): rolled back on the target', async () => {
      await withTwoServers(second, async ({ a, b, open }) => {
        const tenants = await open();
        await tenants.createTenant('fail', { server: 'a' });
        await seedTenant(tenants, 'fail', 300, 100);
        const before = await tenantFingerprint(a, 'fail');
        const boom = new Error('boom after the first table');
        const seen: MoveTenantProgress[] = [];
        const error = await tenants
          .moveTenant('fail', {
            server: 'b',
            onProgress: (p) => {
              seen.push(p);
              throw boom;
            },
          })
          .catch((e: unknown) => e);
        expect(error).to.be.instanceOf(TenantMoveError);
        expect(error).to.include({ slug: 'fail', server: 'b', switched: false });
        expect((error as Error).cause).to.equal(boom);
        expect(seen).to.have.length(1);
        expect(seen[0]!.step).to.equal('copying');
        await untouched(tenants, a, b, before, []);
      });
    });

    it('a failure under the freeze (the catching-up callback throws, after the tables were locked): the move rejects promptly, the tenant is on a with every row, readable and writable', async () => {
      await withTwoServers(second, async ({ a, b, open }) => {
        const tenants = await open();
        await tenants.createTenant('fail', { server: 'a' });
        await seedTenant(tenants, 'fail', 300, 100);
        const boom = new Error('boom under the freeze');
        const steps: string[] = [];
        let frozenAtBoom: string[] = [];
        const held = await holdTenantLock(b, 'fail');
        let before!: Awaited<ReturnType<typeof tenantFingerprint>>;
        let move: Promise<unknown> | undefined;
        try {
          move = tenants
            .moveTenant('fail', {
              server: 'b',
              onProgress: (p) => {
                steps.push(p.step);
                if (p.step === 'catching-up') throw boom;
              },
            })
            .then(
              () => undefined,
              (e: unknown) => e,
            );
          await waitFor('the move to wait on b', () => pollingForLock(b));
          // A write during the first copy: caught up under the freeze, where the callback throws.
          await insertClient(tenants, 'fail', 'during@copy.test');
          before = await tenantFingerprint(a, 'fail');
        } finally {
          await held.release();
        }
        let outcome = await within(10_000, move!);
        if (outcome === BLOCKED) {
          // Hung: note what waits, then free it (end the waiting statements of this test's connections) so the test can end.
          frozenAtBoom = (
            await a.query<{ q: string }>(
              "SELECT left(query, 80) AS q FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' ORDER BY 1",
            )
          ).map((row) => row.q);
          await a.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'");
          outcome = await move!;
        }
        expect(frozenAtBoom, 'the move hung after the failure; these statements waited on locks').to.deep.equal([]);
        expect(steps, String(outcome)).to.deep.equal(['copying', 'copying', 'catching-up']);
        expect(outcome).to.be.instanceOf(TenantMoveError);
        expect(outcome).to.include({ slug: 'fail', server: 'b', switched: false });
        expect((outcome as Error).cause).to.equal(boom);
        await untouched(tenants, a, b, before, []);
        await insertClient(tenants, 'fail', 'after@fail.test');
      });
    });

    it('the target server is down: DatabaseUnreachableError, the tenant untouched on a, nothing thrown outside the call; once it is back the move goes through', async () => {
      await withTwoServers(second, async ({ a, b, open }) => {
        const tenants = await open({ onPoolError: () => undefined });
        await tenants.createTenant('fail', { server: 'a' });
        // Enough rows that the snapshot is still being written when the copy fails.
        await seedTenant(tenants, 'fail', 3000, 1000);
        const before = await tenantFingerprint(a, 'fail');
        await second.stop();
        for (let i = 0; i < 100 && tenants.stats().servers.b!.total > 0; i += 1) await sleep(50);
        // An exception thrown outside the call (an 'error' event nobody listens to) would crash a service: caught here to be reported.
        const uncaught: unknown[] = [];
        const listeners = process.listeners('uncaughtException');
        process.removeAllListeners('uncaughtException');
        const note = (error: unknown): void => void uncaught.push(error);
        process.on('uncaughtException', note);
        let error: unknown;
        try {
          error = await tenants.moveTenant('fail', { server: 'b' }).catch((e: unknown) => e);
          await sleep(300);
        } finally {
          process.removeListener('uncaughtException', note);
          for (const listener of listeners) process.on('uncaughtException', listener);
        }
        expect(error).to.be.instanceOf(DatabaseUnreachableError);
        expect((error as Error).message).to.contain('server "b"');
        await second.start();
        await untouched(tenants, a, b, before, []);
        expect(await tenants.moveTenant('fail', { server: 'b' })).to.include({ moved: true, rows: '4000' });
        expect(await tenantFingerprint(b, 'fail')).to.deep.equal(before);
        expect(uncaught.map((e) => String(e)), 'uncaught exceptions during the failed move').to.deep.equal([]);
      });
    });
  });

  describe('the CLI', () => {
    let directory: string;
    let config: string;
    before(() => {
      directory = mkdtempSync(join(tmpdir(), 'move-cli-'));
      config = join(directory, 'tenancy.config.js');
      const built = (path: string): string => JSON.stringify(resolve(__dirname, path));
      writeFileSync(
        config,
        `const { Client, Plan, Project } = require(${built('../../entities')});
const { sharedMigrations, tenantMigrations } = require(${built('../../migrations')});
module.exports = {
  servers: {
    a: { type: 'postgres', url: process.env.SERVER_A_URL, poolSize: 4 },
    b: { type: 'postgres', url: process.env.SERVER_B_URL, poolSize: 4 },
  },
  entities: [Client, Project, Plan],
  tenantMigrations,
  sharedMigrations,
  slugReuseDelayMs: 0,
};
`,
      );
    });
    after(() => rmSync(directory, { recursive: true, force: true }));

    function cli(a: ServerDatabase, b: ServerDatabase, args: readonly string[]): Promise<CliResult> {
      return finished(
        spawn(process.execPath, [CLI_MAIN, '--config', config, ...args], {
          env: { ...process.env, SERVER_A_URL: a.url, SERVER_B_URL: b.url },
          stdio: ['ignore', 'pipe', 'pipe'],
        }),
      );
    }

    it('move <slug> --server b --json prints the result and the tenant is on b; --keep-source keeps the copy; the same server again is moved:false; an unknown server fails', async () => {
      await withTwoServers(second, async ({ a, b, open }) => {
        const tenants = await open();
        await tenants.createTenant('cli-mv', { server: 'a' });
        await seedTenant(tenants, 'cli-mv', 50, 20);
        const before = await tenantFingerprint(a, 'cli_mv');
        await tenants.destroy();

        const run = await cli(a, b, ['move', 'cli-mv', '--server', 'b', '--json']);
        expect(run.code, run.stderr).to.equal(0);
        const result = JSON.parse(run.stdout) as MoveTenantResult;
        expect(result).to.include({ slug: 'cli-mv', from: 'a', to: 'b', moved: true, tables: 2, rows: '70' });
        expect(result.ms).to.be.a('number');
        expect(result.freezeMs).to.be.a('number');
        expect(await tenantFingerprint(b, 'cli_mv')).to.deep.equal(before);
        expect(await a.hasSchema('cli_mv')).to.equal(false);
        expect(await movedCopiesOn(a)).to.deep.equal([]);
        expect(await registryServer(a, 'cli-mv')).to.equal('b');

        const kept = await cli(a, b, ['move', 'cli-mv', '--server', 'a', '--keep-source', '--json']);
        expect(kept.code, kept.stderr).to.equal(0);
        const back = JSON.parse(kept.stdout) as MoveTenantResult;
        expect(back).to.include({ from: 'b', to: 'a', moved: true });
        expect(back.keptSchema).to.match(MOVED_NAME);
        expect((await movedCopiesOn(b)).map((c) => c.schema)).to.deep.equal([back.keptSchema]);
        expect(await tenantFingerprint(a, 'cli_mv')).to.deep.equal(before);

        const same = await cli(a, b, ['move', 'cli-mv', '--server', 'a', '--json']);
        expect(same.code, same.stderr).to.equal(0);
        expect(JSON.parse(same.stdout)).to.include({ moved: false, from: 'a', to: 'a' });

        const bad = await cli(a, b, ['move', 'cli-mv', '--server', 'nowhere', '--json']);
        expect(bad.code).to.not.equal(0);
        expect(bad.stderr).to.contain('nowhere');
        expect(await registryServer(a, 'cli-mv')).to.equal(null);
      });
    });
  });
});
