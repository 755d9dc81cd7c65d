import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Registry } from 'prom-client';
import { Client } from '../../entities';
import { tenantMigrations } from '../../migrations';
import { InvalidArgumentError, tenantContext, type TenantDataSourceManager } from '../../src';
import { TopTenants, tenantMetrics } from '../../src/observability/metrics';
import { AddClientPhone1700000000003 } from '../support/extra-migrations';
import { startService } from '../../examples/service';
import { databaseUrl, openManager, uniqueSlug } from '../support/fixtures';

interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** Every sample of the registry's text exposition. */
async function scrape(registry: Registry): Promise<Sample[]> {
  const text = await registry.metrics();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match === null) throw new Error(`Unparsable line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').match(/[a-zA-Z_]+="[^"]*"/g) ?? []) {
      const [key, value] = pair.split('=') as [string, string];
      labels[key] = value.slice(1, -1);
    }
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The value of the one sample named `name` whose labels include `labels`; undefined when none. */
function valueOf(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v) && Object.keys(s.labels).length === Object.keys(labels).length);
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}`);
  return found[0]?.value;
}

/** tenant label -> value of tenant_runs_total{outcome="ok"}. */
function tenantRuns(samples: readonly Sample[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of samples) if (s.name === 'typeorm_tenants_tenant_runs_total' && s.labels.outcome === 'ok') out[s.labels.tenant!] = s.value;
  return out;
}

const P = 'typeorm_tenants_';

