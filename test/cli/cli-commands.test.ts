import { expect } from 'chai';
import type { FleetReport, TenantMigrationStatus } from '../../src';
import { adminQuery, createTenants, openManager, schemaExists, tablesOf, uniqueSlug } from '../support/fixtures';
import { PHONE_MIGRATION, UNIQUE_MIGRATION, appliedIn, hasColumn, runCli, runCliJson, schemaOf, uniqueRegistry, type CliEnv } from './cli-support';

/** A registry record as the CLI prints it in JSON. */
interface RecordJson {
  readonly slug: string;
  readonly schemaName: string;
  readonly name: string;
  readonly status: string;
  readonly createdAt: string;
}

/** A fleet of `count` tenants with the base migrations, in a registry of its own. */
async function fleet(count: number, prefix: string): Promise<{ env: CliEnv; slugs: string[] }> {
  const registry = uniqueRegistry();
  const manager = await openManager({ registryTable: registry });
  const slugs = (await createTenants(manager, count, prefix)).sort();
  await manager.destroy();
  return { env: { registry }, slugs };
}

/** The stderr of a failed command is exactly one line. */
function expectOneLine(stderr: string): void {
  expect(stderr.endsWith('\n'), stderr).to.equal(true);
  expect(stderr.trimEnd().split('\n'), stderr).to.have.length(1);
}

