import type { TenantDataSourceManager } from '../manager/tenant-data-source-manager';
import type { TenantRecord } from '../registry/tenant-record';

/**
 * Runs `fn` as the tenant `tenant` (a slug or a record from
 * `createTestTenant`): `manager.run(slug, fn)`, so `tenantContext` serves
 * that tenant inside `fn` and in everything it awaits. The hooks of
 * `useTestTenancy()` offer the same bound to their manager and the current
 * test's tenant: `tenancy.withTenant(fn)`.
 *
 * @throws TenantNotFoundError / TenantNotActiveError as `run()` does.
 * @example
 * ```ts
 * const tenant = await createTestTenant(manager);
 * await withTenant(manager, tenant, () => tenantContext.getRepository(Client).save({ name: 'Ada' }));
 * ```
 */
export function withTenant<T>(manager: TenantDataSourceManager, tenant: string | TenantRecord, fn: () => T | Promise<T>): Promise<T> {
  return manager.run(typeof tenant === 'string' ? tenant : tenant.slug, fn);
}
