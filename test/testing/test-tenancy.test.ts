import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Client } from '../../entities';
import { InvalidArgumentError, ManagerDestroyedError, tenantContext, type TenantDataSourceManager, type TenantRecord } from '../../src';
import { DEFAULT_TEST_HOOK_TIMEOUT_MS, TestTenancyNotReadyError, useTestTenancy, type TestHooks } from '../../src/testing';
import { adminQuery, databaseUrl, managerOptions, schemaExists } from '../support/fixtures';

const mochaHooks: TestHooks = { beforeAll: before, afterAll: after, beforeEach, afterEach };

/** Rows of the client table of a tenant schema, straight from the catalog's point of view (not through the manager). */
async function clientNames(schema: string): Promise<string[]> {
  return (await adminQuery<{ name: string }>(`SELECT name FROM "${schema}".client ORDER BY id`)).map((r) => r.name);
}

describe('useTestTenancy() with mocha hooks', () => {
  let managerSeen: TenantDataSourceManager | undefined;
  describe("'tenant-per-test' (default): a fresh tenant from the warm pool in every test, dropped in afterAll", () => {
    const registryTable = `kit_hooks_${randomBytes(4).toString('hex')}`;
    const seen: TenantRecord[] = [];
    const tenancy = useTestTenancy(mochaHooks, (database) => managerOptions({ registryTable, dataSource: { type: 'postgres', url: database.url, poolSize: 6 } }), {
      database: () => ({ url: databaseUrl() }),
      warmPoolSize: 3,
      seed: async ({ manager }) => {
        await manager.save(Client, { name: 'seeded', email: 'seed@hooks.test' });
      },
    });

    it('in the first test the manager (on the given database) and a tenant are ready', () => {
      expect(tenancy.tenant.status).to.equal('active');
      expect(tenancy.manager.stats().pool.max).to.equal(6);
      expect(tenancy.database.url).to.equal(databaseUrl());
    });

    it('test 1: its own tenant, seeded, from a warm pool of warmPoolSize; rows written through withTenant land in its schema', async () => {
      managerSeen = tenancy.manager;
      seen.push(tenancy.tenant);
      expect(tenancy.slug).to.equal(tenancy.tenant.slug).and.match(/^test-[0-9a-f]{12}$/);
      await tenancy.withTenant(() => tenantContext.getRepository(Client).save({ name: 'one', email: 'one@hooks.test' }));
      expect(await clientNames(tenancy.tenant.schemaName)).to.deep.equal(['seeded', 'one']);
      // The kit gave the manager a pool of warmPoolSize, refilled after the claims.
      await tenancy.manager.refillWarmPool();
      expect(await tenancy.manager.warmPoolStatus()).to.deep.equal({ total: 3, ready: 3, servers: { default: { total: 3, ready: 3 } } });
    });

    it('test 2: another tenant, which does not see test 1\'s rows; withTenant(slug, fn) reaches another tenant', async () => {
      seen.push(tenancy.tenant);
      expect(tenancy.slug).to.not.equal(seen[0]!.slug);
      expect(await tenancy.withTenant(() => tenantContext.getRepository(Client).find())).to.have.length(1);
      const other = await tenancy.createTenant({ slugPrefix: 'other' });
      seen.push(other);
      await tenancy.withTenant(other, () => tenantContext.getRepository(Client).save({ name: 'other', email: 'o@hooks.test' }));
      expect(await clientNames(other.schemaName)).to.deep.equal(['seeded', 'other']);
      expect(await clientNames(tenancy.tenant.schemaName)).to.deep.equal(['seeded']);
      await expect(tenancy.withTenant('x-not-a-tenant' as string, undefined as unknown as () => void)).to.be.rejectedWith(InvalidArgumentError);
    });

    after(() => {
      // Runs before the kit's after hook (registered first): the tenants still exist.
      expect(seen).to.have.length(3);
    });
  });

  describe('afterwards', () => {
    it('the kit dropped every tenant it made, and destroyed its manager', async () => {
      // Filled by the block above; ran before this one.
      const schemas = (await adminQuery<{ nspname: string }>("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'test\\_%' OR nspname LIKE 'other\\_%'")).map((r) => r.nspname);
      expect(schemas.filter((s) => /^(test|other)_[0-9a-f]{12}$/.test(s))).to.deep.equal([]);
      await expect(managerSeen!.listTenants()).to.be.rejectedWith(ManagerDestroyedError);
    });
  });

  describe("'transaction-per-test': one tenant for the block, each test's work rolled back", () => {
    const registryTable = `kit_tx_${randomBytes(4).toString('hex')}`;
    let first: TenantRecord | undefined;
    const tenancy = useTestTenancy(mochaHooks, (database) => managerOptions({ registryTable, dataSource: { type: 'postgres', url: database.url, poolSize: 6 } }), {
      database: () => ({ url: databaseUrl() }),
      mode: 'transaction-per-test',
    });

    it('test 1 writes rows that the rest of the test sees, nested transactions become savepoints', async () => {
      first = tenancy.tenant;
      const clients = (): Promise<string[]> => tenancy.withTenant(async () => (await tenantContext.getRepository(Client).find({ order: { id: 'ASC' } })).map((c) => c.name));
      await tenancy.withTenant(() => tenantContext.getRepository(Client).save({ name: 'kept', email: 'k@tx.test' }));
      await tenancy.withTenant(async () => {
        await tenantContext
          .transaction(async (em) => {
            await em.save(Client, { name: 'undone', email: 'u@tx.test' });
            throw new Error('roll back the savepoint');
          })
          .catch((error: Error) => expect(error.message).to.equal('roll back the savepoint'));
        await tenantContext.query('SELECT 1');
      });
      expect(await clients()).to.deep.equal(['kept']);
      // Uncommitted: another connection does not see it.
      expect(await clientNames(first.schemaName)).to.deep.equal([]);
    });

    it('test 2: the same tenant, and test 1\'s rows are gone; manager.run() escapes the transaction (documented)', async () => {
      expect(tenancy.slug).to.equal(first!.slug);
      expect(await tenancy.withTenant(() => tenantContext.getRepository(Client).count())).to.equal(0);
      await tenancy.manager.run(tenancy.slug, () => tenantContext.getRepository(Client).save({ name: 'escaped', email: 'e@tx.test' }));
      expect(await clientNames(first!.schemaName), 'committed at once').to.deep.equal(['escaped']);
    });

    it('test 3: what escaped stays; the held transaction sees it', async () => {
      expect(await tenancy.withTenant(async () => (await tenantContext.getRepository(Client).find()).map((c) => c.name))).to.deep.equal(['escaped']);
    });
  });

  describe('after the transaction block', () => {
    it('its tenant is dropped', async () => {
      const left = await adminQuery<{ nspname: string }>("SELECT nspname FROM pg_namespace WHERE nspname ~ '^test_[0-9a-f]{12}$'");
      expect(left).to.deep.equal([]);
    });
  });
});

