import { rm } from 'node:fs/promises';
import { Client } from 'pg';
import { prepareEmbeddedServer } from '../../support/database';

/**
 * An embedded PostgreSQL whose data directory survives `stop()`, so the test
 * can stop the server under load and start it again in place (same port, same
 * data). `support/database.ts` starts scratch servers with `persistent: false`,
 * whose `stop()` deletes the data; this test-only helper prepares one the same
 * way with `persistent: true`. Never the machine's shared server: the fault
 * tests stop this one.
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
  // fsync off only matters for an OS crash; a fast shutdown still writes every
  // committed transaction out. synchronous_commit and full_page_writes stay
  // on, so an acknowledged commit is durable in the sense the test checks.
  const { server, url, databaseDir, failure } = await prepareEmbeddedServer(
    { synchronous_commit: 'on', full_page_writes: 'on' },
    { persistent: true }, // stop() keeps the data directory: destroy() removes it
  );
  let running = false;
  let destroyed = false;
  const handle: RestartablePostgres = {
    url,
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
        throw failure(error);
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
    throw failure(error);
  }
  return handle;
}
