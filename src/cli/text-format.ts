import { TenancyError, TenantNotFoundError } from '../errors';
import type { TenantMigrationStatus } from '../migration/fleet-migrator';
import { FLEET_ERROR_DATABASE_FIELDS, type FleetReport, type FleetTenantError, type FleetTenantResult } from '../migration/fleet-run';
import type { TenantDomain } from '../registry/tenant-domains';
import type { TenantRecord } from '../registry/tenant-record';
import { CliError } from './cli-error';

/** Text renderings of the CLI's results, for a person at a terminal. Pure functions: tested without a terminal. */

/** Lays out rows under a header in columns separated by two spaces; the last column is not padded. */
export function renderTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

/** One tenant's record as `key  value` lines. */
export function renderRecord(record: TenantRecord): string {
  return renderTable(
    ['slug', record.slug],
    [
      ['schema', record.schemaName],
      ['name', record.name],
      ['status', record.status],
      record.node === undefined ? ['server', record.server] : ['node', record.node],
      ['created', formatDate(record.createdAt)],
    ],
  );
}

/** The registry as a table, or a sentence when it is empty. */
export function renderRecords(records: readonly TenantRecord[]): string {
  if (records.length === 0) return 'No tenants.\n';
  // In Citus mode (records that name a node) the one server is the coordinator: the node says where each tenant is.
  const byNode = records.some((r) => r.node !== undefined);
  const rows = records.map((r) => [r.slug, r.schemaName, r.status, byNode ? (r.node ?? '-') : r.server, formatDate(r.createdAt), r.name]);
  return renderTable(['SLUG', 'SCHEMA', 'STATUS', byNode ? 'NODE' : 'SERVER', 'CREATED', 'NAME'], rows) + `${plural(records.length, 'tenant')}\n`;
}

/** One tenant domain as `key  value` lines. */
export function renderDomain(domain: TenantDomain): string {
  return renderTable(
    ['hostname', domain.hostname],
    [
      ['tenant', domain.slug],
      ['primary', domain.primary ? 'yes' : 'no'],
      ['verified', domain.verified ? 'yes' : 'no'],
      ['created', formatDate(domain.createdAt)],
    ],
  );
}

/** Tenant domains as a table, or a sentence when there are none. */
export function renderDomains(domains: readonly TenantDomain[]): string {
  if (domains.length === 0) return 'No domains.\n';
  const rows = domains.map((d) => [d.hostname, d.slug, d.primary ? 'yes' : 'no', d.verified ? 'yes' : 'no', formatDate(d.createdAt)]);
  return renderTable(['HOSTNAME', 'TENANT', 'PRIMARY', 'VERIFIED', 'CREATED'], rows) + `${plural(domains.length, 'domain')}\n`;
}

/** `migrationStatus()` as a table: applied count and pending names per tenant. */
export function renderMigrationStatus(statuses: readonly TenantMigrationStatus[]): string {
  if (statuses.length === 0) return 'No tenants.\n';
  const rows = statuses.map((s) => [s.slug, s.status, String(s.applied.length), s.pending.length === 0 ? '-' : s.pending.join(', ')]);
  const behind = statuses.filter((s) => s.pending.length > 0).length;
  const summary = behind === 0 ? `${plural(statuses.length, 'tenant')}, all up to date` : `${plural(statuses.length, 'tenant')}, ${behind} with pending migrations`;
  return renderTable(['SLUG', 'STATUS', 'APPLIED', 'PENDING'], rows) + `${summary}\n`;
}

/**
 * A fleet report as a summary table and a totals line. The totals count
 * every tenant in scope; tenants that were already up to date are counted
 * but not listed unless `verbose`, so a no-op over 10,000 tenants prints one
 * line (`10000 tenants: 0 migrated, 10000 up to date, ...`), and `--json`
 * still carries every tenant's line.
 */
export function renderFleetReport(report: FleetReport, action: 'migrate' | 'revert' | 'reconcile', verbose = false): string {
  const listed = verbose ? report.results : report.results.filter((r) => r.status !== 'up-to-date');
  const t = report.totals;
  if (report.results.length === 0) return `No tenants in scope (checked in ${formatMs(t.ms)}).\n`;
  let text = '';
  if (listed.length > 0) {
    const withErrors = listed.some((r) => r.error !== undefined);
    const header = ['SLUG', 'STATUS', 'MS', 'MIGRATIONS', ...(withErrors ? ['ERROR'] : [])];
    text += renderTable(header, listed.map((r) => reportRow(r).slice(0, header.length)));
  }
  const counts = [
    t.migrated > 0 || action === 'migrate' ? `${t.migrated} migrated` : undefined,
    t.reverted > 0 || action === 'revert' ? `${t.reverted} reverted` : undefined,
    `${t.upToDate} up to date`,
    `${t.failed} failed`,
    `${t.skipped} skipped`,
  ].filter((part) => part !== undefined);
  const hidden = report.results.length - listed.length;
  const note = hidden > 0 ? ` (${hidden} up to date not listed; --verbose lists them)` : '';
  return text + `${plural(t.tenants, 'tenant')}: ${counts.join(', ')} in ${formatMs(t.ms)}${note}\n`;
}

