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
import { bindRequestToContext } from './emitter-binding';
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

export { bindEmittersToContext } from './emitter-binding';

/** The HTTP layer checks slugs against the default shared schema (the manager checks its own again). */
const HTTP_RESERVED_NAMES = Object.freeze({ sharedSchema: DEFAULT_SHARED_SCHEMA });

const NO_TENANT: TenantResolution = Object.freeze({ kind: 'none' });

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
  resolve(req: Req): Promise<TenantResolution> {
    try {
      return Promise.resolve(this.resolveNow(req));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * `resolve()` without a promise when nothing on the way needs one (the
   * resolvers answer at once, the tenant's record is cached, `authorize`, if
   * any, answers at once): the hot path of the adapters, where each promise
   * costs a round of async hooks under `AsyncLocalStorage`. Otherwise the
   * promise `resolve()` would give. Errors other than `TenancyError`s are
   * thrown or reject.
   */
  resolveNow(req: Req): TenantResolution | Promise<TenantResolution> {
    return this.#resolveFrom(req, 0);
  }

  #resolveFrom(req: Req, first: number): TenantResolution | Promise<TenantResolution> {
    const resolvers = this.#resolvers;
    for (let i = first; i < resolvers.length; i += 1) {
      const answer: ResolvedSlug | Promise<ResolvedSlug> = resolvers[i]!(req);
      if (answer instanceof Promise) {
        return answer.then((value) => (names(value) ? this.#lookUp(req, value, resolvers[i]!) : this.#resolveFrom(req, i + 1)));
      }
      if (names(answer)) return this.#lookUp(req, answer, resolvers[i]!);
    }
    if (!this.#required) return NO_TENANT;
    return refuse(new TenantRequiredError(resolvers.map((r, i) => (r as { [RESOLVER_LABEL]?: string })[RESOLVER_LABEL] ?? `resolver #${i + 1}`)));
  }

  #lookUp(req: Req, slug: unknown, matched: TenantResolver<Req>): TenantResolution | Promise<TenantResolution> {
    // A cached record was looked up under a slug that passed the rule: a hit
    // needs no second check.
    const cached = typeof slug === 'string' ? this.cache.peek(slug) : undefined;
    if (cached !== undefined) return this.#admit(req, cached, matched);
    try {
      // The slug rule first: a bad name never reaches the cache or the database.
      validateTenantSlug(slug, HTTP_RESERVED_NAMES);
    } catch (error) {
      if (error instanceof InvalidTenantNameError) return refuse(error);
      throw error;
    }
    const name = slug as string;
    return this.cache.get(name).then(
      (tenant) => (tenant === undefined ? refuse(new TenantNotFoundError(name)) : this.#admit(req, tenant, matched)),
      (error: unknown) => {
        if (error instanceof TenancyError) return refuse(error);
        throw error;
      },
    );
  }

  #admit(req: Req, tenant: TenantRecord, matched: TenantResolver<Req>): TenantResolution | Promise<TenantResolution> {
    if (tenant.status !== 'active') {
      return refuse(tenant.status === 'suspended' ? new TenantSuspendedError(tenant.slug) : new TenantNotActiveError(tenant.slug, tenant.status));
    }
    if (this.#authorize === undefined) return admitted(req, tenant, matched);
    let allowed: unknown;
    try {
      allowed = this.#authorize(req, tenant);
    } catch (error) {
      if (error instanceof TenancyError) return refuse(error);
      throw error;
    }
    if (typeof (allowed as PromiseLike<unknown> | undefined)?.then !== 'function') {
      return allowed === true ? admitted(req, tenant, matched) : refuse(new TenantForbiddenError(tenant.slug));
    }
    return Promise.resolve(allowed).then(
      (answer) => (answer === true ? admitted(req, tenant, matched) : refuse(new TenantForbiddenError(tenant.slug))),
      (error: unknown) => {
        if (error instanceof TenancyError) return refuse(error);
        throw error;
      },
    );
  }

  /**
   * Starts a run of `slug` and calls `start(release)` inside it; the run (and
   * its hold on the tenant's DataSource) lasts until `release()` is called.
   * Resolves to a `TenancyError` when the manager refused the run before
   * `start` (e.g. the tenant was dropped by another process since it was
   * cached; the cache entry is dropped too), else to `undefined` once the run
   * has ended.
   */
  enter(slug: string, start: (release: () => void) => void): Promise<TenancyError | undefined> {
    let started = false;
    return this.#manager
      .run(slug, () =>
        new Promise<void>((release) => {
          started = true;
          start(release);
        }),
      )
      .then(
        () => undefined,
        (error: unknown) => {
          if (started || !(error instanceof TenancyError)) throw error;
          if (error instanceof TenantNotFoundError || error instanceof TenantNotActiveError) this.cache.invalidate(slug);
          return error;
        },
      );
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
  /** Hands an error that is not a `TenancyError` to the framework's error handling. */
  fail(error: unknown): void;
}

/**
 * The one request flow every adapter shares: resolve the tenant, answer a
 * refusal, or run the rest of the request inside the tenant, holding its
 * DataSource until the response has closed. Errors that are not
 * `TenancyError`s go to `handling.fail`. With the tenant's record cached
 * and resolvers that answer at once, the rest of the request starts before
 * this returns, with three promises in all (the run's).
 */
export function serveRequest<Req extends object>(resolver: TenantRequestResolver<Req>, req: Req, handling: RequestHandling): void {
  let outcome: TenantResolution | Promise<TenantResolution>;
  try {
    outcome = resolver.resolveNow(req);
  } catch (error) {
    handling.fail(error);
    return;
  }
  if (outcome instanceof Promise) {
    outcome.then((settled) => act(resolver, settled, handling), handling.fail);
    return;
  }
  act(resolver, outcome, handling);
}

function act<Req extends object>(resolver: TenantRequestResolver<Req>, outcome: TenantResolution, handling: RequestHandling): void {
  switch (outcome.kind) {
    case 'none':
      proceedOrFail(handling);
      return;
    case 'refused':
      handling.refuse(outcome.error);
      return;
    case 'tenant':
      resolver
        .enter(outcome.tenant.slug, (release) => {
          // The body is read from socket events, in the socket's context:
          // bound emitters bring the handler back into the tenant's.
          bindRequestToContext(handling.request, handling.response, release);
          handling.attach(outcome.tenant, outcome.url);
          handling.proceed();
        })
        .then((refusal) => {
          if (refusal !== undefined) handling.refuse(refusal);
        }, handling.fail);
      return;
    default:
      throw new Error(`Unexpected resolution "${(outcome satisfies never as { kind: string }).kind}"`);
  }
}

function proceedOrFail(handling: RequestHandling): void {
  try {
    handling.proceed();
  } catch (error) {
    handling.fail(error);
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

function names(answer: ResolvedSlug): boolean {
  return answer !== undefined && answer !== null && answer !== '';
}

function admitted<Req>(req: Req, tenant: TenantRecord, matched: TenantResolver<Req>): TenantResolution {
  const rewrite = (matched as Partial<PathRewritingResolver>)[PATH_REWRITE];
  return { kind: 'tenant', tenant, url: rewrite === undefined ? undefined : rewrite((req as { url?: string }).url ?? '') };
}

function refuse(error: TenancyError): TenantResolution {
  return { kind: 'refused', error };
}
