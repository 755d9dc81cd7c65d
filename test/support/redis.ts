import { randomBytes } from 'node:crypto';
import Redis from 'ioredis';

/** The machine's Redis (REDIS_URL, default 127.0.0.1:6379). */
const { hostname, port } = new URL(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
export const redisHost = hostname;
export const redisPort = Number(port || 6379);

/** TypeORM's `cache` option on that Redis, under a key prefix of the test's own (ioredis's keyPrefix). */
export function redisCache(keyPrefix: string, extra: Record<string, unknown> = {}): { type: 'ioredis'; options: Record<string, unknown>; duration: number } {
  return { type: 'ioredis', options: { host: redisHost, port: redisPort, keyPrefix }, duration: 60_000, ...extra };
}

/** Deletes every key under `keyPrefix`. */
export async function deleteRedisKeys(keyPrefix: string): Promise<void> {
  const redis = new Redis({ host: redisHost, port: redisPort });
  try {
    const keys = await redis.keys(`${keyPrefix}*`);
    if (keys.length > 0) await redis.unlink(keys);
  } finally {
    redis.disconnect();
  }
}

/** Runs `fn` with a Redis client and a fresh key prefix; the prefix's keys are deleted afterwards. */
export async function withRedis(fn: (redis: Redis, keyPrefix: string) => Promise<void>, label = 'tt-test'): Promise<void> {
  const keyPrefix = `${label}-${randomBytes(4).toString('hex')}:`;
  const redis = new Redis({ host: redisHost, port: redisPort });
  try {
    await fn(redis, keyPrefix);
  } finally {
    redis.disconnect();
    await deleteRedisKeys(keyPrefix);
  }
}