describe('CLI: typeorm-tenants as a real process against PostgreSQL', () => {
  it('create prints the new record as JSON; the schema holds the tenant tables and the registry the row', async () => {
    const env = { registry: uniqueRegistry() };
    const slug = uniqueSlug('cli-create');
    const record = await runCliJson<RecordJson>(['create', slug, '--name', 'Acme Corp'], env);
    expect(record).to.include({ slug, schemaName: schemaOf(slug), name: 'Acme Corp', status: 'active' });
    expect(Number.isNaN(Date.parse(record.createdAt))).to.equal(false);
    expect(await tablesOf(schemaOf(slug))).to.deep.equal(['client', 'migrations', 'project']);
    const rows = await adminQuery(`SELECT slug, status FROM public."${env.registry}"`);
    expect(rows).to.deep.equal([{ slug, status: 'active' }]);

    const again = await runCli(['create', slug], env);
    expect(again.code).to.equal(1);
    expect(again.stderr).to.match(/^error \[TENANT_ALREADY_EXISTS\]: Tenant ".+" already exists/);
    expectOneLine(again.stderr);
  });

  it('list prints every record of the fleet by slug, show one record; --json and a pipe both give JSON', async () => {
    const { env, slugs } = await fleet(3, 'cli-list');
    const listed = await runCliJson<RecordJson[]>(['list'], env);
    expect(listed.map((r) => r.slug)).to.deep.equal(slugs);
    expect(listed.every((r) => r.status === 'active')).to.equal(true);

    const shown = await runCliJson<RecordJson>(['show', slugs[1]!, '--json'], env);
    expect(shown).to.include({ slug: slugs[1], schemaName: schemaOf(slugs[1]!), status: 'active' });
  });

  it('migrate --json: the report counts and names what was applied; a failing tenant exits 1 untouched; the rerun after the fix migrates only it', async function () {
    this.timeout(120_000);
    const { env: base, slugs } = await fleet(4, 'cli-mig');
    const env: CliEnv = { ...base, extra: 'phone' };
    const broken = slugs[2]!;
    await adminQuery(`INSERT INTO "${schemaOf(broken)}".client (name, email) VALUES ('Upper', 'UPPER@X.TEST')`);

    const result = await runCli(['migrate', '--json', '--concurrency', '2'], env);
    expect(result.code, result.stderr).to.equal(1);
    const report = JSON.parse(result.stdout) as FleetReport;
    expect(report.totals).to.include({ tenants: 4, migrated: 3, failed: 1, upToDate: 0, skipped: 0 });
    expect(report.results.map((r) => r.slug)).to.deep.equal(slugs);
    for (const line of report.results) {
      if (line.slug === broken) {
        expect(line.status).to.equal('failed');
        expect(line.applied).to.deep.equal([]);
        expect(line.error).to.include({ migration: PHONE_MIGRATION, code: '23514' });
        expect(line.error!.message).to.contain('client_email_lower');
      } else {
        expect(line).to.deep.include({ status: 'migrated', applied: [PHONE_MIGRATION] });
      }
    }
    expect(await hasColumn(broken, 'client', 'phone')).to.equal(false);
    expect(await appliedIn(broken)).to.not.include(PHONE_MIGRATION);
    expect(await hasColumn(slugs[0]!, 'client', 'phone')).to.equal(true);

    await adminQuery(`UPDATE "${schemaOf(broken)}".client SET email = lower(email)`);
    const rerun = await runCliJson<FleetReport>(['migrate'], env);
    expect(rerun.results.map((r) => [r.slug, r.status]), 'every tenant has its line; only the fixed one is retried').to.deep.equal(
      slugs.map((slug) => [slug, slug === broken ? 'migrated' : 'up-to-date']),
    );
    expect(rerun.totals).to.include({ tenants: 4, migrated: 1, upToDate: 3, failed: 0, skipped: 0 });
    expect(await appliedIn(broken)).to.include(PHONE_MIGRATION);

    const noop = await runCliJson<FleetReport>(['migrate'], env);
    expect(noop.results.map((r) => [r.slug, r.status, r.applied])).to.deep.equal(slugs.map((slug) => [slug, 'up-to-date', []]));
    expect(noop.totals).to.include({ tenants: 4, upToDate: 4, migrated: 0, failed: 0, skipped: 0 });
  });

  it('migrate --json: a failed tenant\'s error carries PostgreSQL\'s detail, schema, table and constraint (a real 23505)', async function () {
    this.timeout(120_000);
    const { env: base, slugs } = await fleet(2, 'cli-dup');
    const env: CliEnv = { ...base, extra: 'unique' };
    const [duplicated, clean] = slugs as [string, string];
    await adminQuery(`INSERT INTO "${schemaOf(duplicated)}".client (name, email) VALUES ('DUP-1', 'a@x.test'), ('DUP-1', 'b@x.test')`);

    const result = await runCli(['migrate', '--json'], env);
    expect(result.code, result.stderr).to.equal(1);
    const report = JSON.parse(result.stdout) as FleetReport;
    expect(report.results.map((r) => [r.slug, r.status])).to.deep.equal([
      [duplicated, 'failed'],
      [clean, 'migrated'],
    ]);
    expect(report.results[0]!.error).to.deep.equal({
      migration: UNIQUE_MIGRATION,
      message: 'could not create unique index "client_name_key"',
      code: '23505',
      detail: 'Key (name)=(DUP-1) is duplicated.',
      schema: schemaOf(duplicated),
      table: 'client',
      constraint: 'client_name_key',
    });
  });

  it('status lists applied and pending migrations per tenant; migrate --tenant migrates only the canary', async function () {
    this.timeout(120_000);
    const { env: base, slugs } = await fleet(3, 'cli-st');
    const env: CliEnv = { ...base, extra: 'phone' };
    const before = await runCliJson<TenantMigrationStatus[]>(['status'], env);
    expect(before.map((s) => s.slug)).to.deep.equal(slugs);
    for (const status of before) {
      expect(status.applied).to.have.members(['CreateClient1700000000001', 'CreateProject1700000000002']);
      expect(status.pending).to.deep.equal([PHONE_MIGRATION]);
    }

    const canary = await runCliJson<FleetReport>(['migrate', '--tenant', slugs[1]!], env);
    expect(canary.results.map((r) => [r.slug, r.status])).to.deep.equal([[slugs[1], 'migrated']]);

    const after = await runCliJson<TenantMigrationStatus[]>(['status'], env);
    expect(after.map((s) => [s.slug, s.pending])).to.deep.equal([
      [slugs[0], [PHONE_MIGRATION]],
      [slugs[1], []],
      [slugs[2], [PHONE_MIGRATION]],
    ]);
    expect(after[1]!.applied).to.include(PHONE_MIGRATION);
  });

  it('migrate --waves 1 --stop-on-error: a failing first wave stops the run, the rest reported skipped and untouched', async function () {
    this.timeout(120_000);
    const { env: base, slugs } = await fleet(3, 'cli-wave');
    const env: CliEnv = { ...base, extra: 'phone' };
    await adminQuery(`INSERT INTO "${schemaOf(slugs[0]!)}".client (name, email) VALUES ('Upper', 'UPPER@X.TEST')`);
    const result = await runCli(['migrate', '--waves', '1', '--stop-on-error'], env);
    expect(result.code, result.stderr).to.equal(1);
    const report = JSON.parse(result.stdout) as FleetReport;
    expect(report.results.map((r) => r.status)).to.deep.equal(['failed', 'skipped', 'skipped']);
    expect(await hasColumn(slugs[1]!, 'client', 'phone')).to.equal(false);
  });

  it('revert --tenant undoes the last migration of that tenant only, and reports it', async () => {
    const { env, slugs } = await fleet(2, 'cli-rev');
    const report = await runCliJson<FleetReport>(['revert', '--tenant', slugs[0]!], env);
    expect(report.results).to.have.length(1);
    expect(report.results[0]).to.deep.include({ slug: slugs[0], status: 'reverted', applied: ['CreateProject1700000000002'] });
    expect(report.totals).to.include({ reverted: 1, failed: 0 });
    expect(await tablesOf(schemaOf(slugs[0]!))).to.deep.equal(['client', 'migrations']);
    expect(await tablesOf(schemaOf(slugs[1]!))).to.deep.equal(['client', 'migrations', 'project']);
  });

  it('reconcile rebuilds a wiped ledger from the tenants\' own migrations tables; migrate:shared has nothing left to apply', async () => {
    const { env, slugs } = await fleet(2, 'cli-rec');
    await adminQuery(`DELETE FROM public."${env.registry}_migrations"`);
    const wiped = await runCliJson<TenantMigrationStatus[]>(['status'], env);
    expect(wiped.every((s) => s.applied.length === 0)).to.equal(true);

    const report = await runCliJson<FleetReport>(['reconcile', '--concurrency', '2'], env);
    expect(report.results.map((r) => r.slug)).to.deep.equal(slugs);
    expect(report.totals).to.include({ tenants: 2, failed: 0 });
    const rebuilt = await runCliJson<TenantMigrationStatus[]>(['status'], env);
    expect(rebuilt.every((s) => s.pending.length === 0 && s.applied.length === 2)).to.equal(true);

    expect(await runCliJson(['migrate:shared'], env)).to.deep.equal({ applied: [] });
  });

  it('suspend, resume, archive and restore print the new status; archive keeps the data and restore brings it back', async () => {
    const { env, slugs } = await fleet(1, 'cli-life');
    const slug = slugs[0]!;
    await adminQuery(`INSERT INTO "${schemaOf(slug)}".client (name, email) VALUES ('Ada', 'ada@x.test')`);

    expect((await runCliJson<RecordJson>(['suspend', slug], env)).status).to.equal('suspended');
    expect((await runCliJson<RecordJson>(['show', slug], env)).status).to.equal('suspended');
    expect((await runCliJson<RecordJson>(['resume', slug], env)).status).to.equal('active');
    expect((await runCliJson<RecordJson>(['archive', slug], env)).status).to.equal('archived');
    expect(await schemaExists(schemaOf(slug))).to.equal(false);
    const wrong = await runCli(['resume', slug], env);
    expect(wrong.code).to.equal(1);
    expect(wrong.stderr).to.match(/^error \[INVALID_TENANT_STATE\]: /);
    expect((await runCliJson<RecordJson>(['restore', slug], env)).status).to.equal('active');
    expect(await adminQuery(`SELECT name FROM "${schemaOf(slug)}".client`)).to.deep.equal([{ name: 'Ada' }]);
  });

  it('drop refuses an active tenant without --force (exit 1, one line naming --force) and drops it with --force', async () => {
    const { env, slugs } = await fleet(2, 'cli-drop');
    const [active, suspended] = slugs as [string, string];

    const refused = await runCli(['drop', active], env);
    expect(refused.code).to.equal(1);
    expect(refused.stdout).to.equal('');
    expect(refused.stderr).to.match(/^error \[INVALID_TENANT_STATE\]: Tenant ".+" is active, .*--force\.\n$/);
    expectOneLine(refused.stderr);
    expect(await schemaExists(schemaOf(active))).to.equal(true);

    expect(await runCliJson(['drop', active, '--force'], env)).to.deep.equal({ slug: active, dropped: true });
    expect(await schemaExists(schemaOf(active))).to.equal(false);
    const gone = await runCli(['show', active], env);
    expect(gone.code).to.equal(1);
    expect(gone.stderr).to.match(/^error \[TENANT_NOT_FOUND\]/);

    await runCliJson(['suspend', suspended], env);
    expect(await runCliJson(['drop', suspended], env)).to.deep.equal({ slug: suspended, dropped: true });
    expect(await adminQuery(`SELECT slug FROM public."${env.registry}"`)).to.deep.equal([]);
  });

  it('an unknown tenant: exit 1 and one line "error [TENANT_NOT_FOUND]: ...", no stack', async () => {
    const env = { registry: uniqueRegistry() };
    for (const args of [['show', 'no-such-tenant'], ['suspend', 'no-such-tenant'], ['drop', 'no-such-tenant', '--force']]) {
      const result = await runCli(args, env);
      expect(result.code, args.join(' ')).to.equal(1);
      expect(result.stdout).to.equal('');
      expect(result.stderr).to.equal(`error [TENANT_NOT_FOUND]: Tenant "no-such-tenant" does not exist. Create it with \`typeorm-tenants create no-such-tenant\`, or check the slug.\n`);
    }
  });

  it('a bad slug: exit 1, INVALID_TENANT_NAME naming the rule, and no schema is created', async () => {
    const env = { registry: uniqueRegistry() };
    const result = await runCli(['create', 'Bad_Slug'], env);
    expect(result.code).to.equal(1);
    expect(result.stderr).to.match(/^error \[INVALID_TENANT_NAME\]: Invalid tenant slug "Bad_Slug": .*lowercase letters/);
    expectOneLine(result.stderr);
    expect(await schemaExists('Bad_Slug')).to.equal(false);
    expect(await schemaExists('bad_slug')).to.equal(false);
  });

  it('a missing config: exit 1 and one clear line; a .ts config path says it needs a TypeScript loader', async () => {
    const env = { registry: uniqueRegistry() };
    const missing = await runCli(['--config', 'no/such/tenancy.config.js', 'list'], env);
    expect(missing.code).to.equal(1);
    expect(missing.stderr).to.match(/^error: Cannot load config no\/such\/tenancy\.config\.js: no such file .*; it must export the TenantDataSourceManager options\n$/);
    expectOneLine(missing.stderr);

    const ts = await runCli(['--config', 'test/cli/fixtures/tenancy.config.ts', 'list'], env);
    expect(ts.code).to.equal(1);
    expect(ts.stderr).to.match(/^error: Cannot load config test\/cli\/fixtures\/tenancy\.config\.ts: .*TypeScript loader/);
    expectOneLine(ts.stderr);
  });

  it('--verbose adds the stack after the one-line error', async () => {
    const env = { registry: uniqueRegistry() };
    const result = await runCli(['show', 'no-such-tenant', '--verbose'], env);
    expect(result.code).to.equal(1);
    const lines = result.stderr.trimEnd().split('\n');
    expect(lines[0]).to.match(/^error \[TENANT_NOT_FOUND\]: /);
    expect(lines[1]).to.match(/^TenantNotFoundError: Tenant "no-such-tenant" does not exist/);
    expect(lines.slice(2).some((line) => /^\s+at .*tenant-commands\.js/.test(line)), result.stderr).to.equal(true);
  });

  it('usage errors exit 2 with commander\'s message: unknown command, bad --concurrency, bad --waves, missing slug', async () => {
    const env = { registry: uniqueRegistry() };
    const cases: Array<[string[], RegExp]> = [
      [['frobnicate'], /unknown command 'frobnicate'/],
      [['migrate', '--concurrency', '0'], /--concurrency <n>' argument '0' is invalid/],
      [['migrate', '--waves', '1,abc'], /"abc" is not a wave size/],
      [['create'], /missing required argument 'slug'/],
    ];
    for (const [args, message] of cases) {
      const result = await runCli(args, env);
      expect(result.code, args.join(' ')).to.equal(2);
      expect(result.stderr).to.match(message);
      expect(result.stdout).to.equal('');
    }
  });
});
