import type { FastifyInstance, FastifyPluginCallback, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { TenancyError } from '../errors';
import type { TenantDataSourceManager } from '../manager/tenant-data-source-manager';
import type { TenantRecord } from '../registry/tenant-record';
import { retryAfterOf, tenancyErrorBody } from './http-errors';
import { TenantRequestResolver, serveRequest, type TenantMiddlewareOptions } from './tenant-resolution';

export { fromDomain, fromHeader, fromPath, fromSubdomain } from './tenant-resolvers';
export type { DomainResolver, DomainResolverOptions, TenantResolver } from './tenant-resolvers';

declare module 'fastify' {
  interface FastifyRequest {
    /** The tenant `tenancyPlugin` resolved; `undefined` on tenant-free requests. */
    tenant: TenantRecord | undefined;
  }
  interface FastifyInstance {
    /** The resolver core of `tenancyPlugin`: `tenancy.cache.stats()` for the cache counters. */
    tenancy: TenantRequestResolver<FastifyRequest>;
  }
}

/** Options of `tenancyPlugin`: the manager plus the HTTP contract. */
export interface TenancyPluginOptions extends TenantMiddlewareOptions<FastifyRequest> {
  readonly manager: TenantDataSourceManager;
  /**
   * Install `tenancyErrorHandler()` as the error handler of the scope the
   * plugin is registered in (default true): a `TenancyError` thrown in a
   * handler answers as the plugin's refusals do; other errors go on to the
   * handler Fastify had (its default one unless you set your own). Set
   * false when you set your own error handler and call the exported one
   * from it.
   */
  readonly errorHandler?: boolean;
}

const plugin: FastifyPluginCallback<TenancyPluginOptions> = (fastify: FastifyInstance, options, done) => {
  const { manager, errorHandler, ...contract } = options;
  const resolver = new TenantRequestResolver<FastifyRequest>(manager, contract);
  if (errorHandler !== false) fastify.setErrorHandler(tenancyErrorHandler());
  fastify.decorateRequest('tenant', undefined);
  fastify.decorate('tenancy', resolver);
  fastify.addHook('onClose', (_instance, closed) => {
    resolver.close();
    closed();
  });
  // A callback hook, not an async one: done() must be called inside the
  // run, so that Fastify's next hooks and the handler start in its context.
  fastify.addHook('onRequest', (request: FastifyRequest, reply: FastifyReply, next: (error?: Error) => void) => {
    serveRequest(resolver, request, {
      request: request.raw,
      response: reply.raw,
      attach: (tenant) => {
        request.tenant = tenant;
      },
      proceed: () => next(),
      refuse: (error) => sendError(reply, error),
      fail: (error) => next(error as Error),
    });
  });
  done();
};

/**
 * Fastify plugin: resolves each request's tenant in an `onRequest` hook and
 * runs the rest of the request (later hooks, the handler, `onSend`/
 * `onResponse`, streamed replies) inside it, holding the tenant's DataSource
 * until the response has finished or closed. Decorates `request.tenant`.
 * Refusals answer `{ "error": { "code", "message" } }` with the status of the
 * `TenancyError` (400, 403, 404, 423; see docs/errors.md). It is not
 * encapsulated (fastify-plugin): register it in the scope whose routes need a
 * tenant, and tenant-free routes in a sibling scope, or use `required: false`.
 * Register it before other plugins that add hooks, so theirs run in the
 * tenant's context too.
 *
 * @example
 * ```ts
 * const app = Fastify();
 * app.post('/tenants', signup); // tenant-free: outside the scope below
 * app.register(async (scope) => {
 *   await scope.register(tenancyPlugin, { manager: tenants, resolve: fromHeader() });
 *   scope.get('/clients', () => tenantContext.getRepository(Client).find());
 * });
 * ```
 */
export const tenancyPlugin = fp(plugin, { fastify: '5.x', name: 'typeorm-tenants' });

/** A Fastify error handler: `(error, request, reply)`. */
export type FastifyTenancyErrorHandler = (error: unknown, request: FastifyRequest, reply: FastifyReply) => void;

/**
 * Fastify error handler answering a `TenancyError` thrown in a handler with
 * its status and `{ "error": { "code", "message" } }`, as `tenancyPlugin`
 * answers its refusals (`TenantAlreadyExistsError` 409, a unique violation
 * in the seed hook 409, `TENANT_CONTEXT_MISSING` 500). Any other error is
 * thrown on, to the error handler of the parent scope (Fastify's default
 * one unless you set your own). The plugin installs it unless given
 * `errorHandler: false`; call it from your own handler otherwise.
 *
 * @example
 * ```ts
 * const handleTenancy = tenancyErrorHandler();
 * app.setErrorHandler((error, request, reply) => {
 *   if (error instanceof TenancyError) return handleTenancy(error, request, reply);
 *   reply.code(500).send({ error: 'internal' });
 * });
 * ```
 */
export function tenancyErrorHandler(): FastifyTenancyErrorHandler {
  return (error, _request, reply) => {
    if (!(error instanceof TenancyError)) throw error;
    sendError(reply, error);
  };
}

function sendError(reply: FastifyReply, error: TenancyError): void {
  if (reply.sent) {
    reply.raw.destroy(error);
    return;
  }
  const retryAfter = retryAfterOf(error);
  if (retryAfter !== undefined) void reply.header('retry-after', String(retryAfter));
  void reply.code(error.statusCode).type('application/json; charset=utf-8').send(tenancyErrorBody(error));
}
