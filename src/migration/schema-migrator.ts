import { TenancyConfigurationError } from '../errors';
import { MigrationExecutor, type DataSource, type MigrationInterface, type QueryRunner } from 'typeorm';
import { quoteIdentList } from '../naming/quote-ident';
import { isNonTransactional, refuseOtherConnections, runInMigrationTransaction } from './non-transactional-migrations';
import { ARM_GUARD_SQL, CATALOG_PREPARE_SQL, CATALOG_RESTORE_SQL, DISARM_GUARD_SQL, checkArmed, checkCatalog, guardErrorOf, type MigrationGuardMode } from './migration-guard';

/** A migration failed; `migration` names it. The original error is the `cause`. */
export class MigrationFailure extends Error {
  constructor(
    readonly migration: string | undefined,
    cause: unknown,
    /** Migrations committed before the failure (runs in segments, with `transaction = false` migrations). */
    readonly applied: readonly string[] = [],
    /** Indexes of the tenant left invalid after the failure (a concurrent build that failed). */
    readonly invalidIndexes: readonly string[] = [],
  ) {
    super(`Migration ${migration ?? '(before the first migration)'} failed`, { cause });
  }
}

/** How one run of migrations goes. */
export interface MigrationRunOptions {
  /** The schema was created by this very transaction (see `skipFirstMigrationsTableCheck`). */
  readonly freshSchema?: boolean;
  /**
   * Tenant migrations: the `migrationGuard` that keeps them inside the schema
   * being migrated (`searchPath[0]`). Shared migrations leave it out (no check).
   */
  readonly guard?: MigrationGuardMode;
  /**
   * Only the migrations before this one (in TypeORM's order) are considered:
   * the transactional segment ahead of a `transaction = false` migration.
   */
  readonly stopBefore?: string;
  /**
   * Shared migrations: one with `transaction = false` is refused (they run in
   * `initialize()`'s one transaction, where CONCURRENTLY cannot be used on a
   * shared table that is being read and written).
   */
  readonly shared?: boolean;
}

/**
 * Applies the pending migrations of `dataSource` inside the transaction that
 * `queryRunner` (a runner of that DataSource) has open, and returns the names
 * applied.
 *
 * The DataSource must be bound to the schema being migrated: TypeORM's
 * `MigrationExecutor` decides where the migrations table is from the schema
 * the DataSource was built with, so it lives inside that schema. Before the
 * first migration the transaction sets `search_path` (with `SET LOCAL`, never
 * on the session) to `searchPath`, so raw SQL with unqualified names lands in
 * the schema being migrated, and TypeORM's unqualified references to shared
 * tables resolve to the shared schema listed after it.
 *
 * With `guard`, every migration is kept inside `searchPath[0]`: a migration
 * that creates, alters (or, with event triggers, drops) an object elsewhere
 * fails with a `MigrationOutsideTenantError` as the cause.
 *
 * Throws `MigrationFailure` naming the migration that failed; the caller rolls
 * back.
 */
export async function applyPendingMigrations(
  dataSource: DataSource,
  queryRunner: QueryRunner,
  searchPath: readonly string[],
  options: MigrationRunOptions = {},
): Promise<string[]> {
  const guard = options.guard ?? 'off';
  const executor = await prepareExecutor(dataSource, queryRunner, searchPath, guard);
  if (options.stopBefore !== undefined) onlyBefore(executor, options.stopBefore);
  const restore = options.freshSchema === true ? skipFirstMigrationsTableCheck(queryRunner, executor) : undefined;
  try {
    return await withMigrationTracking(dataSource, queryRunner, 'up', searchPath[0]!, guard, options.shared === true, async () => {
      const applied = await executor.executePendingMigrations();
      return applied.map((m) => m.name);
    });
  } finally {
    restore?.();
  }
}

/** Restricts what `executor` runs to the migrations ordered before `name`. */
function onlyBefore(executor: MigrationExecutor, name: string): void {
  const withExecutorOrder = executor as unknown as { getMigrations(): Array<{ name: string }> };
  const all = withExecutorOrder.getMigrations.bind(executor);
  withExecutorOrder.getMigrations = () => {
    const migrations = all();
    const at = migrations.findIndex((migration) => migration.name === name);
    return at < 0 ? migrations : migrations.slice(0, at);
  };
}

/**
 * In a schema created by this very transaction the migrations table cannot
 * exist yet, so answer the executor's first "does it exist?" without the
 * information_schema query (the slowest step of provisioning with many
 * schemas). Only that one question, for that one table, is answered.
 */
function skipFirstMigrationsTableCheck(queryRunner: QueryRunner, executor: MigrationExecutor): () => void {
  const original = queryRunner.hasTable;
  const migrationsTable = (executor as unknown as { migrationsTable: string }).migrationsTable;
  const restore = (): void => {
    queryRunner.hasTable = original;
  };
  queryRunner.hasTable = async (target) => {
    if (target === migrationsTable) {
      restore();
      return false;
    }
    return original.call(queryRunner, target);
  };
  return restore;
}

/**
 * Undoes the last applied migration of `dataSource`'s schema inside the open
 * transaction of `queryRunner`, with the same search_path rule as
 * `applyPendingMigrations`, and its `guard` (an unqualified `DROP` in a
 * `down()` resolves to the shared schema when the tenant lacks the object).
 * Returns the name undone, or `undefined` when nothing was applied.
 */
