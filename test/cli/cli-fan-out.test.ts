import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { expect } from 'chai';
import type { TenantQueryResult, TenantWorkReport } from '../../src';
import { adminQuery, createTenants, openManager } from '../support/fixtures';
import { runCli, runCliJson, schemaOf, uniqueRegistry, type CliEnv } from './cli-support';

/** The library as a user's script requires it (the built package). */
const LIBRARY = resolve(__dirname, '../../src');

async function fleet(count: number, prefix: string): Promise<{ env: CliEnv; slugs: string[] }> {
  const registry = uniqueRegistry();
  const manager = await openManager({ registryTable: registry });
  const slugs = (await createTenants(manager, count, prefix)).sort();
  await manager.destroy();
  return { env: { registry }, slugs };
}

describe('CLI: exec and run across every tenant', () => {
  let scripts: string;
  before(() => {
    scripts = mkdtempSync(join(tmpdir(), 'fan-out-scripts-'));
  });
  after(() => rmSync(scripts, { recursive: true, force: true }));

  it('exec --json: rows with a tenant column per tenant, --param and --tenant; a failing tenant makes exit 1 and is listed', async () => {
    const { env, slugs } = await fleet(3, 'cli-exec');
    for (const [i, slug] of slugs.entries()) {
      for (let n = 0; n <= i; n += 1) await adminQuery(`INSERT INTO "${schemaOf(slug)}".client (name, email) VALUES ('n', $1)`, [`${n}@x`]);
    }
    const counted = await runCliJson<TenantQueryResult>(['exec', 'SELECT count(*)::int AS n FROM client WHERE name = $1', '--param', 'n'], env);
    expect(counted.rows).to.deep.equal(slugs.map((tenant, i) => ({ tenant, n: i + 1 })));
    expect(counted.totals).to.include({ tenants: 3, done: 3, failed: 0, rows: 3 });

    const one = await runCliJson<TenantQueryResult>(['exec', 'SELECT 1 AS one', '--tenant', slugs[2]!], env);
    expect(one.rows).to.deep.equal([{ tenant: slugs[2], one: 1 }]);

    await adminQuery(`DROP TABLE "${schemaOf(slugs[1]!)}".project`);
    const failing = await runCli(['exec', 'SELECT count(*)::int AS n FROM project', '--json'], env);
    expect(failing.code, failing.stderr).to.equal(1);
    const report = JSON.parse(failing.stdout) as TenantQueryResult;
    expect(report.rows.map((r) => r.tenant)).to.deep.equal([slugs[0], slugs[2]]);
    expect(report.failures.map((f) => [f.slug, f.status, f.error.code])).to.deep.equal([[slugs[1], 'failed', '42P01']]);
  });

  it('exec of a write: exit 1, every tenant failed with 25006, and the row is in no schema', async () => {
    const { env, slugs } = await fleet(2, 'cli-exw');
    const result = await runCli(['exec', "INSERT INTO client (name, email) VALUES ('cli-intruder', 'x@x') RETURNING id"], env);
    expect(result.code).to.equal(1);
    const report = JSON.parse(result.stdout) as TenantQueryResult;
    expect(report.failures.map((f) => f.error.code)).to.deep.equal(['25006', '25006']);
    for (const slug of slugs) expect(await adminQuery(`SELECT 1 FROM "${schemaOf(slug)}".client WHERE name = 'cli-intruder'`)).to.have.length(0);
  });

  it('exec --csv quotes commas, double quotes, line breaks and edge spaces (RFC 4180); NULL is an empty cell', async () => {
    const { env, slugs } = await fleet(1, 'cli-csv');
    const [slug] = slugs as [string];
    const names = ['plain', 'Smith, J', 'say "hi"', 'two\nlines', ' padded '];
    for (const name of names) await adminQuery(`INSERT INTO "${schemaOf(slug)}".client (name, email) VALUES ($1, 'e')`, [name]);
    const result = await runCli(['exec', 'SELECT name, NULL::text AS note FROM client ORDER BY id', '--csv'], env);
    expect(result.code, result.stderr).to.equal(0);
    expect(result.stdout).to.equal(
      ['tenant,name,note', `${slug},plain,`, `${slug},"Smith, J",`, `${slug},"say ""hi""",`, `${slug},"two\nlines",`, `${slug}," padded ",`].join('\r\n') + '\r\n',
    );
    const both = await runCli(['--json', 'exec', 'SELECT 1', '--csv'], env);
    expect(both.code).to.equal(2);
    expect(both.stderr).to.match(/--csv and --json/);
  });

  it('run <module>: the script runs in each tenant with tenantContext on it (rows land in each schema); a throwing tenant makes exit 1', async () => {
    const { env, slugs } = await fleet(3, 'cli-run');
    const script = join(scripts, 'backfill.js');
    writeFileSync(
      script,
      `const { tenantContext } = require(${JSON.stringify(LIBRARY)});
module.exports = async (ctx) => {
  const current = tenantContext.current().slug;
  if (current.endsWith(process.env.FAN_OUT_FAIL ?? '-none-')) throw new Error('refused for ' + current);
  await tenantContext.query("INSERT INTO client (name, email) VALUES ('backfill', $1)", [ctx.tenant.slug]);
  return { current, record: ctx.tenant.slug };
};\n`,
    );
    const report = await runCliJson<TenantWorkReport<{ current: string; record: string }>>(['run', script], env);
    expect(report.results.map((r) => [r.slug, r.status, r.value])).to.deep.equal(slugs.map((s) => [s, 'done', { current: s, record: s }]));
    for (const slug of slugs) {
      expect(await adminQuery(`SELECT email FROM "${schemaOf(slug)}".client WHERE name = 'backfill'`)).to.deep.equal([{ email: slug }]);
    }

    const bad = slugs[1]!;
    const withFailure = await runCliWithEnv(['run', script], env, { FAN_OUT_FAIL: bad.slice(-6) });
    expect(withFailure.code, withFailure.stderr).to.equal(1);
    const lines = (JSON.parse(withFailure.stdout) as TenantWorkReport<unknown>).results;
    expect(lines.map((r) => r.status)).to.deep.equal(slugs.map((s) => (s === bad ? 'failed' : 'done')));
    expect(lines[1]!.error!.message).to.equal(`refused for ${bad}`);
  });

  it('run <module> takes a default export too; a module that exports no function is one clear error line, exit 1', async () => {
    const { env, slugs } = await fleet(1, 'cli-rd');
    const esModule = join(scripts, 'default.js');
    writeFileSync(esModule, 'Object.defineProperty(exports, "__esModule", { value: true });\nexports.default = async (ctx) => ctx.tenant.schemaName;\n');
    const report = await runCliJson<TenantWorkReport<string>>(['run', esModule], env);
    expect(report.results.map((r) => r.value)).to.deep.equal([schemaOf(slugs[0]!)]);
    const notAFunction = join(scripts, 'object.js');
    writeFileSync(notAFunction, 'module.exports = { run: 1 };\n');
    const result = await runCli(['run', notAFunction], env);
    expect(result.code).to.equal(1);
    expect(result.stderr).to.match(/^error: Cannot load script .*it exports object; it must export a function/);
  });
});

/** runCli with extra environment variables for the script. */
async function runCliWithEnv(args: readonly string[], env: CliEnv, extra: Record<string, string>): Promise<Awaited<ReturnType<typeof runCli>>> {
  const saved = { ...process.env };
  Object.assign(process.env, extra);
  try {
    return await runCli(args, env);
  } finally {
    for (const key of Object.keys(extra)) if (saved[key] === undefined) delete process.env[key];
  }
}
