import { TenantDataSourceManager } from '../manager/tenant-data-source-manager';
import { withCliLogger } from './cli-logger';
import { loadConfig } from './load-config';
import type { Output } from './output';

/**
 * One CLI invocation's resources: the config path, the output, and the
 * manager, built and initialised on first use and always destroyed at the
 * end, so the process exits on its own (no `process.exit()`), and a leaked
 * pool would show up as a hanging command rather than be hidden.
 */
export class CliSession {
  readonly output: Output;
  readonly #configPath: string;
  readonly #cwd: string;
  #manager: TenantDataSourceManager | undefined;
  /** The exit code a command asks for besides failing with an error (1 for failed tenants, 130 when interrupted). */
  exitCode = 0;

  constructor(configPath: string, output: Output, cwd: string) {
    this.#configPath = configPath;
    this.output = output;
    this.#cwd = cwd;
  }

  /** The directory relative paths of the command line are resolved against. */
  get cwd(): string {
    return this.#cwd;
  }

  /**
   * Loads the config, starts the manager (with the CLI's logger, which
   * routes what TypeORM and the library log to the output, and then to the
   * config's own logger), and runs `work` with it. With
   * `withoutWarmPool`, the manager starts without the config's warm pool (a
   * command that only reads the model should not create spare schemas).
   */
  async withManager<T>(work: (manager: TenantDataSourceManager) => Promise<T>, options: { readonly withoutWarmPool?: boolean } = {}): Promise<T> {
    if (this.#manager === undefined) {
      const config = await loadConfig(this.#configPath, this.#cwd);
      const { warmPool: _warmPool, ...withoutWarmPool } = config;
      const chosen = options.withoutWarmPool === true ? withoutWarmPool : config;
      this.#manager = new TenantDataSourceManager(withCliLogger(chosen, (entry) => this.output.log(entry)));
      await this.#manager.initialize();
    }
    return work(this.#manager);
  }

  /** Destroys the manager if one was started. Safe to call twice. */
  async close(): Promise<void> {
    const manager = this.#manager;
    this.#manager = undefined;
    await manager?.destroy();
  }
}
