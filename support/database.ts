import { createScratchDatabase } from '../src/testing/scratch-database';
import { startTestDatabase, type TestDatabase } from '../src/testing/test-database';

/**
 * The repository's own test database (demo, tests, benchmarks): the kit of
 * `typeorm-tenants/testing` (src/testing/), under the names the repository
 * has always used. One implementation: this file only maps the options.
 */
export type ScratchDatabase = TestDatabase;

export interface ScratchDatabaseOptions {
  /** Extra `-c name=value` settings for an embedded server. */
  readonly settings?: Readonly<Record<string, string | number>>;
  /** Ignore DATABASE_URL and always start an embedded server. */
  readonly forceEmbedded?: boolean;
}

/**
 * Gives a fresh database: on the server of `DATABASE_URL` when it is set (a
 * new database there, dropped at `stop()`), else on an embedded PostgreSQL
 * started in a temporary directory on a free loopback port.
 */
export function startScratchDatabase(options: ScratchDatabaseOptions = {}): Promise<ScratchDatabase> {
  return startTestDatabase({ settings: options.settings, server: options.forceEmbedded === true ? 'embedded' : 'auto' });
}

/** A new database on the server of `serverUrl` (any database of it), dropped at `stop()`. */
export function freshDatabaseOn(serverUrl: string): Promise<ScratchDatabase> {
  return createScratchDatabase(serverUrl);
}

export { prepareEmbeddedServer, type PreparedEmbeddedServer } from '../src/testing/embedded-server';
export type { EmbeddedServer } from '../src/testing/embedded-binaries';
