import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { freePort } from './free-port';

/** Where the Debian package installs the binary; `PGBOUNCER_BIN` overrides it. */
export const PGBOUNCER_BINARY = process.env.PGBOUNCER_BIN ?? '/usr/sbin/pgbouncer';

/** A PgBouncer running in front of one database. */
export interface RunningPgBouncer {
  /** Connection URL through PgBouncer (same database name, user and password as the target). */
  readonly url: string;
  /** The PgBouncer port on 127.0.0.1. */
  readonly port: number;
  /** Kills PgBouncer and removes its directory. Safe to call twice. */
  stop(): Promise<void>;
  /** The last lines PgBouncer wrote, for error messages. */
  log(): string;
  /** Server connections PgBouncer holds now (`SHOW SERVERS` on its admin console). */
  serverConnections(): Promise<number>;
}

export interface PgBouncerOptions {
  /** Server connections per database/user pair (`default_pool_size`). Default 4. */
  readonly poolSize?: number;
  /** `pool_mode`. Default `transaction`. */
  readonly poolMode?: 'session' | 'transaction' | 'statement';
  /** How long to wait for PgBouncer to accept connections, in ms. Default 15,000. */
  readonly startTimeoutMs?: number;
}

/** Thrown when the pgbouncer binary is not installed. */
export class PgBouncerMissingError extends Error {
  constructor(binary: string) {
    super(
      `PgBouncer is not installed (no ${binary}). The PgBouncer tests need it: ` +
        'install it with `apt-get update && apt-get install -y pgbouncer` (Debian/Ubuntu), ' +
        'or set PGBOUNCER_BIN to the pgbouncer binary.',
    );
    this.name = 'PgBouncerMissingError';
  }
}

/**
 * Starts a real PgBouncer (transaction pooling by default) on a free port of
 * 127.0.0.1 in front of the database of `databaseUrl`, and resolves once it
 * serves queries.
 *
 * Clients are trusted (it listens on loopback only, for tests); PgBouncer logs
 * in to the server itself with the user and password of `databaseUrl` (given
 * in the `[databases]` entry, so it works with password/md5/scram servers
 * and with trust servers where the URL has no password). PgBouncer refuses to
 * run as root: when this process is root it runs as the `postgres` system
 * user (the Debian package creates it), with its directory handed over to it.
 */
