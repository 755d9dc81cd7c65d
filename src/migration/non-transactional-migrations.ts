import type { DataSource, MigrationInterface, QueryRunner } from 'typeorm';
import { MigrationEscapeError, MigrationOutsideTenantError, NonTransactionalStatementError, sqlStateOf } from '../errors';
import { quoteIdent, quoteIdentList } from '../naming/quote-ident';
import type { SqlRunner } from '../registry/tenant-registry';
import { concurrentStatementOf, holdsSeveralStatements, transactionControlIn } from './concurrent-statements';
import { ARM_GUARD_SQL, CATALOG_PREPARE_SQL, checkArmed, checkCatalog, type MigrationGuardMode } from './migration-guard';

/** TypeORM's flag: a migration that must run outside a transaction (`transaction = false`). */
export function isNonTransactional(migration: MigrationInterface): boolean {
  return (migration as { transaction?: boolean }).transaction === false;
}

/** Whether any migration of `dataSource` declares `transaction = false`. */
export function hasNonTransactional(dataSource: DataSource): boolean {
  return dataSource.migrations.some(isNonTransactional);
}

type Query = QueryRunner['query'];
/** `QueryRunner.query` with its overloads collapsed, as the wrappers call it. */
type AnyQuery = (sql: string, parameters?: unknown[], structured?: boolean) => Promise<any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/**
 * For the duration of one tenant migration run inside the library's
 * transaction (every migration of `createTenant`, the warm pool, restore and
 * the generator's throwaway schema; transactional ones in fleet runs): a
 * statement that would end that transaction (`COMMIT`, `ROLLBACK`, a
 * `BEGIN; ...; COMMIT` script) is refused with a `MigrationEscapeError`
 * before it is sent, since what followed it would run outside the
 * transaction, unguarded. With `stripConcurrently` (a migration with
 * `transaction = false`): its concurrent index statements run with
 * `CONCURRENTLY` removed (in a schema no request reads yet, or one not
 * served, the lock they then take harms nobody), and a statement PostgreSQL
 * refuses in a transaction fails with a `NonTransactionalStatementError`
 * saying so. Returns the function that restores the runner.
 */
export function runInMigrationTransaction(runner: QueryRunner, migration: string, schemaName: string, stripConcurrently: boolean): () => void {
  const original = runner.query;
  const send = original.bind(runner) as AnyQuery;
  runner.query = async function (this: QueryRunner, sql: string, parameters?: unknown[], structured?: boolean) {
    const control = typeof sql === 'string' ? transactionControlIn(sql) : undefined;
    if (control !== undefined) {
      throw new MigrationEscapeError(
        migration,
        schemaName,
        `"${abbreviated(control)}" would end the transaction the migration runs in, and what followed would run outside it, with no search path ` +
          'and no guard. Leave transactions to the library (set transaction = false for statements that cannot run in one).',
      );
    }
    if (!stripConcurrently) return send(sql, parameters, structured);
    const concurrent = typeof sql === 'string' ? concurrentStatementOf(sql) : undefined;
    // A schema made by this very transaction has nothing to rebuild, and REINDEX SCHEMA cannot run in a transaction.
    if (concurrent?.action === 'REINDEX SCHEMA CONCURRENTLY' && concurrent.schema === schemaName) return structured === true ? { records: [], raw: [] } : [];
    try {
      return await send(concurrent?.inTransaction ?? sql, parameters, structured);
    } catch (error) {
      if (sqlStateOf(error) !== '25001') throw error;
      throw new NonTransactionalStatementError(
        migration,
        schemaName,
        `"${abbreviated(sql)}" cannot run inside a transaction, and createTenant (like the warm pool and restoreTenant) applies every tenant migration ` +
          'in its one transaction, with only CONCURRENTLY removed from index statements. Keep such statements out of tenant migrations, or run them by hand on each tenant.',
        { cause: error },
      );
    }
  } as Query;
  return () => {
    runner.query = original;
  };
}

/**
 * For the duration of one tenant migration's `up()` or `down()`: SQL through
 * another connection of its DataSource (`queryRunner.connection.query()`,
 * `queryRunner.connection.getRepository(...)`) is refused with a
 * `MigrationEscapeError`, since it would run outside the migration's
 * transaction, search path and guard. Returns the function that restores the
 * DataSource.
 */
