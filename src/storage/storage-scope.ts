import { TenancyConfigurationError } from '../errors';
import type { TenantFilesScope } from './storage-driver';

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;
const INCARNATION = /^[0-9a-z]{1,16}$/;

/**
 * Checks a scope before it becomes a folder or key prefix. Schema names come
 * from the registry (already validated by the slug rule) and incarnations
 * from `tenantIncarnation()`; a custom caller handing anything else is a bug.
 */
export function assertScope(scope: TenantFilesScope): void {
  if (!SCHEMA_NAME.test(scope.schemaName) || !INCARNATION.test(scope.incarnation)) {
    throw new TenancyConfigurationError(
      `A tenant files scope must have a plain schema name and a base-36 incarnation; got ${JSON.stringify(scope.schemaName)} and ${JSON.stringify(scope.incarnation)}.`,
    );
  }
}

/** The tenant's part of every path or object key: `<schema>/<incarnation>/`. */
export function scopePrefix(scope: TenantFilesScope): string {
  assertScope(scope);
  return `${scope.schemaName}/${scope.incarnation}/`;
}

/** A `/`-separated path with each segment percent-encoded, for a URL. */
export function encodeKeyPath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

/** An http(s) URL without a trailing slash. */
export function validateBaseUrl(value: unknown, option: string, owner: string): string {
  let url: URL | undefined;
  try {
    url = typeof value === 'string' ? new URL(value) : undefined;
  } catch {
    url = undefined;
  }
  if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.search !== '' || url.hash !== '') {
    throw new TenancyConfigurationError(`Option "${option}" of ${owner} must be an http or https URL without query or fragment; got ${JSON.stringify(value)}.`);
  }
  return (value as string).replace(/\/+$/, '');
}
