import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { adminQuery, databaseUrl } from '../support/fixtures';

/** The built bin and the test config module, as a user would run them. */
export const CLI_MAIN = resolve(__dirname, '../../src/cli/main.js');
export const CLI_CONFIG = resolve(__dirname, 'fixtures/tenancy.config.js');

export const SLOW_MIGRATION = 'SlowStep1700000000003';
export const PHONE_MIGRATION = 'AddClientPhone1700000000003';
export const UNIQUE_MIGRATION = 'UniqueClientName1700000000003';
export const CONCURRENT_MIGRATION = 'ClientEmailConcurrently1700000000003';

export interface CliEnv {
  /** The registry table of the test's own fleet. */
  readonly registry: string;
  /** TENANCY_EXTRA_MIGRATION of the test config: 'slow', 'phone' or 'unique'. */
  readonly extra?: 'slow' | 'phone' | 'unique' | 'concurrent';
  /** TENANCY_OMIT_MIGRATION of the test config: a base tenant migration's class name, left out. */
  readonly omit?: string;
  /** TENANCY_LOGGER and TENANCY_LOG_FILE of the test config: a logger of the config's own, writing JSON lines to `file`. */
  readonly logger?: { readonly kind: 'function' | 'typeorm'; readonly file: string };
}

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A registry table name of its own, so each test has a fleet of its own. */
export function uniqueRegistry(): string {
  return `cli_${randomBytes(4).toString('hex')}`;
}

export function cliEnvironment(env: CliEnv): NodeJS.ProcessEnv {
  const vars: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: databaseUrl(), TENANCY_REGISTRY_TABLE: env.registry };
  delete vars.TENANCY_EXTRA_MIGRATION;
  if (env.extra !== undefined) vars.TENANCY_EXTRA_MIGRATION = env.extra;
  delete vars.TENANCY_OMIT_MIGRATION;
  if (env.omit !== undefined) vars.TENANCY_OMIT_MIGRATION = env.omit;
  delete vars.TENANCY_LOGGER;
  delete vars.TENANCY_LOG_FILE;
  if (env.logger !== undefined) {
    vars.TENANCY_LOGGER = env.logger.kind;
    vars.TENANCY_LOG_FILE = env.logger.file;
  }
  return vars;
}

/** Starts `node build/src/cli/main.js --config <test config> ...args` with pipes (so: no terminal). */
export function spawnCli(args: readonly string[], env: CliEnv): ChildProcess {
  return spawn(process.execPath, [CLI_MAIN, '--config', CLI_CONFIG, ...args], { env: cliEnvironment(env), stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Collects a child's output and how it ended; fails if it does not end on its own within `timeoutMs`. */
export function finished(child: ChildProcess, timeoutMs = 60_000): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`The CLI did not exit within ${timeoutMs} ms (a leaked pool or timer?). stderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, stdout, stderr });
    });
  });
}

/** Runs the CLI to its end. */
export function runCli(args: readonly string[], env: CliEnv): Promise<CliResult> {
  return finished(spawnCli(args, env));
}

/** Runs the CLI and parses its stdout as JSON, failing with its stderr if the exit code is not `expectedCode`. */
export async function runCliJson<T>(args: readonly string[], env: CliEnv, expectedCode = 0): Promise<T> {
  const result = await runCli(args, env);
  if (result.code !== expectedCode) {
    throw new Error(`typeorm-tenants ${args.join(' ')} exited with ${result.code} (expected ${expectedCode}): ${result.stderr}`);
  }
  return JSON.parse(result.stdout) as T;
}

export const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

/** Names in the tenant's own migrations table (TypeORM's truth), in order. */
export async function appliedIn(slug: string): Promise<string[]> {
  const rows = await adminQuery<{ name: string }>(`SELECT name FROM "${schemaOf(slug)}".migrations ORDER BY id`);
  return rows.map((r) => r.name);
}

export async function hasColumn(slug: string, table: string, column: string): Promise<boolean> {
  const rows = await adminQuery('SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 AND column_name = $3', [
    schemaOf(slug),
    table,
    column,
  ]);
  return rows.length === 1;
}
