import { quoteIdent } from '../naming/quote-ident';
import type { SqlRunner } from '../registry/tenant-registry';

const TABLE_PRIVILEGES = 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER';
const SEQUENCE_PRIVILEGES = 'USAGE, SELECT, UPDATE';

/**
 * Creates the tenant's role (or reuses it) and grants it its own schema and
 * nothing else of the tenants': rights on every table and sequence of the
 * schema (and, by default privileges, on those later migrations create),
 * usage of the shared schema (its tables are reachable as far as they are
 * granted to PUBLIC or to the role), and no rights on the tenant's
 * migrations table. Runs in the caller's transaction.
 */
export async function grantTenantRole(
  sql: SqlRunner,
  role: string,
  schemaName: string,
  sharedSchema: string,
  migrationsTableName: string,
): Promise<void> {
  const r = quoteIdent(role);
  const schema = quoteIdent(schemaName);
  // A role left by an earlier tenant of this schema name (or a moved copy kept on this server) is used again: its grants are redone below.
  // Looked up rather than caught: a failed CREATE ROLE would abort the caller's transaction.
  const existing: unknown[] = await sql.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role]);
  if (existing.length === 0) await sql.query(`CREATE ROLE ${r} NOLOGIN`);
  await sql.query(`GRANT ${r} TO CURRENT_USER`);
  await sql.query(`GRANT USAGE ON SCHEMA ${schema} TO ${r}`);
  await sql.query(`GRANT ${TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA ${schema} TO ${r}`);
  await sql.query(`GRANT ${SEQUENCE_PRIVILEGES} ON ALL SEQUENCES IN SCHEMA ${schema} TO ${r}`);
  await sql.query(`ALTER DEFAULT PRIVILEGES IN SCHEMA ${schema} GRANT ${TABLE_PRIVILEGES} ON TABLES TO ${r}`);
  await sql.query(`ALTER DEFAULT PRIVILEGES IN SCHEMA ${schema} GRANT ${SEQUENCE_PRIVILEGES} ON SEQUENCES TO ${r}`);
  await sql.query(`REVOKE ALL ON ${schema}.${quoteIdent(migrationsTableName)} FROM ${r}`);
  await sql.query(`GRANT USAGE ON SCHEMA ${quoteIdent(sharedSchema)} TO ${r}`);
}

/** Drops the tenant's role, if it exists, with every privilege it holds in this database. */
export async function dropTenantRole(sql: SqlRunner, role: string): Promise<void> {
  const rows: unknown[] = await sql.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role]);
  if (rows.length === 0) return;
  await sql.query(`DROP OWNED BY ${quoteIdent(role)}`);
  await sql.query(`DROP ROLE ${quoteIdent(role)}`);
}
