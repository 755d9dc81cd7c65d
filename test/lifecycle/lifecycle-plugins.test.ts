import { expect } from 'chai';
import {
  InvalidArgumentError,
  TenantLifecycleHookError,
  tenantContext,
  tenantIncarnation,
  type LifecycleTenant,
  type TenantLifecyclePlugin,
} from '../../src';
import { archiveSchemaName } from '../../src/naming/derived-schema-name';
import { Client } from '../../entities';
import { adminQuery, openManager, schemaExists, uniqueSlug } from '../support/fixtures';

const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

/** A plugin that records every call, and fails a step while `failing` names it. */
function recordingPlugin(name = 'recorder'): TenantLifecyclePlugin & { calls: Array<[string, LifecycleTenant]>; failing: Set<string> } {
  const calls: Array<[string, LifecycleTenant]> = [];
  const failing = new Set<string>();
  const step = (stepName: string) => async (tenant: LifecycleTenant) => {
    calls.push([stepName, tenant]);
    if (failing.has(stepName)) throw new Error(`${stepName} refused by the test`);
  };
  return { name, calls, failing, onDropping: step('onDropping'), onArchived: step('onArchived'), onRestored: step('onRestored') };
}

describe('Lifecycle plugins: manager.use()', () => {
  it('onDropping runs while the tenant is dropping and its tables still exist, with its incarnation', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('plug');
    const created = await manager.createTenant(slug);
    const seen: Array<{ status: unknown; tables: number; tenant: LifecycleTenant }> = [];
    manager.use({
      name: 'probe',
      async onDropping(tenant) {
        const [row] = await adminQuery(`SELECT status FROM public.tenants WHERE slug = $1`, [slug]);
        const [count] = await adminQuery<{ n: number }>(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = $1`, [tenant.schemaName]);
        seen.push({ status: row?.status, tables: count.n, tenant });
      },
    });
    await manager.dropTenant(slug, { force: true });
    expect(seen).to.have.length(1);
    expect(seen[0].status).to.equal('dropping');
    expect(seen[0].tables, 'the hook runs before the relations are dropped').to.be.greaterThan(0);
    expect(seen[0].tenant).to.deep.equal({ slug, schemaName: schemaOf(slug), incarnation: tenantIncarnation(created) });
    expect(seen[0].tenant.incarnation).to.equal(created.createdAt.getTime().toString(36));
    expect(await schemaExists(schemaOf(slug))).to.equal(false);
  });

  it('a failing onDropping leaves the tenant dropping with its data; dropTenant again calls it again and completes', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('plugf');
    await manager.createTenant(slug);
    await manager.run(slug, () => tenantContext.getRepository(Client).save({ name: 'Kept', email: 'kept@x.test' }));
    const first = recordingPlugin('first');
    const second = recordingPlugin('second');
    manager.use(first);
    manager.use(second);
    first.failing.add('onDropping');

    const error = await manager.dropTenant(slug, { force: true }).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(TenantLifecycleHookError);
    expect(error).to.include({ code: 'TENANT_LIFECYCLE_HOOK_FAILED', statusCode: 500, plugin: 'first', step: 'onDropping', slug });
    expect((error as Error).message).to.include('onDropping refused by the test').and.include(`dropTenant("${slug}") again`);
    expect(((error as Error).cause as Error).message).to.equal('onDropping refused by the test');
    expect(second.calls, 'the plugins after the failing one are not called').to.have.length(0);
    expect((await manager.getTenant(slug))?.status).to.equal('dropping');
    expect(await adminQuery(`SELECT name FROM "${schemaOf(slug)}".client`)).to.deep.equal([{ name: 'Kept' }]);

    first.failing.clear();
    await manager.dropTenant(slug);
    expect(first.calls.map(([step]) => step)).to.deep.equal(['onDropping', 'onDropping']);
    expect(second.calls.map(([step]) => step)).to.deep.equal(['onDropping']);
    expect(await manager.getTenant(slug)).to.equal(undefined);
    expect(await schemaExists(schemaOf(slug))).to.equal(false);
  });

  it('onArchived after the archive committed (again on an archived tenant, to retry); onRestored after restore', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('pluga');
    const created = await manager.createTenant(slug);
    const plugin = recordingPlugin();
    manager.use(plugin);
    plugin.failing.add('onArchived');

    const error = await manager.archiveTenant(slug).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(TenantLifecycleHookError).and.include({ step: 'onArchived', plugin: 'recorder' });
    expect((await manager.getTenant(slug))?.status, 'the archive committed before the hook ran').to.equal('archived');
    expect(await schemaExists(archiveSchemaName(schemaOf(slug)))).to.equal(true);

    plugin.failing.clear();
    expect((await manager.archiveTenant(slug)).status).to.equal('archived');
    expect((await manager.restoreTenant(slug)).status).to.equal('active');
    expect(plugin.calls.map(([step]) => step)).to.deep.equal(['onArchived', 'onArchived', 'onRestored']);
    for (const [, tenant] of plugin.calls) expect(tenant.incarnation).to.equal(tenantIncarnation(created));
    expect(await manager.run(slug, () => tenantContext.current()?.slug)).to.equal(slug);
  });

  it('suspend and resume call no hook; a removed plugin is not called; a recreated slug has another incarnation', async () => {
    const manager = await openManager({ slugReuseDelayMs: 0 });
    const slug = uniqueSlug('plugr');
    const first = await manager.createTenant(slug);
    const plugin = recordingPlugin();
    const remove = manager.use(plugin);
    await manager.suspendTenant(slug);
    await manager.resumeTenant(slug);
    expect(plugin.calls).to.have.length(0);
    remove();
    await manager.dropTenant(slug, { force: true });
    expect(plugin.calls).to.have.length(0);

    const second = await manager.createTenant(slug);
    expect(tenantIncarnation(second)).to.not.equal(tenantIncarnation(first));
  });

  it('use() refuses a plugin without a name, a hook that is not a function, and a name in use', async () => {
    const manager = await openManager();
    expect(() => manager.use({ name: '' })).to.throw(InvalidArgumentError, 'non-empty "name"');
    expect(() => manager.use(null as never)).to.throw(InvalidArgumentError, 'plugin object');
    expect(() => manager.use({ name: 'x', onDropping: 'yes' as never })).to.throw(InvalidArgumentError, 'onDropping must be a function');
    manager.use({ name: 'x' });
    expect(() => manager.use({ name: 'x' })).to.throw(InvalidArgumentError, 'already in use');
  });
});
