/**
 * Review of the testing kit (`typeorm-tenants/testing`): what a user's own
 * fixtures survive, and transaction-per-test with a failing statement.
 * A failing probe is a finding.
 */
import { expect } from 'chai';
import { Client } from '../../entities';
import { tenantContext } from '../../src';
import { createTestTenant, dropTestTenants, useTestTenancy } from '../../src/testing';
import { databaseUrl, managerOptions, openManager, uniqueSlug } from '../support/fixtures';

const hooks = { beforeAll: before, afterAll: after, beforeEach, afterEach };

describe("review kit: dropTenants 'after-each' and a block-level tenant the user made with tenancy.createTenant()", () => {
  const tenancy = useTestTenancy(hooks, () => managerOptions(), { database: () => ({ url: databaseUrl() }), dropTenants: 'after-each', warmPoolSize: 2 });
  let other: string;
  before(async () => {
    // The README's "one more tenant (for tests across tenants)", made once for the block.
    other = (await tenancy.createTenant()).slug;
  });

  it('first test uses the other tenant', async () => {
    expect(await tenancy.withTenant(other, () => tenantContext.getRepository(Client).count())).to.equal(0);
  });

  it('second test can still use the block-level tenant (it is not the per-test tenant)', async () => {
    expect(await tenancy.withTenant(other, () => tenantContext.getRepository(Client).count())).to.equal(0);
  });
});

describe('review kit: transaction-per-test, a test that expects a constraint violation and goes on', () => {
  const tenancy = useTestTenancy(hooks, () => managerOptions(), { database: () => ({ url: databaseUrl() }), mode: 'transaction-per-test' });

  it('after a failed insert inside withTenant, the next statement of the same test still runs', async () => {
    await tenancy.withTenant(() => tenantContext.getRepository(Client).save({ name: 'a', email: 'dup@x' }));
    // A NOT NULL / unique violation the test asserts on:
    const failed = await tenancy
      .withTenant(() => tenantContext.query(`INSERT INTO client (name, email) VALUES (NULL, 'n@x')`))
      .then(() => false, () => true);
    expect(failed).to.equal(true);
    // In tenant-per-test this works; held in one transaction it meets 25P02 "current transaction is aborted".
    expect(await tenancy.withTenant(() => tenantContext.getRepository(Client).count())).to.equal(1);
  });

  it('the rows of the previous test are gone', async () => {
    expect(await tenancy.withTenant(() => tenantContext.getRepository(Client).count())).to.equal(0);
  });
});

describe('review kit: dropTestTenants() without a manager', () => {
  it('drops only tenants the kit created, never one created with manager.createTenant() directly', async () => {
    const manager = await openManager();
    const mine = uniqueSlug('rvkit');
    await manager.createTenant(mine);
    const kit = await createTestTenant(manager);
    const dropped = await dropTestTenants();
    expect(dropped).to.include(kit.slug);
    expect(await manager.getTenant(mine)).to.not.equal(undefined);
  });
});
