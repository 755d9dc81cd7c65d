import { AsyncResource } from 'node:async_hooks';
import { tenantContext } from '../context/tenant-context';
import type { TenantDataSourceManager } from '../manager/tenant-data-source-manager';

/** A transaction in one tenant, held open across the calls of one test and rolled back at its end. */
export interface HeldTenantTransaction {
  /**
   * Runs `fn` inside the transaction, in a savepoint of its own: `tenantContext`
   * serves the tenant, joined to it (as inside `tenantContext.transaction()`).
   * When `fn` fails, its savepoint is rolled back, so a test that expects a
   * failing statement can go on with the next call.
   */
  enter<T>(fn: () => T | Promise<T>): Promise<T>;
  /** Rolls the transaction back and ends the run that held it. Safe to call twice. */
  rollback(): Promise<void>;
}

/** Thrown inside the held transaction to make TypeORM roll it back. */
const ROLL_BACK = Symbol('typeorm-tenants/testing: roll back the test transaction');

/**
 * Opens `tenantContext.transaction()` in `slug`'s run and keeps it open until
 * `rollback()`: `enter(fn)` runs `fn` in the async context captured inside
 * it, so everything `fn` does through `tenantContext` (repositories, the
 * entity manager, raw SQL, a nested `tenantContext.transaction()`, which
 * becomes a savepoint) joins the transaction, and `rollback()` undoes it all.
 * Not joined (they commit): `manager.run()`, `manager.getDataSource()` and
 * that DataSource's `transaction()`/repositories, other tenants, the
 * lifecycle methods, and other processes (an HTTP request served by another
 * process, or by this one through its middleware, which calls `run()`).
 * One connection holds the transaction: run the calls of a test one after
 * another (two concurrent `tenantContext.transaction()` in one test would
 * interleave their savepoints). Each `enter(fn)` is a savepoint: a failing
 * call is undone alone; a statement that fails inside a call still aborts
 * the rest of that call, as in any transaction.
 */
export async function holdTenantTransaction(manager: TenantDataSourceManager, slug: string): Promise<HeldTenantTransaction> {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let opened!: (scope: AsyncResource) => void;
  const scopeReady = new Promise<AsyncResource>((resolve) => (opened = resolve));
  const held = manager
    .run(slug, () =>
      tenantContext.transaction(async () => {
        opened(new AsyncResource('typeorm-tenants:test-transaction'));
        await released;
        throw ROLL_BACK;
      }),
    )
    .then(
      () => undefined,
      (error: unknown) => {
        if (error !== ROLL_BACK) throw error;
      },
    );
  // The run fails before the transaction opens (unknown tenant, no connection): that error, now.
  const endedEarly = held.then(() => {
    throw new Error('The test transaction ended before it was opened.');
  });
  // Raced only: once the scope is ready, held's outcome is rollback()'s.
  endedEarly.catch(() => undefined);
  const scope = await Promise.race([scopeReady, endedEarly]);
  let rolledBack: Promise<void> | undefined;
  return {
    enter: <T>(fn: () => T | Promise<T>): Promise<T> =>
      new Promise<T>((resolve, reject) => {
        scope.runInAsyncScope(() => {
          // A savepoint per call: a failed statement in fn aborts only it, not the test's transaction.
          tenantContext.transaction(async () => fn()).then(resolve, reject);
        });
      }),
    rollback: (): Promise<void> => {
      if (rolledBack === undefined) {
        release();
        rolledBack = held.finally(() => scope.emitDestroy());
      }
      return rolledBack;
    },
  };
}
