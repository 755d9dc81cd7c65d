/**
 * `typeorm-tenants/cache`: a cache whose keys are always the active
 * tenant's, over Redis (a client you already have) or an in-process LRU,
 * cleared by `dropTenant()`, `archiveTenant()` and `restoreTenant()`. It
 * needs no package of its own: `redisCacheStore()` takes your ioredis client.
 */
export { tenantCache, DEFAULT_TENANT_CACHE_TTL_MS, JSON_SERIALIZER, MAX_TENANT_CACHE_KEY_LENGTH, MAX_TENANT_CACHE_PREFIX_LENGTH } from './tenant-cache';
export type { TenantCache, TenantCacheOptions, TenantCacheSerializer } from './tenant-cache';
export type { TenantCacheStore } from './cache-store';
export { redisCacheStore, DEFAULT_REDIS_SCAN_COUNT } from './redis-cache-store';
export type { RedisCacheClient, RedisCacheStoreOptions } from './redis-cache-store';
export { memoryCacheStore, DEFAULT_MEMORY_CACHE_MAX_ENTRIES } from './memory-cache-store';
export type { MemoryCacheStore, MemoryCacheStoreOptions } from './memory-cache-store';