export function refuseOtherConnections(dataSource: DataSource, migration: string, schemaName: string): () => void {
  const own = Object.getOwnPropertyDescriptor(dataSource, 'createQueryRunner');
  dataSource.createQueryRunner = () => {
    throw new MigrationEscapeError(
      migration,
      schemaName,
      'it asked its DataSource for another connection (queryRunner.connection.query(), a repository or manager of queryRunner.connection), ' +
        'whose SQL would run outside its transaction, search path and guard. Use the queryRunner given to up() and down() (queryRunner.query(), queryRunner.manager).',
    );
  };
  return () => {
    if (own !== undefined) Object.defineProperty(dataSource, 'createQueryRunner', own);
    else delete (dataSource as { createQueryRunner?: unknown }).createQueryRunner;
  };
}

/** Transaction control statements. */
const TRANSACTION_CONTROL = /^\s*(start\s+transaction|begin|commit|end|rollback|abort|savepoint|release|set\s+transaction|prepare\s+transaction)\b/i;
/** The ones that neither start nor end a transaction: they pass as they are. */
const WITHIN_TRANSACTION = /^\s*(savepoint|release|rollback\s+((transaction|work)\s+)?to|set\s+transaction)\b/i;

/**
 * Outside a transaction (fleet runs), for the duration of one migration with
 * `transaction = false`, on a runner of its own with no transaction open:
 * - a concurrent index statement (`CREATE INDEX CONCURRENTLY`, `DROP INDEX
 *   CONCURRENTLY`, `REINDEX ... CONCURRENTLY`) is sent as it is, once its
 *   target is known to be qualified with the tenant schema (no search path is
 *   set for it: only `SET LOCAL` is safe on pooled and PgBouncer connections;
 *   and the event triggers fire too late to stop a concurrent build);
 * - every other statement runs in a transaction of its own, as autocommit
 *   would, with the tenant's migration search path and the migration guard,
 *   exactly as in a transactional migration;
 * - inside a transaction the migration opens itself, each statement is
 *   preceded by the search path and the guard.
 * Returns the function that restores the runner.
 */
export function runInBareForm(
  runner: QueryRunner,
  migration: string,
  searchPath: readonly string[],
  guard: MigrationGuardMode,
): () => void {
  const original = runner.query;
  const schemaName = searchPath[0]!;
  const send = original.bind(runner) as AnyQuery;
  const sql: SqlRunner = { query: (text, parameters) => send(text, parameters as unknown[] | undefined) };
  const path = quoteIdentList(searchPath);
  const prepare = async (): Promise<void> => {
    if (guard === 'event-trigger') await send(ARM_GUARD_SQL, [path, schemaName]);
    else if (guard === 'catalog') await send(CATALOG_PREPARE_SQL, [path]);
    else await send(`SELECT set_config('search_path', $1, true)`, [path]);
  };
  const check = async (): Promise<void> => {
    if (guard === 'event-trigger') await checkArmed(sql, schemaName, migration);
    else if (guard === 'catalog') await checkCatalog(sql, schemaName, migration);
  };
  // The migration's own transactions are followed through TypeORM's methods
  // (which keep isTransactionActive right); the same statements sent raw would not be.
  let typeOrmControl = 0;
  const methods = ['startTransaction', 'commitTransaction', 'rollbackTransaction'] as const;
  const originals = methods.map((name) => runner[name]);
  methods.forEach((name, index) => {
    const method = originals[index]! as (...args: unknown[]) => Promise<void>;
    (runner as unknown as Record<string, unknown>)[name] = async (...args: unknown[]): Promise<void> => {
      typeOrmControl += 1;
      try {
        await method.apply(runner, args);
      } finally {
        typeOrmControl -= 1;
      }
    };
  });
  // One statement at a time, in call order: statements started together
  // (Promise.all) would otherwise interleave with the transactions around them.
  let queue: Promise<unknown> = Promise.resolve();
  runner.query = function (this: QueryRunner, statement: string, parameters?: unknown[], structured?: boolean) {
    const turn = queue.then(() => runOne(statement, parameters, structured));
    queue = turn.catch(() => undefined);
    return turn;
  } as Query;
  const runOne = async (statement: string, parameters?: unknown[], structured?: boolean): Promise<unknown> => {
    if (typeof statement === 'string' && holdsSeveralStatements(statement)) {
      // A COMMIT inside the string would end the statement's transaction, and what follows would run unguarded.
      throw new NonTransactionalStatementError(
        migration,
        schemaName,
        `"${abbreviated(statement)}" holds several statements; outside a transaction each must be sent on its own (one queryRunner.query() call per statement).`,
      );
    }
    if (typeof statement !== 'string') return send(statement, parameters, structured);
    if (TRANSACTION_CONTROL.test(statement)) {
      if (typeOrmControl > 0 || WITHIN_TRANSACTION.test(statement)) return send(statement, parameters, structured);
      throw new MigrationEscapeError(
        migration,
        schemaName,
        `"${abbreviated(statement)}" sent through queryRunner.query() starts or ends a transaction behind the runner's back, and what followed it would run ` +
          'with no search path and no guard. Use queryRunner.startTransaction(), commitTransaction() and rollbackTransaction(), which the library follows.',
      );
    }
    const concurrent = concurrentStatementOf(statement);
    if (concurrent !== undefined) {
      if (concurrent.schema === undefined) {
        throw new NonTransactionalStatementError(
          migration,
          schemaName,
          `${concurrent.action} ${concurrent.target} does not name the tenant schema. Outside a transaction no search path is set for it, ` +
            `so qualify the name: "${schemaName}".${concurrent.target} (tenantSchemaOf(queryRunner) gives the schema's name).`,
        );
      }
      if (concurrent.schema !== schemaName) {
        throw new MigrationOutsideTenantError(migration, schemaName, concurrent.action, [
          { kind: concurrent.action.includes('SCHEMA') ? 'schema' : concurrent.action.startsWith('CREATE') ? 'table' : 'index', schema: concurrent.schema, name: concurrent.target },
        ]);
      }
      return send(statement, parameters, structured);
    }
    if (runner.isTransactionActive) {
      // The migration's own transaction: search path and guard before each statement (both transaction-local).
      await prepare();
      const result = await send(statement, parameters, structured);
      await check();
      return result;
    }
    await send('START TRANSACTION');
    try {
      await prepare();
      const result = await send(statement, parameters, structured);
      await check();
      await send('COMMIT');
      return result;
    } catch (error) {
      // A failed rollback means a broken connection; PostgreSQL discards the transaction with it.
      await send('ROLLBACK').catch(() => undefined);
      if (sqlStateOf(error) !== '25001') throw error;
      throw new NonTransactionalStatementError(
        migration,
        schemaName,
        `"${abbreviated(statement)}" cannot run inside a transaction, and only the concurrent index statements (CREATE INDEX CONCURRENTLY, ` +
          'DROP INDEX CONCURRENTLY, REINDEX ... CONCURRENTLY) run outside one in a tenant migration. Keep such statements out of tenant migrations.',
        { cause: error },
      );
    }
  };
  return () => {
    runner.query = original;
    methods.forEach((name, index) => {
      (runner as unknown as Record<string, unknown>)[name] = originals[index];
    });
  };
}

