import { expect } from 'chai';
import { InvalidArgumentError, tenantContext } from '../../src';
import { memoryCacheStore, tenantCache } from '../../src/cache';
import { createTenants, openManager, sleep } from '../support/fixtures';

describe('memoryCacheStore (typeorm-tenants/cache)', () => {
  it('keeps at most maxEntries, evicting the least recently used first', async () => {
    const store = memoryCacheStore({ maxEntries: 5 });
    for (let i = 0; i < 5; i += 1) await store.set(`k${i}`, `v${i}`, undefined);
    expect(await store.get('k0')).to.equal('v0'); // k0 is now the most recently used
    for (let i = 5; i < 8; i += 1) await store.set(`k${i}`, `v${i}`, undefined);
    expect(store.size).to.equal(5);
    const kept = await Promise.all(Array.from({ length: 8 }, (_, i) => store.get(`k${i}`)));
    expect(kept).to.deep.equal(['v0', undefined, undefined, undefined, 'v4', 'v5', 'v6', 'v7']);
  });

  it('expires entries after their TTL and deletes by plain prefix (no pattern)', async () => {
    const store = memoryCacheStore();
    await store.set('p:short', '1', 30);
    await store.set('p:long', '2', 60_000);
    await store.set('p*:x', '3', undefined);
    await store.set('q:x', '4', undefined);
    await sleep(100);
    expect(await store.get('p:short')).to.equal(undefined);
    expect(await store.get('p:long')).to.equal('2');
    expect(await store.deletePrefix('p*')).to.equal(1);
    expect(await store.get('p:long')).to.equal('2');
    expect(await store.deletePrefix('p:')).to.equal(1);
    expect(await store.get('q:x')).to.equal('4');
    expect(store.size).to.equal(1);
  });

  it('refuses a bound that is not a positive integer', () => {
    expect(() => memoryCacheStore({ maxEntries: 0 })).to.throw(InvalidArgumentError, 'positive integer');
    expect(() => memoryCacheStore({ maxEntries: 1.5 })).to.throw(InvalidArgumentError, 'positive integer');
  });

  it('under tenantCache: tenants are kept apart, and dropTenant clears only the dropped tenant', async () => {
    const manager = await openManager();
    const store = memoryCacheStore({ maxEntries: 100 });
    const cache = tenantCache(manager, { store, keyPrefix: 'mem:' });
    try {
      const slugs = await createTenants(manager, 3, 'tcm');
      await Promise.all(slugs.map((slug) => manager.run(slug, () => cache.set('who', tenantContext.current()!.slug))));
      expect(await Promise.all(slugs.map((slug) => manager.run(slug, () => cache.get('who'))))).to.deep.equal(slugs);
      await manager.dropTenant(slugs[0], { force: true });
      expect(store.size).to.equal(2);
      expect(await Promise.all(slugs.slice(1).map((slug) => manager.run(slug, () => cache.get('who'))))).to.deep.equal(slugs.slice(1));
    } finally {
      cache.close();
    }
  });
});
