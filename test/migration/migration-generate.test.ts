import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { tenantContext, type TenantDataSourceManager } from '../../src';
import { adminQuery, openManager } from '../support/fixtures';
import { loadGenerated, removeGenerated } from './load-generated';
import { schemaOf } from '../support/legacy-public-client';
import { GenInvoice, GenInvoiceTotals, GenInvoiceV2, GenLabel, GenPlan, InvoiceStatus, InvoiceStatusV2 } from './generate-model';

/**
 * migration:generate's round trip on a model with enums, jsonb, arrays, uuid
 * keys, many-to-many, a tenant-to-shared foreign key, indexes and a check
 * constraint: generate, apply to several tenants and to one created
 * afterwards, generate again (no changes), revert every tenant (the schema is
 * back as it was). Each test has its own shared schema and registry.
 */


/** Relations, types and indexes of a schema: what the round trip compares. */
async function schemaShape(schema: string): Promise<string[]> {
  const rows = await adminQuery<{ item: string }>(
    `SELECT 'rel:' || c.relname || ':' || c.relkind::text AS item FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1
     UNION ALL SELECT 'type:' || t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = $1 AND t.typtype = 'e'
     UNION ALL SELECT 'con:' || con.conname || ':' || con.contype::text FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace WHERE n.nspname = $1
     ORDER BY 1`,
    [schema],
  );
  return rows.map((row) => row.item);
}

