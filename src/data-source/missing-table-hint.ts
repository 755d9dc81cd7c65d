import type { DataSource, Logger } from 'typeorm';
import { sqlStateOf } from '../errors';

/** PostgreSQL's message for a missing table: `relation "public.note" does not exist` (qualified as written). */
const MISSING_RELATION = /^relation "(?:([^".]+)\.)?([^".]+)" does not exist$/;

/**
 * Adds a hint to PostgreSQL's `relation "public.note" does not exist` when
 * `note` is the table of a shared entity (one without `@TenantScoped()`),
 * which the tenant DataSource serves from the shared schema: the usual cause
 * is an entity meant per tenant that lacks the decorator, whose table the
 * tenant migrations create in every tenant schema but not in the shared one.
 *
 * TypeORM hands every failed statement's driver error to the DataSource's
 * logger (`logQueryError`) before it wraps it in a `QueryFailedError` with
 * that error's message; the hint is written there (message and `hint`), so
 * statements that succeed pay nothing.
 */
export function hintMissingSharedTables(dataSource: DataSource, sharedSchema: string, sharedTables: ReadonlySet<string>): void {
  if (sharedTables.size === 0) return;
  const logger = dataSource.logger;
  const logQueryError: Logger['logQueryError'] = (error, query, parameters, queryRunner) => {
    addHint(error, dataSource, sharedSchema, sharedTables);
    return logger.logQueryError(error, query, parameters, queryRunner);
  };
  // A view of the logger, not a copy: its methods run on the logger itself
  // (a class with private fields, as a user's may be), bound once each.
  const bound = new Map<PropertyKey, unknown>();
  const hinting = new Proxy(logger, {
    get(target, property) {
      if (property === 'logQueryError') return logQueryError;
      if (bound.has(property)) return bound.get(property);
      const value = Reflect.get(target, property, target) as unknown;
      if (typeof value !== 'function') return value;
      const method = (value as Function).bind(target);
      bound.set(property, method);
      return method;
    },
  });
  Object.defineProperty(dataSource, 'logger', { value: hinting, configurable: true, writable: true });
}

function addHint(error: unknown, dataSource: DataSource, sharedSchema: string, sharedTables: ReadonlySet<string>): void {
  if (sqlStateOf(error) !== '42P01' || !(error instanceof Error)) return;
  const match = MISSING_RELATION.exec(error.message);
  if (match === null) return;
  const [, schema, table] = match;
  // Generated SQL always names the schema; an unqualified name is raw SQL,
  // which in a run searches the tenant schema: the shared table may well exist.
  if (schema !== sharedSchema || !sharedTables.has(table!)) return;
  const entity = dataSource.entityMetadatas.find((metadata) => metadata.schema === sharedSchema && metadata.tableName === table)?.name ?? table;
  const hint =
    `Entity ${entity} has no @TenantScoped(), so it is shared: its table is read from the shared schema "${sharedSchema}", where there is none. ` +
    `If ${entity} holds tenant data, mark it @TenantScoped() (its table then comes from each tenant's schema); ` +
    'if it is shared, create its table with a shared migration.';
  const annotated = error as Error & { hint?: string };
  if (annotated.hint === undefined || annotated.hint === '') annotated.hint = hint;
  error.message = `${error.message}. ${hint}`;
}
