import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import type { MigrationInterface, QueryRunner } from 'typeorm';
import { tenantMigrations } from '../../migrations';
import {
  InvalidTenantNameError,
  TenantMigrationError,
  TenantNotFoundError,
  type FleetReport,
  type TenantDataSourceManager,
} from '../../src';
import { adminQuery, createTenants, openManager } from '../support/fixtures';
import { AddClientPhone1700000000003 } from '../support/extra-migrations';

/** A migration whose down() fails. */
class IrreversibleStep1700000000004 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE TABLE note (id serial PRIMARY KEY)');
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE no_such_note_table');
  }
}

const NEW_MIGRATION = 'AddClientPhone1700000000003';

/**
 * Fleet tests use a registry of their own (the registryTable option), so the
 * fleet is exactly the tenants they create.
 */
async function fleet(count: number, prefix: string): Promise<{ base: TenantDataSourceManager; next: TenantDataSourceManager; slugs: string[]; registryTable: string }> {
  const registryTable = `fleet_${randomBytes(4).toString('hex')}`;
  const base = await openManager({ registryTable });
  const slugs = (await createTenants(base, count, prefix)).sort();
  const next = await openManager({ registryTable, tenantMigrations: [...tenantMigrations, AddClientPhone1700000000003] });
  return { base, next, slugs, registryTable };
}

const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

async function hasPhoneColumn(slug: string): Promise<boolean> {
  const rows = await adminQuery("SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'client' AND column_name = 'phone'", [schemaOf(slug)]);
  return rows.length === 1;
}

async function appliedIn(slug: string): Promise<string[]> {
  const rows = await adminQuery<{ name: string }>(`SELECT name FROM "${schemaOf(slug)}".migrations ORDER BY id`);
  return rows.map((r) => r.name);
}

async function breakTenant(slug: string): Promise<void> {
  await adminQuery(`INSERT INTO "${schemaOf(slug)}".client (name, email) VALUES ('Upper', 'UPPER@X.TEST')`);
}

function byStatus(report: FleetReport, status: string): string[] {
  return report.results.filter((r) => r.status === status).map((r) => r.slug);
}

