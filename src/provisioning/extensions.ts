import type { DataSource } from 'typeorm';
import type { PostgresDriver } from 'typeorm/driver/postgres/PostgresDriver';
import { TenancyConfigurationError } from '../errors';
import { ensureSchema } from '../naming/schema-exists';
import { quoteIdent } from '../naming/quote-ident';
import type { SqlRunner } from '../registry/tenant-registry';

/** The extensions TypeORM would install for these entities' columns, plus `extensions` of the connection options. */
export async function requiredExtensions(dataSource: DataSource): Promise<string[]> {
  const driver = dataSource.driver as PostgresDriver;
  // TypeORM's own rules (protected): the same decisions installExtensions would make.
  const needs = await (driver as unknown as { checkMetadataForExtensions(): Promise<Record<string, boolean>> }).checkMetadataForExtensions();
  const options = driver.options;
  const names = [
    needs.hasUuidColumns ? (options.uuidExtension ?? 'uuid-ossp') : undefined,
    needs.hasCitextColumns ? 'citext' : undefined,
    needs.hasHstoreColumns ? 'hstore' : undefined,
    needs.hasGeometryColumns ? 'postgis' : undefined,
    needs.hasCubeColumns ? 'cube' : undefined,
    needs.hasLtreeColumns ? 'ltree' : undefined,
    needs.hasVectorColumns ? 'vector' : undefined,
    needs.hasExclusionConstraints ? 'btree_gist' : undefined,
    ...(options.extensions ?? []),
  ];
  return [...new Set(names.filter((name): name is string => typeof name === 'string'))];
}

/** What `installExtensions` reports back: what it did, where each extension is, and what the caller should warn about. */
export interface ExtensionsOutcome {
  readonly installed: readonly string[];
  /** The schema of each needed extension, after installation. */
  readonly schemas: ReadonlyMap<string, string>;
  readonly warnings: readonly string[];
}

/**
 * Creates the extensions schema and installs each extension not installed
 * yet into it (`CASCADE`, so what it depends on comes along), in the
 * caller's transaction. An extension already installed in another schema is
 * left there, with a warning: raw SQL of runs does not search that schema.
 * One that cannot be installed (not available, or not allowed for the
 * connecting role) is a `TenancyConfigurationError` naming the statement a
 * superuser should run: tenants could not be created without it.
 *
 * The schema is made with Citus's schema-based sharding off, so that on a
 * Citus cluster it is not distributed as if it were a tenant (elsewhere the
 * setting is an inert placeholder, local to the transaction), and its use
 * is granted to PUBLIC, so tenant roles (`isolation: 'role'`), those of
 * tenants made before it existed included, resolve what it holds. It may
 * hold nothing but extensions: every tenant's raw SQL searches it, so a table
 * of its own there would be reachable from every tenant
 * (`TenancyConfigurationError`).
 */
