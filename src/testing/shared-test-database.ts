import { startTestDatabase, type TestDatabase, type TestDatabaseOptions } from './test-database';

let shared: Promise<TestDatabase> | undefined;

/**
 * The test database of this process: `startTestDatabase(options)` on the
 * first call (a later call gets the same database, whatever its options),
 * stopped when the process ends: when its event loop empties (as mocha's
 * ends after the run), and on SIGINT, SIGTERM and exit as every test
 * database is. `useTestTenancy()` uses it unless told otherwise, so the
 * blocks of one process share one server and, with the same registry
 * table, one warm pool. Its `stop()` stops it for everyone (the next call
 * starts a new one).
 *
 * @throws what `startTestDatabase()` throws; a failed start is not kept (the next call tries again).
 */
export function sharedTestDatabase(options?: TestDatabaseOptions): Promise<TestDatabase> {
  shared ??= startShared(options).catch((error: unknown) => {
    shared = undefined;
    throw error;
  });
  return shared;
}

async function startShared(options: TestDatabaseOptions | undefined): Promise<TestDatabase> {
  const database = await startTestDatabase(options);
  const atDrain = (): void => {
    void stop();
  };
  const stop = (): Promise<void> => {
    process.removeListener('beforeExit', atDrain);
    shared = undefined;
    return database.stop();
  };
  // Stopping keeps the loop busy; once it is done, the loop empties again and the process ends.
  process.once('beforeExit', atDrain);
  return Object.freeze({ ...database, stop });
}
