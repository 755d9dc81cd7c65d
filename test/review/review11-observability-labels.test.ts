/**
 * Review of issue 11, logs and metrics: can a tenant's label or log field be
 * made to name another tenant (or the overflow bucket)? A failing probe is a finding.
 */
import { expect } from 'chai';
import { Registry } from 'prom-client';
import type { TenantDataSourceManager } from '../../src';
import { tenantMetrics } from '../../src/observability/metrics';
import { tenantLogger } from '../../src/observability/tenant-logger';
import { openManager, uniqueSlug } from '../support/fixtures';

async function tenantRunSeries(registry: Registry, name: string): Promise<Record<string, number>> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name)!;
  const out: Record<string, number> = {};
  for (const v of metric.values as { labels: Record<string, string>; value: number }[]) {
    if (v.labels.outcome === 'ok') out[v.labels.tenant!] = v.value;
  }
  return out;
}

describe('review11 observability: labels and log fields that name another tenant', () => {
  let manager: TenantDataSourceManager;
  beforeEach(async () => {
    manager = await openManager();
  });

  it('tenantLabels: a tenant whose slug is "other" is not merged with the overflow series tenant="other"', async () => {
    const registry = new Registry();
    const metrics = tenantMetrics(manager, { registry, tenantLabels: { top: 1 } });
    const busy = uniqueSlug('rv11m');
    try {
      await manager.createTenant('other');
      await manager.createTenant(busy);
      for (let i = 0; i < 3; i += 1) await manager.run('other', () => 1); // takes the one label
      for (let i = 0; i < 2; i += 1) await manager.run(busy, () => 1); // overflow: counted as tenant="other"
      const series = await tenantRunSeries(registry, 'typeorm_tenants_tenant_runs_total');
      // Tenant "other" ran 3 times; the overflow bucket holds 2 runs of another tenant.
      // Both land on one series {tenant="other"} = 5, so neither is readable.
      expect(series.other, 'runs of tenant "other" alone').to.equal(3);
    } finally {
      metrics.close();
      await manager.dropTenant('other', { force: true }).catch(() => undefined);
      await manager.dropTenant(busy, { force: true }).catch(() => undefined);
    }
  });

  it('a function logger: the bound tenant is not replaced by the call\'s own "tenant" field', async () => {
    const slug = uniqueSlug('rv11f');
    await manager.createTenant(slug);
    const seen: unknown[] = [];
    const log = (...args: unknown[]): void => void seen.push(args[0]);
    await manager.run(slug, () => tenantLogger(log)({ tenant: 'victim-co' }, 'body'));
    expect((seen[0] as { tenant: string }).tenant).to.equal(slug);
    await manager.dropTenant(slug, { force: true });
  });
});
