import { InvalidArgumentError, TestTenancyNotReadyError } from '../errors';
import type { TenantDataSourceManagerOptions, TenantSeed } from '../manager/manager-options';
import { TenantDataSourceManager } from '../manager/tenant-data-source-manager';
import type { TenantRecord } from '../registry/tenant-record';
import { prefillWarmPool } from './prefill-warm-pool';
import { sharedTestDatabase } from './shared-test-database';
import { startTestDatabase, type TestDatabase, type TestDatabaseOptions } from './test-database';
import { createTestTenant, dropTestTenants, dropTestTenantsExcept, testTenantsOf, type CreateTestTenantOptions } from './test-tenants';
import { holdTenantTransaction, type HeldTenantTransaction } from './test-transaction';
import { withTenant } from './with-tenant';

/** A hook registrar of a test framework: mocha's `before`, Jest's and Vitest's `beforeAll`, ... */
export type TestHook = (fn: () => Promise<void>, timeoutMs?: number) => unknown;

/**
 * The framework's four hook registrars, passed in so the kit depends on no
 * framework: mocha `{ beforeAll: before, afterAll: after, beforeEach, afterEach }`;
 * Jest (globals) `{ beforeAll, afterAll, beforeEach, afterEach }`; Vitest the
 * same four imported from `vitest`.
 */
export interface TestHooks {
  readonly beforeAll: TestHook;
  readonly afterAll: TestHook;
  readonly beforeEach: TestHook;
  readonly afterEach: TestHook;
}

/** Where `useTestTenancy` runs its tests: options of `startTestDatabase()`, or `{ url }` of an existing database. */
export type TestDatabaseChoice = TestDatabaseOptions | { readonly url: string };

/** The manager's options for a test database: called once, in `beforeAll`, with the database the kit started. */
export type TestManagerOptionsFactory = (database: TestDatabase) => TenantDataSourceManagerOptions | Promise<TenantDataSourceManagerOptions>;

/** Options of `useTestTenancy`. */
export interface TestTenancyOptions {
  /**
   * Where the tests run. Default: the process's test database
   * (`sharedTestDatabase()`: a scratch database on `DATABASE_URL`, else an
   * embedded PostgreSQL, started by the first block that needs it and
   * stopped when the process ends), so the blocks of one process share it
   * and, with the same `registryTable`, its warm pool. Options of
   * `startTestDatabase()`: a database of the block's own, stopped in
   * `afterAll`. `{ url }`: a database the caller owns (for example started
   * in the runner's global setup), used as it is and left running. A
   * function is called in `beforeAll` (for a URL known only then).
   */
  readonly database?: TestDatabaseChoice | (() => TestDatabaseChoice);
  /**
   * `'tenant-per-test'` (default): each test gets a new tenant from the
   * warm pool. `'transaction-per-test'`: one tenant for the whole block,
   * each test's work through `withTenant(fn)` held in one transaction and
   * rolled back after the test; what escapes that transaction is listed at
   * `holdTenantTransaction` (in short: `manager.run()`, `getDataSource()`,
   * `dataSource.transaction()`, HTTP requests through the middleware).
   */
  readonly mode?: 'tenant-per-test' | 'transaction-per-test';
  /**
   * Spare schemas the warm pool keeps when the manager's options set no
   * `warmPool` ('tenant-per-test' only). Default `DEFAULT_TEST_WARM_POOL_SIZE`:
   * filled in `beforeAll`, refilled in the background while tests run.
   */
  readonly warmPoolSize?: number;
  /**
   * `'background'` (default): the pool refills after every claim, beside the
   * tests that follow (it pays off when tests spend time waiting on I/O, and
   * on machines with cores to spare). `'upfront'`: `beforeAll` fills it to
   * `warmPoolSize` (`prefillWarmPool`) and nothing refills during the tests,
   * so a claim never competes with a refill; make `warmPoolSize` at least
   * the number of tests (past it, tenants are provisioned inline). Spares
   * left over serve the next run on the same database.
   */
  readonly warmPoolRefill?: 'background' | 'upfront';
  /** Seeds each test's tenant (in 'transaction-per-test': the block's tenant, once). Default: the manager's `seed`. */
  readonly seed?: TenantSeed;
  /** Start of the generated slugs. Default `'test'`. */
  readonly slugPrefix?: string;
  /** When the tenants are dropped: `'after-all'` (default; one pass in `afterAll`) or `'after-each'` (each test's at its end). */
  readonly dropTenants?: 'after-each' | 'after-all';
  /** Timeout given to the framework for the kit's hooks, in milliseconds. Default `DEFAULT_TEST_HOOK_TIMEOUT_MS`. */
  readonly hookTimeoutMs?: number;
}

