import type { IncomingHttpHeaders } from 'node:http';
import type { TenantDataSourceManager } from '../manager/tenant-data-source-manager';
import { hostnameOfHeader } from '../naming/hostname';
import { DOMAIN_SNAPSHOT } from '../registry/tenant-domains';
import { DEFAULT_DOMAIN_TTL_MS, DomainDirectory, type DomainDirectoryEntry } from './domain-directory';

/** What the built-in resolvers read from a request: Express, Fastify and plain Node requests all have it. */
export interface HttpRequestLike {
  readonly headers: IncomingHttpHeaders;
  readonly url?: string | undefined;
}

/** What a resolver may answer: a slug, or nothing (`undefined`, `null` or `''`: "not mine, ask the next one"). */
export type ResolvedSlug = string | undefined | null;

/**
 * Finds the tenant a request names. Anything that is not `undefined`, `null`
 * or `''` is taken as the tenant (and validated: a bad name is a 400, never a
 * fall-through to the next resolver). Custom resolvers are plain functions,
 * for instance reading a claim of a token the app has already verified.
 *
 * @example
 * ```ts
 * const fromJwt: TenantResolver<Request> = (req) => req.user?.tenant;
 * ```
 */
export type TenantResolver<Req = any> = (req: Req) => ResolvedSlug | Promise<ResolvedSlug>;

/** @internal Marks the resolvers whose match also rewrites the request path. */
export const PATH_REWRITE = Symbol('typeorm-tenants.pathRewrite');

/** @internal A resolver that knows how the path looks without its tenant segment. */
export interface PathRewritingResolver extends TenantResolver<HttpRequestLike> {
  readonly [PATH_REWRITE]: (url: string) => string | undefined;
}

/** @internal A short label of a resolver, for error messages. */
export const RESOLVER_LABEL = Symbol('typeorm-tenants.resolverLabel');

/** Default header of `fromHeader()`. */
export const DEFAULT_TENANT_HEADER = 'x-tenant-slug';

/**
 * Reads the tenant from a request header (default `X-Tenant-Slug`). A header
 * sent twice arrives joined (`"a, b"`) and is refused as an invalid name.
 *
 * Anyone can send any header: pair it with `authorize` (see the README).
 *
 * @example
 * ```ts
 * app.use(tenantMiddleware(tenants, { resolve: fromHeader('x-tenant') }));
 * ```
 */
export function fromHeader(name: string = DEFAULT_TENANT_HEADER): TenantResolver<HttpRequestLike> {
  if (typeof name !== 'string' || !/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(name)) {
    throw new TypeError(`fromHeader() needs an HTTP header name; got ${JSON.stringify(name)}.`);
  }
  const key = name.toLowerCase();
  const resolver = (req: HttpRequestLike): ResolvedSlug => {
    const value = req.headers[key];
    const text = Array.isArray(value) ? value.join(', ') : value;
    // Only HTTP's optional whitespace (space, tab) is trimmed: anything else
    // around the name, a no-break space say, makes it invalid, not another name.
    return text === undefined ? undefined : text.replace(/^[ \t]+|[ \t]+$/g, '');
  };
  return labelled(resolver, `header ${key}`);
}

/** Options of `fromSubdomain()`. */
export interface SubdomainResolverOptions {
  /** The domain tenants are subdomains of: `app.example.com` serves `acme.app.example.com`. */
  readonly baseDomain: string;
  /** Labels that name no tenant. Default: `['www']`. */
  readonly ignore?: readonly string[];
}

/**
 * Reads the tenant from the subdomain of the `Host` header:
 * `acme.app.example.com` → `acme` for `baseDomain: 'app.example.com'`. The
 * bare domain, `www`, and hosts outside the base domain name no tenant.
 * Hostnames are compared in lower case, without the port. Several labels
 * (`a.b.app.example.com`) are taken as the name `a.b`, which is refused as
 * invalid. The Host header is used as received: behind a proxy, have the
 * proxy pass the original Host.
 *
 * @example
 * ```ts
 * app.use(tenantMiddleware(tenants, { resolve: fromSubdomain({ baseDomain: 'yourapp.com' }) }));
 * ```
 */
