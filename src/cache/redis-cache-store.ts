import { InvalidArgumentError } from '../errors';
import type { TenantCacheStore } from './cache-store';

/** How many keys one `SCAN` of a prefix clear asks for by default. */
export const DEFAULT_REDIS_SCAN_COUNT = 1_000;

/**
 * What `redisCacheStore()` needs of a Redis client: the methods an ioredis
 * `Redis` has (and an ioredis `Cluster`, which also has `nodes()`). Typed
 * structurally so this package does not depend on ioredis.
 */
export interface RedisCacheClient {
  get(key: string): Promise<string | null>;
  set(key: string, value: string): Promise<unknown>;
  set(key: string, value: string, px: 'PX', ttlMs: number): Promise<unknown>;
  unlink(...keys: string[]): Promise<number>;
  scan(cursor: string, match: 'MATCH', pattern: string, count: 'COUNT', n: number): Promise<[cursor: string, keys: string[]]>;
  /** An ioredis `Cluster`: its master nodes, each scanned in turn. */
  nodes?(role: 'master'): RedisCacheClient[];
  /** ioredis adds `keyPrefix` to the keys of commands, but not to `SCAN`'s pattern, and `SCAN` returns keys with it. */
  readonly options?: { readonly keyPrefix?: string; readonly redisOptions?: { readonly keyPrefix?: string } };
}

export interface RedisCacheStoreOptions {
  /** `COUNT` of each `SCAN` when clearing a tenant: how much work Redis does per call. Default `DEFAULT_REDIS_SCAN_COUNT` (1,000). */
  readonly scanCount?: number;
}

/**
 * A `TenantCacheStore` over a Redis client you already have: an ioredis
 * `Redis` or `Cluster` (connected, and closed, by you). Commands: `GET`,
 * `SET ... PX <ttl>`, `UNLINK`, and for clearing a tenant `SCAN <cursor>
 * MATCH <escaped prefix>* COUNT <scanCount>` followed by `UNLINK` of each
 * batch: never `KEYS`, never `FLUSHDB`, so Redis keeps serving other clients
 * while a big tenant is cleared (`UNLINK` frees the memory in the
 * background). On a cluster every master is scanned and each key deleted on
 * its own (one `UNLINK` may not span hash slots).
 *
 * @example
 * ```ts
 * import Redis from 'ioredis';
 * const redis = new Redis(process.env.REDIS_URL!);
 * const cache = tenantCache(tenants, { store: redisCacheStore(redis) });
 * ```
 */
export function redisCacheStore(redis: RedisCacheClient, options: RedisCacheStoreOptions = {}): TenantCacheStore {
  if (redis === null || typeof redis !== 'object' || !['get', 'set', 'unlink', 'scan'].every((method) => typeof (redis as unknown as Record<string, unknown>)[method] === 'function')) {
    throw new InvalidArgumentError('redisCacheStore() takes an ioredis client (new Redis(...) or new Redis.Cluster(...)) with get, set, unlink and scan.');
  }
  const scanCount = options.scanCount ?? DEFAULT_REDIS_SCAN_COUNT;
  if (typeof scanCount !== 'number' || !Number.isInteger(scanCount) || scanCount < 1) {
    throw new InvalidArgumentError(`redisCacheStore(): scanCount must be a positive integer; got ${String(scanCount)}.`);
  }
  const clientPrefix = redis.options?.keyPrefix ?? redis.options?.redisOptions?.keyPrefix ?? '';
  return {
    async get(key) {
      return (await redis.get(key)) ?? undefined;
    },
    async set(key, value, ttlMs) {
      await (ttlMs === undefined ? redis.set(key, value) : redis.set(key, value, 'PX', ttlMs));
    },
    async delete(key) {
      await redis.unlink(key);
    },
    async deletePrefix(prefix) {
      const nodes = typeof redis.nodes === 'function' ? redis.nodes('master') : [redis];
      const counts = await Promise.all(
        nodes.map((node) =>
          clearNode(node, clientPrefix + prefix, scanCount, (keys) =>
            // Keys come back with the client's keyPrefix, which the delete adds again.
            node === redis
              ? redis.unlink(...keys.map((key) => key.slice(clientPrefix.length)))
              : Promise.all(keys.map((key) => redis.unlink(key.slice(clientPrefix.length)))).then((deleted) => deleted.reduce((a, b) => a + b, 0)),
          ),
        ),
      );
      return counts.reduce((a, b) => a + b, 0);
    },
  };
}

/** SCAN one node for keys starting with `prefix` (as seen by the node) and hand each batch to `unlink`. */
async function clearNode(node: RedisCacheClient, prefix: string, count: number, unlink: (keys: string[]) => Promise<number>): Promise<number> {
  const match = `${escapeGlob(prefix)}*`;
  let cursor = '0';
  let deleted = 0;
  do {
    const [next, found] = await node.scan(cursor, 'MATCH', match, 'COUNT', count);
    cursor = next;
    // The pattern is escaped; the check by plain comparison makes sure anyway.
    const keys = found.filter((key) => key.startsWith(prefix));
    if (keys.length > 0) deleted += await unlink(keys);
  } while (cursor !== '0');
  return deleted;
}

/** `text` as a Redis glob that matches only itself: `*`, `?`, `[`, `]` and `\` escaped with `\`. */
export function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
}