/** What `useTestTenancy` returns: the values its hooks set, read inside tests. */
export interface TestTenancy {
  /** The database the tests run on (set in `beforeAll`). */
  readonly database: TestDatabase;
  /** The initialised manager (set in `beforeAll`, destroyed in `afterAll`). */
  readonly manager: TenantDataSourceManager;
  /** The current test's tenant (set in `beforeEach`). */
  readonly tenant: TenantRecord;
  /** `tenant.slug`. */
  readonly slug: string;
  /**
   * Runs `fn` as the current test's tenant (inside its transaction in
   * 'transaction-per-test'), or as the tenant `tenant` when given (always
   * through `manager.run()`, outside any test transaction, for another tenant).
   */
  withTenant<T>(fn: () => T | Promise<T>): Promise<T>;
  withTenant<T>(tenant: string | TenantRecord, fn: () => T | Promise<T>): Promise<T>;
  /** One more tenant (for tests across tenants), dropped with the others. */
  createTenant(options?: CreateTestTenantOptions): Promise<TenantRecord>;
}

/** Warm pool size of the managers `useTestTenancy` makes (see the benchmark in bench/results/testing.md). */
export const DEFAULT_TEST_WARM_POOL_SIZE = 32;

/** Timeout of the kit's hooks: starting an embedded server and filling the warm pool take seconds. */
export const DEFAULT_TEST_HOOK_TIMEOUT_MS = 120_000;

/**
 * Registers hooks that give every test a fresh, fully migrated tenant:
 * `beforeAll` gets a test database (the process's, see `options.database`), builds the manager from
 * `managerOptions(database)` with a warm pool, initialises it and fills the
 * pool; `beforeEach` creates the test's tenant (`createTestTenant`);
 * `afterEach` drops it (`dropTenants: 'after-each'`) or, in
 * 'transaction-per-test', rolls the test's transaction back; `afterAll` drops
 * the remaining test tenants, destroys the manager and stops the database
 * if the block started one of its own.
 * Call it at the top of a `describe` block (or a file) before your own hooks,
 * so they see the manager and tenant.
 *
 * @example
 * ```ts
 * // mocha
 * const tenancy = useTestTenancy({ beforeAll: before, afterAll: after, beforeEach, afterEach }, (database) => ({
 *   dataSource: { type: 'postgres', url: database.url },
 *   entities: [Client, Plan],
 *   tenantMigrations,
 *   sharedMigrations,
 * }));
 *
 * it('saves a client in the test tenant', async () => {
 *   await tenancy.withTenant(() => tenantContext.getRepository(Client).save({ name: 'Ada' }));
 *   expect(await tenancy.withTenant(() => tenantContext.getRepository(Client).count())).to.equal(1);
 * });
 * ```
 */
