import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Client } from '../../entities';
import { InvalidArgumentError, InvalidTenantNameError, TenantNotFoundError, tenantContext, type TenantDataSourceManager } from '../../src';
import { adminQuery, createTenants, databaseUrl, openManager, sleep } from '../support/fixtures';

const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

/** A fleet in a registry of its own, so the fleet is exactly the tenants created here. */
async function fleet(count: number, prefix: string, poolSize = 10): Promise<{ manager: TenantDataSourceManager; slugs: string[] }> {
  const registryTable = `fan_${randomBytes(4).toString('hex')}`;
  const manager = await openManager({ registryTable, dataSource: { type: 'postgres', url: databaseUrl(), poolSize } });
  const slugs = (await createTenants(manager, count, prefix)).sort();
  return { manager, slugs };
}

describe('forEachTenant()', () => {
  it('runs fn in every active tenant with tenantContext on that tenant: each schema gets its own row, values come back by slug', async () => {
    const { manager, slugs } = await fleet(4, 'fe');
    const report = await manager.forEachTenant(async (tenant) => {
      const current = tenantContext.current()!.slug;
      await tenantContext.getRepository(Client).insert({ name: 'fan-out', email: `${current}@fan.test` });
      return { record: tenant.slug, context: current };
    });
    expect(report.results.map((r) => r.slug)).to.deep.equal(slugs);
    expect(report.results.map((r) => r.status)).to.deep.equal(slugs.map(() => 'done'));
    for (const r of report.results) expect(r.value).to.deep.equal({ record: r.slug, context: r.slug });
    expect(report.totals).to.include({ tenants: 4, done: 4, failed: 0, skipped: 0 });
    for (const slug of slugs) {
      const rows = await adminQuery<{ email: string }>(`SELECT email FROM "${schemaOf(slug)}".client WHERE name = 'fan-out'`);
      expect(rows.map((r) => r.email), `rows of ${slug}`).to.deep.equal([`${slug}@fan.test`]);
    }
  });

  it('a failing tenant among good ones is reported failed with its SQLSTATE, and the others are done', async () => {
    const { manager, slugs } = await fleet(3, 'ff');
    const bad = slugs[1]!;
    await adminQuery(`DROP TABLE "${schemaOf(bad)}".project`);
    const report = await manager.forEachTenant(() => tenantContext.query('SELECT count(*)::int AS n FROM project'));
    expect(report.results.map((r) => [r.slug, r.status])).to.deep.equal(slugs.map((s) => [s, s === bad ? 'failed' : 'done']));
    const failed = report.results[1]!;
    expect(failed.error).to.include({ code: '42P01' });
    expect(failed.error!.message).to.match(/project/);
    expect(failed.value).to.equal(undefined);
    expect(report.totals).to.include({ tenants: 3, done: 2, failed: 1, skipped: 0 });
    expect(JSON.parse(JSON.stringify(report)).results[1].error.code, 'the report is plain JSON').to.equal('42P01');
  });

  it('bounds concurrency: at most `concurrency` tenants in flight, and half the pool size by default', async () => {
    const { manager } = await fleet(9, 'fc', 6);
    let inFlight = 0;
    let peak = 0;
    const work = async (): Promise<void> => {
      inFlight += 1;
      peak = Math.max(peak, inFlight);
      await sleep(40);
      inFlight -= 1;
    };
    await manager.forEachTenant(work, { concurrency: 2 });
    expect(peak, 'concurrency 2').to.equal(2);
    peak = 0;
    await manager.forEachTenant(work);
    expect(peak, 'default: pool 6 / 2').to.equal(3);
  });

  it('an abort stops starting tenants: those not started are skipped as aborted, fn never ran in them', async () => {
    const { manager, slugs } = await fleet(5, 'fa');
    const abort = new AbortController();
    const ran: string[] = [];
    const report = await manager.forEachTenant(
      (tenant) => {
        ran.push(tenant.slug);
        if (ran.length === 2) abort.abort();
      },
      { concurrency: 1, signal: abort.signal },
    );
    expect(ran).to.deep.equal(slugs.slice(0, 2));
    expect(report.results.map((r) => r.status)).to.deep.equal(['done', 'done', 'skipped', 'skipped', 'skipped']);
    expect(report.results[2]!.error!.message).to.match(/aborted/);
  });

  it('waves: a failure in the first wave stops the run, the later waves are skipped', async () => {
    const { manager, slugs } = await fleet(4, 'fw');
    const ran: string[] = [];
    const report = await manager.forEachTenant(
      (tenant) => {
        ran.push(tenant.slug);
        throw new Error(`boom in ${tenant.slug}`);
      },
      { waves: [1] },
    );
    expect(ran).to.deep.equal([slugs[0]]);
    expect(report.results.map((r) => r.status)).to.deep.equal(['failed', 'skipped', 'skipped', 'skipped']);
    expect(report.results[0]!.error!.message).to.equal(`boom in ${slugs[0]}`);
    const ok = await manager.forEachTenant(() => 1, { waves: [1, '50%'] });
    expect(ok.totals).to.include({ done: 4 });
  });

  it('a named suspended tenant is reported skipped with its status, not dropped; where.status selects suspended ones', async () => {
    const { manager, slugs } = await fleet(3, 'fs');
    const [a, b] = slugs as [string, string, string];
    await manager.suspendTenant(b);
    const ran: string[] = [];
    const named = await manager.forEachTenant((t) => ran.push(t.slug), { tenants: [b, a] });
    expect(named.results.map((r) => [r.slug, r.status])).to.deep.equal([
      [a, 'done'],
      [b, 'skipped'],
    ]);
    expect(named.results[1]!.error!.message).to.match(/suspended/);
    expect(ran).to.deep.equal([a]);
    const all = await manager.forEachTenant(() => 1);
    expect(all.results.map((r) => r.slug), 'default scope: active tenants only').to.deep.equal(slugs.filter((s) => s !== b));
    const suspended = await manager.forEachTenant(() => 1, { where: { status: 'suspended' } });
    expect(suspended.results.map((r) => [r.slug, r.status])).to.deep.equal([[b, 'skipped']]);
  });

  it('a tenant suspended while the run goes on is refused by run() and reported skipped, not failed', async () => {
    const { manager, slugs } = await fleet(3, 'fm');
    const ran: string[] = [];
    const report = await manager.forEachTenant(
      async (tenant) => {
        ran.push(tenant.slug);
        if (tenant.slug === slugs[0]) await manager.suspendTenant(slugs[1]!);
      },
      { concurrency: 1 },
    );
    expect(ran).to.deep.equal([slugs[0], slugs[2]]);
    expect(report.results.map((r) => r.status)).to.deep.equal(['done', 'skipped', 'done']);
    expect(report.results[1]!.error).to.include({ code: 'TENANT_SUSPENDED' });
  });

  it('an unknown or invalid slug in `tenants`, or a bad option, throws before fn runs anywhere', async () => {
    const { manager, slugs } = await fleet(2, 'fu');
    let calls = 0;
    const fn = (): void => void (calls += 1);
    await expect(manager.forEachTenant(fn, { tenants: [slugs[0]!, 'no-such-tenant'] })).to.be.rejectedWith(TenantNotFoundError, 'no-such-tenant');
    await expect(manager.forEachTenant(fn, { tenants: ['Bad Slug'] })).to.be.rejectedWith(InvalidTenantNameError);
    await expect(manager.forEachTenant(fn, { tenants: ['public'] })).to.be.rejectedWith(InvalidTenantNameError);
    await expect(manager.forEachTenant(fn, { concurrency: 0 })).to.be.rejectedWith(InvalidArgumentError, 'concurrency');
    await expect(manager.forEachTenant(fn, { waves: ['0%'] })).to.be.rejectedWith(InvalidArgumentError, 'Wave size');
    await expect(manager.forEachTenant(fn, { where: { status: 'gone' as never } })).to.be.rejectedWith(InvalidArgumentError, 'where.status');
    await expect(manager.forEachTenant('nope' as never)).to.be.rejectedWith(InvalidArgumentError, 'function');
    expect(calls).to.equal(0);
  });

  it('onProgress sees every processed tenant with done/total', async () => {
    const { manager, slugs } = await fleet(3, 'fp');
    const seen: Array<[string, number, number]> = [];
    await manager.forEachTenant(() => 1, { concurrency: 1, onProgress: (r, done, total) => seen.push([r.slug, done, total]) });
    expect(seen).to.deep.equal(slugs.map((s, i) => [s, i + 1, 3]));
  });
});
