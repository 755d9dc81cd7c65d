import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import type { MigrationInterface, QueryRunner } from 'typeorm';
import { tenantMigrations } from '../../migrations';
import type { FleetReport, FleetTenantResult, TenantDataSourceManager } from '../../src';
import { adminQuery, createTenants, openManager } from '../support/fixtures';

/**
 * Builds a unique index on client(name), then makes plan_id NOT NULL: it
 * fails with 23505 (and PostgreSQL's DETAIL naming the duplicated key) in a
 * tenant with two clients of one name, and with 23502 (naming the column) in
 * a tenant with a client without a plan.
 */
class UniqueClientName1700000000003 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE UNIQUE INDEX client_name_key ON client (name)');
    await queryRunner.query('ALTER TABLE client ALTER COLUMN plan_id SET NOT NULL');
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('ALTER TABLE client ALTER COLUMN plan_id DROP NOT NULL');
    await queryRunner.query('DROP INDEX client_name_key');
  }
}

/** A migration whose down() drops a table another one references: 2BP01, with PostgreSQL's DETAIL and HINT. */
class NoteTable1700000000003 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE TABLE note (id serial PRIMARY KEY)');
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE client');
  }
}

const BASE = tenantMigrations.map((m) => m.name);
const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

/** A fleet in a registry of its own, so the fleet is exactly the tenants created here. */
async function fleet(count: number, prefix: string): Promise<{ base: TenantDataSourceManager; slugs: string[]; registryTable: string }> {
  const registryTable = `rep_${randomBytes(4).toString('hex')}`;
  const base = await openManager({ registryTable });
  const slugs = (await createTenants(base, count, prefix)).sort();
  return { base, slugs, registryTable };
}

function statuses(report: FleetReport): Array<[string, string]> {
  return report.results.map((r) => [r.slug, r.status]);
}

/** Counts the queries sent through the manager's shared DataSource while `work` runs. */
async function sharedQueriesDuring(manager: TenantDataSourceManager, work: () => Promise<unknown>): Promise<string[]> {
  const dataSource = manager.sharedDataSource;
  const original = dataSource.query;
  const sent: string[] = [];
  dataSource.query = function (this: typeof dataSource, ...args: Parameters<typeof original>) {
    sent.push(String(args[0]));
    return original.apply(this, args);
  } as typeof original;
  try {
    await work();
  } finally {
    dataSource.query = original;
  }
  return sent;
}