describe('migration:generate (API): tenant migrations that are right for every tenant', () => {
  const token = randomBytes(3).toString('hex');
  const sharedSchema = `gen_shared_${token}`;
  const options = (tenantMigrations: Function[], sharedMigrations: Function[] = []) => ({
    entities: [GenPlan, GenLabel, GenInvoice, GenInvoiceTotals],
    tenantMigrations,
    sharedMigrations,
    sharedSchema,
    registryTable: `gen_tenants_${token}`,
    slugReuseDelayMs: 0,
  });

  after(async () => {
    await adminQuery(`DROP SCHEMA IF EXISTS "${sharedSchema}" CASCADE`);
    for (const slug of ['gen_a', 'gen_b', 'gen_c', 'gen_d']) await adminQuery(`DROP SCHEMA IF EXISTS "${slug}_${token}" CASCADE`);
    removeGenerated();
  });

  it('round trip: generate shared and tenant migrations, apply to tenants old and new, nothing left to generate, revert to the schema before', async () => {
    // The shared table first, generated with --shared against the shared schema.
    const bootstrap = await openManager(options([]));
    const shared = await bootstrap.generateMigration('CreatePlan', { shared: true, timestamp: 1_800_000_000_000, outputJs: true });
    expect(shared, 'the shared entity is new').not.to.equal(undefined);
    expect(shared!.className).to.equal('CreatePlan1800000000000');
    expect(shared!.fileName).to.equal('1800000000000-CreatePlan.js');
    expect(shared!.up.map((s) => s.sql).join('\n')).to.contain(`CREATE TABLE "${sharedSchema}"."gen_plan"`);
    await bootstrap.destroy();
    const sharedMigration = loadGenerated(shared!);

    const before = await openManager(options([], [sharedMigration]));
    const [a, b] = [`gen-a-${token}`, `gen-b-${token}`];
    const [sa, sb] = [a, b].map((slug) => slug.replace(/-/g, '_')) as [string, string];
    // A tenant that exists before the migration does (no tables yet).
    await before.createTenant(a);
    const shapeBefore = await schemaShape(sa);
    const tenant = await before.generateMigration('InvoicesAndLabels', { timestamp: 1_800_000_000_001 });
    expect(tenant).not.to.equal(undefined);
    const upSql = tenant!.up.map((s) => s.sql).join('\n');
    // Tenant objects unqualified, shared ones qualified, the throwaway schema nowhere.
    expect(upSql).to.contain('CREATE TYPE "gen_invoice_status_enum"');
    expect(upSql).to.contain('CREATE TABLE "gen_invoice"');
    expect(upSql).to.contain(`REFERENCES "${sharedSchema}"."gen_plan"("id")`);
    expect(upSql).not.to.match(/typeorm_tenants_gen_/);
    expect(upSql).not.to.contain('"public".');
    expect(upSql).not.to.contain(`"${sharedSchema}"."gen_invoice`);
    // The view's typeorm_metadata row names the schema the migration runs in, not the throwaway one.
    expect(tenant!.source).to.contain('CREATE VIEW "gen_invoice_totals"');
    expect(tenant!.source).to.contain('queryRunner.connection.driver.schema');
    const downSql = tenant!.down.map((s) => s.sql).join('\n');
    expect(downSql).to.contain('DROP TABLE "gen_invoice"');
    expect(downSql).to.contain('DROP TYPE "gen_invoice_status_enum"');
    // Nothing of the throwaway schema is left.
    expect(await adminQuery(`SELECT nspname FROM pg_namespace WHERE nspname LIKE 'typeorm\\_tenants\\_gen\\_%'`)).to.deep.equal([]);
    await before.destroy();

    const tenantMigration = loadGenerated(tenant!); // TypeScript, transpiled
    const manager: TenantDataSourceManager = await openManager(options([tenantMigration], [sharedMigration]));
    const report = await manager.migrateTenants();
    expect(report.results.map((r) => [r.slug, r.status])).to.deep.include([a, 'migrated']);
    await manager.createTenant(b); // created afterwards: gets it at creation
    const c = `gen-c-${token}`;
    await manager.createTenant(c);

    const [plan] = await manager.sharedDataSource.query(`INSERT INTO "${sharedSchema}".gen_plan (code) VALUES ('pro') RETURNING id`);
    for (const slug of [a, b, c]) {
      await manager.run(slug, async () => {
        const label = await tenantContext.getRepository(GenLabel).save({ name: `label-${slug}` });
        await tenantContext.getRepository(GenInvoice).save({
          number: `INV-${slug}`,
          status: InvoiceStatus.Sent,
          amountCents: 100,
          data: { slug },
          tags: ['x', slug],
          plan: { id: plan.id },
          labels: [label],
        });
      });
    }
    expect(await manager.run(c, () => tenantContext.getRepository(GenInvoiceTotals).find())).to.deep.equal([{ count: 1, total: 100 }]);
    expect(await adminQuery(`SELECT schema, name FROM "${schemaOf(c)}".typeorm_metadata`)).to.deep.equal([{ schema: schemaOf(c), name: 'gen_invoice_totals' }]);
    const seen = await manager.run(b, () => tenantContext.getRepository(GenInvoice).find({ relations: { labels: true, plan: true } }));
    expect(seen.map((i) => [i.number, i.status, i.tags, i.plan?.code, i.labels?.map((l) => l.name)])).to.deep.equal([
      [`INV-${b}`, 'sent', ['x', b], 'pro', [`label-${b}`]],
    ]);
    // The check constraint and the enum type live in each tenant, and work there.
    await expect(manager.run(a, () => tenantContext.getRepository(GenInvoice).save({ number: 'NEG', amountCents: -1 }))).to.be.rejectedWith(/check constraint/);
    for (const schema of [sa, sb]) {
      expect(await schemaShape(schema)).to.include.members(['type:gen_invoice_status_enum', 'rel:gen_invoice:r', 'rel:gen_invoice_labels_gen_label:r']);
    }
    expect((await schemaShape(sharedSchema)).filter((item) => item.startsWith('type:')), 'no tenant type in the shared schema').to.deep.equal([]);
    expect(await adminQuery(`SELECT typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public' AND typname LIKE 'gen_%'`)).to.deep.equal([]);

    // Nothing left to generate, for the tenant entities and for the shared ones.
    expect(await manager.generateMigration('Nothing')).to.equal(undefined);
    expect(await manager.generateMigration('Nothing', { shared: true })).to.equal(undefined);

    // The next version of the model: one more enum value (TypeORM recreates the type: ALTER TYPE ... ADD VALUE
    // could not be used in the transaction that adds it, and createTenant runs every migration in one), one more column.
    const next = await openManager({ ...options([tenantMigration], [sharedMigration]), entities: [GenPlan, GenLabel, GenInvoiceV2, GenInvoiceTotals] });
    const second = await next.generateMigration('VoidInvoices', { timestamp: 1_800_000_000_002, outputJs: true });
    expect(second).not.to.equal(undefined);
    const secondSql = second!.up.map((s) => s.sql).join('\n');
    expect(secondSql).to.contain('ADD "note" text');
    expect(secondSql).to.contain('RENAME TO "gen_invoice_status_enum_old"');
    expect(secondSql).not.to.contain('ADD VALUE');
    expect(secondSql).not.to.match(/typeorm_tenants_gen_|"public"\./);
    await next.destroy();
    const secondMigration = loadGenerated(second!);
    const upgraded = await openManager({ ...options([tenantMigration, secondMigration], [sharedMigration]), entities: [GenPlan, GenLabel, GenInvoiceV2, GenInvoiceTotals] });
    const upgrade = await upgraded.migrateTenants();
    expect(upgrade.results.filter((r) => r.status === 'migrated').map((r) => r.slug).sort()).to.deep.equal([a, b, c].sort());
    const d = `gen-d-${token}`;
    // Both migrations and a seed using the new value, in one creation transaction (ADD VALUE would fail here with 55P04).
    await upgraded.createTenant(d, {
      seed: ({ manager }) => manager.getRepository(GenInvoiceV2).save({ number: 'V-1', status: InvoiceStatusV2.Void, amountCents: 0, note: 'void' }).then(() => undefined),
    });
    expect(await upgraded.run(d, () => tenantContext.getRepository(GenInvoiceV2).findOneByOrFail({ number: 'V-1' }))).to.include({ status: 'void' });
    expect(await upgraded.run(a, () => tenantContext.getRepository(GenInvoiceV2).findOneByOrFail({ number: `INV-${a}` }))).to.include({ status: 'sent', note: null });
    expect(await upgraded.generateMigration('Nothing')).to.equal(undefined);
    // d holds a 'void' invoice: its down() cannot cast it back to the old type, so d fails (and is left as it was); the others revert.
    const undone = await upgraded.revertTenants();
    expect(undone.results.filter((r) => r.status === 'reverted').map((r) => r.slug).sort()).to.deep.equal([a, b, c].sort());
    const failed = undone.results.find((r) => r.slug === d);
    expect(failed?.status).to.equal('failed');
    expect(failed?.error).to.include({ code: '22P02' });
    expect(await upgraded.run(d, () => tenantContext.getRepository(GenInvoiceV2).count())).to.equal(1);
    await upgraded.dropTenant(d, { force: true });
    await upgraded.destroy();

    // Revert every tenant: each schema is back as it was before the migration.
    const reverted = await manager.revertTenants();
    expect(reverted.results.filter((r) => r.status === 'reverted').map((r) => r.slug).sort()).to.deep.equal([a, b, c].sort());
    for (const schema of [sa, sb]) expect(await schemaShape(schema)).to.deep.equal(shapeBefore);
  });

  it('refuses a name that cannot be a class name, before any SQL', async () => {
    const manager = await openManager(options([]));
    await expect(manager.generateMigration('1 bad name')).to.be.rejectedWith(/must start with a letter/);
  });
});
