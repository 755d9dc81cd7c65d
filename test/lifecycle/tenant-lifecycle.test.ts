import { expect } from 'chai';
import { Client as PgClient } from 'pg';
import { Client, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import {
  InvalidTenantStateError,
  TenantDataSourceManager,
  TenantNotActiveError,
  TenantProvisioningError,
  TenantSuspendedError,
  tenantContext,
  type TenantEventMap,
} from '../../src';
import { archiveSchemaName } from '../../src/naming/derived-schema-name';
import { startScratchDatabase } from '../../support/database';
import { adminQuery, openManager, schemaExists, tablesOf, uniqueSlug } from '../support/fixtures';
import { AddClientPhone1700000000003 } from '../support/extra-migrations';

const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

async function addClient(manager: TenantDataSourceManager, slug: string, name: string): Promise<void> {
  await manager.run(slug, () => tenantContext.getRepository(Client).save({ name, email: `${name.toLowerCase()}@${slug}.test` }));
}

async function clientNames(manager: TenantDataSourceManager, slug: string): Promise<string[]> {
  const clients = await manager.run(slug, () => tenantContext.getRepository(Client).find({ order: { id: 'ASC' } }));
  return clients.map((c) => c.name);
}

describe('Tenant lifecycle: suspend, resume, archive, restore, drop, events, seed', () => {
  it('a suspended tenant is refused with TenantSuspendedError, its data untouched; resumed, it is served again', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('susp');
    await manager.createTenant(slug);
    await addClient(manager, slug, 'Kept');
    const suspended = await manager.suspendTenant(slug);
    expect(suspended.status).to.equal('suspended');
    expect(await manager.suspendTenant(slug), 'suspending twice changes nothing').to.deep.equal(suspended);

    let ran = false;
    const error = await manager.run(slug, () => (ran = true)).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(TenantSuspendedError).and.instanceOf(TenantNotActiveError);
    expect(error).to.include({ code: 'TENANT_SUSPENDED', statusCode: 403, slug });
    expect(ran).to.equal(false);
    expect(await adminQuery(`SELECT name FROM "${schemaOf(slug)}".client`)).to.deep.equal([{ name: 'Kept' }]);

    expect((await manager.resumeTenant(slug)).status).to.equal('active');
    expect(await clientNames(manager, slug)).to.deep.equal(['Kept']);
    await expect(manager.restoreTenant(slug)).to.be.rejectedWith(InvalidTenantStateError, 'is active');
  });

  it('archive renames the schema to a reserved name (not served, data kept); restore brings it back and migrates it', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('arch');
    await manager.createTenant(slug);
    await addClient(manager, slug, 'Archived');
    await manager.archiveTenant(slug);
    const archive = archiveSchemaName(schemaOf(slug));
    expect(archive.length).to.be.at.most(63);
    expect(await schemaExists(schemaOf(slug))).to.equal(false);
    expect(await tablesOf(archive)).to.deep.equal(['client', 'migrations', 'project']);
    const refused = await manager.run(slug, () => 1).catch((e: unknown) => e);
    expect(refused).to.be.instanceOf(TenantNotActiveError).and.not.instanceOf(TenantSuspendedError);
    expect((refused as TenantNotActiveError).status).to.equal('archived');
    await expect(manager.suspendTenant(slug)).to.be.rejectedWith(InvalidTenantStateError, 'archived');

    // Restored by a manager whose code has one more migration: the restore applies it.
    const newer = await openManager({ tenantMigrations: [...tenantMigrations, AddClientPhone1700000000003] });
    expect((await newer.restoreTenant(slug)).status).to.equal('active');
    expect(await schemaExists(archive)).to.equal(false);
    expect(await clientNames(newer, slug)).to.deep.equal(['Archived']);
    const phone = await adminQuery("SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'client' AND column_name = 'phone'", [schemaOf(slug)]);
    expect(phone).to.have.length(1);
    expect((await newer.migrationStatus()).find((s) => s.slug === slug)?.pending).to.deep.equal([]);
  });

  it('dropTenant of an active tenant needs { force: true }; suspended and archived tenants drop without it', async () => {
    const manager = await openManager();
    const [active, suspended, archived] = [uniqueSlug('da'), uniqueSlug('ds'), uniqueSlug('dr')];
    for (const slug of [active, suspended, archived]) await manager.createTenant(slug);
    await expect(manager.dropTenant(active)).to.be.rejectedWith(InvalidTenantStateError, '{ force: true }');
    expect((await manager.getTenant(active))?.status).to.equal('active');
    expect(await clientNames(manager, active)).to.deep.equal([]);

    await manager.suspendTenant(suspended);
    await manager.dropTenant(suspended);
    await manager.archiveTenant(archived);
    await manager.dropTenant(archived);
    await manager.dropTenant(active, { force: true });
    for (const slug of [active, suspended, archived]) {
      expect(await manager.getTenant(slug)).to.equal(undefined);
      expect(await schemaExists(schemaOf(slug))).to.equal(false);
      expect(await schemaExists(archiveSchemaName(schemaOf(slug)))).to.equal(false);
    }
  });

  it('a tenant left "dropping" by a crash is not served, and dropTenant completes it', async () => {
    const manager = await openManager({ tenantRecordTtlMs: 0 });
    const slug = uniqueSlug('crash');
    await manager.createTenant(slug);
    // What a crash after the first steps leaves: marked dropping, some tables gone.
    await adminQuery("UPDATE public.tenants SET status = 'dropping' WHERE slug = $1", [slug]);
    await adminQuery(`DROP TABLE "${schemaOf(slug)}".project`);
    const refused = await manager.run(slug, () => 1).catch((e: unknown) => e);
    expect(refused).to.be.instanceOf(TenantNotActiveError);
    expect((refused as TenantNotActiveError).status).to.equal('dropping');
    await manager.dropTenant(slug);
    expect(await manager.getTenant(slug)).to.equal(undefined);
    expect(await schemaExists(schemaOf(slug))).to.equal(false);
  });

  it('emits events after each change, and a throwing listener breaks nothing', async () => {
    const manager = await openManager();
    const seen: Array<[string, string]> = [];
    const record = <E extends keyof TenantEventMap>(event: E) =>
      manager.on(event, (payload) => seen.push([event, 'tenant' in payload ? payload.tenant.slug : payload.slug]));
    for (const event of ['created', 'suspended', 'resumed', 'archived', 'restored', 'dropped'] as const) record(event);
    const off = manager.on('created', () => {
      throw new Error('listener bug');
    });
    const warnings: string[] = [];
    const onWarning = (warning: Error): void => void warnings.push(warning.message);
    process.on('warning', onWarning);
    try {
      const slug = uniqueSlug('ev');
      await manager.createTenant(slug);
      off();
      await manager.suspendTenant(slug);
      await manager.resumeTenant(slug);
      await manager.archiveTenant(slug);
      await manager.restoreTenant(slug);
      await manager.dropTenant(slug, { force: true });
      expect(seen).to.deep.equal([
        ['created', slug],
        ['suspended', slug],
        ['resumed', slug],
        ['archived', slug],
        ['restored', slug],
        ['dropped', slug],
      ]);
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings.some((w) => w.includes('listener bug'))).to.equal(true);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('fleet runs emit migrated and migration-failed per tenant', async () => {
    const registryTable = `ev_${uniqueSlug('r').replace(/-/g, '_')}`;
    const base = await openManager({ registryTable });
    const [good, bad] = [uniqueSlug('good'), uniqueSlug('bad')];
    await base.createTenant(good);
    await base.createTenant(bad);
    await adminQuery(`ALTER TABLE "${schemaOf(bad)}".client ADD COLUMN phone int`); // makes the new migration fail there
    const newer = await openManager({ registryTable, tenantMigrations: [...tenantMigrations, AddClientPhone1700000000003] });
    const events: string[] = [];
    newer.on('migrated', ({ slug, applied }) => events.push(`migrated ${slug} ${applied.join(',')}`));
    newer.on('migration-failed', ({ slug, error }) => events.push(`failed ${slug} ${error.migration} ${error.code}`));
    await newer.migrateTenants();
    expect(events.sort()).to.deep.equal(
      [`migrated ${good} AddClientPhone1700000000003`, `failed ${bad} AddClientPhone1700000000003 42701`].sort(),
    );
  });

  it('the seed hook runs inside the creation transaction: its rows are there, and its failure leaves nothing', async () => {
    const manager = await openManager({
      seed: async ({ tenant, manager: em, query }) => {
        await em.getRepository(Client).save({ name: 'Owner', email: `owner@${tenant.slug}.test` });
        await query("INSERT INTO project (name, client_id) SELECT 'Welcome', id FROM client WHERE name = 'Owner'");
      },
    });
    const slug = uniqueSlug('seed');
    await manager.createTenant(slug);
    expect(await clientNames(manager, slug)).to.deep.equal(['Owner']);
    const projects = await manager.run(slug, () => tenantContext.getRepository(Project).find({ relations: { client: true } }));
    expect(projects.map((p) => [p.name, p.client.name])).to.deep.equal([['Welcome', 'Owner']]);

    const failing = uniqueSlug('seedfail');
    const error = await manager
      .createTenant(failing, {
        seed: async ({ query }) => {
          await query("INSERT INTO client (name, email) VALUES ('Half', 'half@x.test')");
          throw new Error('seed data missing');
        },
      })
      .catch((e: unknown) => e);
    expect(error).to.be.instanceOf(TenantProvisioningError);
    expect((error as Error).message).to.include('seed data missing');
    expect(await manager.getTenant(failing)).to.equal(undefined);
    expect(await schemaExists(schemaOf(failing))).to.equal(false);
  });
});

describe('Dropping a big tenant in batches (own server, max_locks_per_transaction = 10)', () => {
  it('a single DROP SCHEMA ... CASCADE fails with out of shared memory; dropTenant drops it in batches', async function () {
    this.timeout(180_000);
    const server = await startScratchDatabase({
      forceEmbedded: true,
      settings: { max_locks_per_transaction: 10, max_connections: 20 },
    });
    const manager = new TenantDataSourceManager({
      dataSource: { type: 'postgres', url: server.url, poolSize: 4 },
      entities: [Client, Project, Plan],
      tenantMigrations,
      sharedMigrations,
      dropBatchSize: 10,
    });
    const admin = new PgClient({ connectionString: server.url });
    try {
      await manager.initialize();
      await admin.connect();
      const slug = uniqueSlug('big');
      const schema = schemaOf(slug);
      await manager.createTenant(slug);
      // 300 more tables, a few per transaction (creating them also takes locks).
      for (let batch = 0; batch < 60; batch += 1) {
        const statements = Array.from({ length: 5 }, (_, i) => `CREATE TABLE "${schema}".extra_${batch * 5 + i} (id serial PRIMARY KEY, note text)`);
        await admin.query(`BEGIN; ${statements.join('; ')}; COMMIT`);
      }
      expect((await tablesOf_(admin, schema)).length).to.equal(303);

      const single = await admin.query(`DROP SCHEMA "${schema}" CASCADE`).catch((e: unknown) => e);
      expect(single, 'the single statement must fail under these settings').to.be.instanceOf(Error);
      expect((single as { code?: string }).code).to.equal('53200'); // out of shared memory
      expect((single as Error).message).to.include('shared memory');
      expect((await tablesOf_(admin, schema)).length, 'the failed drop changed nothing').to.equal(303);

      await manager.dropTenant(slug, { force: true });
      expect(await manager.getTenant(slug)).to.equal(undefined);
      const left = await admin.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
      expect(left.rows).to.have.length(0);
    } finally {
      await admin.end().catch(() => undefined);
      await manager.destroy();
      await server.stop();
    }
  });
});

async function tablesOf_(admin: PgClient, schema: string): Promise<string[]> {
  const result = await admin.query("SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE'", [schema]);
  return result.rows.map((r: { table_name: string }) => r.table_name);
}
