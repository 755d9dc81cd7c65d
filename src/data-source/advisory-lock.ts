import type { QueryRunner } from 'typeorm';
import { quoteLiteral } from '../naming/quote-ident';

/**
 * Takes a transaction-level advisory lock by polling
 * `pg_try_advisory_xact_lock` rather than waiting in the server: a waiting
 * statement holds a snapshot, and a concurrent index build (a
 * `transaction = false` migration) of the process holding the tenant's lock
 * waits for every older snapshot: a deadlock PostgreSQL cannot see. Each
 * poll is a statement without parameters (the simple protocol, which keeps
 * no snapshot after it in READ COMMITTED), and sets the transaction's
 * `lock_timeout` for what follows. The first poll answers at once when the
 * lock is free (one round trip, as before). Gives up after `timeoutMs` with
 * SQLSTATE 55P03 as `lock_timeout` does; 0 waits for ever, as
 * `lock_timeout = 0` does.
 */
export async function pollAdvisoryLock(runner: QueryRunner, key: string, timeoutMs: number): Promise<void> {
  const literal = quoteLiteral(key);
  const timeout = quoteLiteral(`${Math.max(0, Math.floor(timeoutMs))}ms`);
  const deadline = timeoutMs > 0 ? Date.now() + timeoutMs : Number.POSITIVE_INFINITY;
  for (let wait = 10; ; wait = Math.min(wait * 2, 200)) {
    // FROM is evaluated before the target list: lock_timeout is in force for the rest of the transaction.
    const [{ locked }]: Array<{ locked: boolean }> = await runner.query(
      `SELECT pg_try_advisory_xact_lock(hashtextextended(${literal}, 0)) AS locked FROM (SELECT set_config('lock_timeout', ${timeout}, true)) AS timeout`,
    );
    if (locked) return;
    if (Date.now() >= deadline) {
      throw Object.assign(new Error(`could not obtain lock ${key} within ${timeoutMs} ms (lockTimeoutMs): another process holds it`), { code: '55P03' });
    }
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}
