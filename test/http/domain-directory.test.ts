import { expect } from 'chai';
import { DomainDirectory, type TenantDomain } from '../../src';
import type { TenantDomainSnapshot } from '../../src/registry/tenant-domains';

/** A registry read the test answers by hand, recording the generation each read was asked with. */
function fakeRegistry(): {
  read: (generation: string) => Promise<TenantDomainSnapshot>;
  asked: string[];
  answer: (snapshot: TenantDomainSnapshot) => void;
  fail: (error: Error) => void;
} {
  const asked: string[] = [];
  const waiting: Array<{ resolve: (s: TenantDomainSnapshot) => void; reject: (e: Error) => void }> = [];
  return {
    asked,
    read: (generation) =>
      new Promise((resolve, reject) => {
        asked.push(generation);
        waiting.push({ resolve, reject });
      }),
    answer: (snapshot) => waiting.shift()!.resolve(snapshot),
    fail: (error) => waiting.shift()!.reject(error),
  };
}

const domain = (hostname: string, slug: string, verified = true): TenantDomain => ({ hostname, slug, verified, primary: false, createdAt: new Date(0) });
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('DomainDirectory (the in-memory copy behind fromDomain)', () => {
  it('concurrent first lookups share one read; then answers come from memory, unknown hostnames included', async () => {
    const registry = fakeRegistry();
    const directory = new DomainDirectory(registry.read, 60_000);
    const pending = [directory.lookup('a.example.com'), directory.lookup('b.example.com'), directory.lookup('nope.example.com')];
    await tick();
    expect(registry.asked).to.deep.equal(['']);
    registry.answer({ generation: '7', domains: [{ hostname: 'a.example.com', slug: 'a', verified: true }, { hostname: 'b.example.com', slug: 'b', verified: false }] });
    expect(await Promise.all(pending)).to.deep.equal([{ slug: 'a', verified: true }, { slug: 'b', verified: false }, undefined]);
    for (let i = 0; i < 100; i += 1) expect(directory.lookup(`random-${i}.example.com`)).to.equal(undefined);
    expect(registry.asked).to.have.length(1);
    expect(directory.stats()).to.include({ hostnames: 2, queries: 1, reloads: 1, lookups: 103 });
  });

  it('past the TTL it asks with its generation; an unchanged registry keeps the copy, a changed one replaces it', async () => {
    const registry = fakeRegistry();
    const directory = new DomainDirectory(registry.read, 0);
    const first = directory.lookup('a.example.com');
    await tick();
    registry.answer({ generation: '1', domains: [{ hostname: 'a.example.com', slug: 'a', verified: true }] });
    expect(await first).to.deep.equal({ slug: 'a', verified: true });

    const second = directory.lookup('a.example.com');
    await tick();
    expect(registry.asked).to.deep.equal(['', '1']);
    registry.answer({ generation: '1', domains: undefined });
    expect(await second).to.deep.equal({ slug: 'a', verified: true });

    const third = directory.lookup('a.example.com');
    await tick();
    registry.answer({ generation: '2', domains: [{ hostname: 'c.example.com', slug: 'c', verified: true }] });
    expect(await third).to.equal(undefined);
    expect(directory.stats()).to.include({ hostnames: 1, queries: 3, reloads: 2 });
  });

  it('a change of this process made while a read is in flight survives the read (which may predate it), and the next check reads whole', async () => {
    const registry = fakeRegistry();
    const directory = new DomainDirectory(registry.read, 0);
    const loading = directory.lookup('gone.example.com');
    await tick();
    // Removed and added while the read runs; the read answers with the registry as it was before.
    directory.apply(domain('gone.example.com', 'a'), true);
    directory.apply(domain('new.example.com', 'b'), false);
    registry.answer({ generation: '5', domains: [{ hostname: 'gone.example.com', slug: 'a', verified: true }] });
    expect(await loading).to.equal(undefined);
    const next = directory.lookup('new.example.com');
    await tick();
    expect(registry.asked, 'the copy mixes two moments: read whole').to.deep.equal(['', '']);
    registry.answer({ generation: '7', domains: [{ hostname: 'new.example.com', slug: 'b', verified: true }] });
    expect(await next).to.deep.equal({ slug: 'b', verified: true });
  });

  it('a failed read rejects its lookups and the next lookup reads again', async () => {
    const registry = fakeRegistry();
    const directory = new DomainDirectory(registry.read, 60_000);
    const failing = directory.lookup('a.example.com');
    await tick();
    registry.fail(new Error('connection lost'));
    await expect(failing).to.be.rejectedWith('connection lost');
    const retry = directory.lookup('a.example.com');
    await tick();
    registry.answer({ generation: '1', domains: [{ hostname: 'a.example.com', slug: 'a', verified: true }] });
    expect(await retry).to.deep.equal({ slug: 'a', verified: true });
    expect(registry.asked).to.deep.equal(['', '']);
  });
});
