import { DatabaseUnreachableError, TenancyError, TenantSchemaChangeError, type TenancyErrorCode } from '../errors';

/** Codes of the errors the HTTP layer adds (part of `TenancyErrorCode`). */
export type HttpTenancyErrorCode = Extract<TenancyErrorCode, 'TENANT_REQUIRED' | 'TENANT_FORBIDDEN'>;

/** A route behind the tenant middleware (with `required: true`) got a request that names no tenant. */
export class TenantRequiredError extends TenancyError {
  override readonly name = 'TenantRequiredError';
  readonly code = 'TENANT_REQUIRED';
  readonly statusCode = 400;

  constructor(readonly resolvers: readonly string[]) {
    super(
      `This route needs a tenant and the request names none (looked at: ${resolvers.join(', ') || 'no resolver'}). ` +
        'Send the tenant as the API documents it (for example the X-Tenant-Slug header), or mark the route tenant-free.',
    );
  }
}

/** The `authorize(req, tenant)` hook refused the request for this tenant. */
export class TenantForbiddenError extends TenancyError {
  override readonly name = 'TenantForbiddenError';
  readonly code = 'TENANT_FORBIDDEN';
  readonly statusCode = 403;

  constructor(readonly slug: string) {
    super(`This request may not act on tenant "${slug}". Authenticate as a member of the tenant, or ask for one you belong to.`);
  }
}

/** The JSON body every HTTP adapter answers a refused request with. */
export interface TenancyErrorBody {
  readonly error: { readonly code: string; readonly message: string };
}

/** Options of `tenancyErrorBody`. */
export interface TenancyErrorBodyOptions {
  /**
   * Send the whole message of errors that carry the database's own words
   * (`TENANT_PROVISIONING_FAILED` and `TENANT_MIGRATION_FAILED`: constraint,
   * table, migration; `DATABASE_UNREACHABLE`: user, host, port and
   * database). Default `false`: their body says what happened in general
   * terms, and the full message stays on the error for the server's log.
   */
  readonly databaseDetails?: boolean;
}

/**
 * The error body for `error`: `{ "error": { "code", "message" } }`. The
 * message is the error's own, except for the errors that carry what the
 * database said or where it is (see `databaseDetails`): an HTTP client
 * learns the code and a sentence, never a constraint name, a migration or
 * the database's address.
 *
 * @example
 * ```ts
 * res.status(error.statusCode).json(tenancyErrorBody(error));
 * ```
 */
export function tenancyErrorBody(error: TenancyError, options: TenancyErrorBodyOptions = {}): TenancyErrorBody {
  return { error: { code: error.code, message: options.databaseDetails === true ? error.message : publicMessageOf(error) } };
}

function publicMessageOf(error: TenancyError): string {
  if (error instanceof DatabaseUnreachableError) return 'The service cannot reach its database right now. Try again later.';
  if (error instanceof TenantSchemaChangeError) {
    if (error.code === 'TENANT_PROVISIONING_FAILED') {
      return error.statusCode === 409
        ? 'The tenant was not created: its starting data conflicts with existing data (a value that must be unique is taken). Nothing was kept.'
        : 'The tenant was not created; nothing was kept. The server log has the cause.';
    }
    return 'Migrating the tenant failed and was rolled back. The server log has the cause.';
  }
  return error.message;
}

/** The `Retry-After` seconds of an error that has them (`TenantMigrationPendingError`), else `undefined`. */
export function retryAfterOf(error: TenancyError): number | undefined {
  const seconds = (error as { retryAfterSeconds?: unknown }).retryAfterSeconds;
  return typeof seconds === 'number' && Number.isFinite(seconds) && seconds >= 0 ? Math.ceil(seconds) : undefined;
}
