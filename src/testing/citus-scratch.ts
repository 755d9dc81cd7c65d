import { Client } from 'pg';
import { quoteIdent } from '../naming/quote-ident';

/** A node of a Citus cluster as the coordinator's metadata names it. */
interface ClusterNode {
  readonly host: string;
  readonly port: number;
}

/** What `citusClusterOf` found: the coordinator as the workers reach it, and the active workers. */
export interface CitusCluster {
  readonly coordinator: ClusterNode;
  readonly workers: readonly ClusterNode[];
}

/**
 * The Citus cluster behind `admin` (a connection to a coordinator's
 * database), or `undefined` when that database has no citus extension. A
 * database of a Citus cluster is a cluster of its own: a new one needs the
 * database and the extension on every node, and the nodes registered in it.
 */
export async function citusClusterOf(admin: Client, serverUrl: string): Promise<CitusCluster | undefined> {
  const { rows } = await admin.query<{ citus: boolean }>(`SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') AS citus`);
  if (!rows[0]!.citus) return undefined;
  const self = await admin.query<{ host: string; port: number }>(`SELECT nodename AS host, nodeport AS port FROM pg_dist_node WHERE groupid = 0 LIMIT 1`);
  const url = new URL(serverUrl);
  const coordinator = self.rows[0] ?? { host: url.hostname, port: Number(url.port || 5432) };
  const workers = await admin.query<{ host: string; port: number }>(`SELECT node_name AS host, node_port AS port FROM citus_get_active_worker_nodes() ORDER BY 1, 2`);
  return { coordinator, workers: workers.rows };
}

/**
 * Makes `name` (already created on the coordinator of `serverUrl`) a
 * database of the cluster: the database on every worker, the extension on
 * every node, then the coordinator and the workers registered in it.
 * On failure, the caller drops what was made with `dropOnWorkers`.
 */
export async function prepareCitusDatabase(serverUrl: string, cluster: CitusCluster, name: string): Promise<void> {
  for (const worker of cluster.workers) await onNode(serverUrl, worker, undefined, [`CREATE DATABASE ${quoteIdent(name)}`]);
  for (const worker of cluster.workers) await onNode(serverUrl, worker, name, ['CREATE EXTENSION IF NOT EXISTS citus']);
  await onNode(serverUrl, undefined, name, [
    'CREATE EXTENSION IF NOT EXISTS citus',
    { sql: 'SELECT citus_set_coordinator_host($1, $2)', parameters: [cluster.coordinator.host, cluster.coordinator.port] },
    ...cluster.workers.map((worker) => ({ sql: 'SELECT citus_add_node($1, $2)', parameters: [worker.host, worker.port] })),
  ]);
}

/** Has Citus remove what failed shard moves left in database `name` of the cluster (`citus_cleanup_orphaned_resources`). */
export async function cleanUpCitusLeftovers(serverUrl: string, name: string): Promise<void> {
  await onNode(serverUrl, undefined, name, ['CALL citus_cleanup_orphaned_resources()']);
}

/** Drops `name` on every worker of `cluster` (after the coordinator's copy is gone). */
export async function dropOnWorkers(serverUrl: string, cluster: CitusCluster, name: string): Promise<void> {
  for (const worker of cluster.workers) await onNode(serverUrl, worker, undefined, [`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`]);
}

/**
 * Statements, one after another, on `node` (default: the coordinator of
 * `serverUrl`), as the user of `serverUrl`, in `database` (default: the
 * database `serverUrl` names).
 */
async function onNode(
  serverUrl: string,
  node: ClusterNode | undefined,
  database: string | undefined,
  statements: ReadonlyArray<string | { readonly sql: string; readonly parameters: unknown[] }>,
): Promise<void> {
  const url = new URL(serverUrl);
  if (node !== undefined) {
    url.hostname = node.host;
    url.port = String(node.port);
  }
  if (database !== undefined) url.pathname = `/${database}`;
  const client = new Client({ connectionString: url.toString(), application_name: 'typeorm-tenants-testing' });
  await client.connect();
  try {
    for (const statement of statements) {
      if (typeof statement === 'string') await client.query(statement);
      else await client.query(statement.sql, statement.parameters);
    }
  } finally {
    await client.end();
  }
}
