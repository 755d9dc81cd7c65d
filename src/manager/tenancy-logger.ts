import { AbstractLogger, type DataSourceOptions, type Logger, type LoggerOptions, type LogLevel, type LogMessage, type ObjectLiteral, type QueryRunner } from 'typeorm';
import { TenancyConfigurationError } from '../errors';

/** How much an entry matters: `query` for TypeORM's log of every query; `info`, `warn`, `error` for the rest. */
export type TenancyLogLevel = 'query' | 'info' | 'warn' | 'error';

/**
 * What an entry is about. From TypeORM (`source: 'typeorm'`): `query`,
 * `query-error`, `query-slow`, `schema-build`, `migration` and `log` (its
 * `Logger.log()`). From the library (`source: 'typeorm-tenants'`):
 * `configuration` (warnings of `initialize()`), `pending-migrations`
 * (`pendingMigrations: 'warn'`), `pool-error` and `background-error` (when
 * no `onPoolError` / `onBackgroundError` is given), `lifecycle` (one per
 * event the manager emits), `listener-error` (an event listener threw) and
 * `invalid-index` (a fleet run found an index a failed concurrent build had
 * left invalid, or left one so).
 */
export type TenancyLogKind =
  | 'query'
  | 'query-error'
  | 'query-slow'
  | 'schema-build'
  | 'migration'
  | 'log'
  | 'configuration'
  | 'pending-migrations'
  | 'pool-error'
  | 'background-error'
  | 'lifecycle'
  | 'listener-error'
  | 'invalid-index';

/** One thing TypeORM or the library logged, as a function `logger` receives it. */
export interface TenancyLogEntry {
  readonly level: TenancyLogLevel;
  readonly source: 'typeorm' | 'typeorm-tenants';
  readonly kind: TenancyLogKind;
  /** The message: for `query` the SQL, for `query-error` the database's error, otherwise TypeORM's or the library's sentence. */
  readonly message: string;
  /** The schema of the DataSource that logged it (the tenant's, the shared one, or a library schema), or the tenant's schema, when known. */
  readonly schema?: string;
  /** The tenant's slug, when the entry is about one tenant and the library knows it. */
  readonly tenant?: string;
  /** The SQL of a `query-error` or `query-slow` entry. */
  readonly query?: string;
  /** The parameters of a `query`, `query-error` or `query-slow` entry. */
  readonly parameters?: readonly unknown[] | Readonly<ObjectLiteral>;
  /** How long a `query-slow` query took, in milliseconds. */
  readonly durationMs?: number;
  /** The error behind a `query-error`, `pool-error`, `background-error` or `listener-error` entry. */
  readonly error?: unknown;
}

/**
 * The manager's `logger` option: a TypeORM `Logger`, given as is to every
 * DataSource the manager builds (the library's own messages reach its
 * `log('info' | 'warn', message)`), or a function receiving each
 * `TenancyLogEntry`, with the schema of the DataSource that logged it.
 *
 * @example
 * ```ts
 * const tenants = new TenantDataSourceManager({
 *   ...options,
 *   logger: (entry) => pino[entry.level === 'query' ? 'debug' : entry.level]({ schema: entry.schema, kind: entry.kind }, entry.message),
 * });
 * ```
 */
export type TenancyLogger = Logger | ((entry: TenancyLogEntry) => void);

/** What the library logs about itself (internal): `source` is always the library's. */
export interface LibraryLogEntry {
  readonly level: 'info' | 'warn' | 'error';
  readonly kind: 'configuration' | 'pending-migrations' | 'pool-error' | 'background-error' | 'lifecycle' | 'listener-error' | 'invalid-index';
  readonly message: string;
  readonly schema?: string;
  readonly tenant?: string;
  readonly error?: unknown;
}

/** How the library logs its own messages (internal; made by `createLibraryLog`). */
export type LibraryLog = (entry: LibraryLogEntry) => void;

const LOGGER_METHODS = ['logQuery', 'logQueryError', 'logQuerySlow', 'logSchemaBuild', 'logMigration', 'log'] as const;

/** Whether `value` has every method of TypeORM's `Logger` interface. */
export function isTypeOrmLogger(value: unknown): value is Logger {
  return (
    value !== null &&
    typeof value === 'object' &&
    LOGGER_METHODS.every((method) => typeof (value as Record<string, unknown>)[method] === 'function')
  );
}

/**
 * Checks the `logger` option (internal): `undefined`, a TypeORM `Logger` or
 * a function. TypeORM's own `dataSource.logger` and `logger` are not both
 * taken: one would silently win for some messages.
 *
 * @throws TenancyConfigurationError for both, or for anything else.
 */
