import { expect } from 'chai';
import { LeaseCache } from '../../src/data-source/lease-cache';

/** A cache of plain objects that records what it created and disposed of. */
function recordingCache(max: number) {
  const created: string[] = [];
  const disposed: string[] = [];
  const cache = new LeaseCache<{ key: string }>({
    max,
    create: async (key) => {
      created.push(key);
      return { key };
    },
    dispose: async ({ key }) => {
      disposed.push(key);
    },
    onDisposeError: (error) => {
      throw error;
    },
  });
  return { cache, created, disposed };
}

async function use(cache: LeaseCache<{ key: string }>, key: string): Promise<void> {
  (await cache.lease(key)).release();
}

describe('LeaseCache (unit)', () => {
  it('evicts the least recently used entry, counting hits as use', async () => {
    const { cache, disposed } = recordingCache(3);
    for (const key of ['a', 'b', 'c']) await use(cache, key);
    await use(cache, 'a'); // a is now the most recent; b the least
    const hit = cache.tryLease('c');
    hit?.release(); // c more recent than b
    await use(cache, 'd');
    await cache.settled();
    expect(disposed).to.deep.equal(['b']);
    await use(cache, 'e');
    await cache.settled();
    expect(disposed).to.deep.equal(['b', 'a']);
    expect(cache.stats()).to.include({ size: 3, evictions: 2, hits: 2, misses: 5 });
  });

  it('passes over held entries when evicting, and disposes of an evicted held entry only on release', async () => {
    const { cache, disposed } = recordingCache(2);
    const heldA = await cache.lease('a');
    await use(cache, 'b');
    await use(cache, 'c'); // a is the oldest but held: b goes
    await cache.settled();
    expect(disposed).to.deep.equal(['b']);
    const heldC = await cache.lease('c');
    await use(cache, 'd'); // all held but d: the oldest held (a) leaves the cache, not disposed yet
    await cache.settled();
    expect(disposed).to.deep.equal(['b']);
    expect(cache.stats().pendingDisposal).to.equal(1);
    heldA.release();
    heldA.release(); // twice is harmless
    await cache.settled();
    expect(disposed).to.deep.equal(['b', 'a']);
    expect(cache.stats().pendingDisposal).to.equal(0);
    heldC.release();
  });

  it('tryLease serves only ready entries and never creates', async () => {
    const { cache, created } = recordingCache(2);
    expect(cache.tryLease('a')).to.equal(undefined);
    const pending = cache.lease('a');
    expect(cache.tryLease('a'), 'not ready yet').to.equal(undefined);
    (await pending).release();
    const lease = cache.tryLease('a');
    expect(lease?.value.key).to.equal('a');
    lease?.release();
    expect(created).to.deep.equal(['a']);
  });
});
