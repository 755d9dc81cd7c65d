import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { expect } from 'chai';
import type { FleetReport, TenantQueryResult, TenantRecord } from '../../src';
import { renderRecords } from '../../src/cli/text-format';
import { CLI_MAIN, finished } from '../cli/cli-support';
import { startSecondServer, withTwoServers, type SecondServer, type ServerDatabase } from '../support/second-server';

/** The built bin, as a user runs it. */
const PHONE_MIGRATION = 'AddClientPhone1700000000003';

/**
 * A config module exporting `servers` (URLs from SERVER_A_URL and
 * SERVER_B_URL), with the extra tenant migration when EXTRA_MIGRATION=phone.
 */
function configSource(): string {
  const built = (path: string): string => JSON.stringify(resolve(__dirname, path));
  return `const { Client, Plan, Project } = require(${built('../../entities')});
const { sharedMigrations, tenantMigrations } = require(${built('../../migrations')});
const { AddClientPhone1700000000003 } = require(${built('../support/extra-migrations')});
module.exports = {
  servers: {
    a: { type: 'postgres', url: process.env.SERVER_A_URL, poolSize: 4 },
    b: { type: 'postgres', url: process.env.SERVER_B_URL, poolSize: 4 },
  },
  entities: [Client, Project, Plan],
  tenantMigrations: [...tenantMigrations, ...(process.env.EXTRA_MIGRATION === 'phone' ? [AddClientPhone1700000000003] : [])],
  sharedMigrations,
  slugReuseDelayMs: 0,
};
`;
}

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

