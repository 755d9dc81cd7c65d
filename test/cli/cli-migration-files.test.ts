import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { runCli, runCliJson, uniqueRegistry, type CliEnv } from './cli-support';

interface FileJson {
  readonly kind: 'tenant' | 'shared';
  readonly file: string;
  readonly className: string;
  readonly written: boolean;
  readonly statements?: { readonly up: number; readonly down: number };
  readonly source?: string;
}

/**
 * migration:generate and migration:create as a real process, on the example
 * model of the test config (whose entities and migrations are in step).
 */
describe('CLI: migration:generate and migration:create', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'typeorm-tenants-migrations-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('--check: the example model matches its tenant and shared migrations (exit 0); without --check, "nothing to generate" is exit 1 in one line', async () => {
    const env: CliEnv = { registry: uniqueRegistry() };
    expect(await runCliJson(['migration:generate', join(dir, 'Nothing'), '--check'], env)).to.deep.equal({ kind: 'tenant', changes: false });
    expect(await runCliJson(['migration:generate', join(dir, 'Nothing'), '--check', '--shared'], env)).to.deep.equal({ kind: 'shared', changes: false });
    const nothing = await runCli(['migration:generate', join(dir, 'Nothing')], env);
    expect(nothing.code).to.equal(1);
    expect(nothing.stderr.trimEnd().split('\n')).to.have.length(1);
    expect(nothing.stderr).to.contain('nothing to generate').and.contain('migration:create');
    expect(readdirSync(dir)).to.deep.equal([]);
  });

  it('generates the left-out tenant migration: unqualified tenant objects, written as <timestamp>-<Name>.ts; --dryrun and --check write nothing', async () => {
    const env: CliEnv = { registry: uniqueRegistry(), omit: 'CreateProject1700000000002' };
    const target = join(dir, 'tenant', 'CreateProject');
    const checked = await runCli(['migration:generate', target, '--check', '--timestamp', '1800000000000'], env);
    expect(checked.code, checked.stderr).to.equal(1);
    const dry = await runCliJson<FileJson>(['migration:generate', target, '--dryrun', '--timestamp', '1800000000000'], env);
    expect(dry).to.include({ kind: 'tenant', written: false, className: 'CreateProject1800000000000' });
    expect(readdirSync(dir), 'nothing written').to.deep.equal([]);

    const written = await runCliJson<FileJson>(['migration:generate', target, '--timestamp', '1800000000000'], env);
    expect(written).to.include({ kind: 'tenant', written: true, file: join(dir, 'tenant', '1800000000000-CreateProject.ts') });
    const source = readFileSync(written.file, 'utf8');
    expect(source).to.equal(dry.source);
    expect(source).to.contain('export class CreateProject1800000000000 implements MigrationInterface');
    expect(source).to.contain('CREATE TABLE "project"');
    expect(source).to.contain('REFERENCES "client"("id")');
    expect(source).not.to.match(/"public"\.|typeorm_tenants_/);
    // Never overwrites.
    const again = await runCli(['migration:generate', target, '--timestamp', '1800000000000'], env);
    expect(again.code).to.equal(1);
    expect(again.stderr).to.contain('exists already');
  });

  it('migration:create writes an empty migration, TypeScript or JavaScript (CommonJS or ES module), named like TypeORM\'s', async () => {
    const env: CliEnv = { registry: uniqueRegistry() };
    const ts = await runCliJson<FileJson>(['migration:create', join(dir, 'BackfillTotals'), '--timestamp', '1800000000000'], env);
    expect(ts).to.include({ kind: 'tenant', written: true, className: 'BackfillTotals1800000000000', file: join(dir, '1800000000000-BackfillTotals.ts') });
    expect(readFileSync(ts.file, 'utf8')).to.contain('public async up(queryRunner: QueryRunner): Promise<void> {');
    const js = await runCliJson<FileJson>(['migration:create', join(dir, 'seed-plans'), '--shared', '-o', '--timestamp', '1800000000001'], env);
    expect(js).to.include({ kind: 'shared', className: 'SeedPlans1800000000001', file: join(dir, '1800000000001-seed-plans.js') });
    const loaded = require(js.file) as Function;
    expect(loaded.name).to.equal('SeedPlans1800000000001');
    expect(typeof (loaded.prototype as { up?: unknown }).up).to.equal('function');
    const esm = await runCliJson<FileJson>(['migration:create', join(dir, 'Esm'), '-o', '--esm', '--timestamp', '1800000000002'], env);
    expect(readFileSync(esm.file, 'utf8')).to.contain('export class Esm1800000000002 {');
    const bad = await runCli(['migration:create', join(dir, '9lives')], env);
    expect(bad.code).to.equal(1);
    expect(bad.stderr).to.contain('must start with a letter');
  });
});