/** A runner like Jest's or Vitest's: hooks registered with a timeout argument, run in order by `run()`. */
function fakeRunner(): { hooks: TestHooks; timeouts: Array<number | undefined>; run: (test: () => Promise<void>) => Promise<void>; hook: (name: keyof TestHooks) => Promise<void> } {
  const registered: Record<keyof TestHooks, Array<() => Promise<void>>> = { beforeAll: [], afterAll: [], beforeEach: [], afterEach: [] };
  const timeouts: Array<number | undefined> = [];
  const register =
    (name: keyof TestHooks) =>
    (fn: () => Promise<void>, timeoutMs?: number): void => {
      // Jest treats a hook function with a parameter as a done-callback hook: the kit's must take none.
      expect(fn.length, `${name} takes no done callback`).to.equal(0);
      registered[name].push(fn);
      timeouts.push(timeoutMs);
    };
  const hook = async (name: keyof TestHooks): Promise<void> => {
    for (const fn of registered[name]) await fn.call(undefined);
  };
  return {
    hooks: { beforeAll: register('beforeAll'), afterAll: register('afterAll'), beforeEach: register('beforeEach'), afterEach: register('afterEach') },
    timeouts,
    hook,
    run: async (test) => {
      await hook('beforeEach');
      try {
        await test();
      } finally {
        await hook('afterEach');
      }
    },
  };
}

