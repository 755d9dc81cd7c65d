import type { TenantDataSourceManagerOptions } from '../manager/manager-options';
import { TenantDataSourceManager } from '../manager/tenant-data-source-manager';

/**
 * Fills the warm pool of `options` (its database, shared schema and
 * registry table) up to `size` spare schemas with a manager of its own,
 * destroyed before it returns. A serving manager with a smaller
 * `warmPool.size` then claims those spares without refilling after each
 * claim: the whole cost of the spares is paid here, before the tests,
 * instead of beside them (`useTestTenancy`'s `warmPoolRefill: 'upfront'`).
 * Spares left over stay for the next run on the same database.
 *
 * @throws what `initialize()` and `refillWarmPool()` throw.
 * @example
 * ```ts
 * await prefillWarmPool(options, 200);
 * const manager = new TenantDataSourceManager({ ...options, warmPool: { size: 1 } });
 * ```
 */
export async function prefillWarmPool(options: TenantDataSourceManagerOptions, size: number): Promise<void> {
  const filler = new TenantDataSourceManager({ ...options, warmPool: { size } });
  try {
    await filler.initialize();
    await filler.refillWarmPool();
  } finally {
    await filler.destroy();
  }
}
