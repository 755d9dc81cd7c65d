import type { QueryRunner } from 'typeorm';
import { tenantContext } from '../context/tenant-context';
import { InvalidArgumentError } from '../errors';
import type { FleetTenantError } from '../migration/fleet-run';
import { fanOutScope, runOverScope, type FanOutHost, type FanOutOptions, type TenantWorkStatus } from './for-each-tenant';
import { GroupAggregator, type AggregateFunction, type AggregateGroup } from './group-aggregator';

/** Default `statementTimeoutMs` of `queryAcrossTenants()` / `aggregateAcrossTenants()`: 30 s per tenant. */
export const DEFAULT_FAN_OUT_STATEMENT_TIMEOUT_MS = 30_000;

/** Default `tenantColumn`: the column holding each row's tenant slug. */
export const DEFAULT_TENANT_COLUMN = 'tenant';

/** Options of `queryAcrossTenants()`. */
export interface QueryAcrossTenantsOptions extends FanOutOptions {
  /**
   * `statement_timeout` of the statement in each tenant, in milliseconds
   * (`SET LOCAL`, so it ends with the tenant's transaction); a tenant over it
   * fails with SQLSTATE 57014 and the others go on. Default 30,000; 0 means none.
   */
  readonly statementTimeoutMs?: number;
  /**
   * Name of the column added to every row with the tenant's slug. Default
   * `'tenant'`. A row that already has a column of that name is never
   * overwritten: the tenant fails with `INVALID_ARGUMENT` (alias the column
   * in the SQL, or choose another `tenantColumn`).
   */
  readonly tenantColumn?: string;
}

/** A tenant whose statement did not give rows: failed (the statement's error) or skipped (not active, not started). */
export interface TenantQueryFailure {
  readonly slug: string;
  readonly status: Exclude<TenantWorkStatus, 'done'>;
  readonly error: FleetTenantError;
  readonly ms: number;
}

/** Counts of a cross-tenant query: tenants by status, and rows returned. */
export interface TenantQueryTotals {
  readonly tenants: number;
  readonly done: number;
  readonly failed: number;
  readonly skipped: number;
  /** Rows in `rows` (for an aggregate: rows merged). */
  readonly rows: number;
  /** Wall time of the whole call, the registry query included. */
  readonly ms: number;
}

/** The result of `queryAcrossTenants()`. */
export interface TenantQueryResult<Row = Record<string, unknown>> {
  /** Every tenant's rows, tenants in slug order, each row with the `tenantColumn` first. */
  readonly rows: Array<Row & Record<string, unknown>>;
  /** The tenants that gave no rows because they failed or were skipped, by slug. */
  readonly failures: readonly TenantQueryFailure[];
  readonly totals: TenantQueryTotals;
}

/** Options of `aggregateAcrossTenants()`. */
export interface AggregateAcrossTenantsOptions extends Omit<QueryAcrossTenantsOptions, 'tenantColumn'> {
  /** Columns of the per-tenant rows whose values form a group. Default `[]`: one group for everything. */
  readonly groupBy?: readonly string[];
  /** Columns of the per-tenant rows to merge, and how: `{ invoices: 'count', revenue: 'sum', first: 'min' }`. */
  readonly aggregates: Readonly<Record<string, AggregateFunction>>;
}

/** The result of `aggregateAcrossTenants()`: the merged groups, and the tenants left out of them. */
export interface TenantAggregateResult {
  readonly groups: AggregateGroup[];
  readonly failures: readonly TenantQueryFailure[];
  readonly totals: TenantQueryTotals;
}

/** `manager.queryAcrossTenants()`: see its documentation. */
export async function queryAcrossTenants<Row = Record<string, unknown>>(
  host: FanOutHost,
  sql: string,
  params: readonly unknown[] = [],
  options: QueryAcrossTenantsOptions = {},
): Promise<TenantQueryResult<Row>> {
  validateStatement(sql, params);
  const timeout = statementTimeoutOf(options.statementTimeoutMs);
  const column = options.tenantColumn ?? DEFAULT_TENANT_COLUMN;
  if (typeof column !== 'string' || column === '') throw new InvalidArgumentError(`Option "tenantColumn" must be a non-empty string; got ${JSON.stringify(column)}.`);
  const scope = await fanOutScope(host, options);
  const report = await runOverScope(
    host,
    scope,
    async ({ slug }) => {
      const rows = await readOnly(sql, params, timeout);
      return rows.map((row) => {
        if (Object.prototype.hasOwnProperty.call(row, column)) {
          throw new InvalidArgumentError(
            `The query returns a column "${column}", which queryAcrossTenants() would overwrite with the tenant's slug. ` +
              'Alias the column in the SQL, or pass another { tenantColumn }.',
          );
        }
        return { [column]: slug, ...row };
      });
    },
    options,
  );
  const rows: Array<Row & Record<string, unknown>> = [];
  for (const result of report.results) if (result.value !== undefined) for (const row of result.value) rows.push(row as Row & Record<string, unknown>);
  return { rows, failures: failuresOf(report.results), totals: { ...report.totals, rows: rows.length } };
}

