import type { DataSource, DataSourceOptions, QueryRunner } from 'typeorm';
import type { QueryResultCache } from 'typeorm/cache/QueryResultCache';
import type { QueryResultCacheOptions } from 'typeorm/cache/QueryResultCacheOptions';
import { RedisQueryResultCache } from 'typeorm/cache/RedisQueryResultCache';
import { TenancyConfigurationError } from '../errors';
import { tenantIncarnation } from '../lifecycle/lifecycle-plugins';

/** TypeORM's `cache` option in its object form. */
export type QueryCacheOptions = Extract<NonNullable<DataSourceOptions['cache']>, object>;

const STORE_TYPES = ['redis', 'ioredis', 'ioredis/cluster'] as const;

/**
 * Checks TypeORM's `cache` option. A store outside the database (Redis, or a
 * `provider` of your own) is shared by every DataSource through per-tenant
 * key prefixes. `cache: true` and `type: 'database'` are refused: they keep
 * the results in a `query-result-cache` table that each tenant DataSource
 * would look for in its own schema, with `clear()` truncating it for all.
 */
export function validateQueryCacheOption(cache: DataSourceOptions['cache']): QueryCacheOptions | undefined {
  if (cache === undefined || cache === false) return undefined;
  const databaseRefused =
    "Option \"dataSource.cache\" with type 'database' (what cache: true means) is refused: the results table would be looked for in every tenant schema. " +
    "Use type 'redis', 'ioredis' or 'ioredis/cluster', or a provider: the manager then keeps one store and separates the tenants' entries by key prefix.";
  if (cache === true || typeof cache !== 'object') throw new TenancyConfigurationError(databaseRefused);
  if (cache.provider !== undefined) {
    if (typeof cache.provider !== 'function') {
      throw new TenancyConfigurationError('Option "dataSource.cache.provider" must be a function (dataSource) => QueryResultCache.');
    }
    return cache;
  }
  if (cache.type === undefined || cache.type === 'database') throw new TenancyConfigurationError(databaseRefused);
  if (!(STORE_TYPES as readonly string[]).includes(cache.type)) {
    throw new TenancyConfigurationError(`Option "dataSource.cache.type" must be one of ${STORE_TYPES.join(', ')}; got ${JSON.stringify(cache.type)}.`);
  }
  return cache;
}

/**
 * The prefix of a tenant's entries: the database, the tenant's schema and its
 * incarnation (a tenant dropped and created again under one name does not
 * meet the old entries). Databases that share a name and a Redis, such as a
 * staging copy of production, need a `keyPrefix` of their own.
 */
export function tenantCachePrefix(database: string, schemaName: string, createdAt: Date): string {
  return `typeorm-tenants:${database}:tenant:${schemaName}:${tenantIncarnation({ createdAt })}:`;
}

/** The prefix of the shared DataSource's entries: the database and the shared schema. */
export function sharedCachePrefix(database: string, sharedSchema: string): string {
  return `typeorm-tenants:${database}:shared:${sharedSchema}:`;
}

/**
 * The one store of a manager: made (and connected, and closed) by the shared
 * DataSource, which TypeORM gives it; every tenant DataSource reaches it
 * through a `PrefixedQueryResultCache` of its own.
 */
export class QueryCacheStore {
  #store: QueryResultCache | undefined;

  constructor(readonly options: QueryCacheOptions) {}

  /**
   * The `cache` option of the shared DataSource: it makes the store and owns
   * its connection. Its prefix is read on first use (the database's name is
   * known once the shared DataSource has connected).
   */
  sharedOption(prefix: () => string): QueryCacheOptions {
    return {
      ...this.options,
      provider: (dataSource: DataSource) => {
        const store =
          this.options.provider !== undefined
            ? this.options.provider(dataSource)
            : new RedisQueryResultCache(dataSource, this.options.type as (typeof STORE_TYPES)[number]);
        this.#store = store;
        return new PrefixedQueryResultCache(store, prefix, true);
      },
    };
  }

