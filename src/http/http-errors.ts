import { TenancyError, type TenancyErrorCode } from '../errors';

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

/**
 * The error body for `error`: `{ "error": { "code", "message" } }`.
 *
 * @example
 * ```ts
 * res.status(error.statusCode).json(tenancyErrorBody(error));
 * ```
 */
export function tenancyErrorBody(error: TenancyError): TenancyErrorBody {
  return { error: { code: error.code, message: error.message } };
}

/** The `Retry-After` seconds of an error that has them (`TenantMigrationPendingError`), else `undefined`. */
export function retryAfterOf(error: TenancyError): number | undefined {
  const seconds = (error as { retryAfterSeconds?: unknown }).retryAfterSeconds;
  return typeof seconds === 'number' && Number.isFinite(seconds) && seconds >= 0 ? Math.ceil(seconds) : undefined;
}
