import 'reflect-metadata';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Redis from 'ioredis';
import { Client, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { TenantDataSourceManager } from '../../src';
import { memoryCacheStore, redisCacheStore, tenantCache } from '../../src/cache';
import { startScratchDatabase } from '../../support/database';
import { round2 } from '../environment';
import { median } from '../measure';

/**
 * `node build/bench/cache/tenant-cache.js [--quick]` (REDIS_URL, default
 * redis://127.0.0.1:6379; DATABASE_URL or an embedded PostgreSQL): what
 * `typeorm-tenants/cache` costs over Redis next to raw ioredis.
 *
 * 1. get/set at concurrency 1 and 32: raw `GET`/`SET PX` with the value
 *    JSON-encoded by hand (so both sides serialise), against `cache.get` /
 *    `cache.set` inside one `manager.run()`; rounds alternate raw and cache,
 *    the median of the rounds is reported, in microseconds per operation.
 *    The same over `memoryCacheStore()` against the store called directly
 *    with a hand-made key: the library's own cost per operation, no network.
 * 2. Clearing a tenant (`cache.clearTenant`, what the drop and archive hooks
 *    run) of 10,000 and 100,000 keys (--quick 10,000 only) while another
 *    tenant's keys stay, with a second connection sending `PING` every
 *    millisecond meanwhile: the slowest PING says how long Redis was busy
 *    (next to the slowest PING of as long a window with no clear running).
 *
 * Writes bench/results/tenant-cache.json and .md.
 */

const quick = process.argv.includes('--quick');
const OPS = quick ? 4_000 : 20_000;
const ROUNDS = quick ? 3 : 5;
const CLEAR_SIZES = quick ? [10_000] : [10_000, 100_000];
const RESULTS_DIR = join(__dirname, '..', '..', '..', 'bench', 'results');
const VALUE = { id: 42, name: 'Ada Lovelace', email: 'ada@acme.test', plan: 'pro', tags: ['a', 'b', 'c'] };
const log = (line: string): void => console.error(`[bench:tenant-cache] ${line}`);

async function timed(concurrency: number, op: (i: number) => Promise<unknown>): Promise<number> {
  const started = process.hrtime.bigint();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < OPS) await op(next++);
    }),
  );
  return Number(process.hrtime.bigint() - started) / 1_000 / OPS;
}