function reportRow(result: FleetTenantResult): string[] {
  const repairs = (result.invalidIndexes ?? []).map(
    (repair) => `invalid index ${repair.index} dropped, ${repair.rebuilt ? 'rebuilt' : 'NOT rebuilt by the migrations'}`,
  );
  const error = [...repairs, ...(result.error === undefined ? [] : [formatFleetError(result.error)])].join('; ');
  return [result.slug, result.status, String(Math.round(result.ms)), result.applied.length === 0 ? '-' : result.applied.join(', '), error];
}

/**
 * A tenant's error on one line: `migration: message [code]`, then the
 * database's fields that were given, labelled
 * (`; detail: Key (number)=(DUP-1) is duplicated.; table: invoice`).
 */
export function formatFleetError(error: FleetTenantError): string {
  const where = error.migration === undefined ? '' : `${error.migration}: `;
  const code = error.code === undefined ? '' : ` [${error.code}]`;
  const fields = FLEET_ERROR_DATABASE_FIELDS.filter((field) => error[field] !== undefined).map((field) => `; ${field}: ${oneLine(error[field]!)}`);
  const invalid = error.invalidIndexes === undefined ? '' : `; left invalid: ${error.invalidIndexes.join(', ')} (dropped and rebuilt by the next run)`;
  return `${where}${error.message.split('\n')[0]}${code}${fields.join('')}${invalid}`;
}

/** What `formatLogEntry` prints of a log entry (a `TenancyLogEntry`, or one kept for a JSON report). */
export interface LogLine {
  readonly level: string;
  readonly source: string;
  readonly kind: string;
  readonly message: string;
  readonly schema?: string;
  readonly query?: string;
  readonly parameters?: unknown;
}

/**
 * A log entry of TypeORM or the library as one line for stderr: source,
 * level, kind, the schema in brackets, the message, then the query and
 * parameters of a failed or slow query (`typeorm info migration [acme]:
 * Migration "AddPhone1700000000003" failed, error: ...`).
 */
export function formatLogEntry(entry: LogLine): string {
  const where = entry.schema === undefined ? '' : ` [${entry.schema}]`;
  const query = entry.query === undefined ? '' : ` -- query: ${oneLine(entry.query)}`;
  const parameters = hasParameters(entry.parameters) ? ` -- parameters: ${stringify(entry.parameters)}` : '';
  return `${entry.source} ${entry.level} ${entry.kind}${where}: ${oneLine(entry.message)}${query}${parameters}\n`;
}

function hasParameters(parameters: unknown): boolean {
  if (Array.isArray(parameters)) return parameters.length > 0;
  return parameters !== null && typeof parameters === 'object' && Object.keys(parameters).length > 0;
}

function stringify(value: unknown): string {
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ');
}

/** `TenantNotFoundError`'s message with the hint in the CLI's terms (its own names `createTenant()`). */
function cliNotFoundMessage(slug: string): string {
  return `Tenant "${slug}" does not exist. Create it with \`typeorm-tenants create ${slug}\`, or check the slug.`;
}

/**
 * The one line printed for a failed command: `error [CODE]: message` for the
 * library's errors (and CLI errors standing for one), `error: message`
 * otherwise. With `verbose`, the stack and the chain of causes follow.
 */
export function formatErrorLine(error: unknown, verbose = false): string {
  const code = error instanceof TenancyError || error instanceof CliError ? error.code : undefined;
  const message = error instanceof TenantNotFoundError ? cliNotFoundMessage(error.slug) : error instanceof Error ? error.message : String(error);
  const firstLine = `error${code === undefined ? '' : ` [${code}]`}: ${message.replace(/\s*\n\s*/g, ' ')}\n`;
  if (!verbose) return firstLine;
  let details = '';
  let current: unknown = error;
  for (let depth = 0; current !== undefined && current !== null && depth < 5; depth += 1) {
    const stack = current instanceof Error ? current.stack : String(current);
    details += depth === 0 ? `${stack}\n` : `caused by: ${stack}\n`;
    current = current instanceof Error ? current.cause : undefined;
  }
  return firstLine + details;
}

function formatDate(date: Date): string {
  return date instanceof Date ? date.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : String(date);
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}
