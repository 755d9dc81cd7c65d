import { AsyncResource } from 'node:async_hooks';
import type { EventEmitter } from 'node:events';
import {
  InvalidTenantNameError,
  TenancyError,
  TenantNotActiveError,
  TenantNotFoundError,
  TenantSuspendedError,
} from '../errors';
import type { TenantDataSourceManager } from '../manager/tenant-data-source-manager';
import { DEFAULT_SHARED_SCHEMA } from '../manager/manager-options';
import type { TenantEventName } from '../manager/tenant-events';
import { validateTenantSlug } from '../naming/tenant-slug';
import type { TenantRecord } from '../registry/tenant-record';
import { TenantForbiddenError, TenantRequiredError } from './http-errors';
import { ResolutionCache, type ResolutionCacheOptions } from './resolution-cache';
import { PATH_REWRITE, RESOLVER_LABEL, type PathRewritingResolver, type ResolvedSlug, type TenantResolver } from './tenant-resolvers';

/**
 * The HTTP contract shared by the Express, Fastify and NestJS adapters.
 *
 * @example
 * ```ts
 * app.use(tenantMiddleware(tenants, {
 *   resolve: [fromSubdomain({ baseDomain: 'yourapp.com' }), fromHeader()],
 *   authorize: (req, tenant) => req.user?.tenants.includes(tenant.slug) === true,
 * }));
 * ```
 */
export interface TenantMiddlewareOptions<Req = any> {
  /** One resolver, or several tried in order; the first that names a tenant wins. */
  readonly resolve: TenantResolver<Req> | readonly TenantResolver<Req>[];
  /** When no resolver names a tenant: `true` (default) answers 400 `TENANT_REQUIRED`; `false` runs the route with no tenant. */
  readonly required?: boolean;
  /**
   * Called with the request and the resolved, active tenant; must return (or
   * resolve to) `true` to let the request through. Anything else: 403
   * `TENANT_FORBIDDEN`. A `TenancyError` it throws is answered with its own
   * status; any other error goes to the framework's error handling.
   */
  readonly authorize?: (req: Req, tenant: TenantRecord) => boolean | Promise<boolean>;
  /** Bounds and lifetimes of the slug → tenant cache (see `ResolutionCacheOptions`). */
  readonly cache?: ResolutionCacheOptions;
}

/** How a request was resolved. */
export type TenantResolution =
  /** Serve it inside this tenant; `url` is the rewritten request URL when a path resolver matched. */
  | { readonly kind: 'tenant'; readonly tenant: TenantRecord; readonly url: string | undefined }
  /** No tenant named and none required: serve it without a tenant. */
  | { readonly kind: 'none' }
  /** Answer `error.statusCode` with `tenancyErrorBody(error)`. */
  | { readonly kind: 'refused'; readonly error: TenancyError };

const INVALIDATING_EVENTS: readonly TenantEventName[] = ['created', 'suspended', 'resumed', 'archived', 'restored', 'dropped'];

/**
 * The framework-free core of the HTTP adapters: turns a request into a
 * tenant (or a refusal), through the resolvers, the slug rule (a bad name
 * costs no query), the resolution cache, the tenant's status and the
 * `authorize` hook; then runs the rest of the request in the tenant's
 * context. Subscribes to the manager's lifecycle events so this process's
 * suspend, archive, drop and create take effect at once; `close()`
 * unsubscribes.
 */
export class TenantRequestResolver<Req extends object = any> {
  /** The slug → tenant record cache (its `stats()` show hits and registry lookups). */
  readonly cache: ResolutionCache;
  readonly #manager: TenantDataSourceManager;
  readonly #resolvers: readonly TenantResolver<Req>[];
  readonly #required: boolean;
  readonly #authorize: TenantMiddlewareOptions<Req>['authorize'];
  readonly #unsubscribe: Array<() => void>;

