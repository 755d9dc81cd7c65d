import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { InvalidArgumentError, TenantNotFoundError, type TenantDataSourceManager, type TenantDataSourceManagerOptions } from '../../src';
import { adminQuery, createTenants, openManager } from '../support/fixtures';

const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

/** A fleet in a registry of its own; tenant i gets i+1 clients named `c<i>-<n>`. */
async function fleet(
  count: number,
  prefix: string,
  overrides: Partial<TenantDataSourceManagerOptions> = {},
): Promise<{ manager: TenantDataSourceManager; slugs: string[] }> {
  const manager = await openManager({ registryTable: `faq_${randomBytes(4).toString('hex')}`, ...overrides });
  const slugs = (await createTenants(manager, count, prefix)).sort();
  for (const [i, slug] of slugs.entries()) {
    for (let n = 0; n <= i; n += 1) {
      await adminQuery(`INSERT INTO "${schemaOf(slug)}".client (name, email) VALUES ($1, $2)`, [`c${i}-${n}`, `${n}@${slug}.test`]);
    }
  }
  return { manager, slugs };
}

describe('queryAcrossTenants()', () => {
  it("returns every tenant's rows with a tenant column, tenants in slug order, parameters passed", async () => {
    const { manager, slugs } = await fleet(3, 'qa');
    const counted = await manager.queryAcrossTenants<{ n: number }>('SELECT count(*)::int AS n FROM client');
    expect(counted.rows).to.deep.equal(slugs.map((tenant, i) => ({ tenant, n: i + 1 })));
    expect(counted.failures).to.deep.equal([]);
    expect(counted.totals).to.include({ tenants: 3, done: 3, failed: 0, skipped: 0, rows: 3 });
    const found = await manager.queryAcrossTenants('SELECT email FROM client WHERE name LIKE $1 ORDER BY email', ['%-1']);
    expect(found.rows).to.deep.equal([
      { tenant: slugs[1], email: `1@${slugs[1]}.test` },
      { tenant: slugs[2], email: `1@${slugs[2]}.test` },
    ]);
  });

  it('a write fails in each tenant (read-only transaction, 25006) and is not applied: no row is there afterwards', async () => {
    const { manager, slugs } = await fleet(2, 'qw');
    for (const sql of [
      "INSERT INTO client (name, email) VALUES ('intruder', 'x@x') RETURNING id",
      "WITH w AS (INSERT INTO client (name, email) VALUES ('intruder', 'x@x') RETURNING id) SELECT * FROM w",
      "UPDATE client SET name = 'intruder' RETURNING id",
    ]) {
      const result = await manager.queryAcrossTenants(sql);
      expect(result.rows, sql).to.deep.equal([]);
      expect(result.failures.map((f) => [f.slug, f.status, f.error.code]), sql).to.deep.equal(slugs.map((s) => [s, 'failed', '25006']));
    }
    const upgrade = await manager.queryAcrossTenants(
      "WITH w AS (INSERT INTO client (name, email) VALUES ('intruder', 'x@x') RETURNING id) SELECT set_config('transaction_read_only', 'off', true) AS ro, (SELECT count(*) FROM w) AS n",
    );
    expect(upgrade.failures.map((f) => f.error.code), 'a statement cannot switch its transaction back to read-write').to.deep.equal(['25006', '25006']);
    for (const slug of slugs) {
      const rows = await adminQuery(`SELECT 1 FROM "${schemaOf(slug)}".client WHERE name = 'intruder' OR email = 'x@x'`);
      expect(rows, `no write reached ${slug}`).to.have.length(0);
    }
  });

  it('a tenant over statementTimeoutMs fails with 57014, the others answer', async () => {
    const { manager, slugs } = await fleet(3, 'qt');
    const slow = slugs[1]!;
    const result = await manager.queryAcrossTenants(
      "SELECT current_schema() AS s, CASE WHEN current_schema() = $1 THEN pg_sleep(5) END AS slept",
      [schemaOf(slow)],
      { statementTimeoutMs: 200 },
    );
    expect(result.rows.map((r) => r.tenant)).to.deep.equal([slugs[0], slugs[2]]);
    expect(result.failures.map((f) => [f.slug, f.error.code])).to.deep.equal([[slow, '57014']]);
    expect(result.failures[0]!.ms).to.be.below(3000);
  });

  it('hostile SQL cannot reach another tenant: several statements are refused, SET search_path inside one statement does not reroute it, COMMIT is refused', async () => {
    const { manager, slugs } = await fleet(2, 'qh');
    const [mine, other] = slugs as [string, string];
    const attacks = [
      `SET search_path TO "${schemaOf(other)}"; SELECT email FROM client`,
      `SELECT 1; COMMIT; SELECT email FROM "${schemaOf(other)}".client`,
      `; COMMIT; INSERT INTO client (name, email) VALUES ('intruder', 'x@x')`,
    ];
    for (const sql of attacks) {
      const result = await manager.queryAcrossTenants(sql, [], { tenants: [mine] });
      expect(result.rows, sql).to.deep.equal([]);
      expect(result.failures.map((f) => f.status), sql).to.deep.equal(['failed']);
    }
    // One statement that changes the search_path as it runs: its names were resolved before, in the tenant.
    const rerouted = await manager.queryAcrossTenants<{ email: string }>(
      `SELECT set_config('search_path', '"${schemaOf(other)}"', true) AS p, (SELECT min(email) FROM client) AS email`,
      [],
      { tenants: [mine] },
    );
    expect(rerouted.rows.map((r) => r.email)).to.deep.equal([`0@${mine}.test`]);
    const committed = await manager.queryAcrossTenants('COMMIT', [], { tenants: [mine] });
    expect(committed.failures[0]!.error.code).to.equal('RAW_SQL_REFUSED');
    // The next statement on the pool is fenced as ever: its search_path is the tenant's.
    const after = await manager.queryAcrossTenants<{ s: string }>('SELECT current_schema() AS s');
    expect(after.rows.map((r) => r.s)).to.deep.equal([schemaOf(mine), schemaOf(other)]);
    expect(await adminQuery(`SELECT 1 FROM "${schemaOf(mine)}".client WHERE name = 'intruder'`)).to.have.length(0);
  });

  it("under isolation: 'role', a schema-qualified name of another tenant is refused by the database (42501)", async () => {
    const { manager, slugs } = await fleet(2, 'qr', { isolation: 'role' });
    const [mine, other] = slugs as [string, string];
    const result = await manager.queryAcrossTenants(`SELECT email FROM "${schemaOf(other)}".client`, [], { tenants: [mine] });
    expect(result.rows).to.deep.equal([]);
    expect(result.failures.map((f) => [f.slug, f.error.code])).to.deep.equal([[mine, '42501']]);
    const own = await manager.queryAcrossTenants<{ n: number }>('SELECT count(*)::int AS n FROM client');
    expect(own.rows).to.deep.equal([
      { tenant: mine, n: 1 },
      { tenant: other, n: 2 },
    ]);
  });

  it('a user column named like the tenant column fails the tenant instead of being overwritten; tenantColumn renames it', async () => {
    const { manager, slugs } = await fleet(2, 'qc');
    const clash = await manager.queryAcrossTenants("SELECT 'mine' AS tenant");
    expect(clash.rows).to.deep.equal([]);
    expect(clash.failures.map((f) => f.error.code)).to.deep.equal(['INVALID_ARGUMENT', 'INVALID_ARGUMENT']);
    expect(clash.failures[0]!.error.message).to.match(/tenantColumn/);
    const renamed = await manager.queryAcrossTenants("SELECT 'mine' AS tenant", [], { tenantColumn: 'slug' });
    expect(renamed.rows).to.deep.equal(slugs.map((slug) => ({ slug, tenant: 'mine' })));
  });

  it('reports suspended tenants named in `tenants` as skipped, throws on unknown slugs and bad arguments', async () => {
    const { manager, slugs } = await fleet(2, 'qs');
    await manager.suspendTenant(slugs[0]!);
    const result = await manager.queryAcrossTenants('SELECT 1 AS one', [], { tenants: slugs });
    expect(result.rows).to.deep.equal([{ tenant: slugs[1], one: 1 }]);
    expect(result.failures.map((f) => [f.slug, f.status])).to.deep.equal([[slugs[0], 'skipped']]);
    expect(result.failures[0]!.error.message).to.match(/suspended/);
    await expect(manager.queryAcrossTenants('SELECT 1', [], { tenants: ['missing-one'] })).to.be.rejectedWith(TenantNotFoundError);
    await expect(manager.queryAcrossTenants('')).to.be.rejectedWith(InvalidArgumentError, 'SQL');
    await expect(manager.queryAcrossTenants('SELECT 1', 'x' as never)).to.be.rejectedWith(InvalidArgumentError, 'parameters');
    await expect(manager.queryAcrossTenants('SELECT 1', [], { statementTimeoutMs: -1 })).to.be.rejectedWith(InvalidArgumentError, 'statementTimeoutMs');
  });
});

