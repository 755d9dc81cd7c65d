import type { DataSource, QueryRunner } from 'typeorm';
import { TenancyError, TenantMigrationError, TenantNotFoundError, sqlStateOf } from '../errors';
import type { TenantRegistry, SqlRunner } from '../registry/tenant-registry';
import type { SearchPaths } from '../naming/search-paths';
import type { TenantRecord, TenantStatus } from '../registry/tenant-record';
import { runFleet, type FleetReport, type FleetRunOptions, type FleetTenantError, type FleetTenantResult } from './fleet-run';
import type { MigrationLedger } from './migration-ledger';
import { MigrationFailure, applyPendingMigrations, undoLastMigration } from './schema-migrator';

/** Options of `migrateTenants()` and `revertTenants()`. */
export interface FleetMigrationOptions extends FleetRunOptions {
  /** Only these tenants (validated slugs). Default: every active tenant. */
  readonly tenants?: readonly string[];
}

/** One tenant's migrations, as `migrationStatus()` reports them. */
export interface TenantMigrationStatus {
  readonly slug: string;
  readonly status: TenantStatus;
  /** Applied migrations, by name. */
  readonly applied: readonly string[];
  /** Migrations of the code not applied yet, in the order they would run. */
  readonly pending: readonly string[];
}

/** What the fleet migrator needs from the manager. */
export interface SchemaAccess {
  readonly sharedDataSource: DataSource;
  /** The search path of each tenant's migrations. */
  readonly searchPaths: SearchPaths;
  readonly registry: TenantRegistry;
  readonly ledger: MigrationLedger;
  /** Names of the tenant migrations of the code, in order. */
  readonly tenantMigrationNames: readonly string[];
  readonly defaultConcurrency: number;
  /** A fresh DataSource bound to `schemaName` over the shared pool; the caller destroys it. */
  buildTenantDataSource(schemaName: string): Promise<DataSource>;
  /** Runs `work` in a transaction holding the advisory lock `lockName`. */
  inLockedTransaction<T>(dataSource: DataSource, lockName: string, work: (runner: QueryRunner & SqlRunner) => Promise<T>): Promise<T>;
}

// Suspended tenants are migrated too, so that resuming one serves a current
// schema; archived ones are brought up to date by restoreTenant().
const MIGRATABLE: readonly TenantStatus[] = ['active', 'suspended'];

/**
 * Migrations over the whole fleet of tenants: which tenants have something
 * pending comes from the ledger in one query; each tenant is migrated in its
 * own transaction under its schema's advisory lock, so two processes
 * migrating the same fleet never run one tenant twice and never deadlock; a
 * failing tenant is rolled back and reported, and the run goes on.
 */
export class FleetMigrator {
  readonly #access: SchemaAccess;

  constructor(access: SchemaAccess) {
    this.#access = access;
  }

  async migrateTenants(options: FleetMigrationOptions = {}): Promise<FleetReport> {
    const access = this.#access;
    const named = options.tenants === undefined ? undefined : await this.#namedTenants(options.tenants);
    const pending = await access.ledger.pendingTenants(
      access.sharedDataSource,
      access.tenantMigrationNames,
      MIGRATABLE,
      named?.map((t) => t.slug),
    );
    const schemaOf = new Map(pending.map((t) => [t.slug, t.schemaName]));
    const notServed = (named ?? []).filter((t) => !MIGRATABLE.includes(t.status));
    const report = await runFleet(pending.map((t) => t.slug), (slug) => this.#migrateOne(slug, schemaOf.get(slug)!), this.#runOptions(options));
    return withSkipped(report, notServed);
  }

  async revertTenants(options: FleetMigrationOptions = {}): Promise<FleetReport> {
    const access = this.#access;
    const tenants = options.tenants === undefined ? await access.registry.list(access.sharedDataSource) : await this.#namedTenants(options.tenants);
    const eligible = tenants.filter((t) => MIGRATABLE.includes(t.status));
    const schemaOf = new Map(eligible.map((t) => [t.slug, t.schemaName]));
    const report = await runFleet(eligible.map((t) => t.slug), (slug) => this.#revertOne(slug, schemaOf.get(slug)!), this.#runOptions(options));
    return withSkipped(report, options.tenants === undefined ? [] : tenants.filter((t) => !MIGRATABLE.includes(t.status)));
  }

  /**
   * Undoes the last migration of one tenant and returns its result line.
   *
   * @throws TenantMigrationError when the revert fails (rolled back).
   */
  async revertTenant(tenant: TenantRecord): Promise<FleetTenantResult> {
    return this.#revertOne(tenant.slug, tenant.schemaName, true);
  }

  async migrationStatus(): Promise<TenantMigrationStatus[]> {
    const access = this.#access;
    const entries = await access.ledger.entries(access.sharedDataSource);
    return entries.map((entry) => {
      const applied = new Set(entry.applied);
      return {
        slug: entry.slug,
        status: entry.status,
        applied: entry.applied,
        pending: access.tenantMigrationNames.filter((name) => !applied.has(name)),
      };
    });
  }

  /** Rebuilds every tenant's ledger rows from its own migrations table. */
  async reconcile(options: FleetRunOptions = {}): Promise<FleetReport> {
    const access = this.#access;
    const tenants = await access.registry.list(access.sharedDataSource);
    const schemaOf = new Map(tenants.map((t) => [t.slug, t.schemaName]));
    return runFleet(
      tenants.map((t) => t.slug),
      (slug) =>
        this.#inTenantSchema(slug, schemaOf.get(slug)!, 'up-to-date', async (_dataSource, runner) => {
          await access.ledger.syncTenant(runner, slug, schemaOf.get(slug)!);
          return [];
        }),
      this.#runOptions(options),
    );
  }

