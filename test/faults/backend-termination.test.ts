import { expect } from 'chai';
import { Client } from '../../entities';
import { tenantContext } from '../../src';
import { adminQuery, databaseUrl, openManager, sleep, uniqueSlug } from '../support/fixtures';
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

const TENANTS = 50;
const WORKERS = 20;
const POOL_SIZE = 10;
const ROUNDS = 3;

const admin: AdminQuery = (sql, params) => adminQuery(sql, params);

/** Terminates every backend of the manager's pool in this database; returns how many were terminated. */
async function terminatePoolBackends(): Promise<number> {
  const rows = await adminQuery<{ terminated: boolean }>(
    `SELECT pg_terminate_backend(pid) AS terminated FROM pg_stat_activity
      WHERE datname = current_database() AND application_name = 'typeorm-tenants' AND pid <> pg_backend_pid()`,
  );
  return rows.filter((r) => r.terminated).length;
}

describe('faults: backend termination', function () {
  this.timeout(120_000);

  it(`pg_terminate_backend on every pooled connection, ${ROUNDS} times 200 ms apart, while ${WORKERS} workers write to ${TENANTS} tenants and a tenant is created and dropped in a loop: in-flight calls reject with an Error, every acknowledged write is in its own schema, nothing crosses, the same manager serves later calls, registry and pg_namespace agree`, async () => {
    const poolErrors: Error[] = [];
    const manager = await openManager({
      dataSource: { type: 'postgres', url: databaseUrl(), poolSize: POOL_SIZE },
      // Short: the registry is re-read during the load, so its connections are hit too.
      tenantRecordTtlMs: 100,
      onPoolError: (error) => poolErrors.push(error),
    });
    const slugs = await createTenantsInBatches(manager, TENANTS, 'fterm');

    const load = startLoad(manager, slugs, { workers: WORKERS });
    const churn = churnTenants(manager, 'ftermp');
    await sleep(500);
    const ackedBeforeFault = load.acknowledged.size;
    expect(ackedBeforeFault, 'writes acknowledged before the fault').to.be.greaterThan(0);

    const terminatedPerRound: number[] = [];
    for (let round = 0; round < ROUNDS; round += 1) {
      terminatedPerRound.push(await terminatePoolBackends());
      await sleep(200);
    }
    const ackedAtLastFault = load.acknowledged.size;
    // The load goes on after the last termination: the manager must serve it with new connections.
    await sleep(1_000);
    await Promise.all([load.stop(), churn.stop()]);

    const failureErrors = load.failures.map((f) => f.error);
    console.log(
      `      terminated ${terminatedPerRound.join(' + ')} backends; ${load.settled.writes} writes (${load.acknowledged.size} acknowledged), ` +
        `${load.settled.reads} reads, ${load.failures.length} calls rejected, ${poolErrors.length} idle-connection errors; ` +
        `churn: ${churn.created} created, ${churn.dropped} dropped, ${churn.failed} failed`,
    );
    for (const line of errorHistogram(failureErrors).slice(0, 6)) console.log(`        ${line}`);

    // The fault really happened and really hit calls.
    for (const [round, count] of terminatedPerRound.entries()) expect(count, `backends terminated in round ${round + 1}`).to.be.greaterThan(0);
    expect(load.failures.length + poolErrors.length, 'calls or idle connections hit by the terminations').to.be.greaterThan(0);
    // A rejected call rejects with an Error that says what happened, never with something else.
    const notErrors = failureErrors.filter((e) => !(e instanceof Error) || e.message === '').map(describeError);
    expect(notErrors, 'rejections that are not Errors with a message').to.deep.equal([]);
    // Nothing crossed while it happened.
    expect(load.violations.slice(0, 20), `${load.violations.length} isolation violations`).to.deep.equal([]);
    // The manager went on serving during the load, after the last termination.
    expect(load.acknowledged.size, 'writes acknowledged after the last termination').to.be.greaterThan(ackedAtLastFault);

    // Every acknowledged write is in the database, once, in its own schema; no row is anywhere else.
    const audit = await auditRows(admin, slugs, load);
    expect(audit.rows).to.be.at.least(load.acknowledged.size);
    console.log(`      audit: ${audit.rows} rows, ${audit.committedDespiteError} committed although their call reported an error`);

    // Later operations succeed on the same manager, first time, no retry.
    const after = await Promise.all(
      slugs.map((slug) =>
        manager.run(slug, async () => {
          const saved = await tenantContext.getRepository(Client).save({ name: slug, email: `after${suffixOf(slug)}` });
          const [{ schema }] = await tenantContext.query<Array<{ schema: string }>>('SELECT current_schema() AS schema');
          return { saved, schema, count: await tenantContext.getRepository(Client).countBy({ email: `after${suffixOf(slug)}` }) };
        }),
      ),
    );
    for (const [i, result] of after.entries()) {
      expect(result.schema).to.equal(schemaOf(slugs[i]!));
      expect(result.count).to.equal(1);
    }
    const extra = uniqueSlug('ftermp');
    await manager.createTenant(extra);
    await dropTenantForce(manager, extra);
    expect(manager.stats().pool.total).to.be.at.most(POOL_SIZE);

    // Provisioning and dropping under the fault left nothing half-made.
    await expectRegistryMatchesNamespaces(manager, admin, ['fterm_', 'ftermp_']);
    const registered = new Set((await manager.listTenants()).map((t) => t.slug));
    expect(slugs.filter((s) => !registered.has(s)), 'tenants missing from the registry').to.deep.equal([]);
  });
});