export async function startPgBouncer(databaseUrl: string, options: PgBouncerOptions = {}): Promise<RunningPgBouncer> {
  const binary = PGBOUNCER_BINARY;
  if (!existsSync(binary)) throw new PgBouncerMissingError(binary);
  const poolSize = options.poolSize ?? 4;
  const target = new URL(databaseUrl);
  const user = decodeURIComponent(target.username || process.env.PGUSER || 'postgres');
  const password = decodeURIComponent(target.password);
  const database = decodeURIComponent(target.pathname.replace(/^\//, '')) || user;
  const host = target.hostname === '' || target.hostname === 'localhost' ? '127.0.0.1' : target.hostname;
  const serverPort = target.port === '' ? 5432 : Number(target.port);

  const dir = await mkdtemp(join(tmpdir(), 'typeorm-tenants-pgbouncer-'));
  const owner = process.getuid?.() === 0 ? systemUser('postgres') : undefined;
  let child: ChildProcess | undefined;
  const logLines: string[] = [];
  let stopped = false;

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    const proc = child;
    if (proc !== undefined && proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
      proc.kill('SIGINT'); // immediate shutdown: closes client and server connections
      const timer = setTimeout(() => proc.kill('SIGKILL'), 3_000);
      await exited;
      clearTimeout(timer);
    }
    await rm(dir, { recursive: true, force: true });
  };

  try {
    const port = await freePort();
    const connect = [
      `host=${host}`,
      `port=${serverPort}`,
      `dbname=${quoteConnValue(database)}`,
      `user=${quoteConnValue(user)}`,
      ...(password === '' ? [] : [`password=${quoteConnValue(password)}`]),
    ].join(' ');
    const config = [
      '[databases]',
      `${quoteConnValue(database)} = ${connect}`,
      '',
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      "unix_socket_dir =",
      `pool_mode = ${options.poolMode ?? 'transaction'}`,
      `default_pool_size = ${poolSize}`,
      'min_pool_size = 0',
      'reserve_pool_size = 0',
      'max_client_conn = 500',
      // Loopback-only test instance: clients are trusted; PgBouncer itself logs
      // in to the server with the [databases] user and password.
      'auth_type = trust',
      `auth_file = ${join(dir, 'userlist.txt')}`,
      'admin_users = ' + user,
      'ignore_startup_parameters = extra_float_digits',
      'server_login_retry = 1',
      'query_wait_timeout = 60',
      'log_connections = 0',
      'log_disconnections = 0',
      'log_pooler_errors = 1',
      'stats_period = 3600',
      '',
    ].join('\n');
    const iniPath = join(dir, 'pgbouncer.ini');
    await writeFile(iniPath, config, { mode: 0o600 });
    await writeFile(join(dir, 'userlist.txt'), `"${user.replace(/"/g, '""')}" "${password.replace(/"/g, '""')}"\n`, { mode: 0o600 });
    if (owner !== undefined) {
      for (const path of [dir, iniPath, join(dir, 'userlist.txt')]) await chown(path, owner.uid, owner.gid);
      await chmod(dir, 0o700);
    }

    const proc = spawn(binary, [iniPath], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(owner !== undefined ? { uid: owner.uid, gid: owner.gid } : {}),
    });
    child = proc;
    const collect = (chunk: Buffer): void => {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() === '') continue;
        logLines.push(line);
        if (logLines.length > 200) logLines.shift();
      }
    };
    proc.stdout!.on('data', collect);
    proc.stderr!.on('data', collect);
    const spawnError = new Promise<never>((_, reject) => {
      proc.once('error', reject);
      proc.once('exit', (code, signal) =>
        reject(new Error(`pgbouncer exited during start (code ${code}, signal ${signal})`)),
      );
    });
    spawnError.catch(() => undefined);

    const url = new URL(databaseUrl);
    url.hostname = '127.0.0.1';
    url.port = String(port);
    const bouncerUrl = url.toString();
    await Promise.race([waitUntilServing(bouncerUrl, options.startTimeoutMs ?? 15_000), spawnError]);
    const adminUrl = new URL(bouncerUrl);
    adminUrl.pathname = '/pgbouncer';
    const serverConnections = async (): Promise<number> => {
      const admin = new Client({ connectionString: adminUrl.toString() });
      admin.on('error', () => undefined);
      await admin.connect();
      try {
        return (await admin.query('SHOW SERVERS')).rows.length;
      } finally {
        await admin.end();
      }
    };
    return { url: bouncerUrl, port, stop, log: () => logLines.join('\n'), serverConnections };
  } catch (error) {
    await stop().catch(() => undefined);
    throw new Error(`Starting PgBouncer failed: ${error instanceof Error ? error.message : String(error)}\n${logLines.join('\n')}`, {
      cause: error,
    });
  }
}

/** Polls with a real query through PgBouncer (which also proves it can log in to the server). */
async function waitUntilServing(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    const client = new Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('SELECT 1');
      await client.end();
      return;
    } catch (error) {
      lastError = error;
      await client.end().catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  throw new Error(`PgBouncer did not serve a query within ${timeoutMs} ms: ${String(lastError)}`);
}

function systemUser(name: string): { uid: number; gid: number } {
  const entry = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .map((line) => line.split(':'))
    .find((fields) => fields[0] === name);
  if (entry === undefined) {
    throw new Error(`PgBouncer refuses to run as root and there is no "${name}" system user to run it as (the Debian package creates it).`);
  }
  return { uid: Number(entry[2]), gid: Number(entry[3]) };
}

/** A libpq-style connection-string value, quoted when needed. */
function quoteConnValue(value: string): string {
  return /^[A-Za-z0-9_.\-]+$/.test(value) ? value : `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}