export function validateTenancyLogger(value: unknown, dataSourceLogger: unknown): TenancyLogger | undefined {
  if (value === undefined) return undefined;
  if (dataSourceLogger !== undefined) {
    throw new TenancyConfigurationError(
      'Options "logger" and "dataSource.logger" are both given: choose one. "logger" (a TypeORM Logger or a function) also receives ' +
        "the library's own messages; \"dataSource.logger\" is TypeORM's option, for TypeORM's messages only.",
    );
  }
  if (typeof value === 'function' || isTypeOrmLogger(value)) return value as TenancyLogger;
  const got =
    typeof value === 'string'
      ? JSON.stringify(value)
      : value === null
        ? 'null'
        : Array.isArray(value)
          ? 'an array'
          : typeof value === 'object'
            ? `an object without ${LOGGER_METHODS.filter((m) => typeof (value as Record<string, unknown>)[m] !== 'function').join(', ')}`
            : `a ${typeof value}`;
  throw new TenancyConfigurationError(
    `Option "logger" must be a TypeORM Logger (an object with ${LOGGER_METHODS.join(', ')}) or a function receiving each log entry; got ${got}.` +
      (typeof value === 'string' ? ` TypeORM's named loggers ("simple-console", "file", ...) go in "dataSource.logger".` : ''),
  );
}

/**
 * A TypeORM `Logger` that turns what one DataSource logs into entries for a
 * function logger, with that DataSource's schema. What it passes on follows
 * TypeORM's rules for the connection's `logging` option, as TypeORM's own
 * loggers do (`AbstractLogger`): migration messages and slow queries always;
 * queries with `true`, `'all'` or `['query']`; failed queries with `true`,
 * `'all'` or `['error']`; schema builds with `'all'` or `['schema']`; `log()`
 * by its level.
 */
export class TenancyLogAdapter extends AbstractLogger {
  readonly #write: (entry: TenancyLogEntry) => void;
  readonly #schema: string;

  constructor(write: (entry: TenancyLogEntry) => void, logging: LoggerOptions | undefined, schema: string) {
    super(logging);
    this.#write = write;
    this.#schema = schema;
  }

  override logQuery(query: string, parameters?: unknown[] | ObjectLiteral): void {
    if (!this.isLogEnabledFor('query')) return;
    this.#entry({ level: 'query', kind: 'query', message: query, ...parametersOf(parameters) });
  }

  override logQueryError(error: string | Error, query: string, parameters?: unknown[] | ObjectLiteral): void {
    if (!this.isLogEnabledFor('query-error')) return;
    this.#entry({ level: 'error', kind: 'query-error', message: messageOf(error), query, ...parametersOf(parameters), error });
  }

  override logQuerySlow(time: number, query: string, parameters?: unknown[] | ObjectLiteral): void {
    if (!this.isLogEnabledFor('query-slow')) return;
    this.#entry({ level: 'warn', kind: 'query-slow', message: `Query took ${time} ms.`, query, ...parametersOf(parameters), durationMs: time });
  }

  override logSchemaBuild(message: string): void {
    if (!this.isLogEnabledFor('schema-build')) return;
    this.#entry({ level: 'info', kind: 'schema-build', message });
  }

  override logMigration(message: string): void {
    if (!this.isLogEnabledFor('migration')) return;
    this.#entry({ level: 'info', kind: 'migration', message });
  }

  override log(level: 'log' | 'info' | 'warn', message: unknown): void {
    if (!this.isLogEnabledFor(level)) return;
    this.#entry({ level: level === 'warn' ? 'warn' : 'info', kind: 'log', message: messageOf(message) });
  }

  /** Every public method is overridden above; this only serves a method a later TypeORM might add to `AbstractLogger`. */
  protected writeLog(level: LogLevel, logMessage: LogMessage | string | number | (LogMessage | string | number)[], _queryRunner?: QueryRunner): void {
    const messages = (Array.isArray(logMessage) ? logMessage : [logMessage]).map((m) => (typeof m === 'object' ? String(m.message) : String(m)));
    this.#entry({ level: level === 'warn' ? 'warn' : level === 'query' ? 'query' : 'info', kind: 'log', message: messages.join(' ') });
  }

  #entry(entry: Omit<TenancyLogEntry, 'source' | 'schema'>): void {
    this.#write({ ...entry, source: 'typeorm', schema: this.#schema });
  }
}

/**
 * The TypeORM logger of each DataSource the manager builds (internal), by
 * schema: with a function `logger`, an adapter knowing the schema; with a
 * TypeORM `Logger`, that logger; without `logger`, TypeORM's own
 * `dataSource.logger` (or its default).
 */
export function dataSourceLoggerOf(
  logger: TenancyLogger | undefined,
  logging: LoggerOptions | undefined,
  dataSourceLogger: TypeOrmLoggerOption | undefined,
): (schema: string) => TypeOrmLoggerOption | undefined {
  if (logger === undefined) return () => dataSourceLogger;
  if (typeof logger !== 'function') return () => logger;
  const write = guarded(logger);
  return (schema) => new TenancyLogAdapter(write, logging, schema);
}

