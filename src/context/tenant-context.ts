import { AsyncLocalStorage } from 'node:async_hooks';
import type { DataSource, EntityManager, EntityTarget, ObjectLiteral, Repository } from 'typeorm';
import { isTenantScoped } from '../entity/tenant-scoped';
import { AmbiguousManagerError, InvalidTenantStateError, TenantContextMissingError } from '../errors';
import type { TenantRecord } from '../registry/tenant-record';

/** What a run needs from the manager that started it. */
export interface ContextOwner {
  /** The DataSource of the shared schema. */
  readonly sharedDataSource: DataSource;
}

/** The state of one active run. */
export interface RunState {
  readonly owner: ContextOwner;
  readonly tenant: TenantRecord;
  readonly dataSource: DataSource;
  /** Set inside `tenantContext.transaction()`: everything in it joins this transaction. */
  readonly transactionManager?: EntityManager;
  /** Set inside a `createTenant()` seed hook: the tenant exists only for its creation transaction. */
  readonly seeding?: true;
}

/**
 * Refuses work that outlives the transaction inside a seed hook (enqueueing
 * a job, writing a file or a cache entry): until `createTenant()` commits,
 * no other connection sees the tenant, and a failing seed would leave it
 * behind.
 *
 * @throws InvalidTenantStateError inside a seed hook.
 */
export function refuseInSeed(operation: string): void {
  const state = runStorage.getStore();
  if (state?.seeding !== true) return;
  throw new InvalidTenantStateError(
    state.tenant.slug,
    'provisioning',
    operation,
    'Its creation transaction has not committed: a worker would not find the tenant, and a seed that fails would leave this behind. Do it after createTenant() resolves.',
  );
}

/** The one store of the active run; the package is CommonJS only, so there is one per process. */
export const runStorage = new AsyncLocalStorage<RunState>();

const liveOwners = new Set<ContextOwner>();

/** Makes `owner` the answer for shared data asked for outside any run (while it is the only one). */
export function registerLiveOwner(owner: ContextOwner): void {
  liveOwners.add(owner);
}

export function unregisterLiveOwner(owner: ContextOwner): void {
  liveOwners.delete(owner);
}

/**
 * The context helper: repositories, the entity manager, transactions and raw
 * SQL bound to the active tenant, the one `manager.run(slug, fn)` started.
 * Services use it and stay tenant-agnostic. Without an active tenant every
 * tenant-scoped call throws `TenantContextMissingError`; nothing falls back to
 * the shared schema.
 */
export class TenantContext {
  /**
   * The active tenant's record, or `undefined` outside a run.
   *
   * @example
   * ```ts
   * await tenants.run('acme', async () => tenantContext.current()?.slug); // 'acme'
   * ```
   */
  current(): TenantRecord | undefined {
    return runStorage.getStore()?.tenant;
  }

  /**
   * A repository bound to the active tenant's schema. Inside
   * `tenantContext.transaction()` it joins that transaction.
   *
   * Shared (non-`@TenantScoped`) entities work with or without an active
   * tenant: outside a run they come from the one live manager's shared
   * DataSource (with several live managers this throws
   * `AmbiguousManagerError`: use `manager.sharedDataSource`).
   *
   * @throws TenantContextMissingError for a tenant-scoped entity outside a run.
   * @example
   * ```ts
   * const clients = tenantContext.getRepository(Client);
   * await clients.find(); // only the active tenant's clients
   * ```
   */
  getRepository<Entity extends ObjectLiteral>(target: EntityTarget<Entity>): Repository<Entity> {
    const state = runStorage.getStore();
    if (state !== undefined) return managerOf(state).getRepository(target);
    const label = `tenantContext.getRepository(${nameOf(target)})`;
    if (isTenantScoped(target)) throw new TenantContextMissingError(label);
    if (liveOwners.size !== 1) throw new AmbiguousManagerError(label, liveOwners.size);
    const [owner] = liveOwners;
    // A target given by name (or schema object) is only served when it names a
    // shared entity; a tenant entity's name outside a run fails closed.
    if (!owner!.sharedDataSource.hasMetadata(target)) throw new TenantContextMissingError(label);
    return owner!.sharedDataSource.getRepository(target);
  }

  /**
   * The active tenant's `EntityManager` (the transaction's, inside
   * `tenantContext.transaction()`).
   *
   * @throws TenantContextMissingError outside a run.
   */
  getManager(): EntityManager {
    return managerOf(requireRun('tenantContext.getManager()'));
  }

  /**
   * Runs `fn` in a transaction in the active tenant's schema and returns its
   * result; the transaction commits when `fn` resolves and rolls back when it
   * throws. Inside `fn`, `tenantContext.getRepository()` and `getManager()`
   * join the transaction, for tenant and shared entities alike, so code called
   * from `fn` is transactional without passing the manager around. Nested
   * calls use savepoints.
   *
   * @throws TenantContextMissingError outside a run.
   * @example
   * ```ts
   * await tenantContext.transaction(async (em) => {
   *   await em.save(Client, { name: 'Ada', email: 'ada@acme.test' });
   *   await audit.record('client created'); // uses tenantContext inside: same transaction
   * });
   * ```
   */
  transaction<T>(fn: (entityManager: EntityManager) => Promise<T>): Promise<T> {
    let state: RunState;
    try {
      state = requireRun('tenantContext.transaction()');
    } catch (error) {
      return Promise.reject(error);
    }
    return managerOf(state).transaction((entityManager) =>
      runStorage.run({ ...state, transactionManager: entityManager }, () => fn(entityManager)),
    );
  }

  /**
   * Runs raw SQL in the active tenant's schema and returns what TypeORM's
   * `DataSource.query` returns (the rows, for a SELECT). Like every raw-SQL
   * entry point of a tenant DataSource (`EntityManager.query`,
   * `Repository.query`, `DataSource.query`, a QueryRunner's `query`), it runs
   * in a transaction under `SET LOCAL search_path TO "<tenant>", <querySearchPath
   * extras>, pg_temp`, so unqualified names resolve in the tenant schema and
   * never in the shared one. One statement per call. Inside
   * `tenantContext.transaction()` it joins that transaction.
   *
   * @throws TenantContextMissingError outside a run.
   * @example
   * ```ts
   * const [{ count }] = await tenantContext.query('SELECT count(*)::int AS count FROM client');
   * ```
   */
  query<T = any>(sql: string, parameters?: readonly unknown[]): Promise<T> {
    let state: RunState;
    try {
      state = requireRun('tenantContext.query()');
    } catch (error) {
      return Promise.reject(error);
    }
    return managerOf(state).query(sql, parameters === undefined ? undefined : [...parameters]);
  }
}

/**
 * The process-wide context helper.
 *
 * @example
 * ```ts
 * import { tenantContext } from 'typeorm-tenants';
 * const clients = tenantContext.getRepository(Client);
 * ```
 */
export const tenantContext = new TenantContext();

function requireRun(operation: string): RunState {
  const state = runStorage.getStore();
  if (state === undefined) throw new TenantContextMissingError(operation);
  return state;
}

function managerOf(state: RunState): EntityManager {
  return state.transactionManager ?? state.dataSource.manager;
}

function nameOf(target: unknown): string {
  if (typeof target === 'function') return target.name;
  if (typeof target === 'string') return target;
  return 'entity';
}
