import diagnosticsChannel from 'node:diagnostics_channel';
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Client } from '../../entities';
import { tenantMigrations } from '../../migrations';
import {
  TENANT_CHANNELS,
  TENANT_EVENT_NAMES,
  TENANT_RUN_END,
  TENANT_RUN_START,
  TenantNotFoundError,
  tenantContext,
  tenantEventChannel,
  type TenantEventMessage,
  type TenantMigrationMessage,
  type TenantOperationMessage,
  type TenantRunMessage,
} from '../../src';
import { AddClientPhone1700000000003 } from '../support/extra-migrations';
import { openManager, uniqueSlug } from '../support/fixtures';

/** Subscribes `fn` to `name` until the test's cleanup runs. */
function listen(name: string, fn: (message: any) => void, cleanups: Array<() => void>): void {
  diagnosticsChannel.subscribe(name, fn);
  cleanups.push(() => diagnosticsChannel.unsubscribe(name, fn));
}

describe('Observability: diagnostics_channel events', () => {
  const cleanups: Array<() => void> = [];
  afterEach(() => {
    for (const cleanup of cleanups.splice(0)) cleanup();
  });

  it('the channel names are the documented ones', () => {
    expect(TENANT_CHANNELS).to.deep.equal({
      run: 'typeorm-tenants:run',
      createTenant: 'typeorm-tenants:create-tenant',
      dropTenant: 'typeorm-tenants:drop-tenant',
      tenantMigration: 'typeorm-tenants:tenant-migration',
    });
    expect(TENANT_RUN_START).to.equal('tracing:typeorm-tenants:run:start');
    expect(TENANT_RUN_END).to.equal('tracing:typeorm-tenants:run:asyncEnd');
    expect(tenantEventChannel('created')).to.equal('typeorm-tenants:tenant:created');
    expect(TENANT_EVENT_NAMES).to.include.members(['created', 'dropped', 'migrated', 'migration-failed', 'suspended', 'archived']);
  });

  it('run start/asyncEnd: slug and schema, start inside the tenant context, durationMs, the error of a failing run; only for the manager that ran', async () => {
    const manager = await openManager();
    const other = await openManager();
    const slug = uniqueSlug('dc-run');
    await manager.createTenant(slug);
    const starts: Array<{ slug: string; schema: string; current: string | undefined; manager: object }> = [];
    const ends: TenantRunMessage[] = [];
    listen(TENANT_RUN_START, (m: TenantRunMessage) => starts.push({ slug: m.slug, schema: m.schema, current: tenantContext.current()?.slug, manager: m.manager }), cleanups);
    listen(TENANT_RUN_END, (m: TenantRunMessage) => ends.push(m), cleanups);

    const count = await manager.run(slug, async () => {
      await new Promise((resolve) => setTimeout(resolve, 30));
      return tenantContext.getRepository(Client).count();
    });
    expect(count).to.equal(0);
    const boom = new Error('boom');
    await expect(manager.run(slug, () => Promise.reject(boom))).to.be.rejectedWith('boom');
    await expect(manager.run(slug, () => {
      throw boom;
    })).to.be.rejectedWith('boom');
    // A run refused before it starts (unknown tenant) publishes nothing: no tenant was served.
    await expect(manager.run(uniqueSlug('dc-none'), () => 1)).to.be.rejectedWith(TenantNotFoundError);

    const schema = slug.replace(/-/g, '_');
    expect(starts).to.deep.equal([
      { slug, schema, current: slug, manager },
      { slug, schema, current: slug, manager },
      { slug, schema, current: slug, manager },
    ]);
    expect(ends).to.have.length(3);
    expect(ends[0]!.result).to.equal(0);
    expect(ends[0]!).to.not.have.property('error');
    expect(ends[0]!.durationMs).to.be.a('number').and.at.least(25);
    expect(ends[1]!.error).to.equal(boom);
    expect(ends[2]!.error).to.equal(boom);
    for (const end of ends) {
      expect(end.manager).to.equal(manager).and.not.equal(other);
      expect(end.tenant.slug).to.equal(slug);
    }
    await manager.dropTenant(slug, { force: true });
  });

  it('createTenant/dropTenant on their tracing channels, and the lifecycle events (created, suspended, resumed, dropped) on theirs', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('dc-life');
    const operations: Array<{ operation: string; slug: unknown; error?: string; durationMs?: number }> = [];
    const onOperation = (m: TenantOperationMessage): void => {
      operations.push({ operation: m.operation, slug: m.slug, ...('error' in m ? { error: (m.error as Error).name } : {}), durationMs: m.durationMs });
    };
    listen(`tracing:${TENANT_CHANNELS.createTenant}:asyncEnd`, onOperation, cleanups);
    listen(`tracing:${TENANT_CHANNELS.dropTenant}:asyncEnd`, onOperation, cleanups);
    const events: Array<[string, string, string]> = [];
    for (const name of TENANT_EVENT_NAMES) {
      listen(tenantEventChannel(name), (m: TenantEventMessage) => {
        expect(m.manager).to.equal(manager);
        events.push([m.event, m.slug, m.schemaName]);
      }, cleanups);
    }

    const record = await manager.createTenant(slug);
    await expect(manager.createTenant(slug)).to.be.rejectedWith('already exists');
    await manager.suspendTenant(slug);
    await manager.resumeTenant(slug);
    await manager.dropTenant(slug, { force: true });
    await expect(manager.dropTenant(slug)).to.be.rejectedWith(TenantNotFoundError);

    expect(operations.map(({ durationMs, ...rest }) => rest)).to.deep.equal([
      { operation: 'createTenant', slug },
      { operation: 'createTenant', slug, error: 'TenantAlreadyExistsError' },
      { operation: 'dropTenant', slug },
      { operation: 'dropTenant', slug, error: 'TenantNotFoundError' },
    ]);
    for (const { durationMs } of operations) expect(durationMs).to.be.a('number').and.at.least(0);
    expect(events).to.deep.equal([
      ['created', slug, record.schemaName],
      ['suspended', slug, record.schemaName],
      ['resumed', slug, record.schemaName],
      ['dropped', slug, record.schemaName],
    ]);
  });

  it('fleet runs: one tenant-migration message per tenant worked on (migrate: slug, applied, status, duration; a failure; revert)', async function () {
    this.timeout(120_000);
    const registryTable = `obs_fleet_${randomBytes(4).toString('hex')}`;
    const base = await openManager({ registryTable });
    const slugs = [uniqueSlug('dc-fa'), uniqueSlug('dc-fb'), uniqueSlug('dc-fc')].sort();
    for (const slug of slugs) await base.createTenant(slug);
    // A data-dependent failure in the last tenant (an upper-case email breaks the new CHECK).
    await base.run(slugs[2]!, () => tenantContext.getRepository(Client).insert({ name: 'Upper', email: 'UPPER@X.TEST' }));
    const next = await openManager({ registryTable, tenantMigrations: [...tenantMigrations, AddClientPhone1700000000003] });
    const messages: TenantMigrationMessage[] = [];
    listen(TENANT_CHANNELS.tenantMigration, (m: TenantMigrationMessage) => messages.push(m), cleanups);

    const report = await next.migrateTenants({ concurrency: 2 });
    expect(report.totals).to.include({ migrated: 2, failed: 1 });
    const again = await next.migrateTenants();
    expect(again.totals).to.include({ upToDate: 2, failed: 1 });
    const reverted = await next.revertTenants({ tenants: [slugs[0]!] });
    expect(reverted.totals).to.include({ reverted: 1 });

    const lines = messages.map((m) => [m.direction, m.slug, m.schema, m.status, m.applied, m.error?.migration]);
    const schema = (slug: string): string => slug.replace(/-/g, '_');
    expect(lines.slice(0, 3).sort()).to.deep.equal(
      [
        ['migrate', slugs[0], schema(slugs[0]!), 'migrated', ['AddClientPhone1700000000003'], undefined],
        ['migrate', slugs[1], schema(slugs[1]!), 'migrated', ['AddClientPhone1700000000003'], undefined],
        ['migrate', slugs[2], schema(slugs[2]!), 'failed', [], 'AddClientPhone1700000000003'],
      ].sort(),
    );
    // The second run works only on the failed tenant (up-to-date ones are settled from the ledger: no message).
    expect(lines.slice(3)).to.deep.equal([
      ['migrate', slugs[2], schema(slugs[2]!), 'failed', [], 'AddClientPhone1700000000003'],
      ['revert', slugs[0], schema(slugs[0]!), 'reverted', ['AddClientPhone1700000000003'], undefined],
    ]);
    for (const m of messages) {
      expect(m.manager).to.equal(next);
      expect(m.durationMs).to.be.a('number').and.greaterThan(0);
    }
    for (const slug of slugs) await next.dropTenant(slug, { force: true });
  });
});
