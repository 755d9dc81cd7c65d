import { expect } from 'chai';
import { Client } from '../../entities';
import { TenantRecentlyDroppedError, tenantContext } from '../../src';
import { openManager, sleep, uniqueSlug } from '../support/fixtures';
import { emailsIn, schemaOf } from '../support/legacy-public-client';

/**
 * Hole 6 across processes: within one process a dropped tenant's held
 * DataSources refuse every statement at once (isolation-regressions); another
 * process learns of the drop only when its cached record expires, and a run
 * it started before the drop may still be going. So a dropped schema name
 * cannot be taken again for `slugReuseDelayMs`, and a process that finds a
 * tenant created again under a name it had cached serves the new tenant from
 * a new DataSource. Two managers on one database stand for two processes.
 */
describe('drop fencing across processes (slugReuseDelayMs)', () => {
  it('a dropped name cannot be taken again before slugReuseDelayMs (default: record TTL + destroy timeout); afterwards it can', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('reuse');
    await manager.createTenant(slug);
    await manager.dropTenant(slug, { force: true });
    const error = await manager.createTenant(slug).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).to.be.instanceOf(TenantRecentlyDroppedError);
    const retryAfterMs = (error as TenantRecentlyDroppedError).retryAfterMs;
    expect(retryAfterMs).to.be.greaterThan(10_000).and.at.most(15_000);
    expect((error as Error).message).to.contain('slugReuseDelayMs');
    expect(await manager.getTenant(slug), 'nothing was created').to.equal(undefined);

    const quick = await openManager({ slugReuseDelayMs: 300 });
    const other = uniqueSlug('reuse');
    await quick.createTenant(other);
    await quick.dropTenant(other, { force: true });
    await expect(quick.createTenant(other)).to.be.rejectedWith(TenantRecentlyDroppedError);
    await sleep(350);
    expect((await quick.createTenant(other)).slug).to.equal(other);
  });

  it('a run another process started before the drop never writes into the tenant created again under the name', async () => {
    const ttl = 200;
    const longestRun = 600;
    const options = { tenantRecordTtlMs: ttl, slugReuseDelayMs: ttl + longestRun + 200 };
    const owner = await openManager(options);
    const other = await openManager(options); // another process serving the same tenants
    const slug = uniqueSlug('xproc');
    await owner.createTenant(slug);
    await other.run(slug, () => tenantContext.getRepository(Client).save({ name: 'before', email: `before@${slug}.test` }));

    // In the other process, a run that saves after a while, started before the drop.
    const late = other
      .run(slug, async () => {
        await sleep(longestRun);
        await tenantContext.getRepository(Client).save({ name: 'late', email: `late@${slug}.test` });
      })
      .then(
        () => 'saved',
        (error: unknown) => error,
      );
    await owner.dropTenant(slug, { force: true });
    let created = false;
    const started = Date.now();
    while (!created) {
      try {
        await owner.createTenant(slug);
        created = true;
      } catch (error) {
        expect(error).to.be.instanceOf(TenantRecentlyDroppedError);
        await sleep(Math.min(100, (error as TenantRecentlyDroppedError).retryAfterMs + 5));
      }
    }
    expect(Date.now() - started, 'the name was held for slugReuseDelayMs').to.be.at.least(options.slugReuseDelayMs - 50);
    const lateOutcome = await late;
    expect(lateOutcome, 'the late save found its schema gone').to.be.instanceOf(Error);

    // The other process now serves the new tenant, from a new DataSource.
    await other.run(slug, () => tenantContext.getRepository(Client).save({ name: 'after', email: `after@${slug}.test` }));
    expect(await emailsIn(schemaOf(slug)), 'the new tenant holds only its own row').to.deep.equal([`after@${slug}.test`]);
  });
});
