import { expect } from 'chai';
import { EventEmitter } from 'node:events';
import { TenantRequestResolver, fromHeader, tenantContext, type TenantResolution } from '../../src';
import { serveRequest } from '../../src/http/tenant-resolution';
import { openManager, uniqueSlug } from '../support/fixtures';

interface FakeRequest {
  readonly headers: Record<string, string>;
  readonly url: string;
}

const request = (slug: string): FakeRequest => ({ headers: { 'x-tenant-slug': slug }, url: '/x' });

function kindOf(outcome: TenantResolution | Promise<TenantResolution>): string {
  return outcome instanceof Promise ? 'promise' : outcome.kind;
}

describe('TenantRequestResolver: the synchronous hot path', () => {
  it('resolveNow answers at once for a cached tenant, with a promise for the first lookup, an async resolver or an async authorize', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('now');
    await manager.createTenant(slug);
    const plain = new TenantRequestResolver<FakeRequest>(manager, { resolve: fromHeader() });
    const first = plain.resolveNow(request(slug));
    expect(kindOf(first)).to.equal('promise');
    expect((await first).kind).to.equal('tenant');
    const hot = plain.resolveNow(request(slug));
    expect(kindOf(hot)).to.equal('tenant');
    expect((hot as Extract<TenantResolution, { kind: 'tenant' }>).tenant.slug).to.equal(slug);

    const asyncResolver = new TenantRequestResolver<FakeRequest>(manager, { resolve: [async () => undefined, fromHeader()] });
    await asyncResolver.resolve(request(slug));
    const viaAsync = asyncResolver.resolveNow(request(slug));
    expect(kindOf(viaAsync)).to.equal('promise');
    expect((await viaAsync).kind).to.equal('tenant');

    const syncAuthorize = new TenantRequestResolver<FakeRequest>(manager, { resolve: fromHeader(), authorize: () => false });
    await syncAuthorize.resolve(request(slug));
    const refused = syncAuthorize.resolveNow(request(slug));
    expect(kindOf(refused)).to.equal('refused');
    expect((refused as Extract<TenantResolution, { kind: 'refused' }>).error.code).to.equal('TENANT_FORBIDDEN');

    // A thenable that is not a Promise is awaited, as before.
    const thenable = new TenantRequestResolver<FakeRequest>(manager, {
      resolve: fromHeader(),
      authorize: () => ({ then: (ok: (v: boolean) => void) => ok(true) }) as unknown as Promise<boolean>,
    });
    await thenable.resolve(request(slug));
    const allowed = thenable.resolveNow(request(slug));
    expect(kindOf(allowed)).to.equal('promise');
    expect((await allowed).kind).to.equal('tenant');
    for (const resolver of [plain, asyncResolver, syncAuthorize, thenable]) resolver.close();
  });

  it('a cache hit skips the slug rule only for names that passed it: a bad name is refused every time, with no lookup', async () => {
    const manager = await openManager();
    const resolver = new TenantRequestResolver<FakeRequest>(manager, { resolve: fromHeader() });
    for (let i = 0; i < 3; i += 1) {
      const outcome = resolver.resolveNow(request('Not_A_Slug!'));
      expect(kindOf(outcome)).to.equal('refused');
      expect((outcome as Extract<TenantResolution, { kind: 'refused' }>).error.code).to.equal('INVALID_TENANT_NAME');
    }
    expect(resolver.cache.stats()).to.include({ lookups: 0, size: 0 });
    resolver.close();
  });

  it('serveRequest with a cached tenant continues the request inside the tenant before it returns, and releases the run when the response closes', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('sync');
    await manager.createTenant(slug);
    const resolver = new TenantRequestResolver<FakeRequest>(manager, { resolve: fromHeader() });
    await resolver.resolve(request(slug)); // cached now
    await manager.run(slug, () => undefined); // and its DataSource
    const response = Object.assign(new EventEmitter(), { destroyed: false });
    let seen: string | null | undefined;
    const failures: unknown[] = [];
    serveRequest(resolver, request(slug), {
      request: new EventEmitter(),
      response,
      attach: () => undefined,
      proceed: () => {
        seen = tenantContext.current()?.slug ?? null;
      },
      refuse: (error) => failures.push(error),
      fail: (error) => failures.push(error),
    });
    expect(seen).to.equal(slug);
    expect(manager.stats().activeRuns).to.equal(1);
    response.emit('close');
    await new Promise((resolve) => setImmediate(resolve));
    expect(manager.stats().activeRuns).to.equal(0);
    expect(failures).to.deep.equal([]);
    resolver.close();
  });
});
