import { quoteIdent, quoteLiteral } from '../naming/quote-ident';
import type { SqlRunner } from '../registry/tenant-registry';

/**
 * The comment a tenant schema off the home server carries: made by the
 * library for a tenant of the registry `registryId` (the registry's own
 * identity, see `TenantRegistry.identity`). Two registries sharing a server
 * (two services, or two `registryTable`s of one database) never take each
 * other's schemas for their own.
 */
function tenantSchemaMark(registryId: string, slug: string): string {
  return `typeorm-tenants: schema of tenant ${JSON.stringify(slug)} of registry ${registryId}`;
}

/**
 * Marks a schema made on a server other than the home one as a tenant's of
 * this registry (`COMMENT ON SCHEMA`), in its creation transaction. That
 * transaction commits before the registry's (see `inPlacedTransaction`): a
 * crash in between leaves a marked schema no registry row holds, which the
 * next creation of that schema name on that server removes
 * (`dropOrphanedTenantSchema`). A schema the library did not make, or made
 * for another registry, is never removed.
 */
export async function markTenantSchema(sql: SqlRunner, schemaName: string, slug: string, registryId: string): Promise<void> {
  await sql.query(`COMMENT ON SCHEMA ${quoteIdent(schemaName)} IS ${quoteLiteral(tenantSchemaMark(registryId, slug))}`);
}

/**
 * Drops `schemaName` when it carries this registry's mark (for any slug:
 * two slugs can map to one schema name). Call it only under the schema's
 * locks, once this registry showed that no tenant holds the name: the
 * schema is then the remains of a creation (or a move) whose registry row
 * never committed. Any other schema of that name is left alone (the caller
 * then fails to create it: TenantAlreadyExistsError).
 */
export async function dropOrphanedTenantSchema(sql: SqlRunner, schemaName: string, registryId: string): Promise<boolean> {
  const [row] = (await sql.query(`SELECT obj_description(to_regnamespace($1), 'pg_namespace') AS mark`, [quoteIdent(schemaName)])) as Array<{
    mark: string | null;
  }>;
  const mark = row?.mark;
  if (mark === null || mark === undefined || !mark.startsWith('typeorm-tenants: schema of tenant ') || !mark.endsWith(` of registry ${registryId}`)) return false;
  await sql.query(`DROP SCHEMA ${quoteIdent(schemaName)} CASCADE`);
  return true;
}
