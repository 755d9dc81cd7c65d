import { Client } from 'pg';
import { describeConnectionTarget, namingConnectionTarget } from '../data-source/connection-target';
import { quoteIdent, quoteLiteral } from '../naming/quote-ident';
import { citusClusterOf, cleanUpCitusLeftovers, dropOnWorkers, prepareCitusDatabase, type CitusCluster } from './citus-scratch';
import { cleanUpAtProcessEnd } from './exit-cleanup';
import { scratchDatabaseMark, scratchDatabaseName } from './scratch-names';
import { sweepStaleScratchDatabases } from './stale-leftovers';
import type { TestDatabase } from './test-database';

/**
 * A new database on the server of `serverUrl` (any database of it), marked
 * with this host and pid in its comment and dropped at `stop()`, and on
 * SIGINT/SIGTERM. Nothing asynchronous runs at 'exit' or after SIGKILL: the
 * next start's sweep drops a marked database whose process no longer runs.
 * Needs a role that may create databases. On a Citus coordinator (the
 * database of `serverUrl` has the extension) the new database is made a
 * database of the cluster: created on every worker, with the extension on
 * every node and the nodes registered, and dropped on every node at
 * `stop()`.
 *
 * @throws DatabaseUnreachableError when the server cannot be reached (naming it, never the password).
 */
export async function createScratchDatabase(serverUrl: string): Promise<TestDatabase> {
  const target = describeConnectionTarget({ connectionString: serverUrl });
  const server = new URL(serverUrl);
  const name = scratchDatabaseName();
  let version: string;
  let cluster: CitusCluster | undefined;
  const admin = new Client({ connectionString: serverUrl, application_name: 'typeorm-tenants-testing' });
  try {
    await admin.connect();
  } catch (error) {
    await admin.end();
    throw namingConnectionTarget(error, target);
  }
  try {
    await sweepStaleScratchDatabases(admin, `${server.host}${server.pathname}`);
    await admin.query(`CREATE DATABASE ${quoteIdent(name)}`);
    try {
      await admin.query(`COMMENT ON DATABASE ${quoteIdent(name)} IS ${quoteLiteral(scratchDatabaseMark())}`);
    } catch (error) {
      // Unmarked, no sweep would ever drop it.
      await admin.query(`DROP DATABASE ${quoteIdent(name)}`);
      throw error;
    }
    version = (await admin.query<{ server_version: string }>('SHOW server_version')).rows[0]!.server_version;
    cluster = await citusClusterOf(admin, serverUrl);
  } finally {
    await admin.end();
  }
  if (cluster !== undefined) {
    try {
      await prepareCitusDatabase(serverUrl, cluster, name);
    } catch (error) {
      await dropDatabase(serverUrl, name, cluster);
      throw error;
    }
  }
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  let stopping: Promise<void> | undefined;
  const unregister = cleanUpAtProcessEnd({ what: `the scratch database ${name}`, run: () => stop(), atExit: () => undefined });
  const stop = (): Promise<void> => {
    stopping ??= dropDatabase(serverUrl, name, cluster).finally(unregister);
    return stopping;
  };
  const on = cluster === undefined ? '' : ` (a Citus cluster: the coordinator and ${cluster.workers.length} worker${cluster.workers.length === 1 ? '' : 's'})`;
  return Object.freeze({ url: url.toString(), embedded: false, description: `PostgreSQL ${version} at ${url.host}${on}, database ${name}`, stop });
}

async function dropDatabase(serverUrl: string, name: string, cluster: CitusCluster | undefined): Promise<void> {
  // What a failed tenant move left on the workers (subscriptions, slots, a role named per database) holds their copies of it.
  if (cluster !== undefined) await cleanUpCitusLeftovers(serverUrl, name);
  const client = new Client({ connectionString: serverUrl, application_name: 'typeorm-tenants-testing' });
  await client.connect();
  try {
    // Connections just closed take a moment to leave the server; FORCE would kill one still leaving, and its client would throw.
    for (let i = 0; i < 100; i += 1) {
      const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [name]);
      if (rows[0]!.n === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await client.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
  } finally {
    await client.end();
  }
  if (cluster !== undefined) await dropOnWorkers(serverUrl, cluster, name);
}
