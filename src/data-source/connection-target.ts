import { createRequire } from 'node:module';
import type { Pool, PoolConfig } from 'pg';
import { DatabaseUnreachableError, sqlStateOf } from '../errors';

/** pg's own reading of a pool config (URL, options, `PG*` variables, defaults): what it will connect to. */
interface EffectiveParameters {
  readonly user?: string;
  readonly host?: string;
  readonly port?: number;
  readonly database?: string;
}

const ConnectionParameters = createRequire(__filename)('pg/lib/connection-parameters') as new (config: PoolConfig) => EffectiveParameters;

/**
 * Where a pool of `config` connects, as `postgres://user@host:port/database`,
 * read the way pg reads it (the URL, then the options, then `PGUSER`,
 * `PGHOST`, `PGPORT`, `PGDATABASE`, then its defaults). Never the password.
 * An unknown user or database shows as `(none)`.
 */
export function describeConnectionTarget(config: PoolConfig): string {
  let parameters: EffectiveParameters;
  try {
    parameters = new ConnectionParameters(config);
  } catch {
    // A URL pg cannot parse: it fails the same way at connect, with its own message.
    return 'postgres://(an unparsable connection URL)';
  }
  const user = parameters.user === undefined || parameters.user === '' ? '(none)' : encodeURIComponent(parameters.user);
  const host = parameters.host ?? 'localhost';
  const shownHost = host.startsWith('/') ? `[socket ${host}]` : host.includes(':') ? `[${host}]` : host;
  const database = parameters.database === undefined || parameters.database === '' ? '(none)' : encodeURIComponent(parameters.database);
  return `postgres://${user}@${shownHost}:${parameters.port ?? 5432}/${database}`;
}

/** The config a `pg.Pool` was built with (pg keeps it as `options`). */
export function poolConfigOf(pool: Pool): PoolConfig {
  return (pool as unknown as { readonly options: PoolConfig }).options;
}

/** Network failures of opening a connection (not of a query on an open one). */
const NETWORK_FAILURES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOENT', 'EACCES']);

/**
 * SQLSTATEs PostgreSQL answers a connection attempt with: a refused login
 * (class 28), no such database, the server starting or shutting down, too
 * many connections.
 */
function isRefusedLogin(sqlState: string): boolean {
  return sqlState.startsWith('28') || sqlState === '3D000' || sqlState === '57P03' || sqlState === '53300';
}

/** True when `error` is the failure to open a connection (rather than a failed statement or a full pool). */
export function isConnectionFailure(error: unknown): boolean {
  if (error instanceof DatabaseUnreachableError) return false;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && NETWORK_FAILURES.has(code)) return true;
  const sqlState = sqlStateOf(error);
  if (sqlState !== undefined) return isRefusedLogin(sqlState);
  // pg's client when connectionTimeoutMillis passes before the server answered.
  return error instanceof Error && /^Connection terminated due to connection timeout$/.test(error.message);
}

/**
 * Turns a failure to connect into `DatabaseUnreachableError` naming the
 * target; any other error is returned as it is.
 */
export function namingConnectionTarget(error: unknown, target: string, hint?: string): unknown {
  return isConnectionFailure(error) ? new DatabaseUnreachableError(target, error, hint) : error;
}

/**
 * The hint for a config that names no server at all: pg then connects with
 * its defaults (local socket or localhost, `PGUSER`/`PGDATABASE`), which is
 * rarely what was meant: typically `url: process.env.DATABASE_URL` with the
 * variable unset.
 */
export function unnamedServerHint(config: PoolConfig): string | undefined {
  const named = [config.connectionString, config.host, config.user, config.database].some((value) => typeof value === 'string' && value !== '');
  if (named) return undefined;
  return 'The dataSource options give no url, host, username or database (is DATABASE_URL unset?), so pg used its defaults and the PG* environment variables';
}
