/**
 * Review of lifecycle plugins (`manager.use()`): hooks under concurrent
 * lifecycle calls, and errors that are not Errors. A failing probe is a finding.
 */
import { expect } from 'chai';
import { TenantLifecycleHookError, type TenantDataSourceManager } from '../../src';
import { openManager, sleep, uniqueSlug } from '../support/fixtures';

describe('review plugins: concurrency and odd throws', () => {
  let manager: TenantDataSourceManager;
  beforeEach(async () => {
    manager = await openManager();
  });

  it('two dropTenant() calls at once: onDropping runs once, never twice at the same time', async () => {
    const slug = uniqueSlug('rvpl');
    await manager.createTenant(slug);
    let running = 0;
    let overlap = 0;
    let calls = 0;
    const remove = manager.use({
      name: 'rv-files',
      async onDropping() {
        calls += 1;
        running += 1;
        if (running > 1) overlap += 1;
        await sleep(200);
        running -= 1;
      },
    });
    try {
      const outcomes = await Promise.allSettled([manager.dropTenant(slug, { force: true }), manager.dropTenant(slug, { force: true })]);
      expect({ overlap, calls: calls <= 1 ? 'once' : `${calls} times`, fulfilled: outcomes.filter((o) => o.status === 'fulfilled').length >= 1 }).to.deep.equal({
        overlap: 0,
        calls: 'once',
        fulfilled: true,
      });
    } finally {
      remove();
    }
  });

  it('a hook that throws a string: dropTenant rejects with TenantLifecycleHookError naming it, the tenant stays dropping, and a second call completes', async () => {
    const slug = uniqueSlug('rvpl');
    await manager.createTenant(slug);
    let fail = true;
    const remove = manager.use({
      name: 'rv-string',
      async onDropping() {
        if (fail) throw 'disk on fire'; // eslint-disable-line no-throw-literal
      },
    });
    try {
      const error = await manager.dropTenant(slug, { force: true }).then(() => undefined, (e: unknown) => e);
      expect(error).to.be.instanceOf(TenantLifecycleHookError);
      expect(String((error as Error).message)).to.include('disk on fire');
      expect((await manager.getTenant(slug))?.status).to.equal('dropping');
      fail = false;
      await manager.dropTenant(slug, { force: true });
      expect(await manager.getTenant(slug)).to.equal(undefined);
    } finally {
      remove();
    }
  });
});
