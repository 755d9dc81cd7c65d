import { randomBytes } from 'node:crypto';
import Redis from 'ioredis';
import { tenantIncarnation, type TenantDataSourceManager } from '../../src';
import { escapeGlob } from '../../src/cache/redis-cache-store';
import { redisHost, redisPort } from '../support/redis';

/** A client of the machine's Redis (REDIS_URL, default 127.0.0.1:6379). */
export function redisClient(): Redis {
  return new Redis({ host: redisHost, port: redisPort, lazyConnect: false, maxRetriesPerRequest: 2 });
}

/** A key prefix no other test uses (hex only: no glob characters). */
export function uniquePrefix(label = 'tt-cache'): string {
  return `${label}-${randomBytes(5).toString('hex')}:`;
}

/** Every key under `prefix`, by SCAN (plain-string check on top of the escaped pattern), sorted. */
export async function scanKeys(redis: Redis, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${escapeGlob(prefix)}*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...found.filter((key) => key.startsWith(prefix)));
  } while (cursor !== '0');
  return [...new Set(keys)].sort();
}

/** Deletes every key under `prefix` (the test's own). */
export async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  const keys = await scanKeys(redis, prefix);
  for (let i = 0; i < keys.length; i += 500) await redis.unlink(...keys.slice(i, i + 500));
}

/** `<prefix>tenant:<schema>:<incarnation>:`: where a tenant's entries must be, computed here independently of the cache. */
export async function tenantNamespace(manager: TenantDataSourceManager, keyPrefix: string, slug: string): Promise<string> {
  const record = await manager.getTenant(slug);
  if (record === undefined) throw new Error(`no tenant ${slug}`);
  return `${keyPrefix}tenant:${record.schemaName}:${tenantIncarnation(record)}:`;
}

/** A promise and the function that resolves it. */
export function gate(): { readonly opened: Promise<void>; open(): void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}
