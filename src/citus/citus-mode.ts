import { TenancyConfigurationError } from '../errors';
import type { SqlRunner } from '../registry/tenant-registry';

/** The `citus` option: `'auto'` (default) turns Citus mode on when the database has the `citus` extension. */
export type CitusOption = 'auto' | boolean;

/** What `initialize()` reads of a server about Citus, in the one query it sends at open. */
export interface CitusFacts {
  /** The `citus` extension's version in this database, or `undefined` without it. */
  readonly version: string | undefined;
  /** Whether this node is the coordinator (`citus_is_coordinator()`); `false` without the extension. */
  readonly coordinator: boolean;
}

/**
 * Reads a server's Citus facts: `version` as the caller's open-time query
 * read it (`SELECT extversion FROM pg_extension WHERE extname = 'citus'`),
 * and, only where the extension is installed, whether this node is the
 * coordinator.
 */
export async function readCitusFacts(sql: SqlRunner, version: string | null | undefined): Promise<CitusFacts> {
  if (version === null || version === undefined) return { version: undefined, coordinator: false };
  const [row] = (await sql.query('SELECT citus_is_coordinator() AS coordinator')) as Array<{ coordinator: boolean }>;
  return { version, coordinator: row?.coordinator === true };
}

/** Checks the `citus` option's value. */
export function citusOptionOf(value: unknown): CitusOption {
  if (value === undefined) return 'auto';
  if (value === 'auto' || value === true || value === false) return value;
  throw new TenancyConfigurationError(`Option "citus" must be 'auto', true or false; got ${JSON.stringify(value)}.`);
}

/** A server as Citus mode is decided for it. */
export interface CitusCandidate {
  readonly name: string;
  readonly citus: CitusFacts;
  describe(): string;
}

/**
 * Decides Citus mode at `initialize()`, from the option and what each server
 * said at open, and refuses what Citus mode cannot do:
 *
 * - `citus: true` on a database without the extension;
 * - a connection to a worker rather than the coordinator (the library's
 *   advisory locks are local to the node that takes them, so every process
 *   must go through the coordinator);
 * - several servers with Citus among them (a Citus cluster places and moves
 *   tenants itself, by node; one deployment does not mix the two);
 * - role isolation (Citus opens its connections to the workers as the role
 *   in force, and tenant roles cannot log in).
 *
 * Returns whether Citus mode is on.
 */
export function decideCitusMode(option: CitusOption, servers: readonly CitusCandidate[], isolation: 'schema' | 'role'): boolean {
  if (option === false) return false;
  const withCitus = servers.filter((server) => server.citus.version !== undefined);
  if (option === true) {
    const without = servers.filter((server) => server.citus.version === undefined);
    if (without.length > 0) {
      throw new TenancyConfigurationError(
        `Option "citus" is true, but ${without.map((server) => `the database at ${server.describe()}`).join(' and ')} has no citus extension. ` +
          "Install Citus and run CREATE EXTENSION citus on the coordinator and every worker (see Citus's documentation), or set citus: 'auto' or false.",
      );
    }
  }
  if (withCitus.length === 0) return false;
  if (servers.length > 1) {
    throw new TenancyConfigurationError(
      `Server ${withCitus.map((server) => `"${server.name}" (${server.describe()})`).join(', ')} is a Citus database, and the manager has ${servers.length} servers. ` +
        'A Citus cluster places and moves tenants by node itself: give the manager its coordinator as its one server (option dataSource), ' +
        "or set citus: false to use it as a plain PostgreSQL server.",
    );
  }
  const [server] = withCitus as [CitusCandidate];
  if (!server.citus.coordinator) {
    throw new TenancyConfigurationError(
      `The database at ${server.describe()} has the citus extension but is not the Citus coordinator. ` +
        "Connect to the coordinator: the library's advisory locks (one per tenant) are local to the node that takes them, so every process must go through it.",
    );
  }
  if (isolation === 'role') {
    throw new TenancyConfigurationError(
      `Option isolation: 'role' cannot work on Citus (${server.describe()}): Citus opens its connections to the workers as the role in force, ` +
        "and tenant roles cannot log in. Use isolation: 'schema' (the default), or citus: false on a database that is not a cluster.",
    );
  }
  return true;
}

/**
 * Schema-based sharding off for the rest of the transaction: the schemas the
 * library creates for itself (shared, extensions, migration guard) stay on
 * the coordinator, whatever the cluster's default for
 * `citus.enable_schema_based_sharding`.
 */
export async function withoutSchemaSharding(sql: SqlRunner): Promise<void> {
  await sql.query('SET LOCAL citus.enable_schema_based_sharding TO off');
}
