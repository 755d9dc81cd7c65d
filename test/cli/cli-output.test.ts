import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { TenantNotFoundError, TenantSuspendedError, type FleetReport } from '../../src';
import { loadConfig } from '../../src/cli/load-config';
import { Output } from '../../src/cli/output';
import { formatErrorLine, formatFleetError, renderFleetReport, renderMigrationStatus } from '../../src/cli/text-format';
import { adminQuery, createTenants, openManager } from '../support/fixtures';
import { CLI_CONFIG, CLI_MAIN, SLOW_MIGRATION, UNIQUE_MIGRATION, cliEnvironment, finished, schemaOf, uniqueRegistry, type CliEnv } from './cli-support';

const report: FleetReport = {
  results: [
    { slug: 'acme', status: 'migrated', applied: ['AddPhone1', 'AddFax2'], ms: 12.4 },
    { slug: 'globex', status: 'failed', applied: [], error: { migration: 'AddPhone1', message: 'check constraint "x" is violated', code: '23514' }, ms: 3 },
    { slug: 'initech', status: 'up-to-date', applied: [], ms: 1 },
  ],
  totals: { tenants: 3, migrated: 1, reverted: 0, upToDate: 1, failed: 1, skipped: 0, ms: 1530 },
};

/** A writable that keeps what is written, with the terminal flag chosen by the test. */
function sink(isTTY: boolean): NodeJS.WritableStream & { isTTY: boolean; text: string } {
  const stream = { isTTY, text: '', write: (chunk: string) => ((stream.text += chunk), true) };
  return stream as unknown as NodeJS.WritableStream & { isTTY: boolean; text: string };
}

