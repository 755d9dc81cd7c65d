import { MigrationExecutor, type DataSource, type MigrationInterface, type QueryRunner } from 'typeorm';
import { quoteIdentList } from '../naming/quote-ident';

/** A migration failed; `migration` names it. The original error is the `cause`. */
export class MigrationFailure extends Error {
  constructor(
    readonly migration: string | undefined,
    cause: unknown,
  ) {
    super(`Migration ${migration ?? '(before the first migration)'} failed`, { cause });
  }
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
 * Throws `MigrationFailure` naming the migration that failed; the caller rolls
 * back.
 */
export async function applyPendingMigrations(
  dataSource: DataSource,
  queryRunner: QueryRunner,
  searchPath: readonly string[],
): Promise<string[]> {
  if (!queryRunner.isTransactionActive) {
    throw new Error('applyPendingMigrations needs a query runner with an open transaction.');
  }
  await queryRunner.query(`SET LOCAL search_path TO ${quoteIdentList(searchPath)}`);
  let current: string | undefined;
  const restore: Array<() => void> = [];
  // The executor does not say which migration failed; wrap each up() of this
  // DataSource's own migration instances to know.
  for (const migration of dataSource.migrations) {
    const instance = migration as MigrationInterface;
    const up = instance.up;
    const name = instance.name ?? instance.constructor.name;
    instance.up = (runner: QueryRunner) => {
      current = name;
      return up.call(instance, runner);
    };
    restore.push(() => {
      instance.up = up;
    });
  }
  try {
    const executor = new MigrationExecutor(dataSource, queryRunner);
    executor.transaction = 'all';
    const applied = await executor.executePendingMigrations();
    return applied.map((m) => m.name);
  } catch (error) {
    throw new MigrationFailure(current, error);
  } finally {
    for (const undo of restore) undo();
  }
}
