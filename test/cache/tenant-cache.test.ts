import { expect } from 'chai';
import type Redis from 'ioredis';
import { TenantContextMissingError, TenantDroppedError, TenantLifecycleHookError, tenantContext, tenantIncarnation, type TenantDataSourceManager } from '../../src';
import { redisCacheStore, tenantCache, type RedisCacheClient, type TenantCache } from '../../src/cache';
import { createTenants, databaseUrl, openManager, sleep, uniqueSlug } from '../support/fixtures';
import { deleteKeys, gate, redisClient, scanKeys, tenantNamespace, uniquePrefix } from './cache-fixtures';

describe('tenantCache over Redis (typeorm-tenants/cache)', function () {
  this.timeout(120_000);
  let redis: Redis;
  let keyPrefix: string;
  const caches: TenantCache[] = [];

  beforeEach(() => {
    redis = redisClient();
    keyPrefix = uniquePrefix();
  });

  afterEach(async () => {
    for (const cache of caches.splice(0)) cache.close();
    await deleteKeys(redis, keyPrefix);
    expect(await scanKeys(redis, keyPrefix), 'the test left keys behind').to.deep.equal([]);
    redis.disconnect();
  });

  async function setUp(tenantCount: number, options: { prefix?: string; client?: RedisCacheClient; scanCount?: number } = {}): Promise<{ manager: TenantDataSourceManager; cache: TenantCache; slugs: string[] }> {
    const manager = await openManager({ slugReuseDelayMs: 0 });
    const cache = tenantCache(manager, { store: redisCacheStore(options.client ?? redis, { scanCount: options.scanCount }), keyPrefix: options.prefix ?? keyPrefix });
    caches.push(cache);
    const slugs = await createTenants(manager, tenantCount, 'tc');
    return { manager, cache, slugs };
  }

  /** Writes `count` entries k0..k<count-1> in the tenant, each valued `<slug>/<i>`. */
  async function fill(manager: TenantDataSourceManager, cache: TenantCache, slug: string, count: number): Promise<void> {
    await manager.run(slug, () => Promise.all(Array.from({ length: count }, (_, i) => cache.set(`k${i}`, `${slug}/${i}`))));
  }

  it('20 tenants × 50 interleaved operations: each sees only its own values, and every physical key carries its schema and incarnation', async () => {
    const { manager, cache, slugs } = await setUp(20);
    const seen = new Map<string, Array<unknown>>();
    // The same 25 key names in every tenant, set then read, all tenants at once.
    await Promise.all(
      slugs.map((slug) =>
        manager.run(slug, async () => {
          const values: unknown[] = [];
          for (let i = 0; i < 25; i += 1) {
            await cache.set(`item:${i}`, { slug, i, at: tenantContext.current()!.slug });
            await sleep(0);
            values.push(await cache.get(`item:${i}`));
          }
          seen.set(slug, values);
        }),
      ),
    );
    for (const slug of slugs) {
      expect(seen.get(slug)).to.deep.equal(Array.from({ length: 25 }, (_, i) => ({ slug, i, at: slug })));
    }

    const keys = await scanKeys(redis, keyPrefix);
    expect(keys).to.have.length(20 * 25);
    for (const slug of slugs) {
      const namespace = await tenantNamespace(manager, keyPrefix, slug);
      const own = keys.filter((key) => key.startsWith(namespace));
      expect(own, `keys of ${slug}`).to.have.length(25);
      for (const key of own) {
        const stored = JSON.parse((await redis.get(key))!) as { slug: string };
        expect(stored.slug, `${key} holds another tenant's value`).to.equal(slug);
      }
    }
  });

  it('outside a run every method throws TENANT_CONTEXT_MISSING and writes nothing; so does a run of another manager', async () => {
    const { manager, cache, slugs } = await setUp(1);
    let called = 0;
    const attempts = [
      () => cache.get('k'),
      () => cache.set('k', 1),
      () => cache.delete('k'),
      () =>
        cache.wrap('k', 1000, () => {
          called += 1;
          return 1;
        }),
    ];
    for (const attempt of attempts) {
      const error = await attempt().catch((e: unknown) => e);
      expect(error).to.be.instanceOf(TenantContextMissingError);
      expect((error as TenantContextMissingError).code).to.equal('TENANT_CONTEXT_MISSING');
    }

    const other = await openManager();
    const otherSlug = uniqueSlug('tco');
    await other.createTenant(otherSlug);
    for (const attempt of attempts) {
      const error = await other.run(otherSlug, attempt).catch((e: unknown) => e);
      expect((error as TenantContextMissingError).code).to.equal('TENANT_CONTEXT_MISSING');
      expect((error as Error).message).to.include('another manager');
    }
    expect(called).to.equal(0);
    expect(await scanKeys(redis, keyPrefix)).to.deep.equal([]);
    // Inside a run of its own manager it works.
    await manager.run(slugs[0], () => cache.set('k', 1));
    expect(await scanKeys(redis, keyPrefix)).to.have.length(1);
  });

  it('dropTenant clears exactly that tenant\'s keys: the others keep every entry', async () => {
    const { manager, cache, slugs } = await setUp(3);
    for (const slug of slugs) await fill(manager, cache, slug, 300);
    const namespaces = await Promise.all(slugs.map((slug) => tenantNamespace(manager, keyPrefix, slug)));
    expect(await scanKeys(redis, keyPrefix)).to.have.length(900);

    await manager.dropTenant(slugs[0], { force: true });

    const keys = await scanKeys(redis, keyPrefix);
    expect(keys.filter((key) => key.startsWith(namespaces[0]))).to.deep.equal([]);
    expect(keys.filter((key) => key.startsWith(namespaces[1]))).to.have.length(300);
    expect(keys.filter((key) => key.startsWith(namespaces[2]))).to.have.length(300);
    expect(keys).to.have.length(600);
    expect(await manager.run(slugs[1], () => cache.get('k299'))).to.equal(`${slugs[1]}/299`);
  });

  it('archiveTenant clears the tenant\'s keys; after restoreTenant it starts empty', async () => {
    const { manager, cache, slugs } = await setUp(2);
    for (const slug of slugs) await fill(manager, cache, slug, 50);
    const [archived, kept] = await Promise.all(slugs.map((slug) => tenantNamespace(manager, keyPrefix, slug)));

    await manager.archiveTenant(slugs[0]);
    let keys = await scanKeys(redis, keyPrefix);
    expect(keys.filter((key) => key.startsWith(archived))).to.deep.equal([]);
    expect(keys.filter((key) => key.startsWith(kept))).to.have.length(50);

    await manager.restoreTenant(slugs[0]);
    expect(await manager.run(slugs[0], () => cache.get('k0'))).to.equal(undefined);
    keys = await scanKeys(redis, keyPrefix);
    expect(keys).to.have.length(50);
  });

  it('a slug dropped (with no cache plugin to clear it) and created again does not see the old values: the incarnation differs', async () => {
    const { manager, cache, slugs } = await setUp(1);
    const [slug] = slugs;
    await manager.run(slug, () => cache.set('profile', 'old tenant'));
    const oldNamespace = await tenantNamespace(manager, keyPrefix, slug);
    cache.close();
    await manager.dropTenant(slug, { force: true });
    const recreated = await manager.createTenant(slug);

    const again = tenantCache(manager, { store: redisCacheStore(redis), keyPrefix });
    caches.push(again);
    expect(await manager.run(slug, () => again.get('profile'))).to.equal(undefined);
    // The old entry is still in Redis, under the old incarnation only.
    const keys = await scanKeys(redis, keyPrefix);
    expect(keys).to.deep.equal([`${oldNamespace}profile`]);
    expect(oldNamespace).to.not.include(`:${tenantIncarnation(recreated)}:`);
    await manager.run(slug, () => again.set('profile', 'new tenant'));
    expect(await manager.run(slug, () => again.get('profile'))).to.equal('new tenant');
    // Dropping the new tenant clears every incarnation of the schema: the stray old entry too.
    await manager.dropTenant(slug, { force: true });
    expect(await scanKeys(redis, keyPrefix)).to.deep.equal([]);
  });

  it('a run that began before dropTenant gets TENANT_DROPPED from set() and wrap() after the clear, and leaves no key', async () => {
    const { manager, cache, slugs } = await setUp(2);
    const [dropped, other] = slugs;
    await fill(manager, cache, dropped, 10);
    const held = gate();
    const fnStarted = gate();
    const fnMayFinish = gate();
    const heldRun = manager.run(dropped, async () => {
      await held.opened;
      const results = await Promise.allSettled([cache.set('late', 1), cache.get('k0'), cache.delete('k1')]);
      return results.map((result) => (result.status === 'rejected' ? (result.reason as TenantDroppedError).code : 'ok'));
    });
    // A wrap() whose fn is still computing when the drop begins.
    const wrapping = manager.run(dropped, () =>
      cache.wrap('slow', 60_000, async () => {
        fnStarted.open();
        await fnMayFinish.opened;
        return 'computed before the drop';
      }),
    );
    await fnStarted.opened;

    await manager.dropTenant(dropped, { force: true });
    held.open();
    fnMayFinish.open();
    expect(await heldRun).to.deep.equal(['TENANT_DROPPED', 'TENANT_DROPPED', 'TENANT_DROPPED']);
    const error = await wrapping.catch((e: unknown) => e);
    expect(error).to.be.instanceOf(TenantDroppedError);

    const schema = dropped.replace(/-/g, '_');
    expect((await scanKeys(redis, keyPrefix)).filter((key) => key.includes(`tenant:${schema}:`))).to.deep.equal([]);
    // The other tenant is served as before.
    await manager.run(other, () => cache.set('after', 1));
    expect(await manager.run(other, () => cache.get('after'))).to.equal(1);
  });

  it('a set() of a run that began before archiveTenant lands after the clear (its own tenant\'s entry); restoreTenant clears it again', async () => {
    const { manager, cache, slugs } = await setUp(1);
    const [slug] = slugs;
    const namespace = await tenantNamespace(manager, keyPrefix, slug);
    const held = gate();
    const heldRun = manager.run(slug, async () => {
      await held.opened;
      await cache.set('stray', 'written while archived');
    });
    await manager.archiveTenant(slug);
    held.open();
    await heldRun;
    // What is claimed: the stray entry exists, in the archived tenant's own namespace, unread while it is archived.
    expect(await scanKeys(redis, keyPrefix)).to.deep.equal([`${namespace}stray`]);

    await manager.restoreTenant(slug);
    expect(await scanKeys(redis, keyPrefix)).to.deep.equal([]);
    expect(await manager.run(slug, () => cache.get('stray'))).to.equal(undefined);
  });

  it('a clear that fails halfway leaves dropTenant resumable: the tenant stays dropping, and dropTenant again finishes the clear', async () => {
    let unlinks = 0;
    let failing = true;
    // The real client, with its second UNLINK refused.
    const flaky = new Proxy(redis, {
      get(target, property, receiver) {
        if (property === 'unlink') {
          return (...keys: string[]) => {
            unlinks += 1;
            if (failing && unlinks === 2) return Promise.reject(new Error('UNLINK refused by the test'));
            return target.unlink(...keys);
          };
        }
        const value = Reflect.get(target, property, receiver) as unknown;
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const { manager, cache, slugs } = await setUp(2, { client: flaky as unknown as RedisCacheClient, scanCount: 20 });
    const [dropped, other] = slugs;
    await fill(manager, cache, dropped, 200);
    await fill(manager, cache, other, 30);
    const namespace = await tenantNamespace(manager, keyPrefix, dropped);
    unlinks = 0;

    const error = await manager.dropTenant(dropped, { force: true }).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(TenantLifecycleHookError);
    expect((error as TenantLifecycleHookError).code).to.equal('TENANT_LIFECYCLE_HOOK_FAILED');
    expect((error as TenantLifecycleHookError).plugin).to.equal(`tenant-cache:${keyPrefix}`);
    expect((error as Error).message).to.include('UNLINK refused by the test');
    expect((await manager.getTenant(dropped))?.status).to.equal('dropping');
    const left = (await scanKeys(redis, keyPrefix)).filter((key) => key.startsWith(namespace)).length;
    expect(left, 'the first batch went, the rest stayed').to.be.within(1, 199);

    failing = false;
    await manager.dropTenant(dropped);
    expect(await manager.getTenant(dropped)).to.equal(undefined);
    const keys = await scanKeys(redis, keyPrefix);
    expect(keys.filter((key) => key.startsWith(namespace))).to.deep.equal([]);
    expect(keys).to.have.length(30);
  });

  it('wrap() is single-flight per tenant and key: fn runs once for 10 concurrent callers, once per tenant, in the caller\'s tenant', async () => {
    const { manager, cache, slugs } = await setUp(3);
    const calls = new Map<string, number>();
    const results = await Promise.all(
      slugs.flatMap((slug) =>
        Array.from({ length: 10 }, () =>
          manager.run(slug, () =>
            cache.wrap('report', 60_000, async () => {
              const active = tenantContext.current()!.slug;
              calls.set(active, (calls.get(active) ?? 0) + 1);
              await sleep(20);
              return { tenant: active, at: new Date(0) };
            }),
          ),
        ),
      ),
    );
    expect(Object.fromEntries(calls)).to.deep.equal(Object.fromEntries(slugs.map((slug) => [slug, 1])));
    // Every caller gets its tenant's value, as get() returns it (JSON: the Date as its string).
    slugs.forEach((slug, t) => {
      for (const result of results.slice(t * 10, t * 10 + 10)) expect(result).to.deep.equal({ tenant: slug, at: '1970-01-01T00:00:00.000Z' });
    });
    expect(results[0]).to.not.equal(results[1]);
    // Stored once per tenant; a later wrap() is a hit.
    expect(await scanKeys(redis, keyPrefix)).to.have.length(3);
    expect(await manager.run(slugs[0], () => cache.wrap('report', 60_000, () => 'not called'))).to.deep.equal({ tenant: slugs[0], at: '1970-01-01T00:00:00.000Z' });
  });

  it('a rejection of wrap()\'s fn reaches every waiter and is not stored; the next wrap() calls fn again', async () => {
    const { manager, cache, slugs } = await setUp(1);
    let calls = 0;
    const failure = new Error('upstream down');
    const outcomes = await Promise.allSettled(
      Array.from({ length: 8 }, () =>
        manager.run(slugs[0], () =>
          cache.wrap('flaky', 60_000, async () => {
            calls += 1;
            await sleep(10);
            throw failure;
          }),
        ),
      ),
    );
    expect(calls).to.equal(1);
    expect(outcomes.map((outcome) => (outcome.status === 'rejected' ? outcome.reason : 'fulfilled'))).to.deep.equal(Array(8).fill(failure));
    expect(await scanKeys(redis, keyPrefix)).to.deep.equal([]);
    expect(await manager.run(slugs[0], () => cache.wrap('flaky', 60_000, () => (calls += 1)))).to.equal(2);
  });

  it('TTLs: set() and wrap() store with PX (default one hour, Infinity for none), and an expired entry is a miss', async () => {
    const { manager, cache, slugs } = await setUp(1);
    const namespace = await tenantNamespace(manager, keyPrefix, slugs[0]);
    await manager.run(slugs[0], async () => {
      await cache.set('short', 'soon gone', 200);
      await cache.set('default', 1);
      await cache.set('forever', 1, Infinity);
      await cache.wrap('wrapped', 5_000, () => 1);
    });
    const ttl = async (key: string): Promise<number> => redis.pttl(`${namespace}${key}`);
    expect(await ttl('short')).to.be.within(1, 200);
    expect(await ttl('default')).to.be.within(3_500_000, 3_600_000);
    expect(await ttl('forever')).to.equal(-1);
    expect(await ttl('wrapped')).to.be.within(1, 5_000);
    await sleep(400);
    expect(await manager.run(slugs[0], () => cache.get('short'))).to.equal(undefined);
    expect(await redis.exists(`${namespace}short`)).to.equal(0);
    await expect(manager.run(slugs[0], () => cache.set('bad', 1, 0))).to.be.rejectedWith('positive integer of milliseconds');
  });

  it('keys holding *, ?, [, ], \\ and : stay opaque: they read and clear only their own tenant\'s entries', async () => {
    const { manager, cache, slugs } = await setUp(2);
    const [attacker, victim] = slugs;
    const victimNamespace = await tenantNamespace(manager, keyPrefix, victim);
    const victimTail = victimNamespace.slice(keyPrefix.length);
    await manager.run(victim, () => Promise.all([cache.set('secret', 'victim'), cache.set('*', 'victim star')]));
    const hostile = ['*', '?', '[a-z]*', '\\*', ':', '::', `:${victimTail}secret`, `../${victimTail}secret`, `${victimTail}secret`, 'secret\\', '[', ']', '\\'];
    const read = await manager.run(attacker, async () => {
      const values: unknown[] = [];
      for (const key of hostile) values.push(await cache.get(key));
      for (const key of hostile) await cache.set(key, `attacker ${key}`);
      for (const key of hostile) values.push(await cache.get(key));
      return values;
    });
    expect(read.slice(0, hostile.length), 'no hostile key reads the victim').to.deep.equal(Array(hostile.length).fill(undefined));
    expect(read.slice(hostile.length)).to.deep.equal(hostile.map((key) => `attacker ${key}`));
    expect(await manager.run(victim, () => Promise.all([cache.get('secret'), cache.get('*')]))).to.deep.equal(['victim', 'victim star']);

    const attackerNamespace = await tenantNamespace(manager, keyPrefix, attacker);
    expect(await manager.run(attacker, () => cache.clearTenant(tenantContext.current()!))).to.equal(hostile.length);
    const keys = await scanKeys(redis, keyPrefix);
    expect(keys.filter((key) => key.startsWith(attackerNamespace))).to.deep.equal([]);
    expect(keys).to.deep.equal([`${victimNamespace}*`, `${victimNamespace}secret`]);
  });

  it('glob characters in a keyPrefix do not widen a clear to another cache\'s keys', async () => {
    const manager = await openManager();
    const [slug] = await createTenants(manager, 1, 'tcg');
    const victim = tenantCache(manager, { store: redisCacheStore(redis), keyPrefix: `${keyPrefix}Q:` });
    // Unescaped, each of these prefixes' SCAN patterns would match "<keyPrefix>Q:...".
    const attackers = ['*', '?', '[Q]', '\\Q'].map((glob) => tenantCache(manager, { store: redisCacheStore(redis), keyPrefix: `${keyPrefix}${glob}:` }));
    caches.push(victim, ...attackers);
    await manager.run(slug, async () => {
      await victim.set('v', 1);
      for (const attacker of attackers) await attacker.set('a', 1);
    });
    const record = (await manager.getTenant(slug))!;
    for (const attacker of attackers) expect(await attacker.clearTenant(record)).to.equal(1);
    expect(await scanKeys(redis, keyPrefix)).to.deep.equal([`${keyPrefix}Q:tenant:${record.schemaName}:${tenantIncarnation(record)}:v`]);
    expect(await manager.run(slug, () => victim.get('v'))).to.equal(1);
  });

  it('the default keyPrefix names the database; a second cache on the manager needs a prefix (and a plugin name) of its own', async () => {
    const manager = await openManager();
    const [slug] = await createTenants(manager, 1, 'tcd');
    const database = new URL(databaseUrl()).pathname.slice(1);
    const defaultPrefix = `typeorm-tenants:${database}:cache:`;
    const cache = tenantCache(manager, { store: redisCacheStore(redis) });
    caches.push(cache);
    try {
      expect(() => tenantCache(manager, { store: redisCacheStore(redis) })).to.throw('"tenant-cache" is already in use');
      await manager.run(slug, () => cache.set('k', 1));
      const record = (await manager.getTenant(slug))!;
      expect(await scanKeys(redis, defaultPrefix)).to.deep.equal([`${defaultPrefix}tenant:${record.schemaName}:${tenantIncarnation(record)}:k`]);
      await manager.dropTenant(slug, { force: true });
      expect(await scanKeys(redis, defaultPrefix)).to.deep.equal([]);
    } finally {
      await deleteKeys(redis, defaultPrefix);
    }
  });

  it('refuses bad keys and values before touching the store', async () => {
    const { manager, cache, slugs } = await setUp(1);
    await manager.run(slugs[0], async () => {
      await expect(cache.get('')).to.be.rejectedWith('non-empty string');
      await expect(cache.get(42 as never)).to.be.rejectedWith('non-empty string');
      await expect(cache.set('x'.repeat(1025), 1)).to.be.rejectedWith('at most 1024');
      await expect(cache.set('u', undefined)).to.be.rejectedWith('store null');
      await expect(cache.set('b', 1n)).to.be.rejectedWith('cannot be serialised');
      await cache.set('x'.repeat(1024), null);
      expect(await cache.get('x'.repeat(1024))).to.equal(null);
    });
    expect(await scanKeys(redis, keyPrefix)).to.have.length(1);
  });
});
