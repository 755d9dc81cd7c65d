import { startPgBouncer, type PgBouncerOptions, type RunningPgBouncer } from '../../support/pgbouncer';
import { databaseUrl } from './fixtures';

/**
 * Starts a real PgBouncer in front of the test database for the enclosing
 * `describe` (mocha `before`/`after` hooks) and returns a function giving it.
 * When PgBouncer could not start (for example it is not installed), that
 * function throws, so every test of the block fails with the reason: never
 * skipped.
 */
export function usePgBouncer(options: PgBouncerOptions): () => RunningPgBouncer {
  let bouncer: RunningPgBouncer | undefined;
  let startError: unknown;
  before(async () => {
    try {
      bouncer = await startPgBouncer(databaseUrl(), options);
    } catch (error) {
      startError = error;
    }
  });
  after(async () => {
    await bouncer?.stop();
  });
  return () => {
    if (bouncer === undefined) {
      const message = startError instanceof Error ? startError.message : String(startError);
      throw new Error(`PgBouncer is required for these tests and did not start: ${message}`, { cause: startError });
    }
    return bouncer;
  };
}
