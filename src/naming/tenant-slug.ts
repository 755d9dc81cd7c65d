import { InvalidTenantNameError } from '../errors';

/** The slug rule, in words; error messages quote it. */
export const SLUG_RULE =
  'a slug is 1 to 63 characters of lowercase letters, digits, "-" and "_", starting with a letter';

const SLUG_PATTERN = /^[a-z][a-z0-9_-]{0,62}$/;

/**
 * Prefix of the schemas the library keeps for itself (archives, warm pools);
 * no tenant schema may start with it.
 */
export const LIBRARY_SCHEMA_PREFIX = 'typeorm_tenants_';

/** The schemas the Citus extension makes in every database it is installed in. */
const CITUS_SCHEMAS: ReadonlySet<string> = new Set(['citus', 'citus_internal', 'columnar', 'columnar_internal']);

/** Names a tenant schema may never take, besides those the rule excludes by itself. */
export interface ReservedNames {
  /** The shared schema of the manager (default `public`). */
  readonly sharedSchema: string;
  /** The roles the pools connect as (one per server), which "$user" in a search_path resolves to. */
  readonly connectingRoles?: readonly string[];
  /** Other schemas the library names in search paths (the `querySearchPath` extras). */
  readonly otherSchemas?: readonly string[];
}

/**
 * Maps a valid slug to its schema name: `-` becomes `_`, so the schema name is
 * a plain identifier. Two slugs that map to one schema name collide.
 */
export function schemaNameForSlug(slug: string): string {
  return slug.replace(/-/g, '_');
}

/**
 * Checks `value` against the slug rule and the reserved names and returns the
 * schema name it maps to. Throws `InvalidTenantNameError` naming the rule for
 * anything else, non-strings included; it never touches the database.
 *
 * @example
 * ```ts
 * validateTenantSlug('acme-eu', { sharedSchema: 'public' }); // 'acme_eu'
 * validateTenantSlug('pg-stats', { sharedSchema: 'public' }); // throws: reserved
 * ```
 */
export function validateTenantSlug(value: unknown, reserved: ReservedNames): string {
  if (typeof value !== 'string') {
    throw new InvalidTenantNameError(value, `a slug must be a string; ${SLUG_RULE}.`);
  }
  if (!SLUG_PATTERN.test(value)) {
    throw new InvalidTenantNameError(value, `${SLUG_RULE}.`);
  }
  const schemaName = schemaNameForSlug(value);
  const reason = reservedReason(schemaName, reserved);
  if (reason !== undefined) {
    throw new InvalidTenantNameError(value, `its schema name "${schemaName}" is reserved (${reason}). Pick another slug.`);
  }
  return schemaName;
}

function reservedReason(schemaName: string, reserved: ReservedNames): string | undefined {
  const lower = schemaName.toLowerCase();
  if (lower === 'public') return 'the default PostgreSQL schema';
  if (lower === 'information_schema') return 'a PostgreSQL system schema';
  if (lower.startsWith('pg_')) return 'names starting with "pg_" belong to PostgreSQL';
  if (CITUS_SCHEMAS.has(lower)) return 'a schema of the Citus extension';
  if (lower === reserved.sharedSchema.toLowerCase()) return 'the shared schema';
  if (lower.startsWith(LIBRARY_SCHEMA_PREFIX)) return `names starting with "${LIBRARY_SCHEMA_PREFIX}" belong to typeorm-tenants`;
  if (reserved.connectingRoles?.some((role) => role.toLowerCase() === lower)) {
    return 'the name of the role the pool connects as, which "$user" in the search_path resolves to';
  }
  if (reserved.otherSchemas?.some((schema) => schema.toLowerCase() === lower)) {
    return 'the extensions schema or a querySearchPath schema, searched by every tenant\'s raw SQL';
  }
  return undefined;
}
