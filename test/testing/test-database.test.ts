import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { expect } from 'chai';
import { Client } from 'pg';
import { InvalidArgumentError } from '../../src';
import { sharedTestDatabase, startTestDatabase } from '../../src/testing';
import { processRuns } from '../../src/testing/process-liveness';
import { SCRATCH_DATABASE_MARK } from '../../src/testing/scratch-names';
import { sweepTempDir } from '../../src/testing/stale-leftovers';
import { adminQuery, databaseUrl } from '../support/fixtures';

/** The built kit, as a child process requires it. */
const KIT = resolve(__dirname, '../../src/testing');

/** What a child that started test databases printed: the embedded server's directory and postmaster, the scratch database. */
interface Started {
  readonly pid: number;
  readonly databaseDir: string;
  readonly postmasterPid: number;
  readonly embeddedUrl: string;
  readonly scratchDatabase: string;
}

/**
 * A node process that starts an embedded test database and a scratch database
 * on the suite's server, prints where they are as one JSON line, and waits
 * to be killed.
 */
function startOwner(serverUrl: string): { child: ChildProcess; started: Promise<Started>; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> } {
  const script = `
    const { readdirSync, readFileSync } = require('node:fs');
    const { tmpdir } = require('node:os');
    const { join } = require('node:path');
    const { startTestDatabase } = require(${JSON.stringify(KIT)});
    (async () => {
      const embedded = await startTestDatabase({ server: 'embedded' });
      const scratch = await startTestDatabase({ serverUrl: process.env.SERVER_URL });
      const dirs = readdirSync(tmpdir()).filter((name) => name.startsWith('typeorm-tenants-pg-' + process.pid + '-'));
      const databaseDir = join(tmpdir(), dirs[0]);
      const postmasterPid = Number(readFileSync(join(databaseDir, 'postmaster.pid'), 'utf8').split('\\n')[0]);
      console.log(JSON.stringify({ pid: process.pid, databaseDir, postmasterPid, embeddedUrl: embedded.url, scratchDatabase: new URL(scratch.url).pathname.slice(1) }));
      setInterval(() => undefined, 1000);
    })().catch((error) => { console.error(error); process.exit(1); });
  `;
  const child = spawn(process.execPath, ['-e', script], { env: { ...process.env, SERVER_URL: serverUrl }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolvePromise) =>
    child.on('close', (code, signal) => resolvePromise({ code, signal, stderr })),
  );
  const started = new Promise<Started>((resolvePromise, reject) => {
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      const line = stdout.split('\n').find((l) => l.startsWith('{'));
      if (line !== undefined) resolvePromise(JSON.parse(line) as Started);
    });
    void exited.then(({ code, signal }) => reject(new Error(`the owner process exited (${code ?? signal}) before starting: ${stderr}`)));
  });
  return { child, started, exited };
}

async function databaseExists(name: string): Promise<boolean> {
  return (await adminQuery('SELECT 1 FROM pg_database WHERE datname = $1', [name])).length > 0;
}

async function canConnect(url: string): Promise<boolean> {
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.end();
    return true;
  } catch {
    return false;
  }
}

async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The suite's server, as a URL to any database of it. */
const serverUrl = (): string => databaseUrl();

