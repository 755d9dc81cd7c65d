import { randomBytes } from 'node:crypto';
import type { Queue } from 'bullmq';
import Redis from 'ioredis';
import { tenantContext } from '../../src';
import { redisHost, redisPort } from '../support/redis';

/** BullMQ's connection options for the machine's Redis (each Queue and Worker opens its own clients). */
export const connection = { host: redisHost, port: redisPort };

/** A BullMQ key prefix no other test uses (`tt-bullmq-<hex>`), so everything a test leaves is findable and removable. */
export function uniquePrefix(): string {
  return `tt-bullmq-${randomBytes(4).toString('hex')}`;
}

/** The keys under `prefix` (SCAN, not KEYS). */
export async function redisKeys(prefix: string): Promise<string[]> {
  const redis = new Redis(connection);
  try {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    return keys;
  } finally {
    redis.disconnect();
  }
}

/** The job's row: one `client` row named after the job's prefix, queue and id (`job:<prefix>:<queue>:<id>`). */
export function rowName(job: { readonly queueQualifiedName: string; readonly id?: string }): string {
  return `job:${job.queueQualifiedName}:${job.id}`;
}

/**
 * Writes the job's row in the active tenant at most once, whatever the
 * number of attempts (BullMQ is at-least-once): under a transaction-level
 * advisory lock on the name, insert unless it is there.
 */
export async function writeRowOnce(name: string): Promise<void> {
  await tenantContext.transaction(async (em) => {
    await em.query('SELECT pg_advisory_xact_lock(hashtext($1))', [name]);
    await em.query("INSERT INTO client (name, email) SELECT $1::varchar, 'job@example.test' WHERE NOT EXISTS (SELECT 1 FROM client WHERE name = $1::varchar)", [name]);
  });
}

/** Polls until the job is in one of `states`; returns that state. */
export async function waitForState(queue: Queue, id: string, states: readonly string[], timeoutMs = 20_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let state = 'unknown';
  while (Date.now() < deadline) {
    state = await queue.getJobState(id);
    if (states.includes(state)) return state;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`Job ${id} of queue ${queue.name} did not reach ${states.join('/')} within ${timeoutMs} ms (it is ${state}).`);
}

/** Polls until `check()` is true. */
export async function waitUntil(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}.`);
}
