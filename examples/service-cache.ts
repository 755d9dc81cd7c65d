import type { Express } from 'express';
import { Client } from '../entities';
import { tenantContext, type TenantDataSourceManager } from '../src';
import { redisCacheStore, tenantCache } from '../src/cache';

/** The cache part of the example service: what `startService()` closes. */
export interface ServiceCache {
  close(): Promise<void>;
}

/**
 * A tenant cache on Redis for the example service (ioredis loaded only
 * here, so the service needs no Redis without REDIS_URL). Mounted behind the
 * tenant middleware: `GET /clients/count` answers the tenant's client count,
 * computed at most every 10 seconds per tenant; `dropTenant` and
 * `archiveTenant` clear the tenant's keys.
 */
export function mountCache(app: Express, tenants: TenantDataSourceManager, redisUrl: string, keyPrefix?: string): ServiceCache {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { default: Redis } = require('ioredis') as typeof import('ioredis');
  const redis = new Redis(redisUrl, { lazyConnect: false, maxRetriesPerRequest: 2 });
  redis.on('error', (error) => console.error('cache redis:', error.message));
  const cache = tenantCache(tenants, { store: redisCacheStore(redis), defaultTtlMs: 60_000, ...(keyPrefix === undefined ? {} : { keyPrefix }) });

  app.get('/clients/count', async (_req, res) => {
    const count = await cache.wrap('clients:count', 10_000, () => tenantContext.getRepository(Client).count());
    res.json({ count });
  });
  return {
    async close() {
      cache.close();
      await redis.quit();
    },
  };
}