describe('startTestDatabase()', function () {
  this.timeout(120_000);

  it('embedded: a server of its own with a tenants database; stop() stops it and removes its directory, and a second stop() waits for the same end', async () => {
    const database = await startTestDatabase({ server: 'embedded', settings: { max_connections: 30 } });
    expect(database.embedded).to.equal(true);
    expect(database.description).to.match(/^embedded PostgreSQL \d+/);
    expect(database.description).not.to.contain(new URL(database.url).password);
    const client = new Client({ connectionString: database.url });
    await client.connect();
    const { rows } = await client.query<{ db: string; max: string; dir: string }>(
      "SELECT current_database() AS db, current_setting('max_connections') AS max, current_setting('data_directory') AS dir",
    );
    await client.end();
    expect(rows[0]).to.include({ db: 'tenants', max: '30' });
    const dir = rows[0]!.dir;
    expect(dir.startsWith(join(tmpdir(), `typeorm-tenants-pg-${process.pid}-`))).to.equal(true);
    const postmasterPid = Number(readFileSync(join(dir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    expect(processRuns(postmasterPid)).to.equal(true);

    const [first, second] = [database.stop(), database.stop()];
    expect(second).to.equal(first);
    await first;
    expect(existsSync(dir)).to.equal(false);
    expect(await eventually(() => !processRuns(postmasterPid))).to.equal(true);
    expect(await canConnect(database.url)).to.equal(false);
    await database.stop();
  });

  it('on a server (serverUrl or DATABASE_URL): a new database marked with this host and pid, dropped by stop()', async () => {
    const database = await startTestDatabase({ serverUrl: serverUrl() });
    const name = new URL(database.url).pathname.slice(1);
    expect(database.embedded).to.equal(false);
    expect(name).to.match(/^typeorm_tenants_[0-9a-z]+_[0-9a-f]{6}$/);
    expect(database.description).to.contain(`database ${name}`);
    const [row] = await adminQuery<{ comment: string }>("SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = $1", [name]);
    expect(row!.comment).to.equal(`${SCRATCH_DATABASE_MARK}${JSON.stringify({ host: hostname(), pid: process.pid })}`);
    expect(await canConnect(database.url)).to.equal(true);
    await Promise.all([database.stop(), database.stop()]);
    expect(await databaseExists(name)).to.equal(false);
  });

  it('uses DATABASE_URL when no serverUrl is given, and server: "embedded" ignores it', async () => {
    const saved = process.env.DATABASE_URL;
    process.env.DATABASE_URL = serverUrl();
    try {
      const onServer = await startTestDatabase();
      expect(onServer.embedded).to.equal(false);
      expect(await databaseExists(new URL(onServer.url).pathname.slice(1))).to.equal(true);
      await onServer.stop();
      const embedded = await startTestDatabase({ server: 'embedded' });
      expect(embedded.embedded).to.equal(true);
      await embedded.stop();
    } finally {
      if (saved === undefined) delete process.env.DATABASE_URL;
      else process.env.DATABASE_URL = saved;
    }
  });

  it('sharedTestDatabase(): one database per process until it is stopped, then a new one', async () => {
    const [first, again] = await Promise.all([sharedTestDatabase({ serverUrl: serverUrl() }), sharedTestDatabase({ serverUrl: serverUrl() })]);
    expect(again).to.equal(first);
    const name = new URL(first.url).pathname.slice(1);
    expect(await databaseExists(name)).to.equal(true);
    await first.stop();
    expect(await databaseExists(name)).to.equal(false);
    const next = await sharedTestDatabase({ serverUrl: serverUrl() });
    expect(next.url).to.not.equal(first.url);
    await next.stop();
  });

  it('refuses an unknown server mode', async () => {
    await expect(startTestDatabase({ server: 'docker' as 'auto' })).to.be.rejectedWith(InvalidArgumentError, /"server" must be 'auto' or 'embedded'/);
  });

  it('after its owner is killed with SIGKILL, the next start stops the orphaned server and removes its directory, and drops the owner\'s scratch database', async () => {
    const owner = startOwner(serverUrl());
    const started = await owner.started;
    owner.child.kill('SIGKILL');
    expect((await owner.exited).signal).to.equal('SIGKILL');

    // SIGKILL left everything behind: the directory, a running postgres that still answers, the database.
    expect(existsSync(started.databaseDir)).to.equal(true);
    expect(processRuns(started.postmasterPid)).to.equal(true);
    expect(await canConnect(started.embeddedUrl)).to.equal(true);
    expect(await databaseExists(started.scratchDatabase)).to.equal(true);

    // The next start, in a process of its own (as the next test run would be).
    const next = startOwner(serverUrl());
    const nextStarted = await next.started;
    next.child.kill('SIGTERM');
    await next.exited;

    expect(await eventually(() => !processRuns(started.postmasterPid)), 'the orphaned postgres is stopped').to.equal(true);
    expect(existsSync(started.databaseDir), 'its directory is removed').to.equal(false);
    expect(await databaseExists(started.scratchDatabase), 'its scratch database is dropped').to.equal(false);
    expect(await canConnect(started.embeddedUrl)).to.equal(false);
    // What the second owner made is gone too: SIGTERM cleaned it up.
    expect(await eventually(() => !existsSync(nextStarted.databaseDir))).to.equal(true);
    expect(await databaseExists(nextStarted.scratchDatabase)).to.equal(false);
  });

  it('on SIGTERM the owner stops its embedded server, removes its directory and drops its scratch database before it ends', async () => {
    const owner = startOwner(serverUrl());
    const started = await owner.started;
    owner.child.kill('SIGTERM');
    const exit = await owner.exited;
    expect(exit.code ?? exit.signal, exit.stderr).to.be.oneOf([143, 'SIGTERM']);
    expect(existsSync(started.databaseDir)).to.equal(false);
    expect(processRuns(started.postmasterPid)).to.equal(false);
    expect(await databaseExists(started.scratchDatabase)).to.equal(false);
  });

  it('the sweep leaves a live process\'s directory alone and removes a dead one\'s, including an unstarted one', async () => {
    const base = join(tmpdir(), `typeorm-tenants-sweep-${process.pid}-${Date.now()}`);
    mkdirSync(base);
    // A pid that runs (this process's parent) and one that does not (a child that has exited).
    const gone = spawn(process.execPath, ['-e', '']);
    const gonePid = gone.pid!;
    await new Promise((r) => gone.on('close', r));
    const live = join(base, `typeorm-tenants-pg-${process.ppid}-aaaa1111`);
    const dead = join(base, `typeorm-tenants-pg-${gonePid}-bbbb2222`);
    const deadCopy = join(base, `typeorm-tenants-embedded-${gonePid}-Xy12Ab`);
    const unrelated = join(base, `typeorm-tenants-pg-notapid`);
    for (const dir of [live, dead, deadCopy, unrelated]) mkdirSync(dir);
    // A postmaster.pid naming a process that is not that directory's postgres: never signalled.
    writeFileSync(join(dead, 'postmaster.pid'), `${process.pid}\n${dead}\n`);
    try {
      const report = await sweepTempDir(base);
      expect([...report.removedDirectories].sort()).to.deep.equal([dead, deadCopy].sort());
      expect(report.stoppedServers).to.deep.equal([]);
      expect([live, unrelated].every((dir) => existsSync(dir))).to.equal(true);
      expect(existsSync(dead) || existsSync(deadCopy)).to.equal(false);
      expect(processRuns(process.pid), 'the pid a stale postmaster.pid named is not signalled').to.equal(true);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});
