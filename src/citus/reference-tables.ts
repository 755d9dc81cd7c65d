import type { EntityMetadata } from 'typeorm';
import { TenancyConfigurationError } from '../errors';
import { quoteIdent, quoteLiteral } from '../naming/quote-ident';
import type { SqlRunner } from '../registry/tenant-registry';

/** A shared entity's table, and the shared tables its foreign keys reference. */
interface SharedTable {
  readonly schema: string;
  readonly table: string;
  readonly references: readonly string[];
}

/**
 * The tables of the shared entities in `sharedSchema` (junction tables of
 * their many-to-many relations included), each listed after the shared
 * tables its foreign keys reference: the order `create_reference_table`
 * needs, since a reference table may reference only reference tables.
 */
export function sharedTablesInReferenceOrder(metadatas: readonly EntityMetadata[], sharedSchema: string): SharedTable[] {
  const byName = new Map<string, SharedTable>();
  for (const metadata of metadatas) {
    if (metadata.tableType === 'view' || (metadata.schema ?? sharedSchema) !== sharedSchema) continue;
    const references = metadata.foreignKeys
      .filter((key) => (key.referencedEntityMetadata.schema ?? sharedSchema) === sharedSchema)
      .map((key) => key.referencedEntityMetadata.tableName)
      .filter((name) => name !== metadata.tableName);
    byName.set(metadata.tableName, { schema: sharedSchema, table: metadata.tableName, references });
  }
  const ordered: SharedTable[] = [];
  const placed = new Set<string>();
  const visiting = new Set<string>();
  const visit = (name: string): void => {
    const table = byName.get(name);
    if (table === undefined || placed.has(name) || visiting.has(name)) return; // a cycle: Citus says what it refuses
    visiting.add(name);
    for (const referenced of table.references) visit(referenced);
    visiting.delete(name);
    placed.add(name);
    ordered.push(table);
  };
  for (const name of [...byName.keys()].sort()) visit(name);
  return ordered;
}

/**
 * Makes every shared entity's table a Citus reference table (a copy on every
 * node), so that a tenant table's foreign key to it resolves on the worker
 * holding the tenant. Idempotent: tables that are reference tables already
 * are left as they are, tables not made yet (no shared migration) are
 * skipped. A shared table that Citus distributes otherwise (hash-distributed,
 * or in a distributed schema) is refused: tenant tables could not reference
 * it. Returns the tables it converted.
 */
export async function makeSharedTablesReferenceTables(sql: SqlRunner, tables: readonly SharedTable[]): Promise<string[]> {
  if (tables.length === 0) return [];
  const rows: Array<{ name: string; kind: string | null }> = await sql.query(
    `SELECT t.name, CASE WHEN p.logicalrelid IS NULL THEN NULL WHEN p.repmodel = 't' THEN 'reference'
                         WHEN p.partmethod = 'n' AND p.colocationid = 0 THEN 'local' ELSE 'distributed' END AS kind
       FROM unnest($1::text[], $2::text[]) AS t(schema, name)
       JOIN pg_namespace n ON n.nspname = t.schema
       JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name AND c.relkind IN ('r', 'p')
       LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid`,
    [tables.map((table) => table.schema), tables.map((table) => table.table)],
  );
  const kinds = new Map(rows.map((row) => [row.name, row.kind]));
  const distributed = tables.filter((table) => kinds.get(table.table) === 'distributed');
  if (distributed.length > 0) {
    throw new TenancyConfigurationError(
      `Shared table ${distributed.map((table) => `"${table.schema}"."${table.table}"`).join(', ')} is a distributed Citus table. ` +
        'Tenant tables can only reference reference tables (a copy on every node): undistribute it (undistribute_table) and let initialize() make it a reference table.',
    );
  }
  const converted: string[] = [];
  for (const table of tables) {
    if (!kinds.has(table.table) || kinds.get(table.table) === 'reference') continue;
    await sql.query(`SELECT create_reference_table(${quoteLiteral(`${quoteIdent(table.schema)}.${quoteIdent(table.table)}`)}::regclass)`);
    converted.push(`${table.schema}.${table.table}`);
  }
  return converted;
}
