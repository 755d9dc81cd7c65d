import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { adminQuery, databaseUrl, uniqueSlug } from '../support/fixtures';
import { createInstalledProject, expectExit, REPO_ROOT, runProcess, type InstalledProject } from '../installed/installed-project';
import { redisHost, redisPort } from '../support/redis';
import { redisKeys, uniquePrefix } from './bullmq-support';

// The user's job service, in plain CommonJS on the installed package: a job
// enqueued in one tenant's run, run by a tenant worker, writing with raw SQL
// (unqualified: it lands in the tenant's schema).
const JOBS_JS = `'use strict';
require('reflect-metadata');
const { TenantDataSourceManager, tenantContext } = require('typeorm-tenants');
const { tenantQueue, tenantWorker } = require('typeorm-tenants/bullmq');
const { Queue } = require('bullmq');
const { Category, Ticket } = require('./dist/entities');

class CreateCategory1700000000001 {
  async up(q) { await q.query('CREATE TABLE category (id serial PRIMARY KEY, name varchar NOT NULL)'); }
  async down(q) { await q.query('DROP TABLE category'); }
}
class CreateTicket1700000000002 {
  async up(q) {
    await q.query("CREATE TABLE ticket (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), title varchar NOT NULL, status varchar NOT NULL DEFAULT 'open', \\"categoryId\\" int)");
  }
  async down(q) { await q.query('DROP TABLE ticket'); }
}

async function main([acme, globex]) {
  const connection = { host: process.env.REDIS_HOST, port: Number(process.env.REDIS_PORT) };
  const prefix = process.env.BULL_PREFIX;
  const tenants = new TenantDataSourceManager({
    dataSource: { type: 'postgres', url: process.env.DATABASE_URL, poolSize: 3 },
    sharedSchema: process.env.TENANCY_SHARED_SCHEMA,
    entities: [Category, Ticket],
    sharedMigrations: [CreateCategory1700000000001],
    tenantMigrations: [CreateTicket1700000000002],
  });
  await tenants.initialize();
  const queue = new Queue('tickets', { connection, prefix });
  let worker;
  try {
    for (const slug of [acme, globex]) await tenants.createTenant(slug);
    const tickets = tenantQueue(queue);
    const job = await tenants.run(acme, () => tickets.add('open-ticket', { title: 'Printer on fire' }));
    worker = tenantWorker(tenants, 'tickets', async (running) => {
      await tenantContext.query('INSERT INTO ticket (title) VALUES ($1)', [running.data.title]);
      return tenantContext.current().slug;
    }, { connection, prefix });
    let state;
    for (let i = 0; i < 400; i += 1) {
      state = await queue.getJobState(job.id);
      if (state === 'completed' || state === 'failed') break;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    const done = await queue.getJob(job.id);
    let outside;
    try {
      await tickets.add('outside', {});
    } catch (error) {
      outside = error.code;
    }
    console.log(JSON.stringify({ state, returnvalue: done.returnvalue, failedReason: done.failedReason, tenant: done.data.__tenant, outside }));
  } finally {
    await worker?.close();
    await queue.obliterate({ force: true });
    await queue.close();
    await tenants.destroy();
  }
}

main(process.argv.slice(2)).catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
`;

/**
 * `typeorm-tenants/bullmq` from the installed tarball: first without bullmq
 * in the project (the main entry loads, the subpath says what is missing),
 * then with bullmq and ioredis installed at the repository's versions, one
 * job through the machine's Redis in a tenant.
 */
describe('the installed package with BullMQ (typeorm-tenants/bullmq from the tarball)', function () {
  this.timeout(240_000);

  let project: InstalledProject | undefined;
  const sharedSchema = `installed_jobs_${randomBytes(4).toString('hex')}`;
  const [acme, globex] = [uniqueSlug('jacme'), uniqueSlug('jglobex')];
  const prefix = uniquePrefix();
  const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

  before(async function () {
    this.timeout(240_000);
    project = await createInstalledProject();
  });

  after(async () => {
    project?.remove();
    for (const schema of [schemaOf(acme), schemaOf(globex), sharedSchema]) await adminQuery(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  });

  it('loads without bullmq installed (the subpath names the missing package), then runs a job enqueued in a tenant in that tenant once bullmq and ioredis are installed', async () => {
    const { dir } = project!;
    const probe = [
      "const lib = require('typeorm-tenants');",
      'let bullmq = "present"; try { require.resolve("bullmq"); } catch (error) { bullmq = error.code; }',
      'let subpath = "loaded"; try { require("typeorm-tenants/bullmq"); } catch (error) { subpath = error.code + " " + /Cannot find module \'([^\']+)\'/.exec(error.message)?.[1]; }',
      'console.log(JSON.stringify({ manager: typeof lib.TenantDataSourceManager, missing: typeof lib.JobTenantMissingError, bullmq, subpath }));',
    ].join('\n');
    const before = JSON.parse(expectExit(await project!.node(['-e', probe])).stdout) as Record<string, string>;
    expect(before).to.deep.equal({ manager: 'function', missing: 'function', bullmq: 'MODULE_NOT_FOUND', subpath: 'MODULE_NOT_FOUND bullmq' });

    const manifest = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
    const packages = ['bullmq', 'ioredis'].map((name) => `${name}@${manifest.devDependencies[name]}`);
    expectExit(await runProcess('npm', ['install', ...packages, '--prefer-offline', '--no-audit', '--no-fund'], { cwd: dir, timeoutMs: 150_000 }));
    writeFileSync(join(dir, 'jobs.js'), JOBS_JS);

    const env = { DATABASE_URL: databaseUrl(), TENANCY_SHARED_SCHEMA: sharedSchema, REDIS_HOST: redisHost, REDIS_PORT: String(redisPort), BULL_PREFIX: prefix };
    const result = expectExit(await project!.node(['jobs.js', acme, globex], env));
    const out = JSON.parse(result.stdout) as Record<string, unknown>;
    expect(out).to.deep.include({ state: 'completed', returnvalue: acme, outside: 'TENANT_CONTEXT_MISSING' });
    expect((out.tenant as { slug: string }).slug).to.equal(acme);
    // The user's Ticket has a uuid key (uuid-ossp): the manager warns about the role's search_path; nothing else is printed.
    expect(result.stderr.split('\n').filter((line) => line !== '' && !/TenancyConfigurationWarning|--trace-warnings/.test(line))).to.deep.equal([]);
    expect(await adminQuery(`SELECT title FROM "${schemaOf(acme)}".ticket`)).to.deep.equal([{ title: 'Printer on fire' }]);
    expect(await adminQuery(`SELECT title FROM "${schemaOf(globex)}".ticket`)).to.deep.equal([]);
    expect(await redisKeys(prefix)).to.deep.equal([]);
  });
});
