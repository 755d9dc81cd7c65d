import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import type { FleetReport, TenancyLogEntry } from '../../src';
import { withCliLogger } from '../../src/cli/cli-logger';
import { Output, type LogEntryJson } from '../../src/cli/output';
import { formatLogEntry } from '../../src/cli/text-format';
import { adminQuery, createTenants, managerOptions, openManager } from '../support/fixtures';
import { CLI_CONFIG, CLI_MAIN, PHONE_MIGRATION, cliEnvironment, finished, runCli, schemaOf, uniqueRegistry, type CliEnv } from './cli-support';

type ReportWithLogs = FleetReport & { readonly logs: LogEntryJson[] };

const FAILED = `Migration "${PHONE_MIGRATION}" failed`;

/** Two tenants with the base migrations; the first (by slug) holds an upper-case email, so the phone migration fails there. */
async function fleetWithOneBroken(prefix: string): Promise<{ env: CliEnv; broken: string; clean: string }> {
  const registry = uniqueRegistry();
  const manager = await openManager({ registryTable: registry });
  const [broken, clean] = (await createTenants(manager, 2, prefix)).sort() as [string, string];
  await manager.destroy();
  await adminQuery(`INSERT INTO "${schemaOf(broken)}".client (name, email) VALUES ('Upper', 'UPPER@X.TEST')`);
  return { env: { registry, extra: 'phone' }, broken, clean };
}

/** A writable terminal that keeps what is written (escape sequences included). */
function terminal(): NodeJS.WritableStream & { isTTY: true; columns: number; text: string } {
  const stream = { isTTY: true as const, columns: 120, text: '', write: (chunk: string) => ((stream.text += String(chunk)), true) };
  return stream as unknown as NodeJS.WritableStream & { isTTY: true; columns: number; text: string };
}

const entry: TenancyLogEntry = {
  level: 'info',
  source: 'typeorm',
  kind: 'migration',
  message: `${FAILED}, error: check constraint "client_email_lower" of relation "client" is violated by some row`,
  schema: 'acme',
};

