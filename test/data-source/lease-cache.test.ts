import { expect } from 'chai';
import type { DataSource } from 'typeorm';
import { Client } from '../../entities';
import { TenantNotFoundError, tenantContext, type TenantDataSourceManager } from '../../src';
import { createTenants, openManager, uniqueSlug } from '../support/fixtures';

/** Lets queued microtasks and one macrotask turn run, up to `ticks` times, until `done()` holds. */
async function settle(done: () => boolean, ticks = 50): Promise<void> {
  for (let i = 0; i < ticks && !done(); i += 1) await new Promise((resolve) => setImmediate(resolve));
}

/** A promise with its resolve function, for holding a run open until the test says so. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

describe('DataSource cache: single flight, bounded LRU, leases', () => {
  it('20 concurrent first uses of one tenant build ONE DataSource (single flight)', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('flight');
    const record = await manager.createTenant(slug);
    const before = manager.stats();
    expect(before.cachedDataSources, 'createTenant does not fill the cache').to.equal(0);

    const calls = Array.from({ length: 20 }, (_, i) =>
      i % 2 === 0
        ? manager.run(slug, () => tenantContext.getManager().dataSource)
        : manager.getDataSource(slug),
    );
    const dataSources = await Promise.all(calls);

    const after = manager.stats();
    expect(after.misses - before.misses, 'exactly one DataSource was built').to.equal(1);
    expect(after.hits - before.hits, 'the other 19 calls were served from the cache').to.equal(19);
    expect(after.cachedDataSources).to.equal(1);
    const distinct = new Set<DataSource>(dataSources);
    expect(distinct.size, 'every call got the same DataSource object').to.equal(1);
    const [dataSource] = dataSources;
    expect(dataSource!.isInitialized).to.equal(true);
    expect(dataSource!.options).to.include({ schema: record.schemaName });
    expect(await manager.getDataSource(slug), 'later calls get it too').to.equal(dataSource);
  });

  it('maxDataSources: 3 over 20 tenants: bounded, evicted DataSources closed, a held one kept until its run ends', async function () {
    this.timeout(120_000);
    const manager = await openManager({ maxDataSources: 3 });
    const [t0, ...others] = await createTenants(manager, 20, 'lru');
    expect(others).to.have.length(19);

    let maxCached = 0;
    const check = (label: string): void => {
      const { cachedDataSources } = manager.stats();
      maxCached = Math.max(maxCached, cachedDataSources);
      expect(cachedDataSources, `cachedDataSources ${label}`).to.be.at.most(3);
    };

    // T0: a run that holds its DataSource until the test opens the gate.
    const t0Gate = gate();
    const t0Started = gate();
    let t0DataSource: DataSource | undefined;
    const t0Run = manager.run(t0, async () => {
      t0DataSource = tenantContext.getManager().dataSource;
      await tenantContext.getRepository(Client).save({ name: 'before churn', email: 'before@t0.test' });
      t0Started.open();
      await t0Gate.promise;
      // After the churn: the held DataSource still serves this run, reads and writes.
      expect(t0DataSource.isInitialized, 'the held DataSource is open for its run').to.equal(true);
      const seen = await tenantContext.getRepository(Client).find({ order: { id: 'ASC' } });
      await tenantContext.getRepository(Client).save({ name: 'after churn', email: 'after@t0.test' });
      return seen.map((c) => c.name);
    });
    await Promise.race([t0Started.promise, t0Run]);
    expect(t0DataSource, 'the T0 run started').to.not.equal(undefined);
    check('with T0 held');

    // Churn: the other 19 tenants, round-robin, twice each, in groups of three
    // runs that are all in progress at once (so together with T0 there are
    // more held DataSources than the bound, and a held one must leave the cache).
    const order = [...others, ...others];
    const seenOthers = new Set<DataSource>();
    let ops = 0;
    for (let start = 0; start < order.length; start += 3) {
      const group = order.slice(start, start + 3);
      const arrivals = group.map(() => gate());
      const allArrived = Promise.all(arrivals.map((a) => a.promise));
      const results = await Promise.all(
        group.map((slug, i) =>
          manager.run(slug, async () => {
            try {
              seenOthers.add(tenantContext.getManager().dataSource);
              const count = await tenantContext.getRepository(Client).count();
              check(`inside a run on ${slug}`);
              return { slug: tenantContext.current()?.slug, count };
            } finally {
              arrivals[i]!.open();
              await allArrived;
            }
          }),
        ),
      );
      ops += group.length;
      for (const [i, result] of results.entries()) expect(result).to.deep.equal({ slug: group[i], count: 0 });
      check(`after op ${ops}`);
      expect(t0DataSource!.isInitialized, `T0's DataSource is not closed while its run holds it (after op ${ops})`).to.equal(true);
    }
    expect(ops).to.equal(38);

    const during = manager.stats();
    expect(during.evictions, 'the bound forced evictions').to.be.greaterThan(0);
    expect(during.cachedDataSources).to.be.at.most(3);
    expect(during.activeRuns, 'only the T0 run is in progress').to.equal(1);
    expect(during.pendingDisposal, 'T0 was evicted while held: its disposal waits for the run').to.equal(1);
    expect(t0DataSource!.isInitialized).to.equal(true);

    // Evicted DataSources nobody holds were closed: at most the 3 cached ones stay open.
    await settle(() => [...seenOthers].filter((ds) => ds.isInitialized).length <= 3);
    expect(seenOthers.size, 'each miss built a new DataSource').to.be.greaterThan(3);
    expect([...seenOthers].filter((ds) => ds.isInitialized).length, 'open DataSources of the other tenants').to.be.at.most(3);

    // Let T0's run finish its find and save.
    t0Gate.open();
    expect(await t0Run).to.deep.equal(['before churn']);
    await settle(() => !t0DataSource!.isInitialized);
    expect(t0DataSource!.isInitialized, 'the evicted DataSource is closed once its run ends').to.equal(false);
    expect(manager.stats().pendingDisposal).to.equal(0);
    expect(manager.stats().activeRuns).to.equal(0);

    // T0 is served again, by a new DataSource, and its data is all there.
    const again = await manager.run(t0, async () => ({
      dataSource: tenantContext.getManager().dataSource,
      names: (await tenantContext.getRepository(Client).find({ order: { id: 'ASC' } })).map((c) => c.name),
    }));
    expect(again.dataSource).to.not.equal(t0DataSource);
    expect(again.names).to.deep.equal(['before churn', 'after churn']);
    check('at the end');
    expect(maxCached).to.equal(3);
  });

  it('a failed creation is not cached: run() of an unknown slug misses twice, then works once the tenant exists', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('ghost');
    const before = manager.stats();
    let ran = 0;
    await expect(manager.run(slug, () => (ran += 1))).to.be.rejectedWith(TenantNotFoundError);
    expect(manager.stats().cachedDataSources, 'no entry for the failed creation').to.equal(0);
    await expect(manager.run(slug, () => (ran += 1))).to.be.rejectedWith(TenantNotFoundError);
    const after = manager.stats();
    expect(ran, 'fn never ran').to.equal(0);
    expect(after.misses - before.misses, 'each call tried to build (the failure was forgotten)').to.equal(2);
    expect(after.hits - before.hits).to.equal(0);
    expect(after.cachedDataSources).to.equal(0);
    expect(after.pendingDisposal).to.equal(0);
    expect(after.activeRuns).to.equal(0);

    // Once the tenant exists, the next call builds it: no stale failure is served.
    await manager.createTenant(slug);
    expect(await manager.run(slug, () => tenantContext.getRepository(Client).count())).to.equal(0);
    expect(manager.stats().misses - before.misses).to.equal(3);
    expect(manager.stats().cachedDataSources).to.equal(1);
  });
});