  #migrateOne(slug: string, schemaName: string): Promise<FleetTenantResult> {
    return this.#inTenantSchema(slug, schemaName, 'migrated', (dataSource, runner) =>
      applyPendingMigrations(dataSource, runner, this.#access.searchPaths.tenantMigration(schemaName)),
    );
  }

  #revertOne(slug: string, schemaName: string, throwOnFailure = false): Promise<FleetTenantResult> {
    return this.#inTenantSchema(
      slug,
      schemaName,
      'reverted',
      async (dataSource, runner) => {
        const undone = await undoLastMigration(dataSource, runner, this.#access.searchPaths.tenantMigration(schemaName));
        return undone === undefined ? [] : [undone];
      },
      throwOnFailure,
    );
  }

  /**
   * Runs `change` on the tenant's schema in one locked transaction, then
   * copies the tenant's migrations table into the ledger in that same
   * transaction. Never throws: a failure becomes a `failed` line.
   */
  async #inTenantSchema(
    slug: string,
    schemaName: string,
    changedStatus: 'migrated' | 'reverted' | 'up-to-date',
    change: (dataSource: DataSource, runner: QueryRunner & SqlRunner) => Promise<string[]>,
    throwOnFailure = false,
  ): Promise<FleetTenantResult> {
    const access = this.#access;
    const started = performance.now();
    const line = (status: FleetTenantResult['status'], applied: readonly string[], error?: FleetTenantError): FleetTenantResult => ({
      slug,
      status,
      applied,
      ...(error === undefined ? {} : { error }),
      ms: Math.round((performance.now() - started) * 10) / 10,
    });
    let dataSource: DataSource | undefined;
    try {
      dataSource = await access.buildTenantDataSource(schemaName);
      const ds = dataSource;
      const outcome = await access.inLockedTransaction(ds, `schema:${schemaName}`, async (runner) => {
        // Re-read under the lock: the tenant may have been dropped or suspended meanwhile.
        const current = await access.registry.find(runner, slug);
        if (current === undefined || !MIGRATABLE.includes(current.status)) return { skipped: current?.status ?? 'dropped' };
        const applied = await change(ds, runner);
        await access.ledger.syncTenant(runner, slug, schemaName);
        return { applied };
      });
      if ('skipped' in outcome) return line('skipped', [], { message: `Not migrated: the tenant is ${outcome.skipped}.` });
      return line(outcome.applied.length > 0 ? changedStatus : 'up-to-date', outcome.applied);
    } catch (error) {
      if (throwOnFailure) {
        if (error instanceof TenancyError) throw error;
        throw error instanceof MigrationFailure
          ? new TenantMigrationError(slug, error.migration, error.cause)
          : new TenantMigrationError(slug, undefined, error);
      }
      return line('failed', [], fleetErrorOf(error));
    } finally {
      if (dataSource?.isInitialized) await dataSource.destroy();
    }
  }

  async #namedTenants(slugs: readonly string[]): Promise<TenantRecord[]> {
    const access = this.#access;
    const found = new Map((await access.registry.findMany(access.sharedDataSource, slugs)).map((t) => [t.slug, t]));
    return [...new Set(slugs)].map((slug) => {
      const tenant = found.get(slug);
      if (tenant === undefined) throw new TenantNotFoundError(slug);
      return tenant;
    });
  }

  #runOptions(options: FleetRunOptions): FleetRunOptions & { readonly concurrency: number } {
    const concurrency = options.concurrency ?? this.#access.defaultConcurrency;
    return { ...options, concurrency };
  }
}

/** The JSON-friendly error of a failed tenant. */
export function fleetErrorOf(error: unknown): FleetTenantError {
  if (error instanceof MigrationFailure) {
    const cause = error.cause;
    const code = sqlStateOf(cause);
    return {
      ...(error.migration === undefined ? {} : { migration: error.migration }),
      message: cause instanceof Error ? cause.message : String(cause),
      ...(code === undefined ? {} : { code }),
    };
  }
  if (error instanceof TenancyError) return { message: error.message, code: error.code };
  const code = sqlStateOf(error);
  return { message: error instanceof Error ? error.message : String(error), ...(code === undefined ? {} : { code }) };
}

function withSkipped(report: FleetReport, notServed: readonly TenantRecord[]): FleetReport {
  if (notServed.length === 0) return report;
  const skipped = notServed.map<FleetTenantResult>((t) => ({
    slug: t.slug,
    status: 'skipped',
    applied: [],
    error: { message: `Not migrated: the tenant is ${t.status}.` },
    ms: 0,
  }));
  const results = [...report.results, ...skipped].sort((a, b) => (a.slug < b.slug ? -1 : a.slug > b.slug ? 1 : 0));
  return { results, totals: { ...report.totals, tenants: report.totals.tenants + skipped.length, skipped: report.totals.skipped + skipped.length } };
}
