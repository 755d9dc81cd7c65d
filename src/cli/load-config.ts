import { existsSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import type { TenantDataSourceManagerOptions } from '../manager/manager-options';
import { CliError } from './cli-error';

/** Where the CLI looks for its config module when `--config` is not given. */
export const DEFAULT_CONFIG_PATH = './tenancy.config.js';

const EXPECTED = 'it must export the TenantDataSourceManager options';

/**
 * Loads the CLI's config module: a CommonJS (or `require`-able ES) module
 * whose export is the `TenantDataSourceManager` options, either as
 * `module.exports = options` or `exports.default = options`, or a function
 * returning them or a promise of them. `path` is resolved against `cwd`.
 * Entities and migrations may be classes or file paths and globs, as in the
 * manager options: the manager loads those at `initialize()`, relative to the
 * process's working directory (TypeORM's rule, as with its own CLI), not to
 * the config file.
 *
 * @throws CliError with one line, `Cannot load config <path>: <why>; it must export ...`.
 * @example
 * ```js
 * // tenancy.config.js
 * module.exports = {
 *   dataSource: { type: 'postgres', url: process.env.DATABASE_URL },
 *   entities: [Client, Plan],
 *   tenantMigrations: [path.join(__dirname, 'dist/migrations/tenant/*.js')],
 * };
 * ```
 */
export async function loadConfig(path: string, cwd: string = process.cwd()): Promise<TenantDataSourceManagerOptions> {
  const file = isAbsolute(path) ? path : resolve(cwd, path);
  const fail = (why: string, cause?: unknown): CliError => new CliError(`Cannot load config ${path}: ${why}; ${EXPECTED}`, { cause });
  if (!existsSync(file)) throw fail(`no such file (looked for ${file})`);

  let exported: unknown;
  try {
    exported = require(file);
  } catch (error) {
    const why = oneLine(error);
    if (/\.[cm]?ts$/.test(file)) {
      throw fail(
        `${why}. A .ts config needs a TypeScript loader (for example NODE_OPTIONS="--require ts-node/register"); ` +
          'or compile it to .js and pass that file',
        error,
      );
    }
    throw fail(why, error);
  }

  let options = unwrapDefault(exported);
  if (typeof options === 'function') {
    try {
      options = await (options as () => unknown)();
    } catch (error) {
      // It does export a function, as documented: the function itself threw.
      throw new CliError(`Cannot load config ${path}: its exported function threw: ${oneLine(error)}`, { cause: error });
    }
    options = unwrapDefault(options);
  }
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw fail(`it exports ${describe(options)}`);
  }
  const candidate = options as Partial<TenantDataSourceManagerOptions>;
  if ((candidate.dataSource === undefined && candidate.servers === undefined) || candidate.entities === undefined) {
    const missing = [candidate.servers === undefined ? 'dataSource' : undefined, 'entities'].filter((key) => key !== undefined && !(key in candidate)).join(' and ');
    throw fail(`the exported object has no ${missing}`);
  }
  return candidate as TenantDataSourceManagerOptions;
}

/** `exports.default` of a module compiled from `export default`, else the export itself. */
function unwrapDefault(value: unknown): unknown {
  // An options object has a `dataSource` (or `servers`) and never a `default` of its own.
  if (value !== null && (typeof value === 'object' || typeof value === 'function') && 'default' in value && !('dataSource' in value) && !('servers' in value)) {
    return (value as { default: unknown }).default;
  }
  return value;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (value === undefined) return 'nothing (undefined)';
  return `a ${typeof value}`;
}

/** The first line of an error's message: a require stack or a code frame would break the one-line rule. */
function oneLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n')[0]!.trim();
}