/** TypeORM's `logger` DataSource option: a named logger or a `Logger`. */
export type TypeOrmLoggerOption = NonNullable<DataSourceOptions['logger']>;

/**
 * The library's own log (internal). To a function logger it passes entries
 * with `source: 'typeorm-tenants'`; to a TypeORM `Logger`, its
 * `log('info' | 'warn', 'typeorm-tenants: ...')`. Without a logger, as
 * before there was one: warnings and errors become process warnings
 * (`TenancyConfigurationWarning`, `TenancyMigrationWarning`,
 * `TenancyPoolWarning`, `TenancyBackgroundWarning`,
 * `TenancyListenerWarning`), each configuration warning once per process
 * (several managers over one database would repeat them); `info` and
 * lifecycle entries are dropped.
 */
export function createLibraryLog(logger: TenancyLogger | undefined): LibraryLog {
  if (logger === undefined) return processWarning;
  if (typeof logger !== 'function') return (entry) => guardedCall(() => toTypeOrmLogger(logger, { ...entry, source: 'typeorm-tenants' }));
  const write = guarded(logger);
  return (entry) => write({ ...entry, source: 'typeorm-tenants' });
}

/**
 * Hands an entry to a TypeORM `Logger` through the method TypeORM itself
 * would have called (internal; the CLI forwards to a config's Logger with
 * it). The library's own entries go to `log('info' | 'warn', ...)`, prefixed
 * `typeorm-tenants: `.
 */
export function toTypeOrmLogger(logger: Logger, entry: TenancyLogEntry): void {
  const parameters = entry.parameters as unknown[] | ObjectLiteral | undefined;
  switch (entry.kind) {
    case 'query':
      logger.logQuery(entry.message, parameters);
      return;
    case 'query-error':
      logger.logQueryError(entry.error instanceof Error ? entry.error : entry.message, entry.query ?? '', parameters);
      return;
    case 'query-slow':
      logger.logQuerySlow(entry.durationMs ?? 0, entry.query ?? '', parameters);
      return;
    case 'schema-build':
      logger.logSchemaBuild(entry.message);
      return;
    case 'migration':
      logger.logMigration(entry.message);
      return;
    case 'log':
      logger.log(entry.level === 'warn' ? 'warn' : 'info', entry.message);
      return;
    case 'configuration':
    case 'pending-migrations':
    case 'pool-error':
    case 'background-error':
    case 'lifecycle':
    case 'listener-error':
    case 'invalid-index':
      logger.log(entry.level === 'info' ? 'info' : 'warn', `typeorm-tenants: ${entry.message}`);
      return;
    default:
      throw new Error(`Unexpected log kind "${entry.kind satisfies never}"`);
  }
}

/** The process warning of each kind; lifecycle entries had none before there was a logger, and have none without one. */
const PROCESS_WARNINGS: Readonly<Record<LibraryLogEntry['kind'], string | undefined>> = {
  configuration: 'TenancyConfigurationWarning',
  'pending-migrations': 'TenancyMigrationWarning',
  'pool-error': 'TenancyPoolWarning',
  'background-error': 'TenancyBackgroundWarning',
  lifecycle: undefined,
  'listener-error': 'TenancyListenerWarning',
  'invalid-index': 'TenancyMigrationWarning',
};

/** Configuration warnings already given as process warnings by this process. */
const configurationWarnings = new Set<string>();

function processWarning(entry: LibraryLogEntry): void {
  const name = PROCESS_WARNINGS[entry.kind];
  if (entry.level === 'info' || name === undefined) return;
  if (entry.kind === 'configuration') {
    if (configurationWarnings.has(entry.message)) return;
    configurationWarnings.add(entry.message);
  }
  process.emitWarning(`typeorm-tenants: ${entry.message}`, name);
}

/**
 * A function logger that throws must not fail the query, migration or
 * lifecycle call that logged (TypeORM calls loggers inline): its error
 * becomes a process warning instead.
 */
function guarded(write: (entry: TenancyLogEntry) => void): (entry: TenancyLogEntry) => void {
  return (entry) => guardedCall(() => write(entry));
}

function guardedCall(call: () => void): void {
  try {
    call();
  } catch (error) {
    process.emitWarning(`typeorm-tenants: the "logger" option threw: ${messageOf(error)}`, 'TenancyLoggerWarning');
  }
}

function parametersOf(parameters: unknown[] | ObjectLiteral | undefined): Pick<TenancyLogEntry, 'parameters'> {
  return parameters === undefined ? {} : { parameters };
}

function messageOf(value: unknown): string {
  return value instanceof Error ? value.message : String(value);
}
