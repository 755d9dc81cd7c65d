import { expect } from 'chai';
import { ResolutionCache } from '../../src/http/resolution-cache';
import type { TenantRecord } from '../../src/registry/tenant-record';

/** A cache over a registry of `known` slugs that records every lookup. */
function recordingCache(known: readonly string[], maxEntries: number) {
  const lookups: string[] = [];
  const cache = new ResolutionCache(
    async (slug) => {
      lookups.push(slug);
      return known.includes(slug) ? ({ slug, schemaName: slug, name: slug, status: 'active', server: 'default', createdAt: new Date(0) } satisfies TenantRecord) : undefined;
    },
    { maxEntries, ttlMs: 60_000 },
  );
  return { cache, lookups };
}

describe('ResolutionCache (unit)', () => {
  it('peek answers a cached record at once and counts a hit; not cached, expired or unknown: undefined, and get() looks up', async () => {
    const { cache, lookups } = recordingCache(['a'], 10);
    expect(cache.peek('a')).to.equal(undefined);
    expect((await cache.get('a'))?.slug).to.equal('a');
    expect(cache.peek('a')?.slug).to.equal('a');
    expect(await cache.get('nope')).to.equal(undefined);
    expect(cache.peek('nope')).to.equal(undefined); // a negative entry is get()'s to answer
    expect(await cache.get('nope')).to.equal(undefined);
    expect(lookups).to.deep.equal(['a', 'nope']);
    expect(cache.stats()).to.include({ hits: 1, negativeHits: 1, lookups: 2 });
  });

  it('at the bound the least recently used record goes first: a hit makes a record the newest, a repeated hit keeps it so', async () => {
    const { cache, lookups } = recordingCache(['a', 'b', 'c', 'd', 'e'], 2);
    await cache.get('a');
    await cache.get('b');
    cache.peek('a'); // order: b, a
    cache.peek('a'); // already the newest
    await cache.get('c'); // evicts b
    expect(cache.peek('b')).to.equal(undefined);
    expect(cache.peek('a')?.slug).to.equal('a'); // order: c, a
    cache.invalidate('a'); // the newest goes
    await cache.get('d'); // order: c, d
    cache.peek('c'); // order: d, c
    await cache.get('e'); // evicts d
    expect(cache.peek('d')).to.equal(undefined);
    expect(cache.peek('c')?.slug).to.equal('c');
    expect(cache.peek('e')?.slug).to.equal('e');
    expect(lookups).to.deep.equal(['a', 'b', 'c', 'd', 'e']);
    expect(cache.stats().size).to.equal(2);
  });
});
