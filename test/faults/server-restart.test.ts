import { expect } from 'chai';
import { Client as PgClient } from 'pg';
import { Client } from '../../entities';
import { TenantDataSourceManager, tenantContext } from '../../src';
import { managerOptions, sleep, uniqueSlug } from '../support/fixtures';
import {
  auditRows,
  churnTenants,
  createTenantsInBatches,
  describeError,
  dropTenantForce,
  errorHistogram,
  expectRegistryMatchesNamespaces,
  schemaOf,
  startLoad,
  suffixOf,
  type AdminQuery,
} from './fault-support';
import { startRestartablePostgres, type RestartablePostgres } from './restartable-postgres';

const TENANTS = 50;
const WORKERS = 20;
const POOL_SIZE = 10;
/** The manager's bound on waiting for a connection (documented option pool.connectionTimeoutMillis). */
const CONNECTION_TIMEOUT_MS = 2_000;
/**
 * Upper bound for "fails fast instead of hanging" while the server is down.
 * Not a speed assertion: a call may take up to the connection timeout and
 * then some on a busy 2-core machine; without a bound it would never settle.
 */
const FAIL_FAST_BOUND_MS = 10_000;

/** What a call did within `boundMs`: resolved, rejected (with what, after how long), or still pending. */
async function settleWithin(
  call: () => Promise<unknown>,
  boundMs: number,
): Promise<{ state: 'resolved' | 'rejected' | 'pending'; error?: unknown; ms: number }> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const pending = new Promise<'pending'>((resolve) => {
    timer = setTimeout(() => resolve('pending'), boundMs);
  });
  const outcome = await Promise.race([
    Promise.resolve()
      .then(call)
      .then(
        () => ({ state: 'resolved' as const }),
        (error: unknown) => ({ state: 'rejected' as const, error }),
      ),
    pending.then(() => ({ state: 'pending' as const })),
  ]);
  clearTimeout(timer);
  return { ...outcome, ms: performance.now() - started };
}

