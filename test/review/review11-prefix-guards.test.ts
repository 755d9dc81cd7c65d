/**
 * Review of issue 11: guards (these pass) for a tenant schema that is a
 * prefix of another's (`x` vs `x_2`) in cache clears and file drops.
 */
import { expect } from 'chai';
import type { TenantDataSourceManager } from '../../src';
import { redisCacheStore, tenantCache } from '../../src/cache';
import { localDiskDriver, tenantFiles } from '../../src/storage';
import { deleteKeys, redisClient, scanKeys, uniquePrefix } from '../cache/cache-fixtures';
import { openManager, uniqueSlug } from '../support/fixtures';
import { filesUnder, makeTemp, removeTemp } from '../storage/storage-support';

describe('review11 guards: a schema that is a prefix of another tenant\'s', () => {
  let manager: TenantDataSourceManager;
  let root: string | undefined;
  beforeEach(async () => {
    manager = await openManager();
    root = makeTemp('rv11-prefix');
  });
  afterEach(() => removeTemp(root));

  it('dropTenant("x") clears neither the cache keys nor the files of "x-2" (schema x_2) or "x-2-1"', async () => {
    const redis = redisClient();
    const keyPrefix = uniquePrefix("rv11");
    const cache = tenantCache(manager, { store: redisCacheStore(redis, { scanCount: 3 }), keyPrefix });
    const files = tenantFiles(manager, { driver: localDiskDriver({ root: root! }) });
    const x = uniqueSlug('rv11x');
    const slugs = [x, `${x}-2`, `${x}_2_1`];
    try {
      for (const slug of slugs) {
        await manager.createTenant(slug);
        await manager.run(slug, async () => {
          for (let i = 0; i < 5; i += 1) await cache.set(`k${i}`, slug);
          await files.put('a/b.txt', slug);
        });
      }
      await manager.dropTenant(x, { force: true });
      const keys = await scanKeys(redis, keyPrefix);
      const onDisk = await filesUnder(root!);
      expect(keys.length, 'the other two tenants keep their 5 keys each').to.equal(10);
      expect(onDisk.map((f) => f.split('/')[0]).sort()).to.deep.equal([`${x}_2`, `${x}_2_1`].map((s) => s.replace(/-/g, '_')).sort());
      for (const slug of slugs.slice(1)) {
        expect(await manager.run(slug, () => cache.get('k0'))).to.equal(slug);
        expect(String(await manager.run(slug, () => files.get('a/b.txt')))).to.equal(slug);
      }
      for (const slug of slugs.slice(1)) await manager.dropTenant(slug, { force: true });
    } finally {
      cache.close();
      files.close();
      await deleteKeys(redis, keyPrefix);
      redis.disconnect();
    }
  });
});
