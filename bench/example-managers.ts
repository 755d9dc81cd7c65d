import { Client, Plan, Project } from '../entities';
import { sharedMigrations, tenantMigrations } from '../migrations';
import { TenantDataSourceManager, type TenantConnectionOptions, type TenantDataSourceManagerOptions } from '../src';

/**
 * Managers over the example model on one benchmark database, initialised on
 * `open()` and tracked so that `closeAll()` destroys whatever a run left open,
 * on success and on failure.
 */
export class ExampleManagers {
  readonly #connection: TenantConnectionOptions;
  readonly #open = new Set<TenantDataSourceManager>();

  constructor(url: string, connection: Partial<TenantConnectionOptions> = {}) {
    this.#connection = { type: 'postgres', url, ...connection } as TenantConnectionOptions;
  }

  async open(overrides: Partial<TenantDataSourceManagerOptions> = {}): Promise<TenantDataSourceManager> {
    const manager = new TenantDataSourceManager({
      dataSource: this.#connection,
      entities: [Client, Project, Plan],
      tenantMigrations,
      sharedMigrations,
      ...overrides,
    });
    this.#open.add(manager);
    await manager.initialize();
    return manager;
  }

  /** A manager over several servers (`servers` instead of `dataSource`), with the example model. */
  async openOn(
    servers: NonNullable<TenantDataSourceManagerOptions['servers']>,
    overrides: Partial<TenantDataSourceManagerOptions> = {},
  ): Promise<TenantDataSourceManager> {
    const manager = new TenantDataSourceManager({ servers, entities: [Client, Project, Plan], tenantMigrations, sharedMigrations, ...overrides });
    this.#open.add(manager);
    await manager.initialize();
    return manager;
  }

  async close(manager: TenantDataSourceManager): Promise<void> {
    this.#open.delete(manager);
    await manager.destroy();
  }

  /** Destroys every manager still open; reports failures and goes on. */
  async closeAll(): Promise<void> {
    for (const manager of [...this.#open]) {
      await this.close(manager).catch((error: unknown) => console.error(error));
    }
  }
}