export async function undoLastMigration(
  dataSource: DataSource,
  queryRunner: QueryRunner,
  searchPath: readonly string[],
  options: Pick<MigrationRunOptions, 'guard'> = {},
): Promise<string | undefined> {
  const guard = options.guard ?? 'off';
  const executor = await prepareExecutor(dataSource, queryRunner, searchPath, guard);
  return withMigrationTracking(dataSource, queryRunner, 'down', searchPath[0]!, guard, false, async () => {
    const before = await executor.getExecutedMigrations();
    if (before.length === 0) return undefined;
    await executor.undoLastMigration();
    const after = new Set((await executor.getExecutedMigrations()).map((m) => m.name));
    return before.find((m) => !after.has(m.name))?.name;
  });
}

/** `'catalog'`: the JIT setting of each runner's transaction before the migrations turned it off. */
const jitToRestore = new WeakMap<QueryRunner, string>();

async function prepareExecutor(
  dataSource: DataSource,
  queryRunner: QueryRunner,
  searchPath: readonly string[],
  guard: MigrationGuardMode,
): Promise<MigrationExecutor> {
  if (!queryRunner.isTransactionActive) {
    throw new Error('Schema migrations need a query runner with an open transaction.');
  }
  if (guard === 'event-trigger') {
    // One round trip, as without the guard: the search path and the setting that arms the event triggers.
    await queryRunner.query(ARM_GUARD_SQL, [quoteIdentList(searchPath), searchPath[0]]);
  } else if (guard === 'catalog') {
    const [{ jit }]: Array<{ jit: string }> = await queryRunner.query(CATALOG_PREPARE_SQL, [quoteIdentList(searchPath)]);
    jitToRestore.set(queryRunner, jit);
  } else {
    await queryRunner.query(`SET LOCAL search_path TO ${quoteIdentList(searchPath)}`);
  }
  const executor = new MigrationExecutor(dataSource, queryRunner);
  executor.transaction = 'all';
  return executor;
}

/**
 * Runs `work` while each migration's `direction` method records its name, so
 * that a failure can say which migration failed (the executor does not).
 * Wraps the methods of this DataSource's own migration instances and restores
 * them after. With the `'catalog'` guard each migration is checked as soon as
 * it returns, in its transaction, so the failure names it; with
 * `'event-trigger'` the trigger's error becomes the same typed error, and the
 * triggers are disarmed once the migrations are done.
 */
async function withMigrationTracking<T>(
  dataSource: DataSource,
  queryRunner: QueryRunner,
  direction: 'up' | 'down',
  schemaName: string,
  guard: MigrationGuardMode,
  shared: boolean,
  work: () => Promise<T>,
): Promise<T> {
  // TypeORM reads the migrations table with a QueryBuilder: with the query
  // result cache's alwaysEnabled it would answer from an entry stored before
  // these migrations ran (and run them twice). Migrations never use it.
  const resultCache = dataSource.queryResultCache;
  const writable = dataSource as { queryResultCache?: typeof resultCache };
  writable.queryResultCache = undefined;
  let current: string | undefined;
  // 'catalog': the check of what the migration changed; 'event-trigger': the guard is still armed (not disarmed or re-aimed on the way).
  const checkAfterEach = guard === 'catalog' ? checkCatalog : guard === 'event-trigger' ? checkArmed : undefined;
  const restore: Array<() => void> = [];
  for (const migration of dataSource.migrations) {
    const instance = migration as MigrationInterface & { transaction?: boolean };
    const original = instance[direction];
    const name = instance.name ?? instance.constructor.name;
    // Here every migration runs in the one open transaction; one with
    // transaction = false runs in its in-transaction form (CONCURRENTLY
    // removed). TypeORM refuses any override of the mode in 'all', so the
    // flag is hidden for the run.
    const inTransactionForm = isNonTransactional(instance);
    instance[direction] = async (runner: QueryRunner) => {
      current = name;
      if (inTransactionForm && shared) {
        throw new TenancyConfigurationError(
          `Shared migration ${name} declares transaction = false, but shared migrations run inside the one transaction of initialize() ` +
            '(or migrateShared()), where CONCURRENTLY cannot be used. Run it with the TypeORM CLI over ormconfig.ts, or drop transaction = false.',
        );
      }
      // Tenant migrations only: shared ones keep TypeORM's behaviour.
      const unwrap = shared ? undefined : runInMigrationTransaction(runner, name, schemaName, inTransactionForm);
      const reconnect = shared ? undefined : refuseOtherConnections(dataSource, name, schemaName);
      try {
        await original.call(instance, runner);
      } finally {
        reconnect?.();
        unwrap?.();
      }
      await checkAfterEach?.(runner, schemaName, name);
    };
    const flag = Object.getOwnPropertyDescriptor(instance, 'transaction');
    if (instance.transaction !== undefined) instance.transaction = undefined;
    restore.push(() => {
      instance[direction] = original;
      if (flag !== undefined) Object.defineProperty(instance, 'transaction', flag);
      else delete instance.transaction;
    });
  }
  try {
    const result = await work();
    if (guard === 'event-trigger') await queryRunner.query(DISARM_GUARD_SQL);
    if (guard === 'catalog') await queryRunner.query(CATALOG_RESTORE_SQL, [jitToRestore.get(queryRunner) ?? 'on']);
    return result;
  } catch (error) {
    throw new MigrationFailure(current, (guard === 'event-trigger' ? guardErrorOf(error, current, schemaName) : undefined) ?? error);
  } finally {
    for (const undo of restore) undo();
    writable.queryResultCache = resultCache;
  }
}
