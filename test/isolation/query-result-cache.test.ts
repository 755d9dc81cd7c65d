import { expect } from 'chai';
import type Redis from 'ioredis';
import type { QueryRunner } from 'typeorm';
import type { QueryResultCache } from 'typeorm/cache/QueryResultCache';
import type { QueryResultCacheOptions } from 'typeorm/cache/QueryResultCacheOptions';
import { Client, Plan } from '../../entities';
import { TenancyConfigurationError, tenantContext } from '../../src';
import { adminQuery, databaseUrl, newManager, openManager } from '../support/fixtures';
import { emailsIn, schemaOf, tenantWithClient } from '../support/legacy-public-client';
import { redisCache, withRedis } from '../support/redis';

/**
 * Hole 8: TypeORM's query result cache was one store for every tenant, so
 * `find({ cache: { id: 'clients' } })` in tenant B answered tenant A's rows.
 * The manager now keeps one store and gives each tenant DataSource a view of
 * it under the tenant's schema and incarnation. Tested on the machine's Redis.
 */

const cachedClients = (): Promise<Client[]> =>
  tenantContext.getRepository(Client).find({ order: { email: 'ASC' }, cache: { id: 'clients', milliseconds: 60_000 } });

const emails = (clients: Client[]): string[] => clients.map((client) => client.email);

async function keysOf(redis: Redis, keyPrefix: string): Promise<string[]> {
  return (await redis.keys(`${keyPrefix}*`)).map((key) => key.slice(keyPrefix.length)).sort();
}