export function useTestTenancy(hooks: TestHooks, managerOptions: TestManagerOptionsFactory, options: TestTenancyOptions = {}): TestTenancy {
  const settings = validate(hooks, managerOptions, options);
  let database: TestDatabase | undefined;
  let ownsDatabase = false;
  let manager: TenantDataSourceManager | undefined;
  let blockTenant: TenantRecord | undefined;
  let current: TenantRecord | undefined;
  let transaction: HeldTenantTransaction | undefined;
  const { mode, dropTenants, hookTimeoutMs: timeout } = settings;
  const tenantOptions = (): CreateTestTenantOptions => ({ seed: options.seed, slugPrefix: options.slugPrefix });

  hooks.beforeAll(async function (this: unknown) {
    mochaTimeout(this, timeout);
    const where = typeof options.database === 'function' ? options.database() : options.database;
    if (where === undefined) {
      database = await sharedTestDatabase();
    } else if ('url' in where) {
      database = Object.freeze({ url: where.url, embedded: false, description: 'the database given to useTestTenancy', stop: async () => undefined });
    } else {
      database = await startTestDatabase(where);
      ownsDatabase = true;
    }
    const given = await managerOptions(database);
    let warmPool = given.warmPool ?? (mode === 'tenant-per-test' ? { size: settings.warmPoolSize } : undefined);
    if (warmPool !== undefined && settings.warmPoolRefill === 'upfront') {
      await prefillWarmPool(given, warmPool.size);
      // Below the spares there now, so no claim refills; the last one gets a successor.
      warmPool = { size: 1 };
    }
    manager = new TenantDataSourceManager({ ...given, warmPool });
    await manager.initialize();
    if (warmPool !== undefined) await manager.refillWarmPool();
    if (mode === 'transaction-per-test') blockTenant = await createTestTenant(manager, tenantOptions());
  }, timeout);

  let preexisting: ReadonlySet<string> | undefined;

  hooks.beforeEach(async function (this: unknown) {
    mochaTimeout(this, timeout);
    const owner = requireManager();
    // Made before this test (the block's own, or by the user's before hooks): 'after-each' keeps them.
    preexisting = new Set(testTenantsOf(owner));
    if (mode === 'transaction-per-test') {
      current = blockTenant;
      transaction = await holdTenantTransaction(owner, blockTenant!.slug);
    } else {
      current = await createTestTenant(owner, tenantOptions());
    }
  }, timeout);

  hooks.afterEach(async function (this: unknown) {
    mochaTimeout(this, timeout);
    const ending = current;
    const held = transaction;
    current = undefined;
    transaction = undefined;
    if (held !== undefined) await held.rollback();
    if (mode === 'tenant-per-test' && dropTenants === 'after-each' && ending !== undefined && manager !== undefined) {
      await dropTestTenantsExcept(manager, preexisting ?? new Set());
    }
  }, timeout);

  hooks.afterAll(async function (this: unknown) {
    mochaTimeout(this, timeout);
    const owner = manager;
    const used = database;
    manager = undefined;
    blockTenant = undefined;
    try {
      if (owner !== undefined) await dropTestTenants(owner);
    } finally {
      try {
        await owner?.destroy();
      } finally {
        database = undefined;
        if (ownsDatabase) await used?.stop();
      }
    }
  }, timeout);

  function requireManager(): TenantDataSourceManager {
    if (manager === undefined) {
      throw new TestTenancyNotReadyError('useTestTenancy().manager', "its beforeAll hook has not run (or afterAll has): read it inside a test or a hook, not in the describe block's body");
    }
    return manager;
  }

  function requireTenant(): TenantRecord {
    if (current === undefined) {
      throw new TestTenancyNotReadyError('useTestTenancy().tenant', 'it is set by its beforeEach hook for the duration of one test: read it inside a test (it/test) or a beforeEach/afterEach registered after useTestTenancy');
    }
    return current;
  }

  const tenancy: TestTenancy = {
    get database(): TestDatabase {
      if (database === undefined) throw new TestTenancyNotReadyError('useTestTenancy().database', 'its beforeAll hook has not run (or afterAll has): read it inside a test or a hook registered after useTestTenancy');
      return database;
    },
    get manager(): TenantDataSourceManager {
      return requireManager();
    },
    get tenant(): TenantRecord {
      return requireTenant();
    },
    get slug(): string {
      return requireTenant().slug;
    },
    async withTenant<T>(first: string | TenantRecord | (() => T | Promise<T>), fn?: () => T | Promise<T>): Promise<T> {
      if (typeof first === 'function') {
        const tenant = requireTenant();
        return transaction !== undefined ? transaction.enter(first) : withTenant(requireManager(), tenant, first);
      }
      if (typeof fn !== 'function') throw new InvalidArgumentError('withTenant(tenant, fn) needs a function to run as the tenant; got none.');
      return withTenant(requireManager(), first, fn);
    },
    createTenant: (tenantOptionsOverride?: CreateTestTenantOptions): Promise<TenantRecord> =>
      createTestTenant(requireManager(), { ...tenantOptions(), ...tenantOptionsOverride }),
  };
  return Object.freeze(tenancy);
}