async function main(): Promise<void> {
  const database = await startScratchDatabase();
  const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const redis = new Redis(redisUrl);
  const pinger = new Redis(redisUrl);
  const prefix = `bench-tenant-cache-${process.pid}:`;
  const manager = new TenantDataSourceManager({
    dataSource: { type: 'postgres', url: database.url, poolSize: 4 },
    entities: [Client, Project, Plan],
    tenantMigrations,
    sharedMigrations,
  });
  try {
    await manager.initialize();
    await manager.createTenant('bench-a');
    await manager.createTenant('bench-b');
    const cache = tenantCache(manager, { store: redisCacheStore(redis), keyPrefix: prefix });
    const rawKey = (i: number): string => `${prefix}raw:${i % 1000}`;
    const results: Record<string, { rawUs: number; cacheUs: number; ratio: number }> = {};
    for (const concurrency of [1, 32]) {
      const samples = { rawSet: [] as number[], cacheSet: [] as number[], rawGet: [] as number[], cacheGet: [] as number[] };
      for (let round = 0; round < ROUNDS; round += 1) {
        samples.rawSet.push(await timed(concurrency, (i) => redis.set(rawKey(i), JSON.stringify(VALUE), 'PX', 60_000)));
        samples.cacheSet.push(await manager.run('bench-a', () => timed(concurrency, (i) => cache.set(`c:${i % 1000}`, VALUE, 60_000))));
        samples.rawGet.push(await timed(concurrency, async (i) => JSON.parse((await redis.get(rawKey(i)))!)));
        samples.cacheGet.push(await manager.run('bench-a', () => timed(concurrency, (i) => cache.get(`c:${i % 1000}`))));
      }
      for (const op of ['set', 'get'] as const) {
        const raw = median(op === 'set' ? samples.rawSet : samples.rawGet);
        const scoped = median(op === 'set' ? samples.cacheSet : samples.cacheGet);
        results[`${op} c=${concurrency}`] = { rawUs: round2(raw), cacheUs: round2(scoped), ratio: round2(scoped / raw) };
        log(`${op} c=${concurrency}: raw ${raw.toFixed(1)} µs/op, tenantCache ${scoped.toFixed(1)} µs/op (${(scoped / raw).toFixed(2)}×)`);
      }
    }

    const memory = memoryCacheStore({ maxEntries: 2_000 });
    const memoryCache = tenantCache(manager, { store: memory, keyPrefix: 'mem:' });
    const overhead: Record<string, { storeUs: number; cacheUs: number; addedUs: number }> = {};
    {
      const samples = { storeSet: [] as number[], cacheSet: [] as number[], storeGet: [] as number[], cacheGet: [] as number[] };
      for (let round = 0; round < ROUNDS; round += 1) {
        samples.storeSet.push(await timed(1, (i) => memory.set(`mem:raw:${i % 1000}`, JSON.stringify(VALUE), 60_000)));
        samples.cacheSet.push(await manager.run('bench-a', () => timed(1, (i) => memoryCache.set(`c:${i % 1000}`, VALUE, 60_000))));
        samples.storeGet.push(await timed(1, async (i) => JSON.parse((await memory.get(`mem:raw:${i % 1000}`))!)));
        samples.cacheGet.push(await manager.run('bench-a', () => timed(1, (i) => memoryCache.get(`c:${i % 1000}`))));
      }
      for (const op of ['set', 'get'] as const) {
        const store = median(op === 'set' ? samples.storeSet : samples.storeGet);
        const scoped = median(op === 'set' ? samples.cacheSet : samples.cacheGet);
        overhead[op] = { storeUs: round2(store), cacheUs: round2(scoped), addedUs: round2(scoped - store) };
        log(`in-process ${op}: store ${store.toFixed(2)} µs/op, tenantCache ${scoped.toFixed(2)} µs/op (+${(scoped - store).toFixed(2)} µs)`);
      }
    }
    memoryCache.close();

    const clears: Array<{ keys: number; ms: number; deleted: number; slowestPingMs: number; idleSlowestPingMs: number; pings: number; otherTenantKept: number }> = [];
    const recordA = (await manager.getTenant('bench-a'))!;
    const recordB = (await manager.getTenant('bench-b'))!;
    await cache.clearTenant(recordA);
    for (const size of CLEAR_SIZES) {
      await manager.run('bench-a', async () => {
        for (let i = 0; i < size; i += 1_000) await Promise.all(Array.from({ length: Math.min(1_000, size - i) }, (_, j) => cache.set(`k${i + j}`, VALUE, 600_000)));
      });
      await manager.run('bench-b', () => Promise.all(Array.from({ length: 1_000 }, (_, i) => cache.set(`k${i}`, VALUE, 600_000))));
      const probe = async <T>(work: () => Promise<T>): Promise<{ result: T; ms: number; slowest: number; pings: number }> => {
        let pinging = true;
        let slowest = 0;
        let pings = 0;
        const pingLoop = (async () => {
          while (pinging) {
            const pingStarted = process.hrtime.bigint();
            await pinger.ping();
            slowest = Math.max(slowest, Number(process.hrtime.bigint() - pingStarted) / 1e6);
            pings += 1;
            await new Promise((resolve) => setTimeout(resolve, 1));
          }
        })();
        const started = process.hrtime.bigint();
        const result = await work();
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        pinging = false;
        await pingLoop;
        return { result, ms, slowest, pings };
      };
      const cleared = await probe(() => cache.clearTenant(recordA));
      const idle = await probe(() => new Promise((resolve) => setTimeout(resolve, cleared.ms)));
      const { result: deleted, ms, slowest, pings } = cleared;
      let kept = 0;
      for (let cursor = '0'; ; ) {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}tenant:${recordB.schemaName}:*`, 'COUNT', 1000);
        kept += keys.length;
        cursor = next;
        if (cursor === '0') break;
      }
      clears.push({ keys: size, ms: round2(ms), deleted, slowestPingMs: round2(slowest), idleSlowestPingMs: round2(idle.slowest), pings, otherTenantKept: kept });
      log(`clear ${size} keys: ${ms.toFixed(0)} ms (deleted ${deleted}); slowest PING meanwhile ${slowest.toFixed(2)} ms over ${pings} (idle window: ${idle.slowest.toFixed(2)} ms); other tenant kept ${kept}`);
      await cache.clearTenant(recordB);
    }
    const serverInfo = await redis.info('server');
    const report = {
      measuredAt: new Date().toISOString(),
      node: process.version,
      redis: /redis_version:(\S+)/.exec(serverInfo)?.[1],
      ioredis: (require('ioredis/package.json') as { version: string }).version,
      ops: OPS,
      rounds: ROUNDS,
      getSet: results,
      inProcess: overhead,
      clears,
    };
    const name = quick ? 'tenant-cache-quick' : 'tenant-cache';
    await writeFile(join(RESULTS_DIR, `${name}.json`), `${JSON.stringify(report, null, 2)}\n`);
    const md = [
      `# typeorm-tenants/cache over Redis ${report.redis} (ioredis ${report.ioredis}, Node ${report.node})`,
      '',
      `Median of ${ROUNDS} alternating rounds of ${OPS} operations, µs per operation (both sides JSON-encode a ${JSON.stringify(VALUE).length}-byte value).`,
      '',
      '| operation | raw ioredis | tenantCache | ratio |',
      '| --- | ---: | ---: | ---: |',
      ...Object.entries(results).map(([op, r]) => `| ${op} | ${r.rawUs} | ${r.cacheUs} | ${r.ratio} |`),
      '',
      'The library\'s own cost (memoryCacheStore, concurrency 1), µs per operation:',
      '',
      '| operation | store called directly | tenantCache | added |',
      '| --- | ---: | ---: | ---: |',
      ...Object.entries(overhead).map(([op, r]) => `| ${op} | ${r.storeUs} | ${r.cacheUs} | ${r.addedUs} |`),
      '',
      '| clear (SCAN COUNT 1000 + UNLINK) | ms | slowest PING meanwhile (ms) | slowest PING, idle window (ms) | other tenant kept |',
      '| --- | ---: | ---: | ---: | ---: |',
      ...clears.map((c) => `| ${c.keys} keys | ${c.ms} | ${c.slowestPingMs} | ${c.idleSlowestPingMs} | ${c.otherTenantKept} |`),
      '',
    ].join('\n');
    await writeFile(join(RESULTS_DIR, `${name}.md`), md);
    console.log(md);
    cache.close();
  } finally {
    for (let cursor = '0'; ; ) {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      if (keys.length > 0) await redis.unlink(...keys);
      cursor = next;
      if (cursor === '0') break;
    }
    redis.disconnect();
    pinger.disconnect();
    await manager.destroy();
    await database.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
