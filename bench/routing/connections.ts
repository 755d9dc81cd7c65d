import { Client } from 'pg';

/**
 * Counts the PostgreSQL connections of each contender, by application_name,
 * in pg_stat_activity of the benchmark database. Sampled after every batch
 * (never during a timed batch): pools keep their connections open between
 * batches, so the count after a batch is the count the batch used.
 */
export class ConnectionMonitor {
  readonly #client: Client;
  readonly #peaks = new Map<string, number>();
  readonly #last = new Map<string, number>();

  private constructor(client: Client) {
    this.#client = client;
  }

  static async open(url: string): Promise<ConnectionMonitor> {
    const client = new Client({ connectionString: url, application_name: 'bench-monitor' });
    client.on('error', () => undefined); // the server going away at shutdown is not news
    await client.connect();
    return new ConnectionMonitor(client);
  }

  /** Reads pg_stat_activity now and updates the peaks. */
  async sample(): Promise<ReadonlyMap<string, number>> {
    const { rows } = await this.#client.query<{ app: string; n: number }>(
      `SELECT application_name AS app, count(*)::int AS n
         FROM pg_stat_activity
        WHERE datname = current_database() AND application_name LIKE 'bench-%'
        GROUP BY application_name`,
    );
    this.#last.clear();
    for (const { app, n } of rows) {
      this.#last.set(app, n);
      this.#peaks.set(app, Math.max(n, this.#peaks.get(app) ?? 0));
    }
    return this.#last;
  }

  /** Most connections seen at once for `applicationName`. */
  peak(applicationName: string): number {
    return this.#peaks.get(applicationName) ?? 0;
  }

  /** Process ids of the backends serving `applicationName` now. */
  async backendPids(applicationName: string): Promise<number[]> {
    const { rows } = await this.#client.query<{ pid: number }>(
      'SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1',
      [applicationName],
    );
    return rows.map((r) => r.pid);
  }

  /** Server-wide figures: max_connections and connections open now (all databases). */
  async serverConnections(): Promise<{ maxConnections: number; open: number }> {
    const { rows } = await this.#client.query<{ max: number; open: number }>(
      `SELECT current_setting('max_connections')::int AS max,
              (SELECT count(*)::int FROM pg_stat_activity WHERE backend_type = 'client backend') AS open`,
    );
    return { maxConnections: rows[0]!.max, open: rows[0]!.open };
  }

  async close(): Promise<void> {
    await this.#client.end();
  }
}
