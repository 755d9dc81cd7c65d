import { PgBouncerMissingError, startPgBouncer, type PgBouncerOptions, type RunningPgBouncer } from '../../support/pgbouncer';
import { databaseUrl } from './fixtures';

let missingReported = false;

/**
 * Starts a real PgBouncer in front of the test database for the enclosing
 * `describe` (mocha `before`/`after` hooks) and returns a function giving it.
 * When PgBouncer could not start, that function throws, so every test of the
 * block fails with the reason. One exception, outside CI only: when PgBouncer
 * is not installed at all, the block's tests are not run, and one line (once
 * per run) says so and how to install it. Under `CI=true` a missing
 * PgBouncer fails them like any other cause (`.ci/run` installs it).
 */
export function usePgBouncer(options: PgBouncerOptions): () => RunningPgBouncer {
  let bouncer: RunningPgBouncer | undefined;
  let startError: unknown;
  before(async function () {
    try {
      bouncer = await startPgBouncer(databaseUrl(), options);
    } catch (error) {
      if (error instanceof PgBouncerMissingError && process.env.CI !== 'true') {
        if (!missingReported) {
          missingReported = true;
          console.log(`  (${error.message} Without it the PgBouncer tests are not run here; CI runs them.)`);
        }
        this.skip();
      }
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
