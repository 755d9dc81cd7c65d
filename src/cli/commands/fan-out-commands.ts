import { existsSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { InvalidArgumentError as UsageError, type Command } from 'commander';
import type { FanOutOptions, TenantWorkReport } from '../../fan-out/for-each-tenant';
import type { TenantQueryResult } from '../../fan-out/query-across-tenants';
import type { WaveSize } from '../../migration/fleet-run';
import type { TenantDataSourceManager } from '../../manager/tenant-data-source-manager';
import type { TenantRecord } from '../../registry/tenant-record';
import { CliError } from '../cli-error';
import type { CliSession } from '../cli-session';
import { renderCsv } from '../csv-format';
import { formatFleetError, renderTable } from '../text-format';
import { EXIT_INTERRUPTED, positiveInteger, waveList } from './fleet-commands';
import { runWithProgress, withLogs } from '../interruptible-run';

/** What a module run by `typeorm-tenants run <module>` gets, once per tenant, inside the tenant's run (`tenantContext` serves it). */
export interface TenantScriptContext {
  /** The tenant's registry record. */
  readonly tenant: TenantRecord;
  /** The CLI's manager (for `manager.sharedDataSource`, or `getDataSource(ctx.tenant.slug)`). */
  readonly manager: TenantDataSourceManager;
  /** Aborted on Ctrl-C: long work should stop early. */
  readonly signal: AbortSignal;
}

interface FanOutFlags {
  readonly concurrency?: number;
  readonly tenant?: string[];
  readonly server?: string[];
  readonly waves?: WaveSize[];
  readonly stopOnError?: boolean;
}

interface ExecFlags extends FanOutFlags {
  readonly param?: string[];
  readonly csv?: boolean;
  readonly statementTimeout?: number;
}

/** Registers `exec "<sql>"` (one read-only statement in every tenant) and `run <module>` (a script per tenant). */
export function registerFanOutCommands(program: Command, session: () => CliSession): void {
  withScopeFlags(
    program
      .command('exec')
      .argument('<sql>', 'one read-only SQL statement, run in every active tenant (or --tenant ones) under its search_path')
      .description("run one read-only SQL statement in every tenant and print the rows with a tenant column; exit 1 if a tenant failed")
      .option('-p, --param <value>', 'a parameter ($1, $2, ... in order); repeat for several', collect)
      .option('--csv', 'print the rows as CSV on stdout (failures go to stderr)')
      .option('--statement-timeout <ms>', 'statement_timeout in each tenant, in milliseconds (default 30000; 0: none)', wholeNumber),
  ).action(async (sql: string, flags: ExecFlags, command: Command) => {
    if (flags.csv === true && program.opts<{ json?: boolean }>().json === true) command.error('error: --csv and --json cannot be combined: choose one output.');
    const cli = session();
    const result = await runWithProgress(cli, 'exec', (manager, options) =>
      manager.queryAcrossTenants(sql, flags.param ?? [], {
        ...options,
        ...scopeOf(flags),
        ...(flags.statementTimeout === undefined ? {} : { statementTimeoutMs: flags.statementTimeout }),
      }),
    );
    if (flags.csv === true) {
      cli.output.write(renderCsv(result.value.rows));
      for (const failure of result.value.failures) cli.output.note(`${failure.slug}: ${failure.status}: ${formatFleetError(failure.error)}`);
    } else {
      cli.output.result(withLogs(cli, result.value), renderQueryResult);
    }
    finish(cli, result.aborted, result.value.totals.failed);
  });

  withScopeFlags(
    program
      .command('run')
      .argument('<module>', 'a CommonJS module exporting async (ctx) => ... (module.exports or the default export); ctx.tenant is the record')
      .description('run a script in every active tenant (or --tenant ones), inside the tenant, with tenantContext on it; exit 1 if a tenant failed')
      .option('-w, --waves <sizes>', 'process in waves, e.g. "1,10%": 1 tenant, then 10%, then the rest; a failing wave stops the run', waveList)
      .option('--stop-on-error', 'start no more tenants after the first failure (the rest are reported skipped)'),
  ).action(async (path: string, flags: FanOutFlags) => {
    const cli = session();
    const script = loadScript(path, cli.cwd);
    const result = await runWithProgress(cli, 'run', (manager, options) =>
      manager.forEachTenant((tenant) => script({ tenant, manager, signal: options.signal! }), {
        ...options,
        ...scopeOf(flags),
        ...(flags.waves === undefined ? {} : { waves: flags.waves }),
        ...(flags.stopOnError === true ? { stopOnError: true } : {}),
      }),
    );
    cli.output.result(withLogs(cli, result.value), (report) => renderWorkReport(report, cli.output.verbose));
    finish(cli, result.aborted, result.value.totals.failed);
  });
}

function withScopeFlags(command: Command): Command {
  return command
    .option('--concurrency <n>', 'tenants processed at once on each server (default: half the pool size)', positiveInteger)
    .option('-t, --tenant <slug>', 'only this tenant; repeat for several', collect)
    .option('-s, --server <name>', 'only the tenants on this server; repeat for several', collect);
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function wholeNumber(value: string): number {
  if (!/^\d+$/.test(value)) throw new UsageError('Expected a whole number of milliseconds (0 for none).');
  return Number(value);
}

function scopeOf(flags: FanOutFlags): Pick<FanOutOptions, 'tenants' | 'concurrency' | 'where'> {
  return {
    ...(flags.tenant === undefined ? {} : { tenants: flags.tenant }),
    ...(flags.server === undefined ? {} : { where: { server: flags.server } }),
    ...(flags.concurrency === undefined ? {} : { concurrency: flags.concurrency }),
  };
}

function finish(cli: CliSession, aborted: boolean, failed: number): void {
  if (aborted) cli.exitCode = EXIT_INTERRUPTED;
  else if (failed > 0) cli.exitCode = 1;
}

/** The script of `run <module>`: `module.exports = async (ctx) => ...` or `export default async (ctx) => ...`. */
function loadScript(path: string, cwd: string): (ctx: TenantScriptContext) => unknown {
  const file = isAbsolute(path) ? path : resolve(cwd, path);
  const expected = 'it must export a function (ctx) => ..., as module.exports or the default export';
  if (!existsSync(file)) throw new CliError(`Cannot load script ${path}: no such file (looked for ${file}); ${expected}.`);
  let exported: unknown;
  try {
    exported = require(file);
  } catch (error) {
    const message = error instanceof Error ? error.message.split('\n')[0] : String(error);
    throw new CliError(`Cannot load script ${path}: ${message}; ${expected}.`, { cause: error });
  }
  const fn =
    typeof exported === 'function' ? exported : exported !== null && typeof exported === 'object' && 'default' in exported ? exported.default : undefined;
  if (typeof fn !== 'function') throw new CliError(`Cannot load script ${path}: it exports ${exported === null ? 'null' : typeof exported}; ${expected}.`);
  return fn as (ctx: TenantScriptContext) => unknown;
}

/** exec's text output: the rows as a table, then the failures, then the counts. */
export function renderQueryResult(result: TenantQueryResult): string {
  const columns = [...new Set(result.rows.flatMap((row) => Object.keys(row)))];
  let text = result.rows.length === 0 ? 'No rows.\n' : renderTable(columns, result.rows.map((row) => columns.map((c) => cellText(row[c]))));
  if (result.failures.length > 0) {
    text += renderTable(['SLUG', 'STATUS', 'ERROR'], result.failures.map((f) => [f.slug, f.status, formatFleetError(f.error)]));
  }
  const t = result.totals;
  return text + `${t.tenants} tenant${t.tenants === 1 ? '' : 's'}: ${t.done} done, ${t.failed} failed, ${t.skipped} skipped; ${t.rows} row${t.rows === 1 ? '' : 's'} in ${t.ms} ms\n`;
}

/** run's text output: failed and skipped tenants (every tenant with --verbose, with its value), then the counts. */
export function renderWorkReport(report: TenantWorkReport<unknown>, verbose = false): string {
  const listed = verbose ? report.results : report.results.filter((r) => r.status !== 'done');
  const t = report.totals;
  if (report.results.length === 0) return `No tenants in scope (checked in ${t.ms} ms).\n`;
  const table =
    listed.length === 0
      ? ''
      : renderTable(
          ['SLUG', 'STATUS', 'MS', 'RESULT'],
          listed.map((r) => [r.slug, r.status, String(Math.round(r.ms)), r.error === undefined ? cellText(r.value) : formatFleetError(r.error)]),
        );
  const hidden = report.results.length - listed.length;
  const note = hidden > 0 ? ` (${hidden} done not listed; --verbose lists them)` : '';
  return `${table}${t.tenants} tenant${t.tenants === 1 ? '' : 's'}: ${t.done} done, ${t.failed} failed, ${t.skipped} skipped in ${t.ms} ms${note}\n`;
}

function cellText(value: unknown): string {
  if (value === null || value === undefined) return value === null ? 'NULL' : '';
  if (value instanceof Date) return value.toISOString();
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value).replace(/\s*\n\s*/g, ' ');
}
