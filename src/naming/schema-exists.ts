import { quoteIdent } from './quote-ident';
import type { SqlRunner } from '../registry/tenant-registry';

/** Whether a schema of that exact name exists in the database `sql` runs on. */
export async function schemaExists(sql: SqlRunner, schemaName: string): Promise<boolean> {
  const [row] = (await sql.query('SELECT to_regnamespace($1) IS NOT NULL AS found', [quoteIdent(schemaName)])) as Array<{ found: boolean }>;
  return row!.found;
}