/** `manager.aggregateAcrossTenants()`: see its documentation. */
export async function aggregateAcrossTenants(
  host: FanOutHost,
  sql: string,
  params: readonly unknown[] = [],
  options: AggregateAcrossTenantsOptions,
): Promise<TenantAggregateResult> {
  validateStatement(sql, params);
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('aggregateAcrossTenants() needs options with "aggregates", such as { aggregates: { invoices: "count" } }.');
  const aggregator = new GroupAggregator(options.groupBy ?? [], options.aggregates);
  const timeout = statementTimeoutOf(options.statementTimeoutMs);
  const scope = await fanOutScope(host, options);
  let merged = 0;
  const report = await runOverScope(
    host,
    scope,
    async () => {
      const rows = await readOnly(sql, params, timeout);
      aggregator.check(rows);
      // Merged only once the tenant's statement succeeded and every row checked: a failed tenant adds nothing.
      aggregator.add(rows);
      merged += rows.length;
      return undefined;
    },
    options,
  );
  return { groups: aggregator.groups(), failures: failuresOf(report.results), totals: { ...report.totals, rows: merged } };
}

/**
 * Runs one statement in the active tenant in a READ ONLY transaction that is
 * always rolled back. The tenant DataSource's query runner fences the raw
 * SQL: `SET LOCAL search_path` to the tenant first, the extended protocol
 * (one statement: `...; COMMIT; ...` is refused by PostgreSQL), a refused
 * transaction exit, and a session reset at the end.
 */
async function readOnly(sql: string, params: readonly unknown[], timeoutMs: number): Promise<Record<string, unknown>[]> {
  const runner: QueryRunner = tenantContext.getManager().dataSource.createQueryRunner();
  try {
    await runner.startTransaction();
    // One round trip for both (the fence sends its SET LOCAL search_path first); a transaction may always become read-only.
    await runner.query("SELECT set_config('transaction_read_only', 'on', true), set_config('statement_timeout', $1, true)", [String(timeoutMs)]);
    const rows = (await runner.query(sql, [...params])) as unknown;
    if (!Array.isArray(rows)) throw new InvalidArgumentError('The statement returned no rows: queryAcrossTenants() runs one SELECT (or another statement returning rows).');
    return rows as Record<string, unknown>[];
  } finally {
    if (runner.isTransactionActive) await runner.rollbackTransaction().catch(() => undefined);
    await runner.release();
  }
}

function failuresOf(results: readonly { slug: string; status: TenantWorkStatus; error?: FleetTenantError; ms: number }[]): TenantQueryFailure[] {
  const failures: TenantQueryFailure[] = [];
  for (const r of results) if (r.status !== 'done') failures.push({ slug: r.slug, status: r.status, error: r.error ?? { message: 'Not run.' }, ms: r.ms });
  return failures;
}

function validateStatement(sql: unknown, params: unknown): void {
  if (typeof sql !== 'string' || sql.trim() === '') throw new InvalidArgumentError(`The SQL must be a non-empty string; got ${typeof sql === 'string' ? 'an empty string' : typeof sql}.`);
  if (!Array.isArray(params)) throw new InvalidArgumentError(`The parameters must be an array (for $1, $2, ...); got ${typeof params}.`);
}

function statementTimeoutOf(value: unknown): number {
  if (value === undefined) return DEFAULT_FAN_OUT_STATEMENT_TIMEOUT_MS;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new InvalidArgumentError(`Option "statementTimeoutMs" must be a whole number of milliseconds (0 for none); got ${String(value)}.`);
  }
  return value;
}