describe('Fleet reports account for every tenant in scope', () => {
  it('a no-op migrateTenants over 300 tenants reports each one up-to-date, from one ledger query, opening no DataSource', async function () {
    this.timeout(180_000);
    const { base, slugs } = await fleet(300, 'noop');
    const missesBefore = base.stats().misses;
    let report: FleetReport | undefined;
    const queries = await sharedQueriesDuring(base, async () => {
      report = await base.migrateTenants();
    });
    expect(report!.results.map((r) => r.slug)).to.deep.equal(slugs);
    expect(report!.results.every((r) => r.status === 'up-to-date' && r.applied.length === 0 && r.error === undefined)).to.equal(true);
    expect(report!.totals).to.include({ tenants: 300, upToDate: 300, migrated: 0, reverted: 0, failed: 0, skipped: 0 });
    expect(queries, 'the scope and the pending check are one query').to.have.length(1);
    expect(base.stats().misses, 'no tenant DataSource opened').to.equal(missesBefore);

    const named = await base.migrateTenants({ tenants: [slugs[7]!, slugs[3]!, slugs[7]!] });
    expect(statuses(named), 'named tenants: each once, by slug').to.deep.equal([
      [slugs[3], 'up-to-date'],
      [slugs[7], 'up-to-date'],
    ]);
    expect(named.totals).to.include({ tenants: 2, upToDate: 2 });
  });

  it('a no-op over 10,000 tenants answers in well under a second, every tenant with its line (registry and ledger rows written directly)', async function () {
    this.timeout(120_000);
    const registryTable = `big_${randomBytes(4).toString('hex')}`;
    const manager = await openManager({ registryTable });
    // Rows only, no schemas: a run that opened any tenant would fail it.
    await adminQuery(
      `INSERT INTO public."${registryTable}" (slug, schema_name, name)
       SELECT 'big-' || i, 'big_' || i, 'big-' || i FROM generate_series(1, 10000) AS i`,
    );
    await adminQuery(
      `INSERT INTO public."${registryTable}_migrations" (slug, name)
       SELECT 'big-' || i, m FROM generate_series(1, 10000) AS i, unnest($1::text[]) AS m`,
      [BASE],
    );
    await manager.migrateTenants(); // warm-up: the first run plans the query
    const samples: number[] = [];
    let report: FleetReport | undefined;
    for (let i = 0; i < 5; i += 1) {
      const started = performance.now();
      report = await manager.migrateTenants();
      samples.push(performance.now() - started);
    }
    samples.sort((a, b) => a - b);
    const median = samples[2]!;
    console.log(`      no-op migrateTenants over 10,000 tenants: median ${median.toFixed(1)} ms (${samples.map((s) => s.toFixed(1)).join(', ')})`);
    expect(report!.results).to.have.length(10_000);
    expect(report!.totals).to.include({ tenants: 10_000, upToDate: 10_000, failed: 0, skipped: 0 });
    expect(new Set(report!.results.map((r) => r.slug)).size).to.equal(10_000);
    expect(median).to.be.lessThan(500);

    // One tenant missing a migration in the ledger is the only one processed; its schema does not exist, so it fails.
    await adminQuery(`DELETE FROM public."${registryTable}_migrations" WHERE slug = 'big-5000' AND name = $1`, [BASE[1]]);
    const one = await manager.migrateTenants();
    expect(one.totals).to.include({ tenants: 10_000, upToDate: 9_999, failed: 1 });
    expect(one.results.find((r) => r.status === 'failed')?.slug).to.equal('big-5000');
    await adminQuery(`DELETE FROM public."${registryTable}"`);
  });

  it('a failed tenant\'s error carries PostgreSQL\'s detail, constraint, table and schema (23505) and column (23502), through JSON', async function () {
    this.timeout(120_000);
    const { slugs, registryTable } = await fleet(3, 'err');
    const [duplicated, missingPlan, empty] = slugs as [string, string, string];
    await adminQuery(`INSERT INTO "${schemaOf(duplicated)}".client (name, email) VALUES ('DUP-1', 'a@x.test'), ('DUP-1', 'b@x.test')`);
    await adminQuery(`INSERT INTO "${schemaOf(missingPlan)}".client (name, email) VALUES ('Solo', 's@x.test')`);
    const next = await openManager({ registryTable, tenantMigrations: [...tenantMigrations, UniqueClientName1700000000003] });

    const report = JSON.parse(JSON.stringify(await next.migrateTenants({ concurrency: 2 }))) as FleetReport;
    const lineOf = (slug: string): FleetTenantResult => report.results.find((r) => r.slug === slug)!;
    expect(lineOf(duplicated).status).to.equal('failed');
    expect(lineOf(duplicated).error).to.deep.equal({
      migration: 'UniqueClientName1700000000003',
      message: 'could not create unique index "client_name_key"',
      code: '23505',
      detail: 'Key (name)=(DUP-1) is duplicated.',
      schema: schemaOf(duplicated),
      table: 'client',
      constraint: 'client_name_key',
    });
    expect(lineOf(missingPlan).error).to.deep.equal({
      migration: 'UniqueClientName1700000000003',
      message: 'column "plan_id" of relation "client" contains null values',
      code: '23502',
      schema: schemaOf(missingPlan),
      table: 'client',
      column: 'plan_id',
    });
    expect(lineOf(empty)).to.deep.include({ status: 'migrated', applied: ['UniqueClientName1700000000003'] });
    expect(lineOf(empty).error).to.equal(undefined);
    expect(report.totals).to.include({ tenants: 3, migrated: 1, failed: 2, upToDate: 0, skipped: 0 });
  });

  it('revertTenants: every served tenant gets a line, a named archived one is skipped, and a failing down() carries detail and hint', async function () {
    this.timeout(120_000);
    const { slugs, registryTable } = await fleet(3, 'rvt');
    const next = await openManager({ registryTable, tenantMigrations: [...tenantMigrations, NoteTable1700000000003] });
    await next.migrateTenants({ tenants: [slugs[0]!] });
    await adminQuery(`UPDATE public."${registryTable}" SET status = 'archived' WHERE slug = $1`, [slugs[2]]);

    const report = await next.revertTenants();
    expect(statuses(report), 'the archived tenant is out of scope unless named').to.deep.equal([
      [slugs[0], 'failed'],
      [slugs[1], 'reverted'],
    ]);
    expect(report.totals).to.include({ tenants: 2, reverted: 1, failed: 1, upToDate: 0, skipped: 0 });
    expect(report.results[0]!.error).to.deep.include({
      migration: 'NoteTable1700000000003',
      code: '2BP01',
      detail: 'constraint project_client_id_fkey on table project depends on table client',
      hint: 'Use DROP ... CASCADE to drop the dependent objects too.',
    });
    expect(report.results[1]!.applied).to.deep.equal(['CreateProject1700000000002']);

    const named = await next.revertTenants({ tenants: [slugs[2]!, slugs[1]!] });
    expect(statuses(named)).to.deep.equal([
      [slugs[1], 'reverted'],
      [slugs[2], 'skipped'],
    ]);
    expect(named.results[1]!.error?.message).to.equal('Not reverted: the tenant is archived.');
    expect(named.totals).to.include({ tenants: 2, reverted: 1, skipped: 1 });
  });
});
