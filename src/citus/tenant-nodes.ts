import type { SqlRunner } from '../registry/tenant-registry';

/**
 * The node (`'host:port'`) holding each of `schemaNames` that is a
 * distributed schema with at least one table, from Citus's metadata (the
 * placement of the first shard of the schema's colocation group: every
 * table of a distributed schema lives on one node). Schemas Citus does not
 * place are missing from the map.
 */
export async function nodesOfSchemas(sql: SqlRunner, schemaNames: readonly string[]): Promise<Map<string, string>> {
  if (schemaNames.length === 0) return new Map();
  const rows: Array<{ schema: string; host: string; port: number }> = await sql.query(
    `SELECT n.nspname AS schema, node.nodename AS host, node.nodeport AS port
       FROM pg_dist_schema ds
       JOIN pg_namespace n ON n.oid = ds.schemaid
       JOIN LATERAL (SELECT s.shardid FROM pg_dist_partition p JOIN pg_dist_shard s ON s.logicalrelid = p.logicalrelid
                      WHERE p.colocationid = ds.colocationid ORDER BY s.shardid LIMIT 1) shard ON true
       JOIN pg_dist_placement placement ON placement.shardid = shard.shardid
       JOIN pg_dist_node node ON node.groupid = placement.groupid AND node.noderole = 'primary'
      WHERE n.nspname = ANY($1::text[])`,
    [schemaNames],
  );
  return new Map(rows.map((row) => [row.schema, nodeName(row.host, row.port)]));
}

/** The nodes that may hold tenant schemas (active primaries with `shouldhaveshards`), as `'host:port'`, sorted. */
export async function tenantNodes(sql: SqlRunner): Promise<string[]> {
  const rows: Array<{ host: string; port: number }> = await sql.query(
    `SELECT nodename AS host, nodeport AS port FROM pg_dist_node
      WHERE isactive AND noderole = 'primary' AND shouldhaveshards ORDER BY nodename, nodeport`,
  );
  return rows.map((row) => nodeName(row.host, row.port));
}

/** `'host:port'`, the form the library names a Citus node in. */
export function nodeName(host: string, port: number): string {
  return `${host}:${port}`;
}

/** Splits `'host:port'` (the port last, so an IPv6 host keeps its colons); `undefined` for anything else. */
export function parseNodeName(value: unknown): { host: string; port: number } | undefined {
  if (typeof value !== 'string') return undefined;
  const match = /^(.+):(\d{1,5})$/.exec(value);
  if (match === null) return undefined;
  const port = Number(match[2]);
  if (port < 1 || port > 65535) return undefined;
  return { host: match[1]!.replace(/^\[(.*)\]$/, '$1'), port };
}