  /** The `cache` option of a tenant DataSource: entries under the tenant's prefix, the store's connection left alone. */
  tenantOption(prefix: string): QueryCacheOptions {
    return {
      ...this.options,
      provider: () => {
        if (this.#store === undefined) throw new Error('The query cache store is made by the shared DataSource, which is not initialised.');
        return new PrefixedQueryResultCache(this.#store, () => prefix, false);
      },
    };
  }
}

/**
 * A view of the store in which every id (TypeORM's `cache: { id }`, or the
 * query text when there is none) starts with `prefix`; `clear()` deletes
 * only the entries under it.
 */
export class PrefixedQueryResultCache implements QueryResultCache {
  constructor(
    private readonly store: QueryResultCache,
    private readonly prefixOf: () => string,
    /** The shared DataSource's view connects and disconnects the store; tenants' views do not. */
    private readonly ownsConnection: boolean,
  ) {}

  /** What every id of this view starts with. */
  get prefix(): string {
    return this.prefixOf();
  }

  async connect(): Promise<void> {
    if (this.ownsConnection) await this.store.connect();
  }

  async disconnect(): Promise<void> {
    if (this.ownsConnection) await this.store.disconnect();
  }

  async synchronize(queryRunner?: QueryRunner): Promise<void> {
    if (this.ownsConnection) await this.store.synchronize(queryRunner);
  }

  getFromCache(options: QueryResultCacheOptions, queryRunner?: QueryRunner): Promise<QueryResultCacheOptions | undefined> {
    return this.store.getFromCache(this.#scoped(options), queryRunner);
  }

  storeInCache(options: QueryResultCacheOptions, savedCache: QueryResultCacheOptions | undefined, queryRunner?: QueryRunner): Promise<void> {
    return this.store.storeInCache(this.#scoped(options), savedCache, queryRunner);
  }

  isExpired(savedCache: QueryResultCacheOptions): boolean {
    return this.store.isExpired(savedCache);
  }

  remove(identifiers: string[], queryRunner?: QueryRunner): Promise<void> {
    return this.store.remove(
      identifiers.map((identifier) => this.prefix + identifier),
      queryRunner,
    );
  }

  /**
   * Deletes this view's entries only: on Redis by `SCAN MATCH <prefix>*` and
   * `UNLINK`, a batch at a time (never `FLUSHDB`, which TypeORM's own store
   * would send); a provider's store needs a `clearPrefix(prefix)` method.
   */
  async clear(): Promise<void> {
    const store = this.store as QueryResultCache & { clearPrefix?(prefix: string): Promise<void>; client?: unknown };
    if (typeof store.clearPrefix === 'function') return store.clearPrefix(this.prefix);
    if (store instanceof RedisQueryResultCache) return clearRedisPrefix(store.client as RedisClient, this.prefix);
    throw new TenancyConfigurationError(
      'clear() of the query result cache deletes only the entries of its DataSource, and this store cannot delete by prefix: ' +
        'give its cache a clearPrefix(prefix) method, or remove entries by id with queryResultCache.remove([ids]).',
    );
  }

  #scoped(options: QueryResultCacheOptions): QueryResultCacheOptions {
    const id = options.identifier === undefined || options.identifier === '' ? options.query : options.identifier;
    return { ...options, identifier: this.prefix + (id ?? '') };
  }
}

/** The Redis clients TypeORM's store may hold: node-redis (`scanIterator`) or ioredis (`scanStream`), an ioredis cluster (`nodes`). */
interface RedisClient {
  scanIterator?(options: { MATCH: string; COUNT: number }): AsyncIterable<string | string[]>;
  scanStream?(options: { match: string; count: number }): AsyncIterable<string[]>;
  nodes?(role: 'master'): RedisClient[];
  readonly options?: { readonly keyPrefix?: string; readonly redisOptions?: { readonly keyPrefix?: string } };
  /** Both clients take an array of keys. */
  unlink(keys: string[]): Promise<unknown>;
}

async function clearRedisPrefix(client: RedisClient, prefix: string): Promise<void> {
  // Schema names and the prefix hold no glob characters, but escape anyway.
  const match = `${prefix.replace(/[*?[\]\\]/g, (c) => `\\${c}`)}*`;
  if (typeof client.nodes === 'function') {
    // A cluster: scan every master, then delete through the cluster client one
    // key at a time (a multi-key UNLINK across hash slots is refused with
    // CROSSSLOT). The nodes' own clients do not carry the cluster's keyPrefix.
    const keyPrefix = client.options?.keyPrefix ?? client.options?.redisOptions?.keyPrefix ?? '';
    await Promise.all(
      client.nodes('master').map(async (node) => {
        for await (const keys of node.scanStream!({ match: keyPrefix + match, count: 500 })) {
          await Promise.all(keys.map((key) => client.unlink([key.slice(keyPrefix.length)])));
        }
      }),
    );
    return;
  }
  if (typeof client.scanIterator === 'function') {
    for await (const batch of client.scanIterator({ MATCH: match, COUNT: 500 })) {
      const keys = Array.isArray(batch) ? batch : [batch];
      if (keys.length > 0) await client.unlink(keys);
    }
    return;
  }
  // ioredis adds its keyPrefix to the keys of commands but not to SCAN's pattern, and SCAN returns keys with it.
  const keyPrefix = client.options?.keyPrefix ?? '';
  for await (const keys of client.scanStream!({ match: keyPrefix + match, count: 500 })) {
    if (keys.length > 0) await client.unlink(keys.map((key) => key.slice(keyPrefix.length)));
  }
}
