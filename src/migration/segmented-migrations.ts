import { MigrationExecutor, type DataSource, type QueryRunner } from 'typeorm';
import type { Migration } from 'typeorm/migration/Migration';
import type { SqlRunner } from '../registry/tenant-registry';
import { guardErrorOf, type MigrationGuardMode } from './migration-guard';
import { dropInvalidIndex, invalidIndexesOf, isNonTransactional, refuseOtherConnections, runInBareForm, validIndexesAmong } from './non-transactional-migrations';
import { MigrationFailure, applyPendingMigrations, undoLastMigration } from './schema-migrator';

/** An index a failed concurrent build had left invalid, found before a rerun: dropped, then rebuilt by the migration (or not). */
export interface InvalidIndexRepair {
  readonly index: string;
  /** True when, once the migrations ran, a valid index of that name exists again. */
  readonly rebuilt: boolean;
}

/** How a tenant's migrations run in segments. */
export interface SegmentedRunOptions {
  /** The tenant's migration search path (tenant schema first). */
  readonly searchPath: readonly string[];
  readonly guard: MigrationGuardMode;
  /**
   * Copies the tenant's migrations table into the ledger, inside the open
   * transaction of `runner`: called in the transaction that records each
   * segment, so the ledger never says more than the tenant has.
   */
  record(runner: QueryRunner & SqlRunner): Promise<void>;
}

/** What a segmented run did. */
export interface SegmentedOutcome {
  readonly applied: string[];
  readonly invalidIndexes: InvalidIndexRepair[];
}

/**
 * Applies the pending migrations of a tenant whose migrations include some
 * with `transaction = false`, for fleet runs: the caller holds the tenant's
 * advisory lock in a READ COMMITTED transaction on another connection (one
 * that holds no snapshot between statements, so it never blocks a concurrent
 * index build). On a runner of its own:
 * - each run of consecutive transactional migrations is one transaction,
 *   with the migration guard, recorded (migrations table and ledger) in it;
 * - each `transaction = false` migration runs outside a transaction (see
 *   `runInBareForm`), then is recorded in one transaction, so only a
 *   migration that completed is ever recorded. Before it runs, any index of
 *   the tenant left invalid by a failed concurrent build is dropped (without
 *   blocking writes), so that the migration builds it again; the outcome
 *   reports each one, and whether it was rebuilt.
 * A failure throws `MigrationFailure` naming the migration, with the
 * migrations committed before it and the indexes it left invalid; a rerun
 * takes up from there.
 */
export async function applyPendingInSegments(dataSource: DataSource, options: SegmentedRunOptions): Promise<SegmentedOutcome> {
  const schemaName = options.searchPath[0]!;
  const runner = dataSource.createQueryRunner() as QueryRunner & SqlRunner;
  const applied: string[] = [];
  const repaired: string[] = [];
  try {
    for (;;) {
      const executor = new MigrationExecutor(dataSource, runner);
      const pending = await executor.getPendingMigrations();
      if (pending.length === 0) break;
      const bare = pending.find((migration) => isNonTransactional(migration.instance!));
      if (bare !== pending[0]) {
        applied.push(
          ...(await inTransaction(runner, async () => {
            const names = await applyPendingMigrations(dataSource, runner, options.searchPath, { guard: options.guard, stopBefore: bare?.name });
            await options.record(runner);
            return names;
          })),
        );
        continue;
      }
      const migration = bare!;
      for (const index of await invalidIndexesOf(runner, schemaName)) {
        await dropInvalidIndex(runner, schemaName, index);
        repaired.push(index);
      }
      await runBare(runner, migration, options, 'up');
      await inTransaction(runner, async () => {
        await (executor as unknown as ExecutorRecords).insertExecutedMigration(runner, migration);
        await options.record(runner);
      });
      applied.push(migration.name);
    }
    return { applied, invalidIndexes: await repairsOf(runner, schemaName, repaired) };
  } catch (error) {
    throw await failureWith(runner, schemaName, error, applied);
  } finally {
    await releaseClean(runner);
  }
}

/**
 * Undoes the last applied migration of such a tenant, under the caller's
 * lock as `applyPendingInSegments`: a `transaction = false` one runs its
 * `down()` outside a transaction, then its record is removed in one
 * transaction; any other is undone in one transaction, as usual. Returns the
 * name undone, or `undefined` when nothing was applied.
 */
