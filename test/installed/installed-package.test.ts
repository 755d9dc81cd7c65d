import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { expect } from 'chai';
import { adminQuery, databaseUrl, tablesOf, uniqueSlug } from '../support/fixtures';
import {
  createInstalledProject,
  ENUM_TYPE,
  expectExit,
  SHARED_TABLE,
  TENANT_TABLE,
  type InstalledProject,
  type ProcessResult,
} from './installed-project';

interface FileJson {
  readonly kind: 'tenant' | 'shared';
  readonly file: string;
  readonly className: string;
  readonly written: boolean;
}

interface TenantJson {
  readonly slug: string;
  readonly schemaName: string;
  readonly status: string;
}

interface FleetJson {
  readonly results: readonly { readonly slug: string; readonly status: string }[];
  readonly totals: { readonly tenants: number; readonly migrated: number; readonly failed: number; readonly skipped: number };
}

const json = <T>(result: ProcessResult): T => JSON.parse(expectExit(result).stdout) as T;

/** Schemas holding a type of that name. */
async function schemasOfType(name: string): Promise<string[]> {
  const rows = await adminQuery<{ nspname: string }>(
    'SELECT n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typname = $1 ORDER BY 1',
    [name],
  );
  return rows.map((r) => r.nspname);
}

/**
 * The package as a user gets it: `npm pack`, installed from the tarball in a
 * project outside the repository, entities compiled there, and the workflow
 * of "Writing tenant migrations" and "Command line" run through the
 * installed bin on the test database.
 */
