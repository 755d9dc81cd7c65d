import { TenantSchemaNotDistributedError } from '../errors';
import { quoteIdent, quoteLiteral } from '../naming/quote-ident';
import type { SqlRunner } from '../registry/tenant-registry';

/**
 * `CREATE SCHEMA` for a tenant, on the transaction of `sql`. In Citus mode
 * with schema-based sharding on for the rest of the transaction, so the
 * schema is a distributed schema (Citus places it whole on one node, and its
 * tables become single-shard tables there); `distributeTenantSchema` then
 * proves it before the transaction commits.
 */
export async function createTenantSchema(sql: SqlRunner, schemaName: string, citus: boolean): Promise<void> {
  if (citus) await sql.query('SET LOCAL citus.enable_schema_based_sharding TO on');
  await sql.query(`CREATE SCHEMA ${quoteIdent(schemaName)}`);
}

/**
 * In Citus mode, makes sure `schemaName` is a distributed schema (in
 * `pg_dist_schema`) before the transaction that made, claimed or restored it
 * commits: one that is not (a warm-pool spare or an archive made before
 * Citus mode) is distributed with `citus_schema_distribute`, and one that
 * still is not throws `TenantSchemaNotDistributedError` (the transaction is
 * rolled back): a tenant schema left local to the coordinator would be
 * served, silently, from there. Nothing outside Citus mode.
 */
export async function distributeTenantSchema(sql: SqlRunner, schemaName: string, citus: boolean): Promise<void> {
  if (!citus) return;
  if (await isDistributedSchema(sql, schemaName)) return;
  await sql.query(`SELECT citus_schema_distribute(${quoteLiteral(quoteIdent(schemaName))}::regnamespace)`);
  if (!(await isDistributedSchema(sql, schemaName))) throw new TenantSchemaNotDistributedError(schemaName);
}

async function isDistributedSchema(sql: SqlRunner, schemaName: string): Promise<boolean> {
  const rows: unknown[] = await sql.query(
    `SELECT 1 FROM pg_dist_schema d JOIN pg_namespace n ON n.oid = d.schemaid WHERE n.nspname = $1`,
    [schemaName],
  );
  return rows.length > 0;
}