describe('faults: server restart (own embedded PostgreSQL, stopped and started in place)', function () {
  this.timeout(180_000);
  let server: RestartablePostgres | undefined;

  before(async () => {
    server = await startRestartablePostgres();
  });

  after(async () => {
    await server?.destroy();
  });

  /** SQL on the restartable server through a fresh connection (it outlives no restart). */
  const admin: AdminQuery = async <T>(sql: string, params: unknown[] = []): Promise<T[]> => {
    const client = new PgClient({ connectionString: server!.url, application_name: 'faults-admin' });
    await client.connect();
    try {
      return (await client.query(sql, params)).rows as T[];
    } finally {
      await client.end();
    }
  };

  it(`stop the server under load (${WORKERS} workers, ${TENANTS} tenants, tenant churn), calls fail fast with a connection error while it is down, start it again: the same manager recovers on its own, acknowledged writes are all there in the right schemas, registry and pg_namespace agree`, async () => {
    const poolErrors: Error[] = [];
    const manager = new TenantDataSourceManager(
      managerOptions({
        dataSource: { type: 'postgres', url: server!.url, poolSize: POOL_SIZE },
        pool: { connectionTimeoutMillis: CONNECTION_TIMEOUT_MS },
        tenantRecordTtlMs: 500,
        onPoolError: (error) => poolErrors.push(error),
      }),
    );
    try {
      await manager.initialize();
      const slugs = await createTenantsInBatches(manager, TENANTS, 'frst');

      const load = startLoad(manager, slugs, { workers: WORKERS, pauseOnErrorMs: 50 });
      const churn = churnTenants(manager, 'frstp', 50);
      await sleep(1_000);
      expect(load.acknowledged.size, 'writes acknowledged before the stop').to.be.greaterThan(0);

      await server!.stop();
      const stoppedAt = performance.now();

      // While it is down: every kind of call settles, as a rejection, within the bound.
      const probes: Array<{ what: string; call: () => Promise<unknown> }> = [
        ...slugs.slice(0, 10).map((slug) => ({
          what: `run(${slug}) save`,
          call: () => manager.run(slug, () => tenantContext.getRepository(Client).save({ name: slug, email: `down${suffixOf(slug)}` })),
        })),
        { what: 'run() query', call: () => manager.run(slugs[10]!, () => tenantContext.query('SELECT 1')) },
        { what: 'listTenants()', call: () => manager.listTenants() },
        { what: 'createTenant()', call: () => manager.createTenant(uniqueSlug('frstp')) },
        { what: 'getTenant()', call: () => manager.getTenant(slugs[0]!) },
      ];
      const outcomes = await Promise.all(probes.map(async (p) => ({ what: p.what, ...(await settleWithin(p.call, FAIL_FAST_BOUND_MS)) })));
      const notRejected = outcomes.filter((o) => o.state !== 'rejected').map((o) => `${o.what}: ${o.state} after ${Math.round(o.ms)} ms`);
      expect(notRejected, 'calls that did not fail while the server was down').to.deep.equal([]);
      // A clear error: a connection failure, saying so (refused, terminated, shut down or timed out).
      const unclear = outcomes
        .filter((o) => !(o.error instanceof Error) || !/ECONNREFUSED|connect|terminat|shut ?down|timeout/i.test(errorText(o.error)))
        .map((o) => `${o.what}: ${describeError(o.error)}`);
      expect(unclear, 'errors that do not say the database is unreachable').to.deep.equal([]);
      console.log(`      while down: ${outcomes.length} probes rejected in ${Math.round(Math.max(...outcomes.map((o) => o.ms)))} ms at most`);
      for (const line of errorHistogram(outcomes.map((o) => o.error)).slice(0, 4)) console.log(`        ${line}`);

      // Down for longer than the connection timeout, with the load still knocking.
      await sleep(Math.max(0, CONNECTION_TIMEOUT_MS + 1_000 - (performance.now() - stoppedAt)));
      const failedWhileDown = load.failuresSince(stoppedAt);
      const ackedWhileDown = load.acknowledged.size;

      await server!.start();
      // The same manager recovers on its own: the load gets acknowledgements again.
      await sleep(2_000);
      expect(load.acknowledged.size, 'writes acknowledged after the restart').to.be.greaterThan(ackedWhileDown);
      await Promise.all([load.stop(), churn.stop()]);

      console.log(
        `      ${load.settled.writes} writes (${load.acknowledged.size} acknowledged), ${load.settled.reads} reads, ` +
          `${load.failures.length} calls rejected (${failedWhileDown} while down), ${poolErrors.length} idle-connection errors; ` +
          `churn: ${churn.created} created, ${churn.dropped} dropped, ${churn.failed} failed`,
      );
      expect(failedWhileDown, 'load calls that failed while the server was down').to.be.greaterThan(0);
      const notErrors = load.failures.map((f) => f.error).filter((e) => !(e instanceof Error) || e.message === '');
      expect(notErrors.map(describeError), 'rejections that are not Errors with a message').to.deep.equal([]);
      expect(load.violations.slice(0, 20), `${load.violations.length} isolation violations`).to.deep.equal([]);

      const audit = await auditRows(admin, slugs, load);
      console.log(`      audit: ${audit.rows} rows, ${audit.committedDespiteError} committed although their call reported an error`);

      // Later operations succeed at the first try, on the same manager.
      const after = await Promise.all(
        slugs.map((slug) =>
          manager.run(slug, async () => {
            await tenantContext.getRepository(Client).save({ name: slug, email: `after${suffixOf(slug)}` });
            const [{ schema }] = await tenantContext.query<Array<{ schema: string }>>('SELECT current_schema() AS schema');
            return schema;
          }),
        ),
      );
      expect(after).to.deep.equal(slugs.map(schemaOf));
      const extra = uniqueSlug('frstp');
      await manager.createTenant(extra);
      await dropTenantForce(manager, extra);
      expect(manager.stats().pool.total).to.be.at.most(POOL_SIZE);

      // A private server: every schema but the system ones must be a registered tenant, and vice versa.
      await expectRegistryMatchesNamespaces(manager, admin, 'all');
      const registered = new Set((await manager.listTenants()).map((t) => t.slug));
      expect(slugs.filter((s) => !registered.has(s)), 'tenants missing from the registry').to.deep.equal([]);
    } finally {
      await manager.destroy();
    }
  });

  it('a server that accepts connections but never answers (postmaster stopped with SIGSTOP, pooled backends terminated): calls fail with pg\'s connect timeout after pool.connectionTimeoutMillis instead of hanging; after SIGCONT the same manager serves again', async () => {
    const manager = new TenantDataSourceManager(
      managerOptions({
        dataSource: { type: 'postgres', url: server!.url, poolSize: 4 },
        pool: { connectionTimeoutMillis: CONNECTION_TIMEOUT_MS },
        tenantRecordTtlMs: 60_000,
        onPoolError: () => undefined,
      }),
    );
    const control = new PgClient({ connectionString: server!.url, application_name: 'faults-admin' });
    let paused: number | undefined;
    try {
      await manager.initialize();
      const slugs = await createTenantsInBatches(manager, 3, 'fstall');
      await Promise.all(slugs.map((slug) => manager.run(slug, () => tenantContext.query('SELECT 1'))));
      await control.connect(); // opened before the stall: its backend keeps working

      paused = server!.pid;
      expect(paused, 'postmaster pid').to.be.a('number');
      process.kill(paused!, 'SIGSTOP');
      // Every pooled connection goes: the pool must open new ones, which the stalled postmaster never answers.
      const { rows } = await control.query<{ n: number }>(
        `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = 'typeorm-tenants'`,
      );
      expect(rows[0]!.n, 'pooled backends terminated').to.be.greaterThan(0);
      await waitForPoolToEmpty(manager);

      const outcomes = await Promise.all(
        slugs.map((slug) =>
          settleWithin(
            () => manager.run(slug, () => tenantContext.getRepository(Client).save({ name: slug, email: `stall${suffixOf(slug)}` })),
            FAIL_FAST_BOUND_MS,
          ),
        ),
      );
      expect(outcomes.map((o) => o.state), 'calls while the server does not answer').to.deep.equal(['rejected', 'rejected', 'rejected']);
      for (const o of outcomes) expect(errorText(o.error), describeError(o.error)).to.match(/timeout/i);
      console.log(`      stalled server: ${outcomes.length} calls rejected after ${outcomes.map((o) => Math.round(o.ms)).join(', ')} ms: ${describeError(outcomes[0]!.error)}`);

      process.kill(paused!, 'SIGCONT');
      paused = undefined;
      const after = await Promise.all(
        slugs.map((slug) =>
          manager.run(slug, async () => {
            await tenantContext.getRepository(Client).save({ name: slug, email: `resumed${suffixOf(slug)}` });
            return tenantContext.getRepository(Client).find();
          }),
        ),
      );
      for (const [i, rows] of after.entries()) expect(rows.map((r) => r.email)).to.deep.equal([`resumed${suffixOf(slugs[i]!)}`]);
      await expectRegistryMatchesNamespaces(manager, admin, ['fstall_']);
    } finally {
      if (paused !== undefined) process.kill(paused, 'SIGCONT');
      await control.end().catch(() => undefined);
      await manager.destroy();
    }
  });
});

/** Waits (at most 5 s) until the manager's pool has dropped every connection. */
async function waitForPoolToEmpty(manager: TenantDataSourceManager): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (manager.stats().pool.total > 0) {
    if (Date.now() > deadline) throw new Error(`The pool kept ${manager.stats().pool.total} terminated connections`);
    await sleep(20);
  }
}

/** The message of an error and of its causes, and its code. */
function errorText(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; current instanceof Error && depth < 5; depth += 1) {
    parts.push(current.message, String((current as { code?: unknown }).code ?? ''));
    current = (current as { cause?: unknown }).cause;
  }
  return parts.join(' | ');
}