/**
 * Ends the snapshot a READ COMMITTED transaction still holds after its last
 * statement: a statement sent with parameters (the extended protocol) leaves
 * its unnamed portal, and the portal's snapshot, open until the next
 * statement, and a concurrent index build waits for every transaction with
 * an older snapshot, that one included. One statement without parameters
 * (the simple protocol, which drops its portal when done) closes it, so the
 * transaction holding the tenant's lock never blocks the build.
 */
export async function releaseSnapshot(sql: SqlRunner): Promise<void> {
  await sql.query('SELECT 1');
}

/**
 * The indexes of `schemaName` that PostgreSQL marks invalid (a concurrent
 * build or rebuild that failed), by name. Indexes of partitioned tables are
 * left out: one made with `ON ONLY` is invalid by design until its
 * partitions' indexes are attached.
 */
export function invalidIndexesOf(sql: SqlRunner, schemaName: string): Promise<string[]> {
  return indexesOf(sql, schemaName, false);
}

/** Those of `names` that are valid indexes of `schemaName` now. */
export function validIndexesAmong(sql: SqlRunner, schemaName: string, names: readonly string[]): Promise<string[]> {
  return indexesOf(sql, schemaName, true, names);
}

async function indexesOf(sql: SqlRunner, schemaName: string, valid: boolean, names?: readonly string[]): Promise<string[]> {
  const rows: Array<{ name: string }> = await sql.query(
    `SELECT c.relname AS name
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND i.indisvalid = $2 AND c.relkind = 'i' AND ($3::text[] IS NULL OR c.relname = ANY($3::text[]))
      ORDER BY c.relname COLLATE "C"`,
    [schemaName, valid, names ?? null],
  );
  return rows.map((row) => row.name);
}

/** Drops one invalid index without blocking writes to its table (outside a transaction). */
export async function dropInvalidIndex(sql: SqlRunner, schemaName: string, index: string): Promise<void> {
  await sql.query(`DROP INDEX CONCURRENTLY IF EXISTS ${quoteIdent(schemaName)}.${quoteIdent(index)}`);
}

function abbreviated(sql: string): string {
  const flat = sql.replace(/\s+/g, ' ').trim();
  return flat.length > 80 ? `${flat.slice(0, 77)}...` : flat;
}
