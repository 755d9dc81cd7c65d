import type { DataSource, QueryRunner } from 'typeorm';
import type { SqlRunner } from '../registry/tenant-registry';
import type { TenantServer } from './tenant-server';

type Runner = QueryRunner & SqlRunner;

/** The two transactions of a change to a placed tenant: on its own server, and on the home server (the same runner when they are one). */
export interface PlacedRunners {
  /** On the tenant's server: its schema, its migrations table, its role. */
  readonly tenant: Runner;
  /** On the home server: the registry, the ledger, the domains. */
  readonly home: Runner;
}

/**
 * Runs `work` for a tenant placed on `server`, each server's part under the
 * advisory lock `lockName`. When the tenant lives on the home server it is
 * ONE transaction (`tenant` and `home` are the same runner), so the change is
 * atomic. Otherwise a transaction on the home server is opened first and
 * the tenant server's transaction inside it; the tenant server commits
 * first, then the home server. A failure before the first commit leaves both
 * unchanged; a crash between the two commits leaves the tenant's schema
 * changed and the registry not yet, which every caller's next run detects
 * and completes (the operations are written to be run again). The home
 * server is always locked first, so two such changes never deadlock.
 *
 * `dataSource` (a DataSource of `server`, bound to the tenant's schema when
 * migrations run) carries the tenant transaction; default the server's shared one.
 */
export async function inPlacedTransaction<T>(
  home: TenantServer,
  server: TenantServer,
  lockName: string,
  work: (runners: PlacedRunners) => Promise<T>,
  options: { readonly dataSource?: DataSource; readonly isolation?: 'READ COMMITTED' | 'REPEATABLE READ' } = {},
): Promise<T> {
  const dataSource = options.dataSource ?? server.sharedDataSource;
  if (server === home) return home.inLockedTransaction(dataSource, lockName, (runner) => work({ tenant: runner, home: runner }), options.isolation);
  return home.inLockedTransaction(home.sharedDataSource, lockName, (homeRunner) =>
    server.inLockedTransaction(dataSource, lockName, (tenantRunner) => work({ tenant: tenantRunner, home: homeRunner }), options.isolation),
  );
}
