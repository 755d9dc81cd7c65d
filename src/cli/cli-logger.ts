import type { Logger } from 'typeorm';
import { LoggerFactory } from 'typeorm/logger/LoggerFactory';
import type { TenantConnectionOptions } from '../data-source/shared-pool';
import type { TenantDataSourceManagerOptions } from '../manager/manager-options';
import { toTypeOrmLogger, validateTenancyLogger, type TenancyLogEntry, type TenancyLogger } from '../manager/tenancy-logger';

/**
 * The config's manager options with the CLI's own `logger`, which hands
 * every entry to `sink` (the output: above the progress bar, on stderr, or
 * into the JSON report) and then to the config's logger, if it has one: its
 * `logger` (a function, or a TypeORM `Logger` called through the method
 * TypeORM would have called), or TypeORM's `dataSource.logger` (a `Logger`,
 * or a named one such as `'simple-console'`, made with the connection's
 * `logging`), which moves behind the CLI's. A config giving both, or an
 * invalid `logger`, is left for the manager to refuse.
 */
export function withCliLogger(
  config: TenantDataSourceManagerOptions,
  sink: (entry: TenancyLogEntry) => void,
): TenantDataSourceManagerOptions {
  const dataSource = config.dataSource as TenantDataSourceManagerOptions['dataSource'] | undefined;
  if (dataSource === undefined && config.servers !== undefined && config.servers !== null) {
    // Several servers: the CLI's logger in front of the config's own; each server's TypeORM logger stays its own.
    const own: TenancyLogger | undefined = validateTenancyLogger(config.logger, undefined);
    const forward = own === undefined ? undefined : typeof own === 'function' ? own : (entry: TenancyLogEntry) => toTypeOrmLogger(own, entry);
    return {
      ...config,
      logger: (entry) => {
        sink(entry);
        forward?.(entry);
      },
    };
  }
  if (dataSource === null || typeof dataSource !== 'object') return config;
  if (config.logger !== undefined && dataSource.logger !== undefined) return config;
  // The same check as the manager's, so an invalid logger is refused with its message rather than wrapped.
  const own: TenancyLogger | undefined = validateTenancyLogger(config.logger, undefined);
  const { logger: typeormLogger, ...connection } = dataSource;
  const user: TenancyLogger | undefined =
    own ?? (typeormLogger === undefined ? undefined : typeof typeormLogger === 'string' ? namedLogger(typeormLogger, dataSource.logging) : typeormLogger);
  const forward = user === undefined ? undefined : typeof user === 'function' ? user : (entry: TenancyLogEntry) => toTypeOrmLogger(user, entry);
  return {
    ...config,
    dataSource: connection,
    logger: (entry) => {
      sink(entry);
      forward?.(entry);
    },
  };
}

function namedLogger(name: string, logging: TenantConnectionOptions['logging']): Logger {
  return new LoggerFactory().create(name as Parameters<LoggerFactory['create']>[0], logging);
}
