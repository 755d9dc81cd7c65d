import { createHash } from 'node:crypto';
import { LIBRARY_SCHEMA_PREFIX } from './tenant-slug';

/**
 * Name of the schema an archived tenant's schema is renamed to. Derived with
 * a short hash (never by concatenation, which PostgreSQL would silently
 * truncate to 63 bytes into a collision), under the library's reserved
 * prefix, so no tenant can ever take it.
 *
 * @example
 * ```ts
 * archiveSchemaName('acme'); // 'typeorm_tenants_archive_' + 16 hex digits
 * ```
 */
export function archiveSchemaName(schemaName: string): string {
  return `${LIBRARY_SCHEMA_PREFIX}archive_${shortHash(schemaName)}`;
}

/**
 * Name of the copy a moved tenant leaves on its former server with
 * `moveTenant(..., { keepSource: true })` (and until it is dropped
 * otherwise): the schema's hash and the move's time (UTC, to the second),
 * under the library's reserved prefix, within 63 bytes.
 */
export function movedSchemaName(schemaName: string, at: Date): string {
  const stamp = at.toISOString().replace(/[-:T]/g, '').slice(0, 14);
  return `${movedSchemaPrefix(schemaName)}${stamp}`;
}

/** How the names of every moved copy of `schemaName` begin. */
export function movedSchemaPrefix(schemaName: string): string {
  return `${LIBRARY_SCHEMA_PREFIX}moved_${shortHash(schemaName)}_`;
}

function shortHash(value: string): string {
  return createHash('sha256').update(value).digest('hex').slice(0, 16);
}

/**
 * Name of the PostgreSQL role of a tenant under `isolation: 'role'`. Roles
 * are cluster-wide, so the name is derived from the database as well as the
 * schema (two databases on one server never share a tenant role), with a hash
 * under the library's reserved prefix, within 63 bytes.
 */
export function tenantRoleName(database: string, schemaName: string): string {
  return `${LIBRARY_SCHEMA_PREFIX}r_${createHash('sha256').update(`${database}\0${schemaName}`).digest('hex').slice(0, 24)}`;
}