export function fromSubdomain(options: SubdomainResolverOptions): TenantResolver<HttpRequestLike> {
  const base = normaliseHost(String(options?.baseDomain ?? ''));
  if (base === '' || base.startsWith('.')) {
    throw new TypeError(`fromSubdomain() needs { baseDomain }, a domain such as "app.example.com"; got ${JSON.stringify(options?.baseDomain)}.`);
  }
  const ignore = new Set((options.ignore ?? ['www']).map((label) => label.toLowerCase()));
  const suffix = `.${base}`;
  const resolver = (req: HttpRequestLike): ResolvedSlug => {
    const raw = req.headers.host ?? (req.headers as Record<string, string | string[] | undefined>)[':authority'];
    if (typeof raw !== 'string') return undefined;
    const host = normaliseHost(raw);
    if (!host.endsWith(suffix)) return undefined;
    const label = host.slice(0, -suffix.length);
    return ignore.has(label) ? undefined : label;
  };
  return labelled(resolver, `subdomain of ${base}`);
}

/** Options of `fromPath()`. */
export interface PathResolverOptions {
  /** Path before the tenant segment: `'/t'` reads `/t/acme/clients`. Default: none (the first segment). */
  readonly prefix?: string;
}

/**
 * Reads the tenant from a path segment: the first one (`/acme/clients` →
 * `acme`), or the one after `prefix` (`/t/acme/clients` with `prefix: '/t'`).
 * On Express (and NestJS on Express) the path the later routes see is
 * rewritten without it, as a mounted router would (`/clients`;
 * `req.originalUrl` keeps the full one). On Fastify routing happens before
 * any hook, so declare the routes with the segment (`/t/:tenant/clients`).
 *
 * @example
 * ```ts
 * app.use(tenantMiddleware(tenants, { resolve: fromPath({ prefix: '/t' }) }));
 * app.get('/clients', handler); // serves GET /t/acme/clients for tenant acme
 * ```
 */
