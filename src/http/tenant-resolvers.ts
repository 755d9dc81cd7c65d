import type { IncomingHttpHeaders } from 'node:http';

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
