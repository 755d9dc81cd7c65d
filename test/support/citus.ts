import { Client, Pool } from 'pg';
import { TenantDataSourceManager, type TenantDataSourceManagerOptions } from '../../src';
import { createScratchDatabase } from '../../src/testing/scratch-database';
import type { TestDatabase } from '../../src/testing/test-database';
import { Client as TenantClient, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';

/** The coordinator of a Citus cluster (its workers registered in that database), or unset: the Citus tests then do not run. */
export const citusUrl: string | undefined = process.env.CITUS_URL === '' ? undefined : process.env.CITUS_URL;

let said = false;

/**
 * `describe` on a real Citus cluster: registered only when `CITUS_URL` is
 * set; otherwise one line says the Citus tests did not run (no skipped
 * tests stand in for them).
 */
export function describeOnCitus(title: string, body: (this: Mocha.Suite) => void): void {
  if (citusUrl !== undefined) {
    describe(title, body);
    return;
  }
  if (!said) {
    said = true;
    console.log('  (the Citus tests did not run: CITUS_URL is unset; set it to a Citus coordinator, its workers registered, to run them)');
  }
}

/** A scratch database of the cluster (on every node, with the extension, the nodes registered), and managers on it. */
export interface CitusDatabase {
  readonly url: string;
  /** SQL on the coordinator's copy of the database. */
  query<T = Record<string, unknown>>(sql: string, parameters?: unknown[]): Promise<T[]>;
  /** SQL on the node `'host:port'` (a worker, to see where rows physically are), in this database. */
  queryNode<T = Record<string, unknown>>(node: string, sql: string, parameters?: unknown[]): Promise<T[]>;
  /** The active worker nodes, `'host:port'`, sorted. */
  workers(): Promise<string[]>;
  /** A manager on it over the example model (then `overrides`), destroyed with the database. */
  manager(overrides?: Partial<TenantDataSourceManagerOptions>): TenantDataSourceManager;
  /** Destroys the managers, then drops the database on every node. */
  stop(): Promise<void>;
}

/** A new scratch database on the cluster of `CITUS_URL`. */
export async function startCitusDatabase(): Promise<CitusDatabase> {
  const database: TestDatabase = await createScratchDatabase(citusUrl!);
  const pool = new Pool({ connectionString: database.url, max: 3 });
  pool.on('error', () => undefined); // connections ended by the drop at stop()
  const managers: TenantDataSourceManager[] = [];
  return {
    url: database.url,
    query: async (sql, parameters) => (await pool.query(sql, parameters)).rows,
    queryNode: async (node, sql, parameters) => {
      const url = new URL(database.url);
      const [host, port] = [node.slice(0, node.lastIndexOf(':')), node.slice(node.lastIndexOf(':') + 1)];
      url.hostname = host;
      url.port = port;
      const client = new Client({ connectionString: url.toString() });
      await client.connect();
      try {
        return (await client.query(sql, parameters)).rows;
      } finally {
        await client.end();
      }
    },
    workers: async () =>
      (await pool.query<{ node: string }>(`SELECT node_name || ':' || node_port AS node FROM citus_get_active_worker_nodes() ORDER BY 1`)).rows.map((row) => row.node),
    manager: (overrides = {}) => {
      const manager = new TenantDataSourceManager({
        dataSource: { type: 'postgres', url: database.url, poolSize: 6 },
        entities: [TenantClient, Project, Plan],
        tenantMigrations,
        sharedMigrations,
        ...overrides,
      });
      managers.push(manager);
      return manager;
    },
    stop: async () => {
      await Promise.all(managers.map((manager) => manager.destroy()));
      await pool.end();
      await database.stop();
    },
  };
}

/** What `useCitusSuite` sets up for the tests of a describe: filled in by its `before`. */
export interface CitusSuite {
  readonly db: CitusDatabase;
  /** A manager over the example model, initialized. */
  readonly manager: TenantDataSourceManager;
  /** The active worker nodes, `'host:port'`, sorted. */
  readonly nodes: readonly string[];
}

/** In a describe: a scratch database of the cluster with an initialized manager (`before`), dropped on every node (`after`). */
export function useCitusSuite(overrides: Partial<TenantDataSourceManagerOptions> = {}): CitusSuite {
  const suite = {} as { db: CitusDatabase; manager: TenantDataSourceManager; nodes: string[] };
  before(async () => {
    suite.db = await startCitusDatabase();
    suite.manager = suite.db.manager(overrides);
    await suite.manager.initialize();
    suite.nodes = await suite.db.workers();
  });
  after(async () => {
    await suite.db?.stop();
  });
  return suite;
}
