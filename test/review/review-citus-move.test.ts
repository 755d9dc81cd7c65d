/**
 * Review probes: moveTenant(slug, { node }) in Citus mode against concurrent
 * lifecycle changes and small pools. A failing probe is a finding.
 */
import { expect } from 'chai';
import { Client as PgClient } from 'pg';
import { InvalidTenantStateError, type TenantDataSourceManager } from '../../src';
import { describeOnCitus, useCitusSuite } from '../support/citus';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeOnCitus('review: Citus moveTenant', function () {
  this.timeout(240_000);
  const suite = useCitusSuite();

  it('a tenant archived while moveTenant() waited for its lock: the move re-reads the tenant under the lock and refuses it as archived (InvalidTenantStateError), not a Citus failure', async () => {
    const { db, manager, nodes } = suite;
    await manager.createTenant('mv-race');
    const from = (await manager.getTenant('mv-race'))!.node!;
    const to = nodes.find((node) => node !== from)!;
    // Hold archiveTenant() inside its locked transaction: the registry table is locked EXCLUSIVE (reads go on, writes wait).
    const blocker = new PgClient({ connectionString: db.url });
    await blocker.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query('LOCK TABLE public.tenants IN EXCLUSIVE MODE');
      const archiving = manager.archiveTenant('mv-race').then(
        () => 'archived',
        (error: Error) => `archive failed: ${error.message}`,
      );
      await sleep(400); // archiveTenant() holds the tenant's advisory lock now, waiting on the registry
      const moving = manager.moveTenant('mv-race', { node: to }).then(
        () => undefined,
        (error: Error) => error,
      );
      await sleep(400); // moveTenant() read the tenant (still active) and waits for the lock
      await blocker.query('COMMIT');
      expect(await archiving).to.equal('archived');
      const error = await moving;
      expect(error instanceof InvalidTenantStateError ? 'InvalidTenantStateError' : `${error?.constructor.name}: ${error?.message}`).to.equal('InvalidTenantStateError');
    } finally {
      await blocker.end();
    }
  });

  it('moveTenant() works on a manager whose pool has one connection (or refuses at once, saying why), rather than stalling on its own lock holder', async () => {
    const { db, manager, nodes } = suite;
    const small = db.manager({ dataSource: { type: 'postgres', url: db.url, poolSize: 1 } });
    await small.initialize();
    await small.createTenant('mv-small');
    const from = (await small.getTenant('mv-small'))!.node!;
    const to = nodes.find((node) => node !== from)!;
    const started = Date.now();
    const outcome = await small.moveTenant('mv-small', { node: to }).then(
      (result) => `moved to ${result.to}`,
      (error: Error) => `${error.constructor.name}: ${error.message}`,
    );
    const ms = Date.now() - started;
    // Refused at once, saying why and what to do (the lock holder and the move need a connection each).
    expect({ outcome, within5s: ms < 5000 }, `${ms} ms`).to.deep.equal({
      outcome:
        "InvalidArgumentError: moveTenant() needs 2 connections of the pool (one holds the tenant's lock while citus_schema_move runs on the other), and the pool has 1. Use a poolSize of at least 2.",
      within5s: true,
    });
    expect((await small.getTenant('mv-small'))!.node, 'nothing moved').to.equal(from);
  });

});
