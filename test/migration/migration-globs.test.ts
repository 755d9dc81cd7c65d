import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { expect } from 'chai';
import { EntitySchema, type MigrationInterface, type QueryRunner } from 'typeorm';
import { importClassesFromDirectories } from 'typeorm/util/DirectoryExportedClassesLoader';
import { Client, Plan, Project } from '../../entities';
import { CreateClient1700000000001, CreateProject1700000000002 } from '../../migrations';
import { TenancyConfigurationError, tenantContext, type TenantDataSourceManager } from '../../src';
import { loadClassList } from '../../src/data-source/load-classes';
import { CLI_MAIN, finished } from '../cli/cli-support';
import { adminQuery, databaseUrl, newManager, openManager, uniqueSlug } from '../support/fixtures';

/**
 * Three tenant migrations whose timestamp order (Zeta, Alpha, Mid) differs
 * from their names' order, their files' order and the order they are listed
 * in. Each appends its name to glob_log, so the order up() ran is visible.
 */
const EXPECTED_GLOB_ORDER = ['Zeta1700000000100', 'Alpha1700000000200', 'Mid1700000000300'];

function migrationSource(className: string, esm: boolean): string {
  const body = `class ${className} {
  async up(queryRunner) {
    ${className.startsWith('Zeta') ? "await queryRunner.query('CREATE TABLE glob_log (n serial PRIMARY KEY, name text NOT NULL)');" : ''}
    await queryRunner.query('INSERT INTO glob_log (name) VALUES ($1)', ['${className}']);
  }
  async down(queryRunner) {
    await queryRunner.query('DELETE FROM glob_log WHERE name = $1', ['${className}']);
  }
}`;
  return esm ? `export ${body}\n` : `'use strict';\n${body}\nexports.${className} = ${className};\n`;
}

/** A temp folder of compiled migrations (CommonJS and one ES module), plus files TypeORM skips (.d.ts, .map). */
function migrationFolder(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tt-globs-'));
  writeFileSync(join(dir, 'alpha.js'), migrationSource('Alpha1700000000200', false));
  writeFileSync(join(dir, 'alpha.d.ts'), 'export declare class Alpha1700000000200 {}\n');
  writeFileSync(join(dir, 'mid.mjs'), migrationSource('Mid1700000000300', true));
  writeFileSync(join(dir, 'zeta.js'), migrationSource('Zeta1700000000100', false));
  writeFileSync(join(dir, 'zeta.js.map'), '{}\n');
  return dir;
}

const folders: string[] = [];

function tempFolder(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tt-globs-'));
  folders.push(dir);
  return dir;
}

async function appliedIn(schema: string): Promise<string[]> {
  const rows = await adminQuery<{ name: string }>(`SELECT name FROM "${schema}".migrations ORDER BY id`);
  return rows.map((r) => r.name);
}

async function logIn(schema: string): Promise<string[]> {
  const rows = await adminQuery<{ name: string }>(`SELECT name FROM "${schema}".glob_log ORDER BY n`);
  return rows.map((r) => r.name);
}

async function initializeError(manager: TenantDataSourceManager): Promise<TenancyConfigurationError> {
  const error: unknown = await manager.initialize().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, 'initialize() should have failed').to.be.instanceOf(TenancyConfigurationError);
  return error as TenancyConfigurationError;
}