describe('useTestTenancy() with Jest/Vitest-style hooks (timeout as second argument)', function () {
  this.timeout(120_000);

  it('passes its timeout to each registrar, says what is not ready when, and drops the tenants per test with dropTenants: "after-each"', async () => {
    const runner = fakeRunner();
    const registryTable = `kit_fake_${randomBytes(4).toString('hex')}`;
    const tenancy = useTestTenancy(runner.hooks, (database) => managerOptions({ registryTable, dataSource: { type: 'postgres', url: database.url, poolSize: 4 } }), {
      database: { url: databaseUrl() },
      dropTenants: 'after-each',
      warmPoolSize: 2,
    });
    expect(runner.timeouts).to.deep.equal(Array(4).fill(DEFAULT_TEST_HOOK_TIMEOUT_MS));
    expect(() => tenancy.manager).to.throw(TestTenancyNotReadyError, /useTestTenancy\(\)\.manager is not available here: its beforeAll hook has not run/);
    expect(() => tenancy.database).to.throw(TestTenancyNotReadyError);

    await runner.hook('beforeAll');
    const manager = tenancy.manager;
    expect(() => tenancy.tenant).to.throw(TestTenancyNotReadyError, /set by its beforeEach hook/);
    expect(() => tenancy.slug).to.throw(TestTenancyNotReadyError);
    await expect(tenancy.withTenant(async () => 1)).to.be.rejectedWith(TestTenancyNotReadyError);

    let during: TenantRecord | undefined;
    await runner.run(async () => {
      during = tenancy.tenant;
      expect(await schemaExists(during.schemaName)).to.equal(true);
    });
    expect(await schemaExists(during!.schemaName), "dropped at the test's end").to.equal(false);
    expect(() => tenancy.tenant).to.throw(TestTenancyNotReadyError);

    await runner.hook('afterAll');
    expect(() => tenancy.manager).to.throw(TestTenancyNotReadyError);
    await expect(manager.listTenants()).to.be.rejectedWith(ManagerDestroyedError);
  });

  it("warmPoolRefill: 'upfront' fills the pool in beforeAll and claims from it without refilling during the tests", async () => {
    const runner = fakeRunner();
    const registryTable = `kit_upfront_${randomBytes(4).toString('hex')}`;
    const tenancy = useTestTenancy(runner.hooks, (database) => managerOptions({ registryTable, dataSource: { type: 'postgres', url: database.url, poolSize: 4 } }), {
      database: { url: databaseUrl() },
      warmPoolSize: 4,
      warmPoolRefill: 'upfront',
    });
    await runner.hook('beforeAll');
    try {
      expect(await tenancy.manager.warmPoolStatus()).to.deep.equal({ total: 4, ready: 4, servers: { default: { total: 4, ready: 4 } } });
      const spareOids = (
        await adminQuery<{ oid: number }>(`SELECT n.oid::int AS oid FROM public."${registryTable}_warm" w JOIN pg_namespace n ON n.nspname = w.schema_name`)
      ).map((r) => r.oid);
      for (let i = 0; i < 2; i += 1) {
        await runner.run(async () => {
          const oid = (await adminQuery<{ oid: number }>('SELECT oid::int AS oid FROM pg_namespace WHERE nspname = $1', [tenancy.tenant.schemaName]))[0]!.oid;
          expect(spareOids, 'claimed from the spares made up front').to.include(oid);
        });
      }
      // The serving manager keeps a pool of 1: nothing was made beside the tests.
      await tenancy.manager.refillWarmPool();
      expect(await tenancy.manager.warmPoolStatus()).to.deep.equal({ total: 2, ready: 2, servers: { default: { total: 2, ready: 2 } } });
    } finally {
      await runner.hook('afterAll');
    }
  });

  it('refuses hooks that are not functions and unknown modes, naming what to pass', () => {
    expect(() => useTestTenancy({ beforeAll: before, afterAll: after } as unknown as TestHooks, () => managerOptions())).to.throw(
      InvalidArgumentError,
      /"beforeEach" is undefined\. mocha: \{ beforeAll: before, afterAll: after, beforeEach, afterEach \}/,
    );
    const hooks = fakeRunner().hooks;
    expect(() => useTestTenancy(hooks, () => managerOptions(), { mode: 'savepoint' as 'tenant-per-test' })).to.throw(InvalidArgumentError, /"mode"/);
    expect(() => useTestTenancy(hooks, () => managerOptions(), { warmPoolSize: 0 })).to.throw(InvalidArgumentError, /"warmPoolSize"/);
    expect(() => useTestTenancy(hooks, () => managerOptions(), { warmPoolRefill: 'lazy' as 'upfront' })).to.throw(InvalidArgumentError, /"warmPoolRefill"/);
    expect(() => useTestTenancy(hooks, () => managerOptions(), { dropTenants: 'never' as 'after-all' })).to.throw(InvalidArgumentError, /"dropTenants"/);
  });
});