describe('Observability: typeorm-tenants/metrics', () => {
  const closers: Array<() => void> = [];
  afterEach(() => {
    for (const close of closers.splice(0)) close();
  });

  it('exact counts after a known workload: runs, createTenant/dropTenant, events, stats() gauges; another manager is not counted; no tenant label by default', async () => {
    const manager = await openManager();
    const other = await openManager();
    const registry = new Registry();
    closers.push(tenantMetrics(manager, { registry }).close);
    const [a, b] = [uniqueSlug('mx-a'), uniqueSlug('mx-b')];
    await manager.createTenant(a);
    await manager.createTenant(b);
    await expect(manager.createTenant(a)).to.be.rejectedWith('already exists');
    for (let i = 0; i < 3; i += 1) await manager.run(a, () => tenantContext.getRepository(Client).count());
    await manager.run(b, () => tenantContext.getRepository(Client).insert({ name: 'B', email: 'b@x.test' }));
    await manager.run(b, () => 1);
    await expect(manager.run(a, () => Promise.reject(new Error('boom')))).to.be.rejectedWith('boom');
    await expect(manager.run(b, () => tenantContext.query('SELECT * FROM no_such_table'))).to.be.rejected;
    await manager.suspendTenant(b);
    await manager.resumeTenant(b);
    // Another manager's work on the same tenants counts nowhere here.
    await other.run(a, () => 1);
    await other.run(a, () => 1);

    const samples = await scrape(registry);
    expect(valueOf(samples, `${P}runs_total`, { outcome: 'ok' })).to.equal(5);
    expect(valueOf(samples, `${P}runs_total`, { outcome: 'error' })).to.equal(2);
    expect(valueOf(samples, `${P}run_duration_seconds_count`, { outcome: 'ok' })).to.equal(5);
    expect(valueOf(samples, `${P}run_duration_seconds_count`, { outcome: 'error' })).to.equal(2);
    expect(valueOf(samples, `${P}run_duration_seconds_bucket`, { outcome: 'ok', le: '+Inf' })).to.equal(5);
    expect(valueOf(samples, `${P}run_duration_seconds_sum`, { outcome: 'ok' })).to.be.greaterThan(0);
    expect(valueOf(samples, `${P}operations_total`, { operation: 'createTenant', outcome: 'ok' })).to.equal(2);
    expect(valueOf(samples, `${P}operations_total`, { operation: 'createTenant', outcome: 'error' })).to.equal(1);
    expect(valueOf(samples, `${P}operation_duration_seconds_count`, { operation: 'createTenant', outcome: 'ok' })).to.equal(2);
    expect(valueOf(samples, `${P}tenant_events_total`, { event: 'created' })).to.equal(2);
    expect(valueOf(samples, `${P}tenant_events_total`, { event: 'suspended' })).to.equal(1);
    expect(valueOf(samples, `${P}tenant_events_total`, { event: 'resumed' })).to.equal(1);
    expect(samples.some((s) => 'tenant' in s.labels), 'no tenant label by default').to.equal(false);

    const stats = manager.stats();
    expect(valueOf(samples, `${P}data_sources_cached`)).to.equal(stats.cachedDataSources).and.be.greaterThan(0);
    expect(valueOf(samples, `${P}data_source_cache_misses_total`)).to.equal(stats.misses);
    expect(valueOf(samples, `${P}data_source_cache_hits_total`)).to.equal(stats.hits);
    expect(valueOf(samples, `${P}active_runs`)).to.equal(0);
    expect(valueOf(samples, `${P}pool_max_connections`)).to.equal(10);
    expect(valueOf(samples, `${P}pool_connections`)).to.equal(stats.pool.total);

    await manager.dropTenant(a, { force: true });
    await manager.dropTenant(b, { force: true });
    const after = await scrape(registry);
    expect(valueOf(after, `${P}operations_total`, { operation: 'dropTenant', outcome: 'ok' })).to.equal(2);
    expect(valueOf(after, `${P}tenant_events_total`, { event: 'dropped' })).to.equal(2);
    expect(valueOf(after, `${P}data_sources_cached`)).to.equal(0);
    expect(valueOf(after, `${P}runs_total`, { outcome: 'ok' })).to.equal(5);
  });

  it('fleet runs: tenant_migrations_total by status, migrations_applied_total, the migrated / migration-failed events', async function () {
    this.timeout(120_000);
    const registryTable = `obs_mx_${randomBytes(4).toString('hex')}`;
    const base = await openManager({ registryTable });
    const slugs = [uniqueSlug('mx-fa'), uniqueSlug('mx-fb'), uniqueSlug('mx-fc')];
    for (const slug of slugs) await base.createTenant(slug);
    await base.run(slugs[2]!, () => tenantContext.getRepository(Client).insert({ name: 'Upper', email: 'UPPER@X.TEST' }));
    const next = await openManager({ registryTable, tenantMigrations: [...tenantMigrations, AddClientPhone1700000000003] });
    const registry = new Registry();
    closers.push(tenantMetrics(next, { registry, prefix: 'fleet_' }).close);
    await next.migrateTenants({ concurrency: 2 });
    await next.revertTenants({ tenants: [slugs[0]!] });
    const samples = await scrape(registry);
    expect(valueOf(samples, 'fleet_tenant_migrations_total', { direction: 'migrate', status: 'migrated' })).to.equal(2);
    expect(valueOf(samples, 'fleet_tenant_migrations_total', { direction: 'migrate', status: 'failed' })).to.equal(1);
    expect(valueOf(samples, 'fleet_tenant_migrations_total', { direction: 'revert', status: 'reverted' })).to.equal(1);
    expect(valueOf(samples, 'fleet_tenant_migration_duration_seconds_count', { direction: 'migrate', status: 'migrated' })).to.equal(2);
    expect(valueOf(samples, 'fleet_migrations_applied_total', { direction: 'migrate' })).to.equal(2);
    expect(valueOf(samples, 'fleet_migrations_applied_total', { direction: 'revert' })).to.equal(1);
    expect(valueOf(samples, 'fleet_tenant_events_total', { event: 'migrated' })).to.equal(2);
    expect(valueOf(samples, 'fleet_tenant_events_total', { event: 'migration-failed' })).to.equal(1);
    expect(samples.some((s) => s.name.startsWith('typeorm_tenants_')), 'prefix applies to every name').to.equal(false);
    for (const slug of slugs) await next.dropTenant(slug, { force: true });
  });

  it('tenantLabels { top: 2 } over 5 tenants: at most 2 live tenant labels, the rest under tenant="(other)", re-ranked at each scrape by runs since the previous one', async () => {
    const manager = await openManager();
    const registry = new Registry();
    closers.push(tenantMetrics(manager, { registry, tenantLabels: { top: 2 } }).close);
    const names = ['a', 'b', 'c', 'd', 'e'];
    const slug: Record<string, string> = Object.fromEntries(names.map((n) => [n, uniqueSlug(`mx-top-${n}`)]));
    for (const n of names) await manager.createTenant(slug[n]!);
    const runAll = async (order: string): Promise<void> => {
      for (const n of order) await manager.run(slug[n]!, () => 1);
    };
    const named = (runs: Record<string, number>): Record<string, number> =>
      Object.fromEntries(Object.entries(runs).map(([label, v]) => [names.find((n) => slug[n] === label) ?? label, v]));

    // Before any scrape the first two tenants seen take the two labels.
    await runAll('abcccdde');
    const first = await scrape(registry);
    expect(named(tenantRuns(first))).to.deep.equal({ a: 1, b: 1, '(other)': 6 });
    // That scrape re-ranked: c (3 runs) and d (2) are the busiest; a and b keep their series, frozen, for one more scrape.
    await runAll('cdaae');
    const second = await scrape(registry);
    // Re-ranked again: a (2) then c (1, a member); b's frozen series is gone, d is frozen now.
    expect(named(tenantRuns(second))).to.deep.equal({ a: 1, c: 1, d: 1, '(other)': 9 });
    await runAll('ab');
    const third = await scrape(registry);
    // a counted under its label; b had no label yet (other); re-ranked to {a, b}; d removed, c frozen.
    expect(named(tenantRuns(third))).to.deep.equal({ a: 2, c: 1, '(other)': 10 });
    await runAll('b');
    const fourth = await scrape(registry);
    expect(named(tenantRuns(fourth))).to.deep.equal({ a: 2, b: 1, '(other)': 10 });
    expect(valueOf(fourth, `${P}runs_total`, { outcome: 'ok' }), 'the untenanted counter has every run').to.equal(16);
    const durations = fourth.filter((s) => s.name === `${P}tenant_run_duration_seconds_count`).map((s) => s.labels.tenant).sort();
    expect(durations).to.deep.equal([slug.a, slug.b, '(other)'].sort());
    for (const n of names) await manager.dropTenant(slug[n]!, { force: true });
  });

  it('TopTenants with 1,000 tenants and top 10: never more than 2N + 1 tenant series exist', () => {
    const top = new TopTenants(10);
    const live = new Set<string>();
    for (let round = 0; round < 20; round += 1) {
      for (let i = 0; i < 5_000; i += 1) {
        // Busy tenants shift every round, so labels keep moving.
        const tenant = `t${(i * 7919 + round * 101) % (i % 3 === 0 ? 1000 : 37)}`;
        live.add(top.label(tenant));
      }
      expect(live.size, `round ${round}`).to.be.at.most(2 * 10 + 1);
      for (const removed of top.rerank()) live.delete(removed);
      // What is left is the labelled and the frozen tenants, plus other.
      expect(live.size).to.be.at.most(2 * 10 + 1);
    }
  });

  it('the example service serves /metrics: one request of a tenant is one run, one createTenant', async () => {
    const service = await startService({ databaseUrl: databaseUrl(), redisUrl: '' });
    try {
      const slug = uniqueSlug('mx-svc');
      const created = await fetch(`${service.url}/tenants`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ slug }) });
      expect(created.status).to.equal(201);
      const clients = await fetch(`${service.url}/clients`, { headers: { 'x-tenant-slug': slug } });
      expect(clients.status).to.equal(200);
      const response = await fetch(`${service.url}/metrics`);
      expect(response.status).to.equal(200);
      expect(response.headers.get('content-type')).to.include('text/plain');
      const text = await response.text();
      expect(text).to.include('typeorm_tenants_runs_total{outcome="ok"} 1\n');
      expect(text).to.include('typeorm_tenants_operations_total{operation="createTenant",outcome="ok"} 1\n');
      expect(text).to.include('typeorm_tenants_tenant_events_total{event="created"} 1\n');
      await service.tenants.dropTenant(slug, { force: true });
    } finally {
      await service.close();
    }
  });

  it('refuses a bad prefix or top; close() removes the metrics and stops counting', async () => {
    const manager: TenantDataSourceManager = await openManager();
    expect(() => tenantMetrics(manager, { registry: new Registry(), prefix: '9bad' })).to.throw(InvalidArgumentError, 'prefix');
    expect(() => tenantMetrics(manager, { registry: new Registry(), tenantLabels: { top: 0 } })).to.throw(InvalidArgumentError, 'tenantLabels');
    const registry = new Registry();
    const metrics = tenantMetrics(manager, { registry });
    const slug = uniqueSlug('mx-close');
    await manager.createTenant(slug);
    await manager.run(slug, () => 1);
    metrics.close();
    metrics.close();
    expect(await registry.metrics()).to.equal('\n');
    const again = tenantMetrics(manager, { registry });
    closers.push(again.close);
    await manager.run(slug, () => 1);
    expect(valueOf(await scrape(registry), `${P}runs_total`, { outcome: 'ok' })).to.equal(1);
    await manager.dropTenant(slug, { force: true });
  });
});