export async function installExtensions(
  sql: SqlRunner,
  options: { readonly schema: string; readonly sharedSchema: string; readonly names: readonly string[] },
): Promise<ExtensionsOutcome> {
  const schema = quoteIdent(options.schema);
  await sql.query(`SELECT set_config('citus.enable_schema_based_sharding', 'off', true)`);
  // Only what is missing: on Citus each such statement goes on to every worker, which must then all be up.
  await ensureSchema(sql, options.schema);
  const [{ granted }] = (await sql.query(`SELECT has_schema_privilege('public', $1, 'USAGE') AS granted`, [options.schema])) as Array<{ granted: boolean }>;
  if (!granted) await sql.query(`GRANT USAGE ON SCHEMA ${schema} TO PUBLIC`);
  const own = (await sql.query(
    `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
      ORDER BY 1 LIMIT 5`,
    [options.schema],
  )) as Array<{ name: string }>;
  if (own.length > 0) {
    throw new TenancyConfigurationError(
      `The extensions schema "${options.schema}" holds relations that belong to no extension (${own.map((row) => row.name).join(', ')}): ` +
        'every tenant\'s raw SQL searches that schema, so every tenant could read them. Give extensionsSchema a schema of its own.',
    );
  }
  const warnings: string[] = [];
  const installed: string[] = [];
  const schemas = new Map<string, string>();
  if (options.names.length === 0) return { installed, schemas, warnings };

  const present = (await sql.query(
    `SELECT e.extname AS name, n.nspname AS schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = ANY($1::text[])`,
    [options.names],
  )) as Array<{ name: string; schema: string }>;
  const where = new Map(present.map((row) => [row.name, row.schema]));
  for (const name of options.names) {
    const at = where.get(name);
    schemas.set(name, at ?? options.schema);
    if (at === options.schema) continue;
    if (at !== undefined) {
      warnings.push(
        `Extension "${name}" is installed in schema "${at}"${at === options.sharedSchema ? ' (the shared schema)' : ''}, not in the extensions schema "${options.schema}". ` +
          `Tenants' raw SQL does not search "${at}", so its types, functions and operators resolve there only where written "${at}".<name>. ` +
          `Move it with: ALTER EXTENSION ${quoteIdent(name)} SET SCHEMA ${schema};`,
      );
      continue;
    }
    try {
      await sql.query(`CREATE EXTENSION IF NOT EXISTS ${quoteIdent(name)} SCHEMA ${schema} CASCADE`);
      installed.push(name);
    } catch (error) {
      throw new TenancyConfigurationError(
        `The entities need the PostgreSQL extension "${name}", and it could not be installed in schema "${options.schema}": ` +
          `${error instanceof Error ? error.message : String(error)}. ` +
          `Install it once as a superuser: CREATE EXTENSION IF NOT EXISTS ${quoteIdent(name)} SCHEMA ${schema} CASCADE;`,
        { cause: error },
      );
    }
  }
  return { installed, schemas, warnings };
}

/**
 * Generated SQL (find, save, QueryBuilder over entities) sends no search
 * path of its own: its tables are qualified, but operators and functions
 * resolve through the connection's default search_path. Checks that this
 * path reaches the schema of each extension. When citext's is not on it,
 * `find({ where: { email } })` would compare case-sensitively (citext casts
 * silently to text): a `TenancyConfigurationError`. When the extensions
 * schema is not (other extensions' operators fail loudly when unresolved):
 * a warning, returned to the caller.
 */
export async function checkDefaultSearchPath(
  sql: SqlRunner,
  options: { readonly schema: string; readonly schemas: ReadonlyMap<string, string> },
): Promise<string | undefined> {
  if (options.schemas.size === 0) return undefined;
  const citext = options.schemas.get('citext');
  const [row] = (await sql.query(
    `SELECT $1::name = ANY(current_schemas(false)) AS searched, $2::name = ANY(current_schemas(false)) AS citext,
            current_user AS role, current_database() AS database`,
    [options.schema, citext ?? options.schema],
  )) as Array<{ searched: boolean; citext: boolean; role: string; database: string }>;
  const fix = `ALTER ROLE ${quoteIdent(row.role)} IN DATABASE ${quoteIdent(row.database)} SET search_path TO ${quoteIdent(options.schema)};`;
  if (citext !== undefined && !row.citext) {
    const where = citext === options.schema ? `the extensions schema "${citext}"` : `"${citext}"`;
    throw new TenancyConfigurationError(
      `The connection's default search_path does not include ${where}, where citext lives. ` +
        'Generated SQL resolves operators through that path, so find() would compare citext columns with text\'s case-sensitive "=". ' +
        (citext === options.schema
          ? `Set the role's default once (then reconnect): ${fix}`
          : `Move citext to the extensions schema (ALTER EXTENSION citext SET SCHEMA ${quoteIdent(options.schema)}) and set the role's default once: ${fix}`),
    );
  }
  if (row.searched) return undefined;
  const names = [...options.schemas.keys()];
  return (
    `The connection's default search_path does not include the extensions schema "${options.schema}" (extensions: ${names.join(', ')}). ` +
    `Generated SQL resolves operators and functions through it, so those of the extensions are not found there. Set it for the role once: ${fix}`
  );
}
