/**
 * Review probes: rebalanceTenants() against a rebalance already running. A failing probe is a finding.
 */
import { expect } from 'chai';
import { tenantContext, type TenantDataSourceManager } from '../../src';
import { Client } from '../../entities';
import { describeOnCitus, useCitusSuite } from '../support/citus';

describeOnCitus('review: Citus rebalance concurrency', function () {
  this.timeout(300_000);
  const suite = useCitusSuite();

  it('rebalanceTenants() called while a rebalance is running (another process) waits for it or says so (TenantRebalanceError), not a raw Citus error', async () => {
    const { db, manager, nodes } = suite;
    for (const slug of ['cc-b1', 'cc-b2', 'cc-b3', 'cc-b4']) {
      await manager.createTenant(slug);
      await manager.run(slug, async () => {
        for (let i = 0; i < 30; i += 1) await tenantContext.getRepository(Client).save({ name: `n${i}`, email: 'e@x' });
      });
    }
    for (const tenant of await manager.listTenants()) {
      if (tenant.node !== undefined && tenant.node !== nodes[1]) await manager.moveTenant(tenant.slug, { node: nodes[1]!, transfer: 'block-writes' });
    }
    const other = db.manager();
    await other.initialize();
    const first = manager.rebalanceTenants({ pollMs: 100 });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const second = await other.rebalanceTenants({ pollMs: 100 }).then(
      () => 'waited or joined',
      (error: Error) => `${error.constructor.name}: ${error.message}`,
    );
    await first;
    expect(second).to.match(/^(waited or joined|TenantRebalanceError)/);
  });
});