describe('servers: the CLI with a config of several servers', function () {
  this.timeout(90_000);
  let second: SecondServer;
  let directory: string;
  let config: string;
  before(async function () {
    this.timeout(120_000);
    second = await startSecondServer();
    directory = mkdtempSync(join(tmpdir(), 'cli-servers-'));
    config = join(directory, 'tenancy.config.js');
    writeFileSync(config, configSource());
  });
  after(async function () {
    this.timeout(60_000);
    rmSync(directory, { recursive: true, force: true });
    await second?.destroy();
  });

  function cli(a: ServerDatabase, b: ServerDatabase, args: readonly string[], extra?: 'phone'): Promise<Run> {
    const env: NodeJS.ProcessEnv = { ...process.env, SERVER_A_URL: a.url, SERVER_B_URL: b.url };
    delete env.EXTRA_MIGRATION;
    if (extra !== undefined) env.EXTRA_MIGRATION = extra;
    return finished(spawn(process.execPath, [CLI_MAIN, '--config', config, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] }));
  }

  async function json<T>(a: ServerDatabase, b: ServerDatabase, args: readonly string[], extra?: 'phone'): Promise<T> {
    const run = await cli(a, b, args, extra);
    if (run.code !== 0) throw new Error(`typeorm-tenants ${args.join(' ')} exited with ${run.code}: ${run.stderr}`);
    return JSON.parse(run.stdout) as T;
  }

  it('create --server places the tenant; list --json shows each server and list --server filters; migrate/revert/exec --server cover only that server', async () => {
    await withTwoServers(second, async ({ a, b }) => {
      const onA = await json<TenantRecord>(a, b, ['create', 'cli-a', '--server', 'a']);
      const onB = await json<TenantRecord>(a, b, ['create', 'cli-b', '--server', 'b', '--json']);
      expect([onA.server, onB.server]).to.deep.equal(['a', 'b']);
      expect([await a.hasSchema('cli_b'), await b.hasSchema('cli_b')]).to.deep.equal([false, true]);
      expect([await a.hasSchema('cli_a'), await b.hasSchema('cli_a')]).to.deep.equal([true, false]);
      // The default placement: one each, so the first server.
      expect((await json<TenantRecord>(a, b, ['create', 'cli-c'])).server).to.equal('a');
      expect((await json<TenantRecord>(a, b, ['create', 'cli-d'])).server).to.equal('b');

      const unknown = await cli(a, b, ['create', 'cli-x', '--server', 'zz']);
      expect(unknown.code).to.not.equal(0);
      expect(unknown.stderr).to.contain('"zz"');
      expect(await a.query("SELECT slug FROM public.tenants WHERE slug = 'cli-x'")).to.deep.equal([]);
      expect([await a.hasSchema('cli_x'), await b.hasSchema('cli_x')]).to.deep.equal([false, false]);

      const listed = await json<TenantRecord[]>(a, b, ['list', '--json']);
      expect(listed.map((r) => [r.slug, r.server])).to.deep.equal([
        ['cli-a', 'a'],
        ['cli-b', 'b'],
        ['cli-c', 'a'],
        ['cli-d', 'b'],
      ]);
      expect((await json<TenantRecord[]>(a, b, ['list', '--server', 'b'])).map((r) => r.slug)).to.deep.equal(['cli-b', 'cli-d']);
      expect((await json<TenantRecord[]>(a, b, ['list', '-s', 'a', '-s', 'b'])).length).to.equal(4);
      const text = renderRecords(listed.map((r) => ({ ...r, createdAt: new Date(r.createdAt) })));
      const [header, ...rows] = text.split('\n');
      expect(header).to.match(/^SLUG\s+SCHEMA\s+STATUS\s+SERVER\s+CREATED\s+NAME/);
      expect(rows.filter((line) => line.startsWith('cli-b'))[0]).to.match(/^cli-b\s+cli_b\s+active\s+b\s/);

      const migratedB = await json<FleetReport>(a, b, ['migrate', '--server', 'b', '--json'], 'phone');
      expect(migratedB.results.map((r) => [r.slug, r.status, r.applied])).to.deep.equal([
        ['cli-b', 'migrated', [PHONE_MIGRATION]],
        ['cli-d', 'migrated', [PHONE_MIGRATION]],
      ]);
      const phone = async (server: ServerDatabase, schema: string): Promise<boolean> =>
        (await server.query("SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'client' AND column_name = 'phone'", [schema]))
          .length === 1;
      expect([await phone(b, 'cli_b'), await phone(b, 'cli_d'), await phone(a, 'cli_a'), await phone(a, 'cli_c')]).to.deep.equal([true, true, false, false]);

      const migratedAll = await json<FleetReport>(a, b, ['migrate'], 'phone');
      expect(migratedAll.results.map((r) => [r.slug, r.status])).to.deep.equal([
        ['cli-a', 'migrated'],
        ['cli-b', 'up-to-date'],
        ['cli-c', 'migrated'],
        ['cli-d', 'up-to-date'],
      ]);
      expect([await phone(a, 'cli_a'), await phone(a, 'cli_c')]).to.deep.equal([true, true]);

      const revertedA = await json<FleetReport>(a, b, ['revert', '--server', 'a'], 'phone');
      expect(revertedA.results.map((r) => [r.slug, r.status, r.applied])).to.deep.equal([
        ['cli-a', 'reverted', [PHONE_MIGRATION]],
        ['cli-c', 'reverted', [PHONE_MIGRATION]],
      ]);
      expect([await phone(a, 'cli_a'), await phone(a, 'cli_c'), await phone(b, 'cli_b'), await phone(b, 'cli_d')]).to.deep.equal([false, false, true, true]);

      const exec = await json<TenantQueryResult<{ db: string }>>(a, b, ['exec', 'SELECT current_database() AS db', '--server', 'b']);
      expect(exec.rows).to.deep.equal([
        { tenant: 'cli-b', db: b.name },
        { tenant: 'cli-d', db: b.name },
      ]);
      const everywhere = await json<TenantQueryResult<{ db: string }>>(a, b, ['exec', 'SELECT current_database() AS db']);
      expect(everywhere.rows.map((r) => [r.tenant, r.db])).to.deep.equal([
        ['cli-a', a.name],
        ['cli-b', b.name],
        ['cli-c', a.name],
        ['cli-d', b.name],
      ]);
      const badServer = await cli(a, b, ['migrate', '--server', 'zz']);
      expect(badServer.code).to.not.equal(0);
      expect(badServer.stderr).to.contain('"zz"');
    });
  });

  it('run <module> --server runs the script in the tenants of that server only, each on its own server; import --server puts an export of b\'s tenant on a', async () => {
    await withTwoServers(second, async ({ a, b }) => {
      await json<TenantRecord>(a, b, ['create', 'run-a', '--server', 'a']);
      await json<TenantRecord>(a, b, ['create', 'run-b', '--server', 'b']);
      const script = join(directory, 'where.js');
      writeFileSync(
        script,
        `const { tenantContext } = require(${JSON.stringify(resolve(__dirname, '../../src'))});
module.exports = async (ctx) => {
  const [row] = await tenantContext.query('SELECT current_database() AS db');
  await tenantContext.query("INSERT INTO client (name, email) VALUES ('script', $1)", [ctx.tenant.slug]);
  return ctx.tenant.server + ':' + row.db;
};
`,
      );
      const onB = await json<{ results: Array<{ slug: string; status: string; value?: string }> }>(a, b, ['run', script, '--server', 'b']);
      expect(onB.results.map((r) => [r.slug, r.status, r.value])).to.deep.equal([['run-b', 'done', `b:${b.name}`]]);
      expect(await b.query('SELECT email FROM run_b.client')).to.deep.equal([{ email: 'run-b' }]);
      expect(await a.query('SELECT email FROM run_a.client')).to.deep.equal([]);

      // export of b's tenant, import --server a: the rows move to a.
      const file = join(directory, 'run-b.gz');
      rmSync(file, { force: true });
      await json(a, b, ['export', 'run-b', file]);
      const imported = await json<TenantRecord>(a, b, ['import', 'run-c', file, '--server', 'a']);
      expect(imported.server).to.equal('a');
      expect(await a.query('SELECT email FROM run_c.client')).to.deep.equal([{ email: 'run-b' }]);
      expect(await b.hasSchema('run_c')).to.equal(false);
    });
  });
});