describe('TypeORM query result cache, one store shared by tenants under per-tenant prefixes (hole 8)', () => {
  it('one id in two tenants: each reads its own rows, cached in its own entry', async () => {
    await withRedis(async (redis, keyPrefix) => {
      const manager = await openManager({ dataSource: { type: 'postgres', url: databaseUrl(), cache: redisCache(keyPrefix) } });
      const a = await tenantWithClient(manager, 'qca');
      const b = await tenantWithClient(manager, 'qcb');
      expect(emails(await manager.run(a, cachedClients))).to.deep.equal([`seed@${a}.test`]);
      expect(emails(await manager.run(b, cachedClients))).to.deep.equal([`seed@${b}.test`]);
      // The entries are cached: a row added behind TypeORM's back is not seen until they expire or are removed.
      await adminQuery(`INSERT INTO "${schemaOf(a)}".client (name, email) VALUES ('late', 'late@a.test')`);
      expect(emails(await manager.run(a, cachedClients))).to.deep.equal([`seed@${a}.test`]);
      const keys = await keysOf(redis, keyPrefix);
      expect(keys).to.have.length(2);
      expect(keys.find((key) => key.includes(`:tenant:${schemaOf(a)}:`))).to.match(/:clients$/);
      expect(keys.find((key) => key.includes(`:tenant:${schemaOf(b)}:`))).to.match(/:clients$/);
      // A query without an id is keyed by its text, under the tenant's prefix too.
      await manager.run(b, () => tenantContext.getRepository(Client).find({ cache: 60_000 }));
      expect((await keysOf(redis, keyPrefix)).filter((key) => key.includes(`:tenant:${schemaOf(b)}:`))).to.have.length(2);
    });
  });

  it('remove() and clear() inside a tenant touch only that tenant\'s entries', async () => {
    await withRedis(async (redis, keyPrefix) => {
      const manager = await openManager({ dataSource: { type: 'postgres', url: databaseUrl(), cache: redisCache(keyPrefix) } });
      const a = await tenantWithClient(manager, 'qcra');
      const b = await tenantWithClient(manager, 'qcrb');
      await adminQuery(`INSERT INTO public.plan (code, name, monthly_price_cents) VALUES ($1, 'cached', 1) ON CONFLICT (code) DO NOTHING`, [a]);
      const sharedPlans = (): Promise<Plan[]> => manager.sharedDataSource.getRepository(Plan).find({ cache: { id: 'plans', milliseconds: 60_000 } });
      await sharedPlans();
      for (const slug of [a, b]) {
        await manager.run(slug, async () => {
          await cachedClients();
          await tenantContext.getRepository(Client).find({ where: { name: 'seed' }, cache: { id: 'seeds', milliseconds: 60_000 } });
        });
      }
      expect(await keysOf(redis, keyPrefix)).to.have.length(5);
      await manager.run(a, () => tenantContext.getManager().connection.queryResultCache!.remove(['clients']));
      let keys = await keysOf(redis, keyPrefix);
      expect(keys.filter((key) => key.includes(`:tenant:${schemaOf(a)}:`)).map((key) => key.split(':').pop())).to.deep.equal(['seeds']);
      expect(keys.filter((key) => key.includes(`:tenant:${schemaOf(b)}:`))).to.have.length(2);
      await manager.run(a, () => tenantContext.getManager().connection.queryResultCache!.clear());
      keys = await keysOf(redis, keyPrefix);
      expect(keys.filter((key) => key.includes(`:tenant:${schemaOf(a)}:`)), 'a is cleared').to.deep.equal([]);
      expect(keys.filter((key) => key.includes(`:tenant:${schemaOf(b)}:`)), 'b is untouched').to.have.length(2);
      const [{ database }] = await adminQuery<{ database: string }>('SELECT current_database() AS database');
      expect(keys.filter((key) => key.includes(':shared:')), 'shared entries are untouched').to.deep.equal([`typeorm-tenants:${database}:shared:public:plans`]);
      // The shared DataSource's cache works on its own prefix, and the tenants' entries survive its clear().
      expect((await sharedPlans()).map((plan) => plan.code)).to.include(a);
      await manager.sharedDataSource.queryResultCache!.clear();
      keys = await keysOf(redis, keyPrefix);
      expect(keys.filter((key) => key.includes(':shared:'))).to.deep.equal([]);
      expect(keys.filter((key) => key.includes(`:tenant:${schemaOf(b)}:`))).to.have.length(2);
      await adminQuery('DELETE FROM public.plan WHERE code = $1', [a]);
    });
  });

  it('a tenant dropped and created again under its name does not meet the old tenant\'s entries (another process\'s cache included)', async () => {
    await withRedis(async (_redis, keyPrefix) => {
      const options = { dataSource: { type: 'postgres' as const, url: databaseUrl(), cache: redisCache(keyPrefix) }, tenantRecordTtlMs: 0, slugReuseDelayMs: 0 };
      const writer = await openManager(options);
      const reader = await openManager(options); // another process, with its own cached DataSource of the tenant
      const slug = await tenantWithClient(writer, 'qcdrop');
      expect(emails(await reader.run(slug, cachedClients))).to.deep.equal([`seed@${slug}.test`]);
      await writer.dropTenant(slug, { force: true });
      await writer.createTenant(slug);
      await writer.run(slug, () => tenantContext.getRepository(Client).save({ name: 'new', email: `new@${slug}.test` }));
      expect(emails(await writer.run(slug, cachedClients))).to.deep.equal([`new@${slug}.test`]);
      expect(emails(await reader.run(slug, cachedClients)), 'the reader sees the new tenant, not its cached old entry').to.deep.equal([`new@${slug}.test`]);
      expect(await emailsIn(schemaOf(slug))).to.deep.equal([`new@${slug}.test`]);
    });
  });

  it('a provider of your own: one store for all, separated by prefix; clear() needs clearPrefix()', async () => {
    const entries = new Map<string, QueryResultCacheOptions>();
    let connects = 0;
    const store: QueryResultCache & { clearPrefix(prefix: string): Promise<void> } = {
      connect: async () => {
        connects += 1;
      },
      disconnect: async () => undefined,
      synchronize: async (_queryRunner?: QueryRunner) => undefined,
      getFromCache: async (options) => entries.get(options.identifier!),
      storeInCache: async (options) => {
        entries.set(options.identifier!, options);
      },
      isExpired: (saved) => saved.time! + saved.duration! < Date.now(),
      clear: async () => entries.clear(),
      remove: async (ids) => ids.forEach((id) => entries.delete(id)),
      clearPrefix: async (prefix) => [...entries.keys()].filter((key) => key.startsWith(prefix)).forEach((key) => entries.delete(key)),
    };
    const manager = await openManager({ dataSource: { type: 'postgres', url: databaseUrl(), cache: { provider: () => store, duration: 60_000 } } });
    const a = await tenantWithClient(manager, 'qcpa');
    const b = await tenantWithClient(manager, 'qcpb');
    expect(emails(await manager.run(a, cachedClients))).to.deep.equal([`seed@${a}.test`]);
    expect(emails(await manager.run(b, cachedClients))).to.deep.equal([`seed@${b}.test`]);
    expect(entries.size).to.equal(2);
    expect(connects, 'the store is connected once, by the shared DataSource').to.equal(1);
    await manager.run(b, () => tenantContext.getManager().connection.queryResultCache!.clear());
    expect([...entries.keys()]).to.have.length(1);
    expect([...entries.keys()][0]).to.contain(`:tenant:${schemaOf(a)}:`);
  });

  it('a database-table cache (cache: true, type database) and unknown types are refused at construction', () => {
    for (const cache of [true, { duration: 60_000 }, { type: 'database' as const }]) {
      expect(() => newManager({ dataSource: { type: 'postgres', url: databaseUrl(), cache } }), JSON.stringify(cache)).to.throw(
        TenancyConfigurationError,
        /type 'database'/,
      );
    }
    expect(() => newManager({ dataSource: { type: 'postgres', url: databaseUrl(), cache: { type: 'memcached' as never } } })).to.throw(
      TenancyConfigurationError,
      /must be one of/,
    );
  });
});
