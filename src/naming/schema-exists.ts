import { quoteIdent } from './quote-ident';
import type { SqlRunner } from '../registry/tenant-registry';

/** Whether a schema of that exact name exists in the database `sql` runs on. */
export async function schemaExists(sql: SqlRunner, schemaName: string): Promise<boolean> {
  const [row] = (await sql.query('SELECT to_regnamespace($1) IS NOT NULL AS found', [quoteIdent(schemaName)])) as Array<{ found: boolean }>;
  return row!.found;
}

/**
 * `CREATE SCHEMA` of `schemaName` only when it does not exist. Not
 * `CREATE SCHEMA IF NOT EXISTS`: on a Citus coordinator that statement is
 * sent on to every worker even when the schema exists, so a process could
 * not start while one worker is down. Returns whether it created it.
 */
export async function ensureSchema(sql: SqlRunner, schemaName: string): Promise<boolean> {
  if (await schemaExists(sql, schemaName)) return false;
  await sql.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schemaName)}`);
  return true;
}