describe('CLI: the logger routes what TypeORM and the library log below the progress bar or into the JSON report', () => {
  it("migrate --json: the report's logs carry TypeORM's failing-migration message with the tenant's schema, and stdout is one JSON document", async function () {
    this.timeout(120_000);
    const { env, broken, clean } = await fleetWithOneBroken('cli-log');
    const result = await runCli(['migrate', '--json'], env);
    expect(result.code, result.stderr).to.equal(1);
    const report = JSON.parse(result.stdout) as ReportWithLogs;
    expect(report.totals).to.include({ tenants: 2, migrated: 1, failed: 1 });

    const migration = report.logs.filter((log) => log.source === 'typeorm' && log.kind === 'migration');
    expect(migration).to.have.length(1);
    expect(migration[0]).to.include({ level: 'info', schema: schemaOf(broken) });
    expect(migration[0]!.message).to.contain(FAILED).and.contain('client_email_lower');
    const lifecycle = report.logs.filter((log) => log.kind === 'lifecycle').map((log) => [log.level, log.tenant, log.message.split(':')[0]]);
    expect(lifecycle).to.have.deep.members([
      ['info', clean, `Tenant "${clean}" migrated`],
      ['error', broken, `Tenant "${broken}" failed to migrate at ${PHONE_MIGRATION} (rolled back)`],
    ]);
    // Kept for the report, not printed: neither by the CLI's logger nor by TypeORM through the console.
    expect(result.stderr).to.not.contain(FAILED);

    const noop = await runCli(['migrate'], { ...env, extra: undefined });
    expect(noop.code, noop.stderr).to.equal(0);
    expect((JSON.parse(noop.stdout) as ReportWithLogs).logs).to.deep.equal([]);
  });

  it("text mode (stdout a terminal): the entry is printed on stderr as a log line naming the schema, never on stdout", async function () {
    this.timeout(120_000);
    const { env, broken } = await fleetWithOneBroken('cli-logt');
    const dir = mkdtempSync(join(tmpdir(), 'cli-logger-'));
    const stderrFile = join(dir, 'stderr.txt');
    // Under script(1) stdout is a terminal (text output); stderr goes to a file (no progress bar, plain lines).
    const command = [process.execPath, CLI_MAIN, '--config', CLI_CONFIG, 'migrate'].map((arg) => `'${arg}'`).join(' ') + ` 2>'${stderrFile}'`;
    const child = spawn('script', ['-qfec', command, '/dev/null'], { env: cliEnvironment(env), stdio: ['ignore', 'pipe', 'pipe'] });
    const result = await finished(child);
    const screen = result.stdout.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[78]/g, '').replace(/\r/g, '');
    const stderr = readFileSync(stderrFile, 'utf8');
    expect(result.code, screen + stderr).to.equal(1);
    expect(screen).to.match(new RegExp(`^${broken}\\s+failed\\s+\\d+\\s+-\\s+${PHONE_MIGRATION}: check constraint`, 'm'));
    expect(screen).to.not.contain(FAILED);
    expect(stderr).to.match(new RegExp(`^typeorm info migration \\[${schemaOf(broken)}\\]: Migration "${PHONE_MIGRATION}" failed, error: .*client_email_lower`, 'm'));
    expect(stderr).to.match(new RegExp(`^typeorm-tenants error lifecycle \\[${schemaOf(broken)}\\]: Tenant "${broken}" failed to migrate at ${PHONE_MIGRATION}`, 'm'));
  });

  for (const kind of ['function', 'typeorm'] as const) {
    it(`calls the config's own logger too (a ${kind === 'function' ? 'function' : 'TypeORM Logger, through logMigration'}), besides the report's logs`, async function () {
      this.timeout(120_000);
      const { env, broken } = await fleetWithOneBroken(`cli-logu${kind[0]}`);
      const file = join(mkdtempSync(join(tmpdir(), 'cli-logger-')), 'config-logger.jsonl');
      const result = await runCli(['migrate', '--json'], { ...env, logger: { kind, file } });
      expect(result.code, result.stderr).to.equal(1);
      expect((JSON.parse(result.stdout) as ReportWithLogs).logs.some((log) => log.kind === 'migration' && log.message.includes(FAILED))).to.equal(true);
      const lines = readFileSync(file, 'utf8').trimEnd().split('\n').map((line) => JSON.parse(line) as Record<string, string>);
      const seen = lines.filter((line) => line.message?.includes(FAILED));
      expect(seen).to.have.length(1);
      if (kind === 'function') expect(seen[0]).to.include({ kind: 'migration', source: 'typeorm', schema: schemaOf(broken) });
      else expect(seen[0]).to.include({ method: 'logMigration' });
    });
  }

  it('on a terminal, a log line is drawn above the progress bar through cli-progress (cleared line, bar redrawn below), and one logged just before the end is not lost', () => {
    const stdout = terminal();
    const stderr = terminal();
    const output = new Output({ stdout, stderr });
    expect(output.json).to.equal(false);
    const progress = output.progress('migrate')!;
    output.log({ ...entry, message: 'before the bar' }); // no bar yet: a plain line
    expect(stderr.text).to.equal(formatLogEntry({ ...entry, message: 'before the bar' }));
    progress.update({ slug: 'acme', status: 'failed', applied: [], ms: 1, error: { message: 'x' } }, 1, 2);
    output.log(entry);
    progress.stop();
    const line = formatLogEntry(entry);
    const at = stderr.text.indexOf(line);
    expect(at, JSON.stringify(stderr.text)).to.be.greaterThan(0);
    // cli-progress clears the bar's line, writes the log line, then draws the bar again under it.
    expect(stderr.text.slice(0, at).endsWith('\x1b[2K'), JSON.stringify(stderr.text.slice(0, at))).to.equal(true);
    expect(stderr.text.indexOf('migrate [', at + line.length)).to.be.greaterThan(at);
    expect(stdout.text).to.equal('');
    output.log({ ...entry, message: 'after the bar' });
    expect(stderr.text.endsWith(formatLogEntry({ ...entry, message: 'after the bar' }))).to.equal(true);
  });

  it("a config's dataSource.logger (TypeORM's option) moves behind the CLI's logger, and a config with both loggers is left for the manager to refuse", () => {
    const base = managerOptions();
    const seen: TenancyLogEntry[] = [];
    const printed: string[] = [];
    const options = withCliLogger({ ...base, dataSource: { ...base.dataSource!, logger: 'simple-console' } }, (e) => seen.push(e));
    expect(options.dataSource!.logger).to.equal(undefined);
    expect(options.logger).to.be.a('function');
    const log = console.log;
    console.log = (...args: unknown[]) => void printed.push(args.join(' '));
    try {
      (options.logger as (e: TenancyLogEntry) => void)(entry);
    } finally {
      console.log = log;
    }
    expect(seen).to.deep.equal([entry]);
    expect(printed).to.deep.equal([entry.message]); // SimpleConsoleLogger.logMigration
    const both = { ...base, dataSource: { ...base.dataSource!, logger: 'simple-console' as const }, logger: () => undefined };
    expect(withCliLogger(both, () => undefined)).to.equal(both);
    expect(() => withCliLogger({ ...base, logger: 'file' as never }, () => undefined)).to.throw(/Option "logger" must be a TypeORM Logger/);
  });
});
