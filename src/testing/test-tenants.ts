import { randomBytes } from 'node:crypto';
import { InvalidArgumentError, ManagerDestroyedError, TenantNotFoundError } from '../errors';
import type { TenantSeed } from '../manager/manager-options';
import type { TenantDataSourceManager } from '../manager/tenant-data-source-manager';
import type { TenantRecord } from '../registry/tenant-record';

/** Options of `createTestTenant`. */
export interface CreateTestTenantOptions {
  /** The slug. Default: `slugPrefix`, a dash and 12 random hex digits, so tests and repeated runs never collide. */
  readonly slug?: string;
  /** Start of the generated slug. Default `DEFAULT_TEST_SLUG_PREFIX` (`'test'`). */
  readonly slugPrefix?: string;
  /** Display name. Default: the slug. */
  readonly name?: string;
  /** Seeds the tenant inside its creation transaction (overrides the manager's `seed`). */
  readonly seed?: TenantSeed;
}

/** Options of `dropTestTenants`. */
export interface DropTestTenantsOptions {
  /** Tenants dropped at once per manager. Default `DEFAULT_TEST_DROP_CONCURRENCY`, at most half the manager's pool. */
  readonly concurrency?: number;
}

/** Start of the slugs `createTestTenant` makes. */
export const DEFAULT_TEST_SLUG_PREFIX = 'test';

/** Tenants `dropTestTenants` drops at once per manager. */
export const DEFAULT_TEST_DROP_CONCURRENCY = 4;

/** The tenants each manager created through the kit and has not dropped yet, in creation order. */
const created = new Map<TenantDataSourceManager, Set<string>>();

/**
 * A fresh, fully migrated tenant for one test: `manager.createTenant()` with a
 * unique slug, so with the manager's `warmPool` it claims a spare schema that
 * already has every tenant migration (a rename and a registry row in one
 * short transaction) and the pool refills in the background. Without a warm
 * pool it runs every migration inline (as slow as `createTenant` is). The kit
 * remembers the tenant until `dropTestTenants()` drops it.
 *
 * @throws what `createTenant` throws (`InvalidTenantNameError` for a bad slug or prefix, `TenantProvisioningError` for a failing seed, ...).
 * @example
 * ```ts
 * const tenant = await createTestTenant(manager, { seed: async ({ manager }) => { await manager.save(Client, { name: 'first' }); } });
 * await manager.run(tenant.slug, () => tenantContext.getRepository(Client).count()); // 1
 * ```
 */
export async function createTestTenant(manager: TenantDataSourceManager, options: CreateTestTenantOptions = {}): Promise<TenantRecord> {
  const slug = options.slug ?? `${options.slugPrefix ?? DEFAULT_TEST_SLUG_PREFIX}-${randomBytes(6).toString('hex')}`;
  const record = await manager.createTenant(slug, { name: options.name, seed: options.seed });
  let slugs = created.get(manager);
  if (slugs === undefined) {
    slugs = new Set();
    created.set(manager, slugs);
  }
  slugs.add(record.slug);
  return record;
}

/** The slugs of the tenants the kit created with `manager` and has not dropped yet, oldest first. */
export function testTenantsOf(manager: TenantDataSourceManager): string[] {
  return [...(created.get(manager) ?? [])];
}

/**
 * Drops every tenant `createTestTenant` made (with `manager`, or with every
 * manager when none is given) and not yet dropped, with `{ force: true }`;
 * a tenant the test dropped itself counts as dropped. Returns the slugs
 * dropped. Each drop is tried; a tenant whose drop failed stays remembered
 * (a later call tries again) and the failure is thrown after the others were
 * tried (several: an `AggregateError` of them). A manager destroyed before
 * its tenants were dropped throws `ManagerDestroyedError` once, and its
 * tenants are forgotten (call `dropTestTenants` before `destroy()`).
 *
 * @example
 * ```ts
 * afterEach(() => dropTestTenants(manager));
 * ```
 */
export function dropTestTenants(manager?: TenantDataSourceManager, options: DropTestTenantsOptions = {}): Promise<string[]> {
  return dropKitTenants(manager, options, undefined);
}

/**
 * `dropTestTenants(manager)` leaving `kept` alone: the tenants that were
 * there before a test started (`useTestTenancy`'s `dropTenants: 'after-each'`
 * drops only the test's own).
 */
export function dropTestTenantsExcept(manager: TenantDataSourceManager, kept: ReadonlySet<string>): Promise<string[]> {
  return dropKitTenants(manager, {}, kept);
}

async function dropKitTenants(manager: TenantDataSourceManager | undefined, options: DropTestTenantsOptions, kept: ReadonlySet<string> | undefined): Promise<string[]> {
  const managers = manager === undefined ? [...created.keys()] : [manager];
  const dropped: string[] = [];
  const failures: unknown[] = [];
  for (const owner of managers) {
    const slugs = created.get(owner);
    if (slugs === undefined) continue;
    const queue = [...slugs].filter((slug) => kept === undefined || !kept.has(slug));
    const worker = async (): Promise<void> => {
      for (let slug = queue.shift(); slug !== undefined; slug = queue.shift()) {
        try {
          await owner.dropTenant(slug, { force: true });
        } catch (error) {
          if (error instanceof ManagerDestroyedError) {
            // It can never drop them now: say so once, and let later calls (of other managers) go on.
            failures.push(error);
            queue.length = 0;
            slugs.clear();
            break;
          }
          if (!(error instanceof TenantNotFoundError)) {
            failures.push(error);
            continue;
          }
        }
        slugs.delete(slug);
        dropped.push(slug);
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrencyFor(owner, options.concurrency), queue.length) }, worker));
    if (slugs.size === 0) created.delete(owner);
  }
  if (failures.length === 1) throw failures[0];
  if (failures.length > 1) throw new AggregateError(failures, `dropTestTenants(): ${failures.length} tenants could not be dropped; the first: ${String(failures[0])}`);
  return dropped;
}

function concurrencyFor(manager: TenantDataSourceManager, requested: number | undefined): number {
  const wanted = requested ?? DEFAULT_TEST_DROP_CONCURRENCY;
  if (!Number.isInteger(wanted) || wanted < 1) {
    throw new InvalidArgumentError(`dropTestTenants(): option "concurrency" must be a positive integer; got ${JSON.stringify(requested)}.`);
  }
  // Each drop holds a connection: leave the other half of the pool to the tests and the warm pool's refill.
  return Math.max(1, Math.min(wanted, Math.floor(manager.stats().pool.max / 2)));
}