describe('Fleet migrations: migrateTenants, the ledger, revert', () => {
  it('50 tenants, a migration failing in 3: 47 migrated, 3 failed and untouched; a rerun after the fix migrates exactly those 3', async function () {
    this.timeout(120_000);
    const { next, slugs } = await fleet(50, 'fl');
    const broken = [slugs[5]!, slugs[20]!, slugs[41]!];
    for (const slug of broken) await breakTenant(slug);

    const first = await next.migrateTenants({ concurrency: 4 });
    expect(first.totals).to.include({ tenants: 50, migrated: 47, failed: 3, skipped: 0, upToDate: 0 });
    expect(byStatus(first, 'failed')).to.deep.equal([...broken].sort());
    for (const result of first.results.filter((r) => r.status === 'failed')) {
      expect(result.error).to.deep.include({ migration: NEW_MIGRATION, code: '23514' });
      expect(result.error?.message).to.include('client_email_lower');
      expect(result.applied).to.deep.equal([]);
    }
    for (const result of first.results.filter((r) => r.status === 'migrated')) expect(result.applied).to.deep.equal([NEW_MIGRATION]);
    expect(JSON.parse(JSON.stringify(first)).results).to.have.length(50);

    for (const slug of broken) {
      expect(await hasPhoneColumn(slug), `${slug} untouched`).to.equal(false);
      expect(await appliedIn(slug)).to.deep.equal(['CreateClient1700000000001', 'CreateProject1700000000002']);
    }
    expect(await hasPhoneColumn(slugs[0]!)).to.equal(true);

    const status = await next.migrationStatus();
    expect(status.filter((s) => s.pending.length > 0).map((s) => s.slug)).to.deep.equal([...broken].sort());

    for (const slug of broken) await adminQuery(`UPDATE "${schemaOf(slug)}".client SET email = lower(email)`);
    const second = await next.migrateTenants();
    expect(second.results.map((r) => r.slug), 'every tenant has its line').to.deep.equal(slugs);
    expect(byStatus(second, 'migrated'), 'only the 3 fixed ones are retried').to.deep.equal([...broken].sort());
    expect(second.totals).to.include({ tenants: 50, migrated: 3, upToDate: 47, failed: 0, skipped: 0 });

    const third = await next.migrateTenants();
    expect(third.results.map((r) => [r.slug, r.status]), 'nothing pending: every tenant up to date').to.deep.equal(slugs.map((s) => [s, 'up-to-date']));
    expect(third.totals).to.include({ tenants: 50, upToDate: 50, migrated: 0, failed: 0 });
    for (const slug of slugs) expect(await appliedIn(slug)).to.have.length(3);
  });

  it('two migrateTenants() at once over 30 tenants: each migration applied exactly once, no error', async function () {
    this.timeout(120_000);
    const { next, slugs, registryTable } = await fleet(30, 'race');
    const other = await openManager({ registryTable, tenantMigrations: [...tenantMigrations, AddClientPhone1700000000003] });
    const [a, b] = await Promise.all([next.migrateTenants({ concurrency: 3 }), other.migrateTenants({ concurrency: 3 })]);
    const failed = [...a.results, ...b.results].filter((r) => r.status === 'failed');
    expect(failed, JSON.stringify(failed)).to.deep.equal([]);
    const migrated = [...byStatus(a, 'migrated'), ...byStatus(b, 'migrated')].sort();
    expect(migrated, 'every tenant migrated by exactly one of the runs').to.deep.equal(slugs);
    for (const slug of slugs) expect(await appliedIn(slug)).to.deep.equal([...tenantMigrations.map((m) => m.name), NEW_MIGRATION]);
  });

  it('waves stop after a failing wave; stopOnError stops after the first failure; the rest is skipped', async () => {
    const { next, slugs } = await fleet(20, 'wave');
    await breakTenant(slugs[1]!); // in the second wave: [1] then 10% (2 tenants)
    const waved = await next.migrateTenants({ waves: [1, '10%'], concurrency: 2 });
    expect(byStatus(waved, 'migrated')).to.deep.equal([slugs[0], slugs[2]]);
    expect(byStatus(waved, 'failed')).to.deep.equal([slugs[1]]);
    expect(byStatus(waved, 'skipped')).to.deep.equal(slugs.slice(3));
    for (const slug of slugs.slice(3)) expect(await hasPhoneColumn(slug)).to.equal(false);

    const serial = await next.migrateTenants({ stopOnError: true, concurrency: 1 });
    // Pending now: slugs[1] (still broken) first, then slugs[3..].
    expect(byStatus(serial, 'failed')).to.deep.equal([slugs[1]]);
    expect(byStatus(serial, 'skipped')).to.deep.equal(slugs.slice(3));
    expect(byStatus(serial, 'up-to-date')).to.deep.equal([slugs[0], slugs[2]]);
    expect(serial.totals).to.include({ tenants: 20, migrated: 0, upToDate: 2, failed: 1, skipped: 17 });
  });

  it('createTenant writes the ledger; migrationStatus shows applied and pending per tenant', async () => {
    const { next, slugs } = await fleet(3, 'stat');
    const before = await next.migrationStatus();
    expect(before.map((s) => s.slug)).to.deep.equal(slugs);
    for (const s of before) {
      expect(s.applied).to.deep.equal(['CreateClient1700000000001', 'CreateProject1700000000002']);
      expect(s.pending).to.deep.equal([NEW_MIGRATION]);
    }
    await next.migrateTenants({ tenants: [slugs[0]!] });
    const after = await next.migrationStatus();
    expect(after.find((s) => s.slug === slugs[0])?.pending).to.deep.equal([]);
    expect(after.find((s) => s.slug === slugs[1])?.pending).to.deep.equal([NEW_MIGRATION]);
  });

  it('revertTenant undoes the last migration in the tenant and the ledger; revertTenants does it over a list', async () => {
    const { next, slugs } = await fleet(3, 'rev');
    await next.migrateTenants();
    const reverted = await next.revertTenant(slugs[0]!);
    expect(reverted).to.deep.include({ slug: slugs[0], status: 'reverted', applied: [NEW_MIGRATION] });
    expect(await hasPhoneColumn(slugs[0]!)).to.equal(false);
    expect((await next.migrationStatus()).find((s) => s.slug === slugs[0])?.pending).to.deep.equal([NEW_MIGRATION]);

    const again = await next.migrateTenants();
    expect(again.results.map((r) => [r.slug, r.status])).to.deep.equal([
      [slugs[0], 'migrated'],
      [slugs[1], 'up-to-date'],
      [slugs[2], 'up-to-date'],
    ]);

    const fleetRevert = await next.revertTenants({ tenants: [slugs[2]!, slugs[1]!] });
    expect(fleetRevert.results.map((r) => [r.slug, r.status])).to.deep.equal([
      [slugs[1], 'reverted'],
      [slugs[2], 'reverted'],
    ]);
    expect(fleetRevert.totals).to.include({ tenants: 2, reverted: 2, failed: 0 });
    expect(await hasPhoneColumn(slugs[1]!)).to.equal(false);
    expect(await hasPhoneColumn(slugs[0]!)).to.equal(true);

    await expect(next.revertTenant('no-such-tenant-x')).to.be.rejectedWith(TenantNotFoundError);
  });

  it('a failing down() throws TenantMigrationError naming it, and leaves the tenant as it was', async () => {
    const { next, slugs, registryTable } = await fleet(1, 'irr');
    const withNote = await openManager({
      registryTable,
      tenantMigrations: [...tenantMigrations, AddClientPhone1700000000003, IrreversibleStep1700000000004],
    });
    await withNote.migrateTenants();
    const error = await withNote.revertTenant(slugs[0]!).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(TenantMigrationError);
    expect((error as TenantMigrationError).migration).to.equal('IrreversibleStep1700000000004');
    expect((error as TenantMigrationError).sqlState).to.equal('42P01');
    expect(await appliedIn(slugs[0]!)).to.have.length(4);
    expect((await next.migrationStatus())[0]?.applied).to.include('IrreversibleStep1700000000004');
  });

  it('the ledger is rebuilt from the tenants\' own migrations tables when it drifts', async () => {
    const { next, slugs, registryTable } = await fleet(3, 'led');
    await next.migrateTenants();
    await adminQuery(`DELETE FROM public."${registryTable}_migrations" WHERE slug = $1`, [slugs[1]]);
    const drifted = await next.migrationStatus();
    expect(drifted.find((s) => s.slug === slugs[1])?.applied).to.deep.equal([]);

    // The ledger says pending; the tenant's own table says done: nothing is applied twice.
    const rerun = await next.migrateTenants();
    expect(rerun.results.map((r) => [r.slug, r.status, r.applied])).to.deep.equal(slugs.map((s) => [s, 'up-to-date', []]));
    expect(rerun.results[1]!.ms, 'the drifted tenant was opened and checked').to.be.greaterThan(0);
    expect(rerun.results[0]!.ms, 'the others came from the ledger').to.equal(0);
    expect(await appliedIn(slugs[1]!)).to.have.length(3);

    await adminQuery(`DELETE FROM public."${registryTable}_migrations"`);
    const reconciled = await next.reconcileMigrationLedger();
    expect(reconciled.totals).to.include({ tenants: 3, failed: 0 });
    expect((await next.migrationStatus()).every((s) => s.pending.length === 0)).to.equal(true);
  });

  it('named tenants are validated before anything runs; archived ones are skipped; a no-op run opens no DataSource', async () => {
    const { next, slugs, registryTable } = await fleet(3, 'nam');
    await expect(next.migrateTenants({ tenants: [slugs[0]!, 'Bad Slug'] })).to.be.rejectedWith(InvalidTenantNameError);
    await expect(next.migrateTenants({ tenants: [slugs[0]!, 'nobody-here'] })).to.be.rejectedWith(TenantNotFoundError);
    expect(await hasPhoneColumn(slugs[0]!), 'nothing ran').to.equal(false);

    await adminQuery(`UPDATE public."${registryTable}" SET status = 'archived' WHERE slug = $1`, [slugs[2]]);
    const report = await next.migrateTenants({ tenants: [slugs[0]!, slugs[2]!] });
    expect(report.results.map((r) => [r.slug, r.status])).to.deep.equal([
      [slugs[0], 'migrated'],
      [slugs[2], 'skipped'],
    ]);
    expect(report.results[1]?.error?.message).to.include('archived');

    await next.migrateTenants();
    const missesBefore = next.stats().misses;
    const noop = await next.migrateTenants();
    expect(noop.results, 'the served tenants, each up to date; the archived one is out of scope unless named').to.deep.equal([
      { slug: slugs[0], status: 'up-to-date', applied: [], ms: 0 },
      { slug: slugs[1], status: 'up-to-date', applied: [], ms: 0 },
    ]);
    expect(next.stats().misses).to.equal(missesBefore);

    const reconciled = await next.reconcileMigrationLedger();
    expect(reconciled.results.map((r) => [r.slug, r.status])).to.deep.equal([
      [slugs[0], 'up-to-date'],
      [slugs[1], 'up-to-date'],
      [slugs[2], 'skipped'],
    ]);
    expect(reconciled.results[2]?.error?.message).to.equal('Not reconciled: the tenant is archived.');
  });
});