describe('the installed package (npm pack, npm install, the installed bin)', function () {
  this.timeout(180_000);

  let project: InstalledProject | undefined;
  // A shared schema of its own: its registry, ledger and shared table never meet other tests'.
  const sharedSchema = `installed_${randomBytes(4).toString('hex')}`;
  const acme = uniqueSlug('acme');
  const globex = uniqueSlug('globex');
  const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

  before(async function () {
    this.timeout(180_000);
    project = await createInstalledProject();
  });

  after(async () => {
    project?.remove();
    for (const schema of [schemaOf(acme), schemaOf(globex), sharedSchema]) {
      await adminQuery(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  });

  const installed = (): InstalledProject => {
    if (project === undefined) throw new Error('The project was not installed (see the before hook).');
    return project;
  };
  const env = (): NodeJS.ProcessEnv => ({ DATABASE_URL: databaseUrl(), TENANCY_SHARED_SCHEMA: sharedSchema });
  const cli = (...args: string[]): Promise<ProcessResult> => installed().cli(args, env());

  it('the tarball holds the built library, its bin and the library sources its maps name, not the tests', () => {
    const files = installed().pack.files;
    expect(files).to.include.members(['package.json', 'README.md', 'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', 'dist/http/express.js', 'src/index.ts']);
    expect(files.filter((file) => /^(test|build|bench|support|entities|migrations|examples|demo)\//.test(file))).to.deep.equal([]);
  });

  it('every source map in the installed package resolves to a file the package holds', () => {
    const root = join(installed().dir, 'node_modules', 'typeorm-tenants');
    const maps = installed().pack.files.filter((file) => file.endsWith('.map'));
    expect(maps, 'the build ships source maps (.js.map and .d.ts.map)').to.include.members(['dist/index.js.map', 'dist/index.d.ts.map']);
    const unresolved: string[] = [];
    for (const map of maps) {
      const { sources } = JSON.parse(readFileSync(join(root, map), 'utf8')) as { sources: string[] };
      for (const source of sources) {
        const target = join(root, dirname(map), source);
        if (!existsSync(target)) unresolved.push(`${map} -> ${source}`);
      }
    }
    expect(unresolved).to.deep.equal([]);
  });

  it('a stack trace under --enable-source-maps names the library\'s TypeScript source', async () => {
    const script = [
      "const { validateTenantSlug } = require('typeorm-tenants');",
      "try { validateTenantSlug('Not A Slug'); } catch (error) { console.log(error.stack); }",
    ].join('\n');
    const out = await installed().node(['--enable-source-maps', '-e', script]);
    expect(out.stdout).to.match(/node_modules\/typeorm-tenants\/src\/naming\/tenant-slug\.ts:\d+/);
  });

  it('require("typeorm-tenants") and the express subpath resolve to the installed copy', async () => {
    const { dir } = installed();
    const script = [
      "const lib = require('typeorm-tenants');",
      "console.log(JSON.stringify({ main: require.resolve('typeorm-tenants'), express: require.resolve('typeorm-tenants/express'),",
      "  typeorm: require.resolve('typeorm'), typeormOfTheLibrary: require.resolve('typeorm', { paths: [require.resolve('typeorm-tenants')] }),",
      '  manager: typeof lib.TenantDataSourceManager, scoped: typeof lib.TenantScoped, context: typeof lib.tenantContext }));',
    ].join('\n');
    const out = json<Record<string, string>>(await installed().node(['-e', script]));
    expect(out.main).to.equal(join(dir, 'node_modules', 'typeorm-tenants', 'dist', 'index.js'));
    expect(out.express).to.equal(join(dir, 'node_modules', 'typeorm-tenants', 'dist', 'http', 'express.js'));
    expect(out).to.include({ manager: 'function', scoped: 'function', context: 'object' });
    expect(out.typeormOfTheLibrary, "one typeorm: the library uses the user's").to.equal(out.typeorm);
  });

  it('generates the shared and tenant migrations, creates two tenants from them that serve the user\'s entities, and finds nothing left to generate or migrate', async () => {
    const { dir } = installed();

    const shared = json<FileJson>(await cli('migration:generate', 'migrations/shared/Init', '--shared', '-o'));
    expect(shared).to.include({ kind: 'shared', written: true });
    expect(shared.file.startsWith(join(dir, 'migrations', 'shared'))).to.equal(true);
    expect(readFileSync(shared.file, 'utf8')).to.contain(`CREATE TABLE "${sharedSchema}"."${SHARED_TABLE}"`);

    const tenant = json<FileJson>(await cli('migration:generate', 'migrations/tenant/Init', '-o'));
    expect(tenant).to.include({ kind: 'tenant', written: true });
    expect(tenant.file).to.match(/[/\\]migrations[/\\]tenant[/\\]\d+-Init\.js$/);
    const source = readFileSync(tenant.file, 'utf8');
    expect(source).to.contain(`CREATE TYPE "${ENUM_TYPE}" AS ENUM`);
    expect(source).to.contain(`CREATE TABLE "${TENANT_TABLE}"`);
    expect(source).to.contain(`REFERENCES "${sharedSchema}"."${SHARED_TABLE}"("id")`);
    expect(source, 'tenant objects are unqualified').not.to.match(new RegExp(`"(public|${sharedSchema})"\\."(${TENANT_TABLE}|${ENUM_TYPE})`));
    expect(source).not.to.contain('typeorm_tenants_');

    const empty = json<FileJson>(await cli('migration:create', 'migrations/tenant/Empty', '-o'));
    expect(empty).to.include({ kind: 'tenant', written: true });
    expect(empty.file).to.match(/[/\\]migrations[/\\]tenant[/\\]\d+-Empty\.js$/);
    expect(readFileSync(empty.file, 'utf8')).to.contain(`module.exports = class ${empty.className} {`);
    rmSync(empty.file);
    expect(readdirSync(join(dir, 'migrations', 'tenant'))).to.deep.equal([tenant.file.split(/[/\\]/).pop()]);

    for (const slug of [acme, globex]) {
      const created = json<TenantJson>(await cli('create', slug));
      expect(created).to.include({ slug, schemaName: schemaOf(slug), status: 'active' });
      expect(await tablesOf(schemaOf(slug))).to.include.members(['migrations', TENANT_TABLE]);
      const applied = await adminQuery<{ name: string }>(`SELECT name FROM "${schemaOf(slug)}".migrations`);
      expect(applied.map((r) => r.name)).to.deep.equal([tenant.className]);
    }
    const enumSchemas = await schemasOfType(ENUM_TYPE);
    expect(enumSchemas).to.include.members([schemaOf(acme), schemaOf(globex)]);
    expect(enumSchemas.filter((schema) => schema === 'public' || schema === sharedSchema)).to.deep.equal([]);
    const references = await adminQuery<{ target: string }>(
      "SELECT confrelid::regclass::text AS target FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'f'",
      [`"${schemaOf(acme)}"."${TENANT_TABLE}"`],
    );
    expect(references.map((r) => r.target)).to.deep.equal([`${sharedSchema}.${SHARED_TABLE}`]);
    expect(await tablesOf('public')).not.to.include(TENANT_TABLE);

    // The user's service on the installed package: the uuid default, the enum default and the shared relation work.
    const served = json<{ seen: Record<string, Array<{ id: string; status: string; category: { name: string } }>>; outside: string }>(
      await installed().node(['app.js', acme, globex], env()),
    );
    expect(served.seen[acme]).to.have.length(1);
    expect(served.seen[acme]![0]).to.include({ status: 'open' });
    expect(served.seen[acme]![0]!.id).to.match(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(served.seen[acme]![0]!.category).to.include({ name: 'billing' });
    expect(served.seen[globex]).to.deep.equal([]);
    expect(served.outside).to.equal('TENANT_CONTEXT_MISSING');

    expect(json(await cli('migration:generate', 'migrations/tenant/Again', '--check'))).to.deep.equal({ kind: 'tenant', changes: false });
    expect(json(await cli('migration:generate', 'migrations/shared/Again', '--check', '--shared'))).to.deep.equal({ kind: 'shared', changes: false });
    expect(existsSync(join(dir, 'migrations', 'tenant', 'Again')), '--check writes nothing').to.equal(false);
    expect(readdirSync(join(dir, 'migrations', 'tenant'))).to.have.length(1);

    const migrated = json<FleetJson>(await cli('migrate'));
    expect(migrated.totals).to.include({ migrated: 0, failed: 0, skipped: 0 });
    expect(migrated.results.filter((r) => r.status !== 'up-to-date')).to.deep.equal([]);

    const listed = json<TenantJson[]>(await cli('list'));
    expect(listed.map((r) => [r.slug, r.schemaName, r.status])).to.deep.equal([
      [acme, schemaOf(acme), 'active'],
      [globex, schemaOf(globex), 'active'],
    ]);
  });
  it('runs a transaction = false migration of the user\'s (CREATE INDEX CONCURRENTLY through tenantSchemaOf) with the installed bin: migrate, revert, migrate', async () => {
    const { dir } = installed();
    const className = `TicketStatusIndex${Date.now() + 1_000}`;
    const file = join(dir, 'migrations', 'tenant', `${className.slice(-13)}-TicketStatusIndex.js`);
    writeFileSync(
      file,
      [
        "'use strict';",
        "const { tenantSchemaOf } = require('typeorm-tenants');",
        `module.exports = class ${className} {`,
        '  constructor() { this.transaction = false; }',
        `  async up(q) { await q.query(\`CREATE INDEX CONCURRENTLY IF NOT EXISTS ticket_status_cic ON "\${tenantSchemaOf(q)}".${TENANT_TABLE} (status)\`); }`,
        '  async down(q) { await q.query(`DROP INDEX CONCURRENTLY IF EXISTS "${tenantSchemaOf(q)}".ticket_status_cic`); }',
        '};',
        '',
      ].join('\n'),
    );
    const indexed = async (): Promise<string[]> =>
      (
        await adminQuery<{ nspname: string }>(
          `SELECT n.nspname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relname = 'ticket_status_cic' AND i.indisvalid ORDER BY 1`,
        )
      ).map((r) => r.nspname);
    try {
      const migrated = json<FleetJson & { logs: unknown[] }>(await cli('migrate'));
      expect(migrated.results.map((r) => [r.slug, r.status])).to.deep.equal([
        [acme, 'migrated'],
        [globex, 'migrated'],
      ]);
      expect(migrated.logs).to.be.an('array');
      expect(await indexed()).to.deep.equal([schemaOf(acme), schemaOf(globex)].sort());
      const reverted = json<FleetJson>(await cli('revert'));
      expect(reverted.results.map((r) => r.status)).to.deep.equal(['reverted', 'reverted']);
      expect(await indexed()).to.deep.equal([]);
      expect(json<FleetJson>(await cli('migrate')).totals).to.include({ migrated: 2, failed: 0 });
      expect(await indexed()).to.deep.equal([schemaOf(acme), schemaOf(globex)].sort());
    } finally {
      rmSync(file);
    }
  });
});
