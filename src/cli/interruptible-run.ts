import type { TenantDataSourceManager } from '../manager/tenant-data-source-manager';
import type { CliSession } from './cli-session';

/** What a run over many tenants gets from `runWithProgress`: its abort signal and its progress callback. */
export interface ProgressHooks {
  readonly signal: AbortSignal;
  onProgress(result: { readonly slug: string; readonly status: string }, done: number, total: number): void;
}

/**
 * Runs a command over many tenants (fleet migrations, `exec`, `run`) with a
 * progress bar on a terminal and Ctrl-C (or SIGTERM) wired to the run's
 * AbortSignal: the tenants in progress finish, no new one starts. In JSON
 * mode what TypeORM and the library log meanwhile is kept: `withLogs` puts
 * it in the result. Returns the run's value and whether it was interrupted.
 */
export async function runWithProgress<R>(
  cli: CliSession,
  label: string,
  run: (manager: TenantDataSourceManager, hooks: ProgressHooks) => Promise<R>,
): Promise<{ value: R; aborted: boolean }> {
  const progress = cli.output.progress(label);
  cli.output.keepLogs();
  const abort = new AbortController();
  const interrupt = (signal: NodeJS.Signals): void => {
    progress?.stop();
    cli.output.note(`${signal}: finishing the tenants in progress and starting no more (send it again to quit at once).`);
    abort.abort();
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  try {
    const value = await cli.withManager((manager) =>
      run(manager, { signal: abort.signal, onProgress: (result, done, total) => progress?.update(result, done, total) }),
    );
    return { value, aborted: abort.signal.aborted };
  } catch (error) {
    cli.output.flushLogs();
    throw error;
  } finally {
    progress?.stop();
    process.removeListener('SIGINT', interrupt);
    process.removeListener('SIGTERM', interrupt);
  }
}

/** The result with the logs kept while it ran, in JSON mode (`logs`); as it is otherwise. */
export function withLogs<T extends object>(cli: CliSession, value: T): T {
  return cli.output.json ? { ...value, logs: cli.output.takeLogs() } : value;
}
