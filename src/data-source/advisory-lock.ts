import type { QueryRunner } from 'typeorm';
import { quoteLiteral } from '../naming/quote-ident';

type Isolation = 'READ COMMITTED' | 'REPEATABLE READ';

/**
 * Starts a transaction on `runner` holding the transaction-level advisory
 * lock on `key`, by polling `pg_try_advisory_xact_lock` rather than waiting
 * in the server. A concurrent index build (a `transaction = false`
 * migration) of the process holding the tenant's lock waits for every
 * transaction that had a snapshot when it looked, to its end: a statement
 * waiting in the server holds one, and so does a poll while it runs, so a
 * try that fails ends its transaction before the next (a new transaction,
 * which the build does not wait for): no deadlock PostgreSQL cannot see.
 * Each try is a statement without parameters (the simple protocol, which
 * keeps no snapshot after it in READ COMMITTED), and sets the transaction's
 * `lock_timeout` for what follows. The first try answers at once when the
 * lock is free (one round trip). Gives up after `timeoutMs` with SQLSTATE
 * 55P03 as `lock_timeout` does; 0 waits for ever, as `lock_timeout = 0`
 * does. On any failure no transaction is left open on `runner`.
 */
export async function startLockedTransaction(runner: QueryRunner, key: string, timeoutMs: number, isolation?: Isolation): Promise<void> {
  const literal = quoteLiteral(key);
  const timeout = quoteLiteral(`${Math.max(0, Math.floor(timeoutMs))}ms`);
  const deadline = timeoutMs > 0 ? Date.now() + timeoutMs : Number.POSITIVE_INFINITY;
  for (let wait = 10; ; wait = Math.min(wait * 2, 200)) {
    await runner.startTransaction(isolation);
    let locked: boolean;
    try {
      // FROM is evaluated before the target list: lock_timeout is in force for the rest of the transaction.
      [{ locked }] = await runner.query(
        `SELECT pg_try_advisory_xact_lock(hashtextextended(${literal}, 0)) AS locked FROM (SELECT set_config('lock_timeout', ${timeout}, true)) AS timeout`,
      );
    } catch (error) {
      // A failed rollback means a broken connection; PostgreSQL discards the transaction with it.
      await runner.rollbackTransaction().catch(() => undefined);
      throw error;
    }
    if (locked) return;
    await runner.rollbackTransaction();
    if (Date.now() >= deadline) {
      throw Object.assign(new Error(`could not obtain lock ${key} within ${timeoutMs} ms (lockTimeoutMs): another process holds it`), { code: '55P03' });
    }
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}
