import type { IncomingMessage, ServerResponse } from 'node:http';
import { TenancyError } from '../errors';
import type { TenantDataSourceManager } from '../manager/tenant-data-source-manager';
import type { TenantRecord } from '../registry/tenant-record';
import { retryAfterOf, tenancyErrorBody } from './http-errors';
import { TenantRequestResolver, serveRequest, type TenantMiddlewareOptions } from './tenant-resolution';

export { fromDomain, fromHeader, fromPath, fromSubdomain } from './tenant-resolvers';
export type { DomainResolver, DomainResolverOptions, TenantResolver } from './tenant-resolvers';
export type { TenantMiddlewareOptions } from './tenant-resolution';

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** The tenant the tenant middleware resolved; `undefined` on tenant-free requests. */
      tenant?: TenantRecord;
    }
  }
}

/** An Express 4/5 (and Connect, and NestJS) middleware: `(req, res, next)`. */
export interface TenantMiddleware {
  (req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void): void;
  /** The resolver core behind it: `resolver.cache.stats()` for the cache counters. */
  readonly resolver: TenantRequestResolver;
  /** Stops following the manager's lifecycle events (call it when the app shuts down). */
  close(): void;
}

/**
 * Express middleware that resolves the request's tenant and runs the rest of
 * the request (later middleware, the route handler, `res.on('finish')`
 * listeners, streamed responses) inside it, so `tenantContext.getRepository()`
 * just works in handlers. The tenant's DataSource is held until the response
 * has finished or closed. Refusals are answered as
 * `{ "error": { "code", "message" } }`: no tenant 400 `TENANT_REQUIRED`,
 * bad name 400 `INVALID_TENANT_NAME` (no query), unknown 404
 * `TENANT_NOT_FOUND`, suspended 403 `TENANT_SUSPENDED`, archived 423
 * `TENANT_NOT_ACTIVE`, refused by `authorize` 403 `TENANT_FORBIDDEN`. Other
 * errors go to `next(error)`. Routes declared before it, or outside the
 * router it is mounted on, are tenant-free.
 *
 * @example
 * ```ts
 * app.post('/tenants', signup); // tenant-free
 * app.use(tenantMiddleware(tenants, { resolve: fromHeader() }));
 * app.get('/clients', async (req, res) => { res.json(await tenantContext.getRepository(Client).find()); });
 * ```
 */
export function tenantMiddleware(manager: TenantDataSourceManager, options: TenantMiddlewareOptions<any>): TenantMiddleware {
  const resolver = new TenantRequestResolver<IncomingMessage>(manager, options);
  const middleware = (req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void): void => {
    serveRequest(resolver, req, {
      request: req,
      response: res,
      attach: (tenant, url) => {
        (req as { tenant?: TenantRecord }).tenant = tenant;
        if (url !== undefined) req.url = url;
      },
      proceed: () => next(),
      refuse: (error) => sendTenancyError(res, error),
      fail: next,
    });
  };
  return Object.assign(middleware, { resolver, close: () => resolver.close() });
}

/** An Express error-handling middleware: `(error, req, res, next)`. */
export type TenancyErrorHandler = (error: unknown, req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void) => void;

/**
 * Express error handler that answers a `TenancyError` thrown (or passed to
 * `next`) anywhere in a handler as the middleware answers its refusals: the
 * error's status and `{ "error": { "code", "message" } }` (`Retry-After`
 * where the error has one). `TenantAlreadyExistsError` is 409, a bad slug
 * 400, a unique violation in the seed hook 409 with the constraint named in
 * the message, `TENANT_CONTEXT_MISSING` (a handler not behind the tenant
 * middleware: a server bug) 500. Any other error goes on to `next(error)`.
 * Register it after the routes, as Express error handlers are.
 *
 * @example
 * ```ts
 * app.post('/tenants', async (req, res) => res.status(201).json(await tenants.createTenant(req.body.slug)));
 * app.use(tenancyErrorHandler());
 * ```
 */
export function tenancyErrorHandler(): TenancyErrorHandler {
  return (error, _req, res, next) => {
    if (error instanceof TenancyError) sendTenancyError(res, error);
    else next(error);
  };
}

/** Answers `error.statusCode` with `{ "error": { "code", "message" } }`, on any Node response. */
export function sendTenancyError(res: ServerResponse, error: TenancyError): void {
  if (res.headersSent) {
    res.destroy(error);
    return;
  }
  const body = JSON.stringify(tenancyErrorBody(error));
  res.statusCode = error.statusCode;
  const retryAfter = retryAfterOf(error);
  if (retryAfter !== undefined) res.setHeader('retry-after', String(retryAfter));
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.setHeader('content-length', Buffer.byteLength(body));
  res.end(body);
}