interface Settings {
  readonly mode: 'tenant-per-test' | 'transaction-per-test';
  readonly warmPoolRefill: 'background' | 'upfront';
  readonly dropTenants: 'after-each' | 'after-all';
  readonly warmPoolSize: number;
  readonly hookTimeoutMs: number;
}

function validate(hooks: TestHooks, managerOptions: TestManagerOptionsFactory, options: TestTenancyOptions): Settings {
  for (const name of ['beforeAll', 'afterAll', 'beforeEach', 'afterEach'] as const) {
    if (typeof hooks?.[name] !== 'function') {
      throw new InvalidArgumentError(
        `useTestTenancy() needs the test framework's hook functions; "${name}" is ${typeof hooks?.[name]}. ` +
          'mocha: { beforeAll: before, afterAll: after, beforeEach, afterEach }; Jest and Vitest: { beforeAll, afterAll, beforeEach, afterEach }.',
      );
    }
  }
  if (typeof managerOptions !== 'function') {
    throw new InvalidArgumentError('useTestTenancy() needs a function that returns the manager options for the test database: (database) => ({ dataSource: { type: "postgres", url: database.url }, ... }).');
  }
  const mode = options.mode ?? 'tenant-per-test';
  if (mode !== 'tenant-per-test' && mode !== 'transaction-per-test') {
    throw new InvalidArgumentError(`useTestTenancy(): option "mode" must be 'tenant-per-test' or 'transaction-per-test'; got ${JSON.stringify(mode)}.`);
  }
  const dropTenants = options.dropTenants ?? 'after-all';
  if (dropTenants !== 'after-each' && dropTenants !== 'after-all') {
    throw new InvalidArgumentError(`useTestTenancy(): option "dropTenants" must be 'after-each' or 'after-all'; got ${JSON.stringify(dropTenants)}.`);
  }
  const warmPoolRefill = options.warmPoolRefill ?? 'background';
  if (warmPoolRefill !== 'background' && warmPoolRefill !== 'upfront') {
    throw new InvalidArgumentError(`useTestTenancy(): option "warmPoolRefill" must be 'background' or 'upfront'; got ${JSON.stringify(warmPoolRefill)}.`);
  }
  return {
    mode,
    warmPoolRefill,
    dropTenants,
    warmPoolSize: positiveInteger(options.warmPoolSize ?? DEFAULT_TEST_WARM_POOL_SIZE, 'warmPoolSize'),
    hookTimeoutMs: positiveInteger(options.hookTimeoutMs ?? DEFAULT_TEST_HOOK_TIMEOUT_MS, 'hookTimeoutMs'),
  };
}

function positiveInteger(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new InvalidArgumentError(`useTestTenancy(): option "${name}" must be a positive integer; got ${JSON.stringify(value)}.`);
  }
  return value;
}

/** mocha takes a hook's timeout from `this.timeout()`; Jest and Vitest from the registrar's second argument. */
function mochaTimeout(context: unknown, ms: number): void {
  const timeout = (context as { timeout?: unknown } | null | undefined)?.timeout;
  if (typeof timeout === 'function') timeout.call(context, ms);
}