describe('aggregateAcrossTenants()', () => {
  it('merges per-tenant rows into groups: counts and sums added, min and max kept', async () => {
    const { manager, slugs } = await fleet(3, 'ag');
    // Tenant i has clients c<i>-0..c<i>-i; group them by whether n is even.
    const result = await manager.aggregateAcrossTenants(
      "SELECT (split_part(name, '-', 2)::int % 2 = 0) AS even, count(*) AS clients, sum(split_part(name, '-', 2)::int) AS total, min(email) AS first, max(id) AS top FROM client GROUP BY 1",
      [],
      { groupBy: ['even'], aggregates: { clients: 'count', total: 'sum', first: 'min', top: 'max' } },
    );
    // n values: tenant0 {0}, tenant1 {0,1}, tenant2 {0,1,2} → even: 0,0,0,2 (4 rows, sum 2); odd: 1,1 (2 rows, sum 2).
    expect(result.groups).to.deep.equal([
      { even: false, clients: '2', total: '2', first: `1@${slugs[1]}.test`, top: 2 },
      { even: true, clients: '4', total: '2', first: `0@${slugs[0]}.test`, top: 3 },
    ]);
    expect(result.totals).to.include({ tenants: 3, done: 3, failed: 0, rows: 5 });
  });

  it('sums exactly past 2^53 and in decimals (strings, as PostgreSQL sends bigint and numeric)', async () => {
    const { manager } = await fleet(3, 'ax');
    const result = await manager.aggregateAcrossTenants('SELECT 9007199254740993::bigint AS big, 0.1::numeric AS tenth, 1 AS one', [], {
      aggregates: { big: 'sum', tenth: 'sum', one: 'count' },
    });
    expect(result.groups).to.deep.equal([{ big: '27021597764222979', tenth: '0.3', one: '3' }]);
  });

  it('a failing tenant adds nothing to the groups and is listed in failures', async () => {
    const { manager, slugs } = await fleet(3, 'af');
    await adminQuery(`ALTER TABLE "${schemaOf(slugs[2]!)}".client RENAME TO customer`);
    const result = await manager.aggregateAcrossTenants('SELECT count(*) AS n FROM client', [], { aggregates: { n: 'sum' } });
    expect(result.groups).to.deep.equal([{ n: '3' }]);
    expect(result.failures.map((f) => [f.slug, f.error.code])).to.deep.equal([[slugs[2], '42P01']]);
    const missing = await manager.aggregateAcrossTenants('SELECT count(*) AS n FROM client', [], { tenants: [slugs[0]!], aggregates: { nope: 'sum' } });
    expect(missing.failures[0]!.error.message).to.match(/no column "nope"/);
    expect(missing.groups).to.deep.equal([]);
  });

  it('refuses bad aggregate options before anything runs', async () => {
    const { manager } = await fleet(1, 'ab');
    await expect(manager.aggregateAcrossTenants('SELECT 1 AS n', [], { aggregates: {} })).to.be.rejectedWith(InvalidArgumentError, 'aggregates');
    await expect(manager.aggregateAcrossTenants('SELECT 1 AS n', [], { aggregates: { n: 'avg' as never } })).to.be.rejectedWith(InvalidArgumentError, 'avg');
    await expect(manager.aggregateAcrossTenants('SELECT 1 AS n', [], { groupBy: ['n'], aggregates: { n: 'sum' } })).to.be.rejectedWith(InvalidArgumentError, 'both');
  });
});