export async function undoLastInSegments(dataSource: DataSource, options: SegmentedRunOptions): Promise<string | undefined> {
  const schemaName = options.searchPath[0]!;
  const runner = dataSource.createQueryRunner() as QueryRunner & SqlRunner;
  try {
    const executor = new MigrationExecutor(dataSource, runner);
    const executed = await executor.getExecutedMigrations();
    // TypeORM undoes the migration recorded last (highest id).
    const last = executed.sort((a, b) => (b.id ?? 0) - (a.id ?? 0))[0];
    if (last === undefined) return undefined;
    const migration = (executor as unknown as { getMigrations(): Migration[] }).getMigrations().find((m) => m.name === last.name);
    if (migration === undefined || !isNonTransactional(migration.instance!)) {
      return await inTransaction(runner, async () => {
        const undone = await undoLastMigration(dataSource, runner, options.searchPath, { guard: options.guard });
        await options.record(runner);
        return undone;
      });
    }
    await runBare(runner, migration, options, 'down');
    await inTransaction(runner, async () => {
      await (executor as unknown as ExecutorRecords).deleteExecutedMigration(runner, migration);
      await options.record(runner);
    });
    return migration.name;
  } catch (error) {
    throw await failureWith(runner, schemaName, error, []);
  } finally {
    await releaseClean(runner);
  }
}

/** TypeORM's executor methods that write the migrations table, protected in its typings. */
interface ExecutorRecords {
  insertExecutedMigration(runner: QueryRunner, migration: Migration): Promise<void>;
  deleteExecutedMigration(runner: QueryRunner, migration: Migration): Promise<void>;
}

/**
 * Gives the runner's connection back to the pool without what a migration
 * set on its session (`SET statement_timeout`, `application_name`, ...):
 * outside a transaction such settings outlive the migration, and the
 * connection serves requests next. A connection that cannot be reset is
 * broken, and the pool discards it.
 */
async function releaseClean(runner: QueryRunner): Promise<void> {
  try {
    if (runner.isTransactionActive) await runner.rollbackTransaction();
    await runner.query('RESET ALL');
  } catch {
    // Broken: pg's pool drops a client whose connection failed.
  } finally {
    await runner.release();
  }
}

async function runBare(runner: QueryRunner, migration: Migration, options: SegmentedRunOptions, direction: 'up' | 'down'): Promise<void> {
  const unwrap = runInBareForm(runner, migration.name, options.searchPath, options.guard);
  const reconnect = refuseOtherConnections(runner.connection, migration.name, options.searchPath[0]!);
  const logger = runner.connection.logger;
  try {
    await migration.instance![direction](runner);
    // As TypeORM's executor logs the migrations it runs.
    logger.logSchemaBuild(`Migration ${migration.name} has been ${direction === 'up' ? 'executed' : 'reverted'} successfully.`, runner);
  } catch (error) {
    logger.logMigration(`Migration "${migration.name}" failed, error: ${error instanceof Error ? error.message : String(error)}`, runner);
    const schemaName = options.searchPath[0]!;
    // The migration's own transaction, if it left one open, is not to be kept.
    if (runner.isTransactionActive) await runner.rollbackTransaction().catch(() => undefined);
    throw new MigrationFailure(migration.name, (options.guard === 'event-trigger' ? guardErrorOf(error, migration.name, schemaName) : undefined) ?? error);
  } finally {
    reconnect();
    unwrap();
  }
  if (runner.isTransactionActive) {
    await runner.rollbackTransaction().catch(() => undefined);
    throw new MigrationFailure(migration.name, new Error(`Migration ${migration.name} (transaction = false) returned with a transaction it opened still open; commit or roll it back in ${direction}().`));
  }
}

async function inTransaction<T>(runner: QueryRunner, work: () => Promise<T>): Promise<T> {
  await runner.startTransaction();
  try {
    const result = await work();
    await runner.commitTransaction();
    return result;
  } catch (error) {
    if (runner.isTransactionActive) await runner.rollbackTransaction().catch(() => undefined);
    throw error;
  }
}

async function repairsOf(sql: SqlRunner, schemaName: string, dropped: readonly string[]): Promise<InvalidIndexRepair[]> {
  if (dropped.length === 0) return [];
  const valid = new Set(await validIndexesAmong(sql, schemaName, dropped));
  return dropped.map((index) => ({ index, rebuilt: valid.has(index) }));
}

/** The failure of a segmented run, with what was committed before it and the indexes it left invalid. */
async function failureWith(sql: SqlRunner, schemaName: string, error: unknown, applied: readonly string[]): Promise<MigrationFailure> {
  const failure = error instanceof MigrationFailure ? error : new MigrationFailure(undefined, error);
  // Only a connection that still answers can say which indexes were left invalid.
  const invalid = await invalidIndexesOf(sql, schemaName).catch(() => [] as string[]);
  return new MigrationFailure(failure.migration, failure.cause, applied, invalid);
}