export function fromPath(options: PathResolverOptions = {}): TenantResolver<HttpRequestLike> {
  const prefixSegments = (options.prefix ?? '').split('/').filter((s) => s !== '');
  const split = (url: string): { slug: string; rest: string } | undefined => {
    const queryAt = url.search(/[?#]/);
    const path = queryAt === -1 ? url : url.slice(0, queryAt);
    const query = queryAt === -1 ? '' : url.slice(queryAt);
    const segments = path.split('/');
    // segments[0] is '' for a path starting with '/'.
    if (segments[0] !== '') return undefined;
    for (let i = 0; i < prefixSegments.length; i += 1) {
      if (segments[i + 1] !== prefixSegments[i]) return undefined;
    }
    const slug = segments[prefixSegments.length + 1];
    if (slug === undefined || slug === '') return undefined;
    const rest = segments.slice(prefixSegments.length + 2).join('/');
    return { slug, rest: `/${rest}${query}` };
  };
  const resolver = ((req: HttpRequestLike): ResolvedSlug => split(req.url ?? '')?.slug) as PathRewritingResolver;
  Object.defineProperty(resolver, PATH_REWRITE, { value: (url: string) => split(url)?.rest });
  return labelled(resolver, prefixSegments.length === 0 ? 'first path segment' : `path segment after /${prefixSegments.join('/')}`);
}

/** Options of `fromDomain()`. */
export interface DomainResolverOptions {
  /**
   * Hostnames not marked verified: `'skip'` (default) treats them as unknown
   * ("not mine": the next resolver gets its turn), so a hostname someone
   * added but does not control serves nobody; `'serve'` resolves them too.
   */
  readonly unverified?: 'skip' | 'serve';
  /**
   * How long the in-memory copy of the domains registry is trusted before one
   * query checks whether it changed (other processes' changes take effect
   * within it; this process's at once). 0 checks on every request. Default 5000.
   */
  readonly ttlMs?: number;
}

/** The resolver `fromDomain()` returns: a `TenantResolver` with its directory and a way to stop following the manager. */
export interface DomainResolver extends TenantResolver<HttpRequestLike> {
  /** The hostname → tenant copy it answers from (its `stats()` count lookups and queries). */
  readonly directory: DomainDirectory;
  /** Stops following the manager's domain events (call it when the app shuts down). Safe to call twice. */
  close(): void;
}

/**
 * Reads the tenant from the `Host` header (HTTP/2 `:authority`) when it is
 * one of the tenants' custom domains (`addTenantDomain`): `portal.acme.com`
 * → `acme`. The header is normalised as the registry's hostnames are (lower
 * case, no port, no trailing dot, punycode); a host no tenant has, an
 * unverified one (unless `unverified: 'serve'`), an IP address or a
 * malformed header is "not mine", so a resolver after it (`fromSubdomain()`)
 * gets its turn. The hostnames are held in memory: no lookup costs a query
 * of its own, known or unknown, and the copy is checked with one query per
 * `ttlMs`. This process's domain changes apply at once (it follows the
 * manager's `domain-*` events; `close()` stops that). A tenant reached by
 * its domain is served, refused (suspended 403, archived 423) and
 * authorised exactly as by any other resolver. The Host header is used as
 * received: behind a proxy, have the proxy pass the original Host.
 *
 * @example
 * ```ts
 * app.use(tenantMiddleware(tenants, {
 *   resolve: [fromDomain(tenants), fromSubdomain({ baseDomain: 'yourapp.com' })],
 * }));
 * ```
 */
export function fromDomain(manager: TenantDataSourceManager, options: DomainResolverOptions = {}): DomainResolver {
  if (manager === null || typeof manager !== 'object' || typeof manager[DOMAIN_SNAPSHOT] !== 'function') {
    throw new TypeError('fromDomain() needs the TenantDataSourceManager as its first argument.');
  }
  const unverified = options?.unverified ?? 'skip';
  if (unverified !== 'skip' && unverified !== 'serve') {
    throw new TypeError(`fromDomain() option "unverified" must be 'skip' or 'serve'; got ${JSON.stringify(unverified)}.`);
  }
  const serveUnverified = unverified === 'serve';
  const directory = new DomainDirectory((generation) => manager[DOMAIN_SNAPSHOT](generation), options?.ttlMs ?? DEFAULT_DOMAIN_TTL_MS);
  const unsubscribe = [
    manager.on('domain-added', ({ domain }) => directory.apply(domain, false)),
    manager.on('domain-updated', ({ domain }) => directory.apply(domain, false)),
    manager.on('domain-removed', ({ domain }) => directory.apply(domain, true)),
  ];
  const slugOf = (entry: DomainDirectoryEntry | undefined): ResolvedSlug =>
    entry === undefined || (!entry.verified && !serveUnverified) ? undefined : entry.slug;
  const resolver = (req: HttpRequestLike): ResolvedSlug | Promise<ResolvedSlug> => {
    const hostname = hostnameOfHeader(req.headers.host ?? (req.headers as Record<string, string | string[] | undefined>)[':authority']);
    if (hostname === undefined) return undefined;
    const entry = directory.lookup(hostname);
    return entry instanceof Promise ? entry.then(slugOf) : slugOf(entry);
  };
  Object.defineProperties(resolver, {
    directory: { value: directory, enumerable: true },
    close: { value: (): void => void unsubscribe.splice(0).forEach((off) => off()) },
  });
  return labelled(resolver as DomainResolver, 'custom domain');
}

function labelled<T extends TenantResolver>(resolver: T, label: string): T {
  Object.defineProperty(resolver, RESOLVER_LABEL, { value: label });
  return resolver;
}

/** Lower case, no port, no trailing dot; `[::1]:3000` → `[::1]`. */
function normaliseHost(host: string): string {
  let value = host.trim().toLowerCase();
  if (value.startsWith('[')) {
    const end = value.indexOf(']');
    value = end === -1 ? value : value.slice(0, end + 1);
  } else {
    const colon = value.indexOf(':');
    if (colon !== -1) value = value.slice(0, colon);
  }
  return value.endsWith('.') ? value.slice(0, -1) : value;
}