describe('Migrations and entities given as paths and globs', () => {
  let dir: string;

  before(() => {
    dir = migrationFolder();
    folders.push(dir);
  });

  after(() => {
    for (const folder of folders) rmSync(folder, { recursive: true, force: true });
  });

  it('loads a directory exactly as TypeORM\'s importClassesFromDirectories does (same classes, same order)', async () => {
    const ours = await loadClassList([join(dir, '*'), CreateClient1700000000001], 'tenantMigrations');
    const typeorm = await importClassesFromDirectories({ log: () => undefined } as never, [join(dir, '*')]);
    expect(ours.classes).to.deep.equal([CreateClient1700000000001]);
    expect(ours.files.flatMap((f) => f.exports)).to.deep.equal(typeorm);
    expect(ours.files.map((f) => f.file).sort()).to.deep.equal([join(dir, 'alpha.js'), join(dir, 'mid.mjs'), join(dir, 'zeta.js')]);
  });

  it('classes given out of order run in timestamp order, and pending lists, reports, the ledger and migrationStatus use that order', async () => {
    const registryTable = `glob_${randomBytes(4).toString('hex')}`;
    const base = await openManager({ registryTable, tenantMigrations: [CreateProject1700000000002, CreateClient1700000000001] });
    const slug = uniqueSlug('order');
    const record = await base.createTenant(slug);
    expect(await appliedIn(record.schemaName)).to.deep.equal(['CreateClient1700000000001', 'CreateProject1700000000002']);
    await base.destroy();

    // Timestamp order (Beta, Alpha) is neither the list's order nor the names' order.
    const order: string[] = [];
    class Beta1700000000600 implements MigrationInterface {
      async up(): Promise<void> {
        order.push('Beta1700000000600');
      }
      async down(): Promise<void> {}
    }
    class Alpha1700000000700 implements MigrationInterface {
      async up(): Promise<void> {
        order.push('Alpha1700000000700');
      }
      async down(): Promise<void> {}
    }
    const tenants = await openManager({
      registryTable,
      tenantMigrations: [Alpha1700000000700, CreateProject1700000000002, Beta1700000000600, CreateClient1700000000001],
    });
    const [before] = (await tenants.migrationStatus()).filter((s) => s.slug === slug);
    expect(before!.pending).to.deep.equal(['Beta1700000000600', 'Alpha1700000000700']);
    const report = await tenants.migrateTenants({ tenants: [slug] });
    expect(report.results[0]!.applied).to.deep.equal(['Beta1700000000600', 'Alpha1700000000700']);
    expect(order).to.deep.equal(['Beta1700000000600', 'Alpha1700000000700']);
    const all = ['CreateClient1700000000001', 'CreateProject1700000000002', 'Beta1700000000600', 'Alpha1700000000700'];
    expect(await appliedIn(record.schemaName)).to.deep.equal(all);
    const [after] = (await tenants.migrationStatus()).filter((s) => s.slug === slug);
    expect(after).to.deep.include({ applied: all, pending: [] });
  });

  it('a directory of compiled .js (and .mjs) migrations, given by a relative path after classes out of order, is applied in timestamp order; pending, reports, the ledger and migrationStatus use that order', async () => {
    const registryTable = `glob_${randomBytes(4).toString('hex')}`;
    const base = await openManager({ registryTable, tenantMigrations: [CreateProject1700000000002, CreateClient1700000000001] });
    const slug = uniqueSlug('globs');
    const { schemaName } = await base.createTenant(slug);
    await base.destroy();

    // Relative paths are relative to the working directory, as in TypeORM.
    const relativeDir = relative(process.cwd(), dir);
    expect(relativeDir.startsWith('/')).to.equal(false);
    const tenants = await openManager({ registryTable, tenantMigrations: [relativeDir, CreateProject1700000000002, CreateClient1700000000001] });
    const [before] = (await tenants.migrationStatus()).filter((s) => s.slug === slug);
    expect(before!.pending).to.deep.equal(EXPECTED_GLOB_ORDER);

    const report = await tenants.migrateTenants({ tenants: [slug] });
    expect(report.results.map((r) => [r.slug, r.status, r.applied])).to.deep.equal([[slug, 'migrated', EXPECTED_GLOB_ORDER]]);
    const all = ['CreateClient1700000000001', 'CreateProject1700000000002', ...EXPECTED_GLOB_ORDER];
    expect(await appliedIn(schemaName)).to.deep.equal(all);
    expect(await logIn(schemaName)).to.deep.equal(EXPECTED_GLOB_ORDER);
    const [after] = (await tenants.migrationStatus()).filter((s) => s.slug === slug);
    expect(after).to.deep.include({ applied: all, pending: [] });

    // A new tenant gets them in the same order, in one creation transaction.
    const fresh = await tenants.createTenant(uniqueSlug('globs'));
    expect(await appliedIn(fresh.schemaName)).to.deep.equal(all);
    expect(await logIn(fresh.schemaName)).to.deep.equal(EXPECTED_GLOB_ORDER);
  });

  it('an entities glob matching, beside the entity files, a file with only an abstract base class and an enum skips that file, as TypeORM does', async () => {
    // A common layout: base.entity.js (an abstract base with the id column, plus an enum) next to the entity files.
    const folder = tempFolder();
    const typeorm = JSON.stringify(require.resolve('typeorm'));
    writeFileSync(
      join(folder, 'base.entity.js'),
      `const { PrimaryGeneratedColumn } = require(${typeorm});
       class BaseEntityWithId {}
       PrimaryGeneratedColumn()(BaseEntityWithId.prototype, 'id');
       exports.BaseEntityWithId = BaseEntityWithId;
       exports.Status = { Active: 'active', Closed: 'closed' };\n`,
    );
    writeFileSync(join(folder, 'client.entity.js'), `exports.Client = require(${JSON.stringify(require.resolve('../../entities'))}).Client;\n`);
    const manager = await openManager({ entities: [Project, Plan, join(folder, '*.entity.js')] });
    const slug = uniqueSlug('glob-base');
    await manager.createTenant(slug);
    expect(await manager.run(slug, () => tenantContext.getRepository(Client).count())).to.equal(0);
  });

  it('entities and migrations given only as globs of the compiled example model serve a tenant (an index file re-exporting the entities counts once)', async () => {
    const build = resolve(__dirname, '../..');
    const tenants = await openManager({
      registryTable: `glob_${randomBytes(4).toString('hex')}`,
      entities: [join(build, 'entities/*.js')],
      tenantMigrations: [join(build, 'migrations/tenant/*.js')],
      sharedMigrations: [join(build, 'migrations/shared/*.js')],
    });
    const slug = uniqueSlug('globent');
    const { schemaName } = await tenants.createTenant(slug);
    expect(await appliedIn(schemaName)).to.deep.equal(['CreateClient1700000000001', 'CreateProject1700000000002']);
    const names = await tenants.run(slug, async () => {
      await tenantContext.getRepository(Client).save({ name: 'Ada', email: 'ada@example.com' });
      return (await tenantContext.getRepository(Client).find()).map((c) => c.name);
    });
    expect(names).to.deep.equal(['Ada']);
    expect(tenants.sharedDataSource.entityMetadatas.map((m) => m.target)).to.deep.equal([Plan]);
  });

  describe('refused at initialize() with TenancyConfigurationError naming the path or class and the fix', () => {
    it('a glob that matches no file', async () => {
      const missing = join(dir, 'nothing-here', '*.js');
      const error = await initializeError(newManager({ tenantMigrations: [missing] }));
      expect(error.message).to.include(`"${missing}"`).and.include('matches no file').and.include(process.cwd());
    });

    it('a glob that matches only files TypeORM does not load (.d.ts)', async () => {
      const error = await initializeError(newManager({ tenantMigrations: [join(dir, '*.d.ts')] }));
      expect(error.message).to.include('matches no file TypeORM loads').and.include(join(dir, 'alpha.d.ts'));
    });

    it('a migration file that exports no class', async () => {
      const folder = tempFolder();
      writeFileSync(join(folder, 'constants.js'), 'exports.VERSION = 3;\n');
      const error = await initializeError(newManager({ tenantMigrations: [join(folder, '*.js')] }));
      expect(error.message).to.include(join(folder, 'constants.js')).and.include('exports no class');
    });

    it('a migration file that also exports a function that is not a migration', async () => {
      const folder = tempFolder();
      writeFileSync(
        join(folder, 'helper.js'),
        `exports.quote = function quote(name) { return name; };\n` +
          `exports.Fine1700000000400 = class Fine1700000000400 { async up() {} async down() {} };\n`,
      );
      const error = await initializeError(newManager({ tenantMigrations: [join(folder, '*.js')] }));
      expect(error.message).to.include('quote').and.include(join(folder, 'helper.js')).and.include('not a migration');
    });

    it('a file that cannot be loaded, with its error as the cause', async () => {
      const folder = tempFolder();
      writeFileSync(join(folder, 'broken.js'), 'this is not javascript\n');
      const error = await initializeError(newManager({ tenantMigrations: [join(folder, '*.js')] }));
      expect(error.message).to.include(`Cannot load ${join(folder, 'broken.js')}`);
      expect(error.cause).to.be.instanceOf(SyntaxError);
    });

    it('a migration name without a timestamp (TypeORM refuses it only when migrations run)', async () => {
      class AddInvoices implements MigrationInterface {
        async up(_queryRunner: QueryRunner): Promise<void> {}
        async down(_queryRunner: QueryRunner): Promise<void> {}
      }
      const error = await initializeError(newManager({ tenantMigrations: [CreateClient1700000000001, AddInvoices] }));
      expect(error.message).to.include('"AddInvoices"').and.include('no timestamp').and.include('AddInvoices1700000000000');
    });

    it('two migrations with one name, as two classes or as a class also matched by a glob', async () => {
      const first = class Twin1700000000500 implements MigrationInterface {
        async up(): Promise<void> {}
        async down(): Promise<void> {}
      };
      const second = class Twin1700000000500 implements MigrationInterface {
        async up(): Promise<void> {}
        async down(): Promise<void> {}
      };
      const twins = await initializeError(newManager({ tenantMigrations: [first, second] }));
      expect(twins.message).to.include('named "Twin1700000000500"');

      const compiled = resolve(__dirname, '../../migrations/tenant/*.js');
      const listedTwice = await initializeError(newManager({ tenantMigrations: [CreateClient1700000000001, compiled] }));
      expect(listedTwice.message)
        .to.include('named "CreateClient1700000000001"')
        .and.include('the same class, listed twice')
        .and.include(resolve(__dirname, '../../migrations/tenant/1700000000001-create-client.js'));
    });

    it('an entity file that exports no entity class', async () => {
      const folder = tempFolder();
      writeFileSync(join(folder, 'client.dto.js'), 'exports.ClientDto = class ClientDto {};\n');
      const error = await initializeError(newManager({ entities: [Client, Project, Plan, join(folder, '*.js')] }));
      expect(error.message).to.include(join(folder, 'client.dto.js')).and.include('exports no entity class').and.include('ClientDto');
    });
  });

  describe('refused by the constructor (shapes are checked synchronously)', () => {
    it('an undefined entry (a circular import) and an EntitySchema', () => {
      expect(() => newManager({ tenantMigrations: [CreateClient1700000000001, undefined as unknown as Function] }))
        .to.throw(TenancyConfigurationError)
        .with.property('message')
        .that.includes('tenantMigrations[1] is undefined');
      const schema = new EntitySchema({ name: 'note', columns: { id: { type: Number, primary: true } } });
      expect(() => newManager({ entities: [Client, schema as unknown as Function] }))
        .to.throw(TenancyConfigurationError)
        .with.property('message')
        .that.includes('entities[1] is an EntitySchema');
      expect(() => newManager({ sharedMigrations: [''] })).to.throw(TenancyConfigurationError, 'sharedMigrations[0]');
    });
  });

  it('the CLI loads a config whose migrations are a relative glob, relative to the directory it runs in', async function () {
    this.timeout(60_000);
    const project = tempFolder();
    mkdirSync(join(project, 'migrations'));
    writeFileSync(join(project, 'migrations', 'zeta.js'), migrationSource('Zeta1700000000100', false));
    writeFileSync(join(project, 'migrations', 'alpha.js'), migrationSource('Alpha1700000000200', false));
    const build = resolve(__dirname, '../..');
    const registryTable = `glob_${randomBytes(4).toString('hex')}`;
    const writeConfig = (pattern: string): void =>
      writeFileSync(
        join(project, 'tenancy.config.js'),
        `const { Client, Plan, Project } = require(${JSON.stringify(join(build, 'entities'))});\n` +
          `const { CreateClient1700000000001, CreateProject1700000000002, sharedMigrations } = require(${JSON.stringify(join(build, 'migrations'))});\n` +
          `module.exports = {\n` +
          `  dataSource: { type: 'postgres', url: process.env.DATABASE_URL, poolSize: 2 },\n` +
          `  entities: [Client, Project, Plan],\n` +
          `  tenantMigrations: [${JSON.stringify(pattern)}, CreateProject1700000000002, CreateClient1700000000001],\n` +
          `  sharedMigrations,\n` +
          `  registryTable: ${JSON.stringify(registryTable)},\n` +
          `};\n`,
      );
    const cli = (args: readonly string[]) =>
      finished(
        spawn(process.execPath, [CLI_MAIN, ...args], { cwd: project, env: { ...process.env, DATABASE_URL: databaseUrl() }, stdio: ['ignore', 'pipe', 'pipe'] }),
      );

    // './*.js' matches the config module itself, whose exported entity classes are no migrations: refused, naming the file.
    writeConfig('./*.js');
    const wide = await cli(['status', '--json']);
    expect(wide.code).to.equal(1);
    expect(wide.stderr).to.include('INVALID_CONFIGURATION').and.include(join(project, 'tenancy.config.js')).and.include('not a migration');

    writeConfig('migrations/*.js');
    const slug = uniqueSlug('cliglob');
    const created = await cli(['create', slug, '--json']);
    expect(created.code, created.stderr).to.equal(0);
    const status = await cli(['status', '--json']);
    expect(status.code, status.stderr).to.equal(0);
    const [line] = (JSON.parse(status.stdout) as Array<{ slug: string; applied: string[]; pending: string[] }>).filter((s) => s.slug === slug);
    expect(line).to.deep.include({
      applied: ['CreateClient1700000000001', 'CreateProject1700000000002', 'Zeta1700000000100', 'Alpha1700000000200'],
      pending: [],
    });
  });
});