describe('CLI: text output, errors and config loading', () => {
  it('renders a fleet report as a table of the tenants that changed or failed, with the error and its code, then the totals', () => {
    const text = renderFleetReport(report, 'migrate');
    const lines = text.trimEnd().split('\n');
    expect(lines[0]).to.match(/^SLUG\s+STATUS\s+MS\s+MIGRATIONS\s+ERROR$/);
    expect(lines[1]).to.match(/^acme\s+migrated\s+12\s+AddPhone1, AddFax2$/);
    expect(lines[2]).to.match(/^globex\s+failed\s+3\s+-\s+AddPhone1: check constraint "x" is violated \[23514\]$/);
    expect(text).to.not.contain('initech');
    expect(lines.at(-1)).to.equal('3 tenants: 1 migrated, 1 up to date, 1 failed, 0 skipped in 1.5 s (1 up to date not listed; --verbose lists them)');
    expect(renderFleetReport(report, 'migrate', true)).to.match(/^initech\s+up-to-date/m);
    expect(renderFleetReport({ results: [], totals: { ...report.totals, tenants: 0, migrated: 0, upToDate: 0, failed: 0, ms: 4 } }, 'migrate')).to.equal(
      'No tenants in scope (checked in 4 ms).\n',
    );
    expect(renderFleetReport({ results: [report.results[0]!], totals: { ...report.totals, tenants: 1, upToDate: 0, failed: 0 } }, 'migrate')).to.match(
      /^SLUG\s+STATUS\s+MS\s+MIGRATIONS\n/,
    );
  });

  it('a no-op report over 10,000 tenants prints one totals line counting every tenant up to date', () => {
    const results = Array.from({ length: 10_000 }, (_, i) => ({ slug: `t-${i}`, status: 'up-to-date' as const, applied: [], ms: 0 }));
    const noop: FleetReport = { results, totals: { tenants: 10_000, migrated: 0, reverted: 0, upToDate: 10_000, failed: 0, skipped: 0, ms: 31 } };
    expect(renderFleetReport(noop, 'migrate')).to.equal(
      '10000 tenants: 0 migrated, 10000 up to date, 0 failed, 0 skipped in 31 ms (10000 up to date not listed; --verbose lists them)\n',
    );
    expect(renderFleetReport(noop, 'revert')).to.match(/^10000 tenants: 0 reverted, 10000 up to date, /);
    expect(renderFleetReport(noop, 'migrate', true).split('\n')).to.have.length(10_003);
  });

  it('a failed tenant\'s error prints its database fields, labelled, on the tenant\'s one line', () => {
    expect(
      formatFleetError({
        migration: 'AddNumberKey1',
        message: 'could not create unique index "invoice_number_key"\nsecond line',
        code: '23505',
        detail: 'Key (number)=(DUP-1) is duplicated.',
        schema: 'acme',
        table: 'invoice',
        constraint: 'invoice_number_key',
      }),
    ).to.equal(
      'AddNumberKey1: could not create unique index "invoice_number_key" [23505]; detail: Key (number)=(DUP-1) is duplicated.; schema: acme; table: invoice; constraint: invoice_number_key',
    );
    expect(formatFleetError({ message: 'cannot drop table client', code: '2BP01', detail: 'a\nb', hint: 'Use DROP ... CASCADE.' })).to.equal(
      'cannot drop table client [2BP01]; detail: a b; hint: Use DROP ... CASCADE.',
    );
    expect(formatFleetError({ message: 'column "x" contains null values', code: '23502', column: 'x' })).to.equal('column "x" contains null values [23502]; column: x');
  });

  it('renders migration status with pending names, and says when all are up to date', () => {
    const text = renderMigrationStatus([
      { slug: 'acme', status: 'active', applied: ['A1', 'B2'], pending: [] },
      { slug: 'globex', status: 'suspended', applied: ['A1'], pending: ['B2'] },
    ]);
    expect(text).to.match(/^acme\s+active\s+2\s+-$/m);
    expect(text).to.match(/^globex\s+suspended\s+1\s+B2$/m);
    expect(text).to.match(/2 tenants, 1 with pending migrations\n$/);
  });

  it('formats an error as one line with the code of a TenancyError; --verbose appends the stack and causes', () => {
    const error = new TenantSuspendedError('acme');
    expect(formatErrorLine(error)).to.equal(`error [TENANT_SUSPENDED]: ${error.message}\n`);
    // The library's hint names its API; the CLI's names the command.
    expect(formatErrorLine(new TenantNotFoundError('acme'))).to.equal(
      'error [TENANT_NOT_FOUND]: Tenant "acme" does not exist. Create it with `typeorm-tenants create acme`, or check the slug.\n',
    );
    expect(formatErrorLine(new Error('connect ECONNREFUSED\n  127.0.0.1:1'))).to.equal('error: connect ECONNREFUSED 127.0.0.1:1\n');
    const wrapped = new Error('outer', { cause: new Error('inner') });
    const verbose = formatErrorLine(wrapped, true);
    expect(verbose.split('\n')[0]).to.equal('error: outer');
    expect(verbose).to.match(/\nError: outer\n\s+at /);
    expect(verbose).to.match(/\ncaused by: Error: inner\n\s+at /);
  });

  it('prints JSON when stdout is no terminal or --json is given, text on a terminal; no progress bar without a terminal', () => {
    const piped = { stdout: sink(false), stderr: sink(false) };
    new Output(piped).result({ slug: 'acme' }, () => 'text');
    expect(JSON.parse(piped.stdout.text)).to.deep.equal({ slug: 'acme' });
    expect(new Output(piped).progress('migrate')).to.equal(undefined);

    const terminal = { stdout: sink(true), stderr: sink(true) };
    new Output(terminal).result({ slug: 'acme' }, (v) => `tenant ${v.slug}\n`);
    expect(terminal.stdout.text).to.equal('tenant acme\n');
    expect(new Output(terminal).progress('migrate')).to.not.equal(undefined);
    expect(new Output(terminal, { json: true }).progress('migrate')).to.equal(undefined);
  });

  it('loads a config exported as module.exports, exports.default, a function or an async function; refuses anything else in one line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tenancy-config-'));
    const write = (name: string, source: string): string => {
      writeFileSync(join(dir, name), source);
      return name;
    };
    const options = "{ dataSource: { type: 'postgres' }, entities: [function A() {}] }";
    for (const source of [
      `module.exports = ${options};`,
      `exports.default = ${options};`,
      `module.exports = () => (${options});`,
      `exports.default = async () => (${options});`,
    ]) {
      const loaded = await loadConfig(write(`c${Math.random().toString(36).slice(2)}.js`, source), dir);
      expect(loaded.dataSource).to.deep.equal({ type: 'postgres' }, source);
    }
    await expect(loadConfig(write('empty.js', 'module.exports = 42;'), dir)).to.be.rejectedWith(
      'Cannot load config empty.js: it exports a number; it must export the TenantDataSourceManager options',
    );
    await expect(loadConfig(write('partial.js', "module.exports = { dataSource: { type: 'postgres' } };"), dir)).to.be.rejectedWith(
      'Cannot load config partial.js: the exported object has no entities; it must export the TenantDataSourceManager options',
    );
    await expect(loadConfig(write('broken.js', 'module.exports = {;'), dir)).to.be.rejectedWith(/^Cannot load config broken\.js: Unexpected token/);
    await expect(loadConfig(write('throws.js', "module.exports = () => { throw new Error('no env'); };"), dir)).to.be.rejectedWith(
      'Cannot load config throws.js: its exported function threw: no env',
    );
    await expect(loadConfig(write('tenancy.config.ts', 'export default { dataSource: {} as any };'), dir)).to.be.rejectedWith(/TypeScript loader/);
  });

  it('on a terminal (run under script(1)), migrate draws a progress bar with done/failed counts and prints a text summary', async function () {
    this.timeout(120_000);
    const registry = uniqueRegistry();
    const manager = await openManager({ registryTable: registry });
    const slugs = await createTenants(manager, 3, 'cli-tty');
    await manager.destroy();

    const command = [process.execPath, CLI_MAIN, '--config', CLI_CONFIG, 'migrate', '--concurrency', '2'].map((arg) => `'${arg}'`).join(' ');
    const child = spawn('script', ['-qfec', command, '/dev/null'], {
      env: cliEnvironment({ registry, extra: 'slow' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const result = await finished(child);
    expect(result.code, result.stdout + result.stderr).to.equal(0);
    // script(1) merges the terminal's stdout and stderr: the bar, then the table.
    const screen = result.stdout.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[78]/g, '');
    expect(screen).to.match(/migrate \[=+\] 3\/3 \| done 3 \| failed 0/);
    for (const slug of slugs) expect(screen).to.match(new RegExp(`^${slug}\\s+migrated\\s+\\d+\\s+${SLOW_MIGRATION}`, 'm'));
    expect(screen).to.match(/^3 tenants: 3 migrated, 0 up to date, 0 failed, 0 skipped in /m);
    expect(screen.indexOf('3/3')).to.be.lessThan(screen.indexOf('3 tenants:'));
    expect(() => JSON.parse(result.stdout)).to.throw();
  });

  it('on a terminal, migrate lists the failed tenant with the database\'s detail, and every rerun\'s totals count every tenant ("N up to date")', async function () {
    this.timeout(120_000);
    const registry = uniqueRegistry();
    const manager = await openManager({ registryTable: registry });
    const slugs = (await createTenants(manager, 3, 'cli-ttyd')).sort();
    await manager.destroy();
    const [duplicated] = slugs as [string];
    await adminQuery(`INSERT INTO "${schemaOf(duplicated)}".client (name, email) VALUES ('DUP-1', 'a@x.test'), ('DUP-1', 'b@x.test')`);
    const env: CliEnv = { registry, extra: 'unique' };

    const first = await onTerminal(['migrate'], env);
    expect(first.code, first.screen).to.equal(1);
    expect(first.screen).to.match(
      new RegExp(
        `^${duplicated}\\s+failed\\s+\\d+\\s+-\\s+${UNIQUE_MIGRATION}: could not create unique index "client_name_key" \\[23505\\]; detail: Key \\(name\\)=\\(DUP-1\\) is duplicated\\.; schema: ${schemaOf(duplicated)}; table: client; constraint: client_name_key$`,
        'm',
      ),
    );
    expect(first.screen).to.match(/^3 tenants: 2 migrated, 0 up to date, 1 failed, 0 skipped in /m);

    await adminQuery(`DELETE FROM "${schemaOf(duplicated)}".client WHERE email = 'b@x.test'`);
    const second = await onTerminal(['migrate'], env);
    expect(second.code, second.screen).to.equal(0);
    expect(second.screen).to.match(new RegExp(`^${duplicated}\\s+migrated\\s+\\d+\\s+${UNIQUE_MIGRATION}$`, 'm'));
    expect(second.screen).to.match(/^3 tenants: 1 migrated, 2 up to date, 0 failed, 0 skipped in \d+ ms \(2 up to date not listed; --verbose lists them\)$/m);

    const noop = await onTerminal(['migrate'], env);
    expect(noop.code, noop.screen).to.equal(0);
    expect(noop.screen.trim()).to.match(/^3 tenants: 0 migrated, 3 up to date, 0 failed, 0 skipped in \d+ ms \(3 up to date not listed; --verbose lists them\)$/);
    const verbose = await onTerminal(['migrate', '--verbose'], env);
    for (const slug of slugs) expect(verbose.screen).to.match(new RegExp(`^${slug}\\s+up-to-date\\s+0\\s+-$`, 'm'));
  });
});

/** Runs the CLI under script(1), so stdout is a terminal and the output is text; the screen without escape sequences. */
async function onTerminal(args: readonly string[], env: CliEnv): Promise<{ code: number | null; screen: string }> {
  const command = [process.execPath, CLI_MAIN, '--config', CLI_CONFIG, ...args].map((arg) => `'${arg}'`).join(' ');
  const child = spawn('script', ['-qfec', command, '/dev/null'], { env: cliEnvironment(env), stdio: ['ignore', 'pipe', 'pipe'] });
  const result = await finished(child);
  return { code: result.code, screen: result.stdout.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[78]/g, '').replace(/\r/g, '') };
}