  constructor(manager: TenantDataSourceManager, options: TenantMiddlewareOptions<Req>) {
    if (manager === null || typeof manager !== 'object' || typeof manager.run !== 'function') {
      throw new TypeError('The tenant middleware needs a TenantDataSourceManager as its first argument.');
    }
    const resolvers = Array.isArray(options?.resolve) ? [...options.resolve] : [options?.resolve];
    if (resolvers.length === 0 || resolvers.some((r) => typeof r !== 'function')) {
      throw new TypeError('Option "resolve" must be a resolver (fromHeader(), fromSubdomain(), fromPath() or a function) or an array of them.');
    }
    if (options.authorize !== undefined && typeof options.authorize !== 'function') {
      throw new TypeError('Option "authorize" must be a function (req, tenant) => boolean | Promise<boolean>.');
    }
    this.#manager = manager;
    this.#resolvers = Object.freeze(resolvers as TenantResolver<Req>[]);
    this.#required = options.required ?? true;
    this.#authorize = options.authorize;
    this.cache = new ResolutionCache((slug) => manager.getTenant(slug), options.cache);
    this.#unsubscribe = INVALIDATING_EVENTS.map((event) =>
      manager.on(event, (payload: { readonly tenant?: TenantRecord; readonly slug?: string }) => {
        const slug = payload.tenant?.slug ?? payload.slug;
        if (slug !== undefined) this.cache.invalidate(slug);
      }),
    );
  }

  /** Resolves `req` to a tenant, "no tenant", or a refusal. Errors other than `TenancyError`s reject. */
  async resolve(req: Req): Promise<TenantResolution> {
    let slug: unknown;
    let matched: TenantResolver<Req> | undefined;
    for (const resolver of this.#resolvers) {
      const answer: ResolvedSlug | Promise<ResolvedSlug> = resolver(req);
      const value = answer instanceof Promise ? await answer : answer;
      if (value !== undefined && value !== null && value !== '') {
        slug = value;
        matched = resolver;
        break;
      }
    }
    if (matched === undefined) {
      if (!this.#required) return { kind: 'none' };
      return refuse(new TenantRequiredError(this.#resolvers.map((r, i) => (r as { [RESOLVER_LABEL]?: string })[RESOLVER_LABEL] ?? `resolver #${i + 1}`)));
    }
    try {
      // The slug rule first: a bad name never reaches the cache or the database.
      validateTenantSlug(slug, { sharedSchema: DEFAULT_SHARED_SCHEMA });
    } catch (error) {
      if (error instanceof InvalidTenantNameError) return refuse(error);
      throw error;
    }
    const name = slug as string;
    let tenant: TenantRecord | undefined;
    try {
      tenant = await this.cache.get(name);
    } catch (error) {
      if (error instanceof TenancyError) return refuse(error);
      throw error;
    }
    if (tenant === undefined) return refuse(new TenantNotFoundError(name));
    if (tenant.status !== 'active') {
      return refuse(tenant.status === 'suspended' ? new TenantSuspendedError(name) : new TenantNotActiveError(name, tenant.status));
    }
    if (this.#authorize !== undefined) {
      let allowed: unknown;
      try {
        allowed = await this.#authorize(req, tenant);
      } catch (error) {
        if (error instanceof TenancyError) return refuse(error);
        throw error;
      }
      if (allowed !== true) return refuse(new TenantForbiddenError(name));
    }
    const rewrite = (matched as Partial<PathRewritingResolver>)[PATH_REWRITE];
    const url = rewrite === undefined ? undefined : rewrite((req as { url?: string }).url ?? '');
    return { kind: 'tenant', tenant, url };
  }

  /**
   * Starts a run of `slug` and calls `start(release)` inside it; the run (and
   * its hold on the tenant's DataSource) lasts until `release()` is called.
   * Resolves to a `TenancyError` when the manager refused the run before
   * `start` (e.g. the tenant was dropped by another process since it was
   * cached; the cache entry is dropped too), else to `undefined` once the run
   * has ended.
   */
  async enter(slug: string, start: (release: () => void) => void): Promise<TenancyError | undefined> {
    let started = false;
    try {
      await this.#manager.run(slug, () =>
        new Promise<void>((release) => {
          started = true;
          start(() => release());
        }),
      );
      return undefined;
    } catch (error) {
      if (started || !(error instanceof TenancyError)) throw error;
      if (error instanceof TenantNotFoundError || error instanceof TenantNotActiveError) this.cache.invalidate(slug);
      return error;
    }
  }

  /** Stops following the manager's lifecycle events. Safe to call twice. */
  close(): void {
    for (const off of this.#unsubscribe.splice(0)) off();
  }
}

/** How an adapter lets `serveRequest` act on one request. */
export interface RequestHandling {
  /** The raw request and response, whose events must stay in the tenant's context. */
  readonly request: EventEmitter;
  readonly response: EventEmitter & { readonly closed?: boolean; readonly destroyed?: boolean };
  /** Records the tenant on the request (and the rewritten path, for path resolution). */
  attach(tenant: TenantRecord, url: string | undefined): void;
  /** Continues with the rest of the request. */
  proceed(): void;
  /** Answers the refusal. */
  refuse(error: TenancyError): void;
}

/**
 * The one request flow every adapter shares: resolve the tenant, answer a
 * refusal, or run the rest of the request inside the tenant, holding its
 * DataSource until the response has closed. Rejects only with errors that
 * are not `TenancyError`s, for the framework's error handling.
 */
export async function serveRequest<Req extends object>(resolver: TenantRequestResolver<Req>, req: Req, handling: RequestHandling): Promise<void> {
  const outcome = await resolver.resolve(req);
  switch (outcome.kind) {
    case 'none':
      handling.proceed();
      return;
    case 'refused':
      handling.refuse(outcome.error);
      return;
    case 'tenant': {
      const refusal = await resolver.enter(outcome.tenant.slug, (release) => {
        releaseWhenClosed(handling.response, release);
        // The body is read from socket events, in the socket's context:
        // bound emitters bring the handler back into the tenant's.
        bindEmittersToContext(handling.request, handling.response);
        handling.attach(outcome.tenant, outcome.url);
        handling.proceed();
      });
      if (refusal !== undefined) handling.refuse(refusal);
      return;
    }
    default:
      throw new Error(`Unexpected resolution "${(outcome satisfies never as { kind: string }).kind}"`);
  }
}

/**
 * Makes every listener of the `emitters` run in the async context active now.
 * Node emits a request's `data`/`end` and a response's `finish`/`close` from
 * the socket's context, not from the context of whoever listens, so a body
 * parser that calls `next()` from `end` (Express's `express.json()`,
 * Fastify's content-type parsers) would otherwise continue the request
 * outside its tenant.
 */
export function bindEmittersToContext(...emitters: EventEmitter[]): void {
  // One resource for the request's emitters, and a plain wrapper rather than
  // AsyncResource.bind, which defines deprecated accessors on every call (a
  // measurable share of the per-request cost).
  const resource = new AsyncResource('typeorm-tenants.request');
  for (const emitter of emitters) {
    const emit = emitter.emit;
    emitter.emit = function emitInTenantContext(this: EventEmitter, ...args: Parameters<EventEmitter['emit']>): boolean {
      return resource.runInAsyncScope(emit, this, ...args);
    };
  }
}

/** Calls `release` once the response has finished and closed, or at once if it already has. */
export function releaseWhenClosed(response: EventEmitter & { readonly closed?: boolean; readonly destroyed?: boolean }, release: () => void): void {
  if (response.closed === true || response.destroyed === true) {
    release();
    return;
  }
  response.once('close', release);
}

function refuse(error: TenancyError): TenantResolution {
  return { kind: 'refused', error };
}
