import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { expect } from 'chai';
import { Client } from '../../entities';
import { InvalidTenantStateError, TenantMovedError, tenantContext, type MoveTenantProgress, type MoveTenantResult, type TenantDataSourceManager } from '../../src';
import { finished } from '../cli/cli-support';
import { useSecondServer, withTwoServers, type ServerDatabase } from '../support/second-server';
import {
  MOVED_NAME,
  moveNotesOn,
  movedCopiesOn,
  movedMark,
  registryId,
  registryServer,
  seedTenant,
  tenantFingerprint,
  tenantMark,
  userSchemasOn,
  userTriggersOn,
} from './move-support';

interface ChildRun {
  readonly signal: NodeJS.Signals | null;
  readonly code: number | null;
  readonly lines: Array<MoveTenantProgress | { finished: MoveTenantResult } | { killing: string }>;
  readonly stderr: string;
}

/** Runs move-child.js: moves `slug` to `target` over the two databases, killing itself with SIGKILL at step `killAt` (or before dropping the old copy). */
async function moveInChild(a: ServerDatabase, b: ServerDatabase, slug: string, target: string, killAt: MoveTenantProgress['step'] | 'drop'): Promise<ChildRun> {
  const child = spawn(process.execPath, [join(__dirname, 'move-child.js')], {
    env: { ...process.env, SERVER_A_URL: a.url, SERVER_B_URL: b.url, SLUG: slug, TARGET: target, KILL_AT: killAt },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const { code, signal, stdout, stderr } = await finished(child);
  const lines = stdout
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => JSON.parse(line) as ChildRun['lines'][number]);
  return { code, signal, lines, stderr };
}

const countClients = (tenants: TenantDataSourceManager, slug: string): Promise<number> => tenants.run(slug, () => tenantContext.getRepository(Client).count());

const schemaMark = async (db: ServerDatabase, schema: string): Promise<string | null> =>
  (await db.query<{ mark: string | null }>("SELECT obj_description(to_regnamespace($1), 'pg_namespace') AS mark", [`"${schema}"`]))[0]!.mark;

describe('servers: moveTenant after a crash', function () {
  this.timeout(90_000);
  const second = useSecondServer();

  it('a process killed (SIGKILL) after the first table is copied, inside the target transaction: the tenant is still on a, served with every row and writable, nothing on b; a new move completes it', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await tenants.createTenant('crash', { server: 'a' });
      await seedTenant(tenants, 'crash', 2000, 1000, 3);
      const before = await tenantFingerprint(a, 'crash');

      const run = await moveInChild(a, b, 'crash', 'b', 'copying');
      expect(run.signal, run.stderr).to.equal('SIGKILL');
      expect(run.lines).to.have.length(1);
      expect(run.lines[0]).to.include({ step: 'copying', tablesDone: 1, tables: 2 });

      // As it was: on a, every row, the registry naming a; no schema on b (its transaction died with the process).
      expect(await tenantFingerprint(a, 'crash')).to.deep.equal(before);
      expect(await registryServer(a, 'crash')).to.equal(null);
      expect(await movedCopiesOn(a)).to.deep.equal([]);
      expect(await userSchemasOn(a)).to.deep.equal(['crash']);
      expect(await userSchemasOn(b)).to.deep.equal([]);
      expect(await countClients(tenants, 'crash')).to.equal(1997);
      // Writable: nothing of the dead move holds the tables.
      await tenants.run('crash', () => tenantContext.getRepository(Client).insert({ name: 'after-crash', email: 'after@crash.test' }));
      const written = await tenantFingerprint(a, 'crash');
      expect(written.client.rows).to.equal(1998);

      const result = await tenants.moveTenant('crash', { server: 'b' });
      expect(result).to.include({ moved: true, from: 'a', to: 'b', tables: 2, rows: '2998' });
      expect(await tenantFingerprint(b, 'crash')).to.deep.equal(written);
      expect(await a.hasSchema('crash')).to.equal(false);
      expect(await movedCopiesOn(a)).to.deep.equal([]);
      expect(await registryServer(a, 'crash')).to.equal('b');
      // What the dead move left on a (its capture, if any) is gone.
      expect(await moveNotesOn(a)).to.equal(0);
      expect(await userTriggersOn(b, 'crash')).to.deep.equal([]);
      const id = await tenants.run('crash', () => tenantContext.getRepository(Client).save({ name: 'on-b', email: 'on@b.test' }));
      expect(id.id).to.equal(2002);
    });
  });

  it('a process killed (SIGKILL) after the registry commit, before the old copy is dropped: the registry says b, the data is on b, a moved copy marked drop is left on a; moveTenant to b is moved:false and removes it', async () => {
    await withTwoServers(second, async ({ a, b, open }) => {
      const tenants = await open();
      await tenants.createTenant('crash', { server: 'a' });
      await seedTenant(tenants, 'crash', 500, 200);
      const before = await tenantFingerprint(a, 'crash');
      const id = await registryId(a);

      const run = await moveInChild(a, b, 'crash', 'b', 'drop');
      expect(run.signal, `${run.stderr} ${JSON.stringify(run.lines)}`).to.equal('SIGKILL');
      expect(run.lines.map((line) => ('step' in line ? line.step : Object.keys(line)[0]))).to.deep.equal(['copying', 'copying', 'killing']);

      expect(await registryServer(a, 'crash')).to.equal('b');
      expect(await tenantFingerprint(b, 'crash')).to.deep.equal(before);
      expect(await a.hasSchema('crash')).to.equal(false);
      const left = await movedCopiesOn(a);
      expect(left).to.have.length(1);
      expect(left[0]!.schema).to.match(MOVED_NAME);
      expect(left[0]!.mark).to.equal(movedMark(id, 'crash', 'b', false));
      expect(await tenantFingerprint(a, left[0]!.schema)).to.deep.equal(before);
      // Served from b meanwhile: this manager's cached record still names a (within tenantRecordTtlMs), so its first read may be refused as moved; then b.
      const first = await countClients(tenants, 'crash').catch((e: unknown) => e);
      if (typeof first !== 'number') expect(first).to.be.instanceOf(TenantMovedError).and.to.include({ server: 'b' });
      expect(await countClients(tenants, 'crash')).to.equal(500);

      const result = await tenants.moveTenant('crash', { server: 'b' });
      expect(result).to.include({ slug: 'crash', from: 'b', to: 'b', moved: false, tables: 0, rows: '0' });
      expect(result).to.not.have.property('keptSchema');
      expect(await movedCopiesOn(a)).to.deep.equal([]);
      expect(await userSchemasOn(a)).to.deep.equal([]);
      expect(await tenantFingerprint(b, 'crash')).to.deep.equal(before);
      expect(await countClients(tenants, 'crash')).to.equal(500);
    });
  });

  describe('states a crash between the commits leaves, built by hand', () => {
    /** A tenant on a with rows, and the registry's identity. */
    async function tenantOnA(tenants: TenantDataSourceManager, a: ServerDatabase, slug: string): Promise<{ before: Awaited<ReturnType<typeof tenantFingerprint>>; id: string }> {
      await tenants.createTenant(slug, { server: 'a' });
      await seedTenant(tenants, slug, 400, 150, 2);
      return { before: await tenantFingerprint(a, slug), id: await registryId(a) };
    }

    it('(i) a marked copy on the target while the registry names the source and the source schema serves (crash after the target commit): stale, replaced by the next move', async () => {
      await withTwoServers(second, async ({ a, b, open }) => {
        const tenants = await open();
        const { before, id } = await tenantOnA(tenants, a, 'stale');
        // What the target's commit left: a schema of the tenant's name, marked as the library's for this registry (here with other content).
        await b.query('CREATE SCHEMA stale; CREATE TABLE stale.client (id int, junk text); INSERT INTO stale.client VALUES (1, $$old$$)');
        await b.query(`COMMENT ON SCHEMA stale IS '${tenantMark(id, 'stale').replace(/'/g, "''")}'`);
        // The tenant is served from a meanwhile.
        expect(await countClients(tenants, 'stale')).to.equal(398);

        const result = await tenants.moveTenant('stale', { server: 'b' });
        expect(result).to.include({ moved: true, from: 'a', to: 'b', tables: 2, rows: '548' });
        expect(await b.tablesOf('stale')).to.deep.equal(['client', 'migrations', 'project']);
        expect(await tenantFingerprint(b, 'stale')).to.deep.equal(before);
        expect(await schemaMark(b, 'stale')).to.equal(tenantMark(id, 'stale'));
        expect(await a.hasSchema('stale')).to.equal(false);
        expect(await movedCopiesOn(a)).to.deep.equal([]);
        expect(await registryServer(a, 'stale')).to.equal('b');
      });
    });

    it('(ii) the source renamed and marked "to b; drop", the copy complete on b, the registry still naming a (crash after the source commit): moveTenant to b switches the registry without copying and drops the moved copy', async () => {
      await withTwoServers(second, async ({ a, b, open }) => {
        const tenants = await open();
        const { before, id } = await tenantOnA(tenants, a, 'half');
        // A real move, kept: b holds the committed copy, a the renamed source...
        const kept = await tenants.moveTenant('half', { server: 'b', keepSource: true });
        expect(kept.keptSchema).to.match(MOVED_NAME);
        // ...then, as the crash left it: the registry not switched, and the source marked as a move's that drops it.
        await a.query('UPDATE public.tenants SET server = NULL WHERE slug = $1', ['half']);
        await a.query(`COMMENT ON SCHEMA "${kept.keptSchema!}" IS '${movedMark(id, 'half', 'b', false).replace(/'/g, "''")}'`);
        expect(await movedCopiesOn(a)).to.deep.equal([{ schema: kept.keptSchema, mark: movedMark(id, 'half', 'b', false) }]);
        expect(await a.hasSchema('half')).to.equal(false);
        expect(await registryServer(a, 'half')).to.equal(null);

        const result = await tenants.moveTenant('half', { server: 'b' });
        expect(result).to.include({ slug: 'half', from: 'a', to: 'b', moved: true, tables: 0, rows: '0' });
        expect(result).to.not.have.property('keptSchema');
        expect(await registryServer(a, 'half')).to.equal('b');
        expect(await tenantFingerprint(b, 'half')).to.deep.equal(before);
        expect(await movedCopiesOn(a)).to.deep.equal([]);
        expect(await userSchemasOn(a)).to.deep.equal([]);
        expect(await userSchemasOn(b)).to.deep.equal(['half']);
        expect(await countClients(tenants, 'half')).to.equal(398);
      });
    });

    it('(ii) refused when the copy on b is missing: the source gone, a moved copy "to b" on a, no schema on b: InvalidTenantStateError, nothing changed', async () => {
      await withTwoServers(second, async ({ a, b, open }) => {
        const tenants = await open();
        const { before, id } = await tenantOnA(tenants, a, 'lost');
        const kept = await tenants.moveTenant('lost', { server: 'b', keepSource: true });
        await a.query('UPDATE public.tenants SET server = NULL WHERE slug = $1', ['lost']);
        await a.query(`COMMENT ON SCHEMA "${kept.keptSchema!}" IS '${movedMark(id, 'lost', 'b', false).replace(/'/g, "''")}'`);
        await b.query('DROP SCHEMA lost CASCADE');
        const error = await tenants.moveTenant('lost', { server: 'b' }).catch((e: unknown) => e);
        expect(error).to.be.instanceOf(InvalidTenantStateError);
        expect((error as Error).message).to.contain('missing');
        // The moved copy (the only copy of the data) is left alone, and the registry unchanged.
        expect(await movedCopiesOn(a)).to.deep.equal([{ schema: kept.keptSchema, mark: movedMark(id, 'lost', 'b', false) }]);
        expect(await tenantFingerprint(a, kept.keptSchema!)).to.deep.equal(before);
        expect(await registryServer(a, 'lost')).to.equal(null);
        expect(await userSchemasOn(b)).to.deep.equal([]);
      });
    });

    it('(iii) the registry names b and a moved copy marked drop is left on a (crash before the drop): moveTenant to b is moved:false and drops it; a copy marked keep stays', async () => {
      await withTwoServers(second, async ({ a, b, open }) => {
        const tenants = await open();
        const { before, id } = await tenantOnA(tenants, a, 'left');
        const kept = await tenants.moveTenant('left', { server: 'b', keepSource: true });
        // Marked keep: a move to b again leaves it.
        expect(await tenants.moveTenant('left', { server: 'b' })).to.include({ moved: false, from: 'b', to: 'b' });
        expect(await movedCopiesOn(a)).to.deep.equal([{ schema: kept.keptSchema, mark: movedMark(id, 'left', 'b', true) }]);
        // Marked drop, as a move without keepSource that died before dropping it leaves it: it goes.
        await a.query(`COMMENT ON SCHEMA "${kept.keptSchema!}" IS '${movedMark(id, 'left', 'b', false).replace(/'/g, "''")}'`);
        const result = await tenants.moveTenant('left', { server: 'b' });
        expect(result).to.include({ moved: false, from: 'b', to: 'b' });
        expect(await movedCopiesOn(a)).to.deep.equal([]);
        expect(await userSchemasOn(a)).to.deep.equal([]);
        expect(await tenantFingerprint(b, 'left')).to.deep.equal(before);
        expect(await registryServer(a, 'left')).to.equal('b');
      });
    });
  });
});
