import type { DataSource, QueryRunner } from 'typeorm';
import { schemaExists } from '../naming/schema-exists';
import { InvalidArgumentError, TenancyError, TenantMigrationError, TenantNotFoundError, databaseErrorOf, sqlStateOf } from '../errors';
import type { TenantRegistry, SqlRunner } from '../registry/tenant-registry';
import type { TenantServer } from '../data-source/tenant-server';
import type { SearchPaths } from '../naming/search-paths';
import { TENANT_STATUSES, type TenantRecord, type TenantStatus } from '../registry/tenant-record';
import {
  FLEET_ERROR_DATABASE_FIELDS,
  runFleet,
  type FleetReport,
  type FleetRunOptions,
  type FleetTenantError,
  type FleetTenantResult,
} from './fleet-run';
import type { LedgerScopeTenant, MigrationLedger } from './migration-ledger';
import { inMigrationOrder } from './migration-list';
import { MigrationFailure, applyPendingMigrations, undoLastMigration } from './schema-migrator';
import { hasNonTransactional, releaseSnapshot } from './non-transactional-migrations';
import { applyPendingInSegments, undoLastInSegments, type InvalidIndexRepair } from './segmented-migrations';
import type { MigrationGuardMode } from './migration-guard';
import type { LibraryLog } from '../manager/tenancy-logger';
import { publishTenantMigration } from '../observability/channels';
import { inTenantSpan } from '../observability/tracing';

/** Options of `migrateTenants()` and `revertTenants()`. */
export interface FleetMigrationOptions extends FleetRunOptions {
  /** Only these tenants (validated slugs). Default: every active tenant. */
  readonly tenants?: readonly string[];
  /** Only the tenants living on this server, or these servers (names of the manager's servers). */
  readonly where?: { readonly server?: string | readonly string[] };
}

/** One tenant's migrations, as `migrationStatus()` reports them. */
export interface TenantMigrationStatus {
  readonly slug: string;
  readonly status: TenantStatus;
  /** Applied migrations, in the order TypeORM applies them (by timestamp). */
  readonly applied: readonly string[];
  /** Migrations of the code not applied yet, in the order they would run. */
  readonly pending: readonly string[];
}

/** What the fleet migrator needs from the manager. */
export interface SchemaAccess {
  /** The home server: its shared schema holds the registry and the ledger. */
  readonly home: TenantServer;
  /** The server of the given name (a tenant's `server`); throws for a name the manager does not have. */
  serverOf(name: string): TenantServer;
  /** The search path of each tenant's migrations. */
  readonly searchPaths: SearchPaths;
  readonly registry: TenantRegistry;
  readonly ledger: MigrationLedger;
  /** Names of the tenant migrations of the code, in the order TypeORM runs them (by timestamp). */
  readonly tenantMigrationNames: readonly string[];
  /** Tenants processed at once on each server, unless a run says otherwise. */
  readonly defaultConcurrency: number;
  /** The smallest pool's size: a tenant with `transaction = false` migrations uses two of its server's connections while it migrates. */
  readonly poolSize: number;
  /** Whether some tenant migration declares `transaction = false`. */
  readonly nonTransactionalMigrations: boolean;
  /** In Citus mode: the node holding each of these schemas (runs are then grouped by node rather than by server). */
  readonly nodesOf?: (schemaNames: readonly string[]) => Promise<ReadonlyMap<string, string>>;
  /** Where the library's own messages go (the `logger` option, or process warnings). */
  readonly log: LibraryLog;
  /** Keeps each tenant's migrations (and reverts) inside its schema. */
  readonly migrationGuard: MigrationGuardMode;
  /** The manager, named in the diagnostics_channel message of each tenant. */
  readonly owner?: object;
}

// Suspended tenants are migrated too, so that resuming one serves a current
// schema; archived ones are brought up to date by restoreTenant().
const MIGRATABLE: readonly TenantStatus[] = ['active', 'suspended'];

/** How a tenant's line names what was not done to it. */
const VERB = { migrated: 'migrated', reverted: 'reverted', 'up-to-date': 'reconciled' } as const;

/**
 * Migrations over the whole fleet of tenants: which tenants are in scope,
 * and which of them have something pending, comes from the ledger in one
 * query, and every tenant in scope gets a line in the report (`up-to-date`
 * ones included, straight from that query); each tenant is migrated in its
 * own transaction under its schema's advisory lock, so two processes
 * migrating the same fleet never run one tenant twice and never deadlock; a
 * failing tenant is rolled back and reported, and the run goes on.
 */
export class FleetMigrator {
  readonly #access: SchemaAccess;

  constructor(access: SchemaAccess) {
    this.#access = access;
  }

  /**
   * Applies pending migrations; every tenant in scope gets a line. Those the
   * ledger shows complete are reported `up-to-date` from the one scope query,
   * with no DataSource opened, so a no-op run over a big fleet costs that
   * query and nothing per tenant.
   */
  async migrateTenants(options: FleetMigrationOptions = {}): Promise<FleetReport> {
    const started = performance.now();
    const scope = await this.#scope(options.tenants, MIGRATABLE, options.where?.server);
    const settled = new Map<string, FleetTenantResult>();
    for (const tenant of scope) {
      if (!MIGRATABLE.includes(tenant.status)) settled.set(tenant.slug, notServedLine(tenant, 'migrated'));
      else if (!tenant.pending) settled.set(tenant.slug, { slug: tenant.slug, status: 'up-to-date', applied: [], ms: 0 });
    }
    const byslug = new Map(scope.map((t) => [t.slug, t]));
    return runFleet(
      { slugs: scope.map((t) => t.slug), settled, started },
      (slug) => this.#observed('migrate', slug, byslug.get(slug)!.schemaName, () => this.#migrateOne(byslug.get(slug)!)),
      await this.#runOptions(options, byslug, true, settled),
    );
  }

  /**
   * Undoes the last migration of every tenant in scope; each gets a line
   * (`reverted`, or `up-to-date` when it had nothing to undo).
   */
  async revertTenants(options: FleetMigrationOptions = {}): Promise<FleetReport> {
    const started = performance.now();
    const scope = await this.#scope(options.tenants, MIGRATABLE, options.where?.server);
    const settled = new Map(scope.filter((t) => !MIGRATABLE.includes(t.status)).map((t) => [t.slug, notServedLine(t, 'reverted')]));
    const byslug = new Map(scope.map((t) => [t.slug, t]));
    return runFleet(
      { slugs: scope.map((t) => t.slug), settled, started },
      (slug) => this.#observed('revert', slug, byslug.get(slug)!.schemaName, () => this.#revertOne(byslug.get(slug)!)),
      await this.#runOptions(options, byslug, true, settled),
    );
  }

  /**
   * Undoes the last migration of one tenant and returns its result line.
   *
   * @throws TenantMigrationError when the revert fails (rolled back).
   */
  async revertTenant(tenant: TenantRecord): Promise<FleetTenantResult> {
    return this.#observed('revert', tenant.slug, tenant.schemaName, () => this.#revertOne(tenant, true));
  }

  /**
   * One tenant of a fleet run in a span of its own (with `@opentelemetry/api`),
   * then its line on the `typeorm-tenants:tenant-migration` channel.
   */
  async #observed(direction: 'migrate' | 'revert', slug: string, schema: string, work: () => Promise<FleetTenantResult>): Promise<FleetTenantResult> {
    const owner = this.#access.owner;
    const started = performance.now();
    let result: FleetTenantResult;
    try {
      result = await inTenantSpan(direction, slug, schema, work);
    } catch (error) {
      // revertTenant() throws its failure instead of reporting it.
      const message = error instanceof Error ? error.message : String(error);
      const durationMs = performance.now() - started;
      publishTenantMigration(() => ({ manager: owner, direction, slug, schema, status: 'failed', applied: [], durationMs, error: { message } }));
      throw error;
    }
    publishTenantMigration(() => ({
      manager: owner,
      direction,
      slug,
      schema,
      status: result.status,
      applied: result.applied,
      durationMs: result.ms,
      ...(result.error === undefined ? {} : { error: result.error }),
    }));
    return result;
  }

  async migrationStatus(): Promise<TenantMigrationStatus[]> {
    const access = this.#access;
    const entries = await access.ledger.entries(access.home.sharedDataSource);
    return entries.map((entry) => {
      const applied = new Set(entry.applied);
      return {
        slug: entry.slug,
        status: entry.status,
        applied: inMigrationOrder(entry.applied, access.tenantMigrationNames),
        pending: access.tenantMigrationNames.filter((name) => !applied.has(name)),
      };
    });
  }

  /**
   * Rebuilds every tenant's ledger rows from its own migrations table. Every
   * tenant of the registry gets a line; those not served (archived,
   * provisioning, dropping) are reported `skipped` without opening their schema.
   */
  async reconcile(options: FleetRunOptions = {}): Promise<FleetReport> {
    const access = this.#access;
    const started = performance.now();
    const scope = await this.#scope(undefined, TENANT_STATUSES);
    const settled = new Map(scope.filter((t) => !MIGRATABLE.includes(t.status)).map((t) => [t.slug, notServedLine(t, 'reconciled')]));
    const byslug = new Map(scope.map((t) => [t.slug, t]));
    // #inTenantSchema copies the tenant's migrations table into the ledger after every change: here the change is nothing.
    return runFleet(
      { slugs: scope.map((t) => t.slug), settled, started },
      (slug) => this.#inTenantSchema(byslug.get(slug)!, 'up-to-date', async () => ({ applied: [] })),
      await this.#runOptions(options, byslug, false, settled),
    );
  }

  #migrateOne(tenant: Placed): Promise<FleetTenantResult> {
    const access = this.#access;
    const searchPath = access.searchPaths.tenantMigration(tenant.schemaName);
    return this.#inTenantSchema(tenant, 'migrated', async (dataSource, runner) => {
      if (hasNonTransactional(dataSource)) {
        await releaseSnapshot(runner);
        return applyPendingInSegments(dataSource, this.#segments(tenant));
      }
      return { applied: await applyPendingMigrations(dataSource, runner, searchPath, { guard: access.migrationGuard }) };
    });
  }

  /**
   * How a tenant with `transaction = false` migrations runs them: in
   * segments, each recorded in the ledger as it commits. On a server other
   * than the home one the ledger is written once the tenant's work ended
   * (see #inTenantSchema), from what its server committed.
   */
  #segments(tenant: Placed): Parameters<typeof applyPendingInSegments>[1] {
    const access = this.#access;
    const { slug, schemaName } = tenant;
    const onHome = access.serverOf(tenant.server) === access.home;
    return {
      searchPath: access.searchPaths.tenantMigration(schemaName),
      guard: access.migrationGuard,
      record: (runner) => (onHome ? access.ledger.syncTenant(runner, slug, schemaName) : Promise.resolve()),
    };
  }

  #revertOne(tenant: Placed, throwOnFailure = false): Promise<FleetTenantResult> {
    const schemaName = tenant.schemaName;
    return this.#inTenantSchema(
      tenant,
      'reverted',
      async (dataSource, runner) => {
        const undone = hasNonTransactional(dataSource)
          ? await releaseSnapshot(runner).then(() => undoLastInSegments(dataSource, this.#segments(tenant)))
          : await undoLastMigration(dataSource, runner, this.#access.searchPaths.tenantMigration(schemaName), { guard: this.#access.migrationGuard });
        return { applied: undone === undefined ? [] : [undone] };
      },
      throwOnFailure,
    );
  }

  /**
   * Runs `change` on the tenant's schema in one locked transaction on its
   * server, then copies the tenant's migrations table into the ledger: in
   * that same transaction when the tenant lives on the home server; else
   * after it ended (committed or not), from what the tenant's server holds
   * then, in a transaction of the home server (a crash in between leaves
   * the ledger behind, which the next run of any fleet command repairs).
   * With `transaction = false` migrations, the locked transaction is READ
   * COMMITTED and only holds the lock: `change` runs them in segments on a
   * connection of its own, each recorded as it commits. Never throws: a
   * failure becomes a `failed` line.
   */
  async #inTenantSchema(
    tenant: Placed,
    changedStatus: 'migrated' | 'reverted' | 'up-to-date',
    change: (dataSource: DataSource, runner: QueryRunner & SqlRunner) => Promise<{ applied: string[]; invalidIndexes?: InvalidIndexRepair[] }>,
    throwOnFailure = false,
  ): Promise<FleetTenantResult> {
    const access = this.#access;
    const { slug, schemaName } = tenant;
    const started = performance.now();
    const line = (
      status: FleetTenantResult['status'],
      applied: readonly string[],
      error?: FleetTenantError,
      invalidIndexes?: readonly InvalidIndexRepair[],
    ): FleetTenantResult => ({
      slug,
      status,
      applied,
      ...(error === undefined ? {} : { error }),
      ...(invalidIndexes === undefined || invalidIndexes.length === 0 ? {} : { invalidIndexes }),
      ms: Math.round((performance.now() - started) * 10) / 10,
    });
    let dataSource: DataSource | undefined;
    let server: TenantServer | undefined;
    let touched = false;
    try {
      server = access.serverOf(tenant.server);
      const onHome = server === access.home;
      dataSource = await server.buildDataSource(schemaName);
      const ds = dataSource;
      const outcome = await server.inLockedTransaction(
        ds,
        `schema:${schemaName}`,
        async (runner) => {
          // Re-read under the lock: the tenant may have been dropped or suspended meanwhile.
          const current = await access.registry.find(onHome ? runner : access.home.sharedDataSource, slug);
          if (current === undefined || !MIGRATABLE.includes(current.status)) return { skipped: current?.status ?? 'dropped' };
          if (current.server !== tenant.server) return { skipped: `now on server "${current.server}"` };
          if (!onHome && !(await schemaExists(runner, schemaName))) return { skipped: 'without its schema on its server (archived or dropped meanwhile)' };
          touched = !onHome;
          const changed = await change(ds, runner);
          if (onHome) await access.ledger.syncTenant(runner, slug, schemaName);
          return changed;
        },
        hasNonTransactional(ds) ? 'READ COMMITTED' : undefined,
      );
      if (touched) await this.#syncFrom(server, slug, schemaName);
      if ('skipped' in outcome) return line('skipped', [], { message: `Not ${VERB[changedStatus]}: the tenant is ${outcome.skipped}.` });
      for (const repair of outcome.invalidIndexes ?? []) {
        access.log({
          level: 'warn',
          kind: 'invalid-index',
          tenant: slug,
          schema: schemaName,
          message:
            `Tenant "${slug}": index "${schemaName}"."${repair.index}" had been left invalid by a failed concurrent build; dropped, ` +
            (repair.rebuilt ? 'and the migrations built it again.' : 'and no migration built it again: create it if it is needed.'),
        });
      }
      return line(outcome.applied.length > 0 ? changedStatus : 'up-to-date', outcome.applied, undefined, outcome.invalidIndexes);
    } catch (caught) {
      let error = caught;
      // Off the home server, segments of a failed run may have committed: the ledger says what the tenant's server holds now.
      if (touched && server !== undefined) {
        error = await this.#syncFrom(server, slug, schemaName).then(
          () => caught,
          (syncError: unknown) => new AggregateError([caught, syncError], `${String(caught)}; and recording the tenant's migrations in the ledger failed: ${String(syncError)}`),
        );
      }
      if (throwOnFailure) {
        if (error instanceof TenancyError) throw error;
        throw error instanceof MigrationFailure
          ? new TenantMigrationError(slug, error.migration, error.cause)
          : new TenantMigrationError(slug, undefined, error);
      }
      if (error instanceof MigrationFailure && error.invalidIndexes.length > 0) {
        access.log({
          level: 'warn',
          kind: 'invalid-index',
          tenant: slug,
          schema: schemaName,
          message: `Tenant "${slug}": ${error.invalidIndexes.map((index) => `"${schemaName}"."${index}"`).join(', ')} left invalid after ${error.migration ?? 'the run'} failed; the next run drops and rebuilds them.`,
        });
      }
      return line('failed', error instanceof MigrationFailure ? error.applied : [], fleetErrorOf(error));
    } finally {
      if (dataSource?.isInitialized) await dataSource.destroy();
    }
  }

  /** Copies the migrations table of a tenant off the home server into the ledger, in a transaction of the home server. */
  async #syncFrom(server: TenantServer, slug: string, schemaName: string): Promise<void> {
    const access = this.#access;
    await access.home.sharedDataSource.transaction((home) => access.ledger.syncTenant(home, slug, schemaName, { tenant: server.sharedDataSource }));
  }

  /**
   * The tenants of a run, from one ledger query: the named ones (every one
   * must exist, whatever its status; nothing runs otherwise), or all those
   * with one of `statuses`; only those on `server` when it is given.
   */
  async #scope(slugs: readonly string[] | undefined, statuses: readonly TenantStatus[], server?: string | readonly string[]): Promise<LedgerScopeTenant[]> {
    const access = this.#access;
    const named = slugs === undefined ? undefined : [...new Set(slugs)];
    const scope = await access.ledger.scope(access.home.sharedDataSource, access.tenantMigrationNames, statuses, named);
    if (named !== undefined && scope.length !== named.length) {
      const found = new Set(scope.map((t) => t.slug));
      throw new TenantNotFoundError(named.find((slug) => !found.has(slug))!);
    }
    if (server === undefined) return scope;
    const servers: readonly string[] = typeof server === 'string' ? [server] : server;
    return scope.filter((t) => servers.includes(t.server));
  }

  /**
   * The run's options: `concurrency` tenants at once on each server (the
   * tenants' servers group the run); in Citus mode `concurrency` at once in
   * all, the tenants of each node taken in turn. `migrating`: tenants may run
   * `transaction = false` migrations (two connections each), not so for reconcile.
   */
  async #runOptions(
    options: FleetRunOptions,
    tenants: ReadonlyMap<string, Placed>,
    migrating = true,
    settled?: ReadonlyMap<string, unknown>,
  ): Promise<FleetRunOptions & { readonly concurrency: number; readonly groupOf: (slug: string) => string; readonly interleaveGroups: boolean }> {
    const access = this.#access;
    const concurrency = options.concurrency ?? access.defaultConcurrency;
    if (migrating && access.nonTransactionalMigrations && Number.isInteger(concurrency) && concurrency * 2 > access.poolSize) {
      throw new InvalidArgumentError(
        `concurrency ${concurrency} needs up to ${concurrency * 2} connections, and the pool has ${access.poolSize}: a tenant migration declares ` +
          'transaction = false, and a tenant running one holds its lock on one connection while the migration runs on another. ' +
          (access.poolSize >= 2 ? `Use a concurrency of at most ${Math.floor(access.poolSize / 2)}, or a poolSize of at least ${concurrency * 2}.` : `Use a poolSize of at least ${concurrency * 2}.`),
      );
    }
    // Only the tenants that will run are looked up: a no-op run stays one query.
    const running = [...tenants.values()].filter((t) => settled?.has(t.slug) !== true);
    const nodes = access.nodesOf === undefined || running.length === 0 ? undefined : await access.nodesOf(running.map((t) => t.schemaName));
    const groupOf = (slug: string): string => {
      const tenant = tenants.get(slug)!;
      return nodes?.get(tenant.schemaName) ?? tenant.server;
    };
    // In Citus mode every node's tenants go through the coordinator's one pool: concurrency bounds the run, the nodes taken in turn.
    return { ...options, concurrency, groupOf, interleaveGroups: nodes !== undefined };
  }
}

/** A tenant of a fleet run: its slug and schema, and the server it lives on. */
type Placed = Pick<LedgerScopeTenant, 'slug' | 'schemaName' | 'server'>;


/**
 * The JSON-friendly error of a failed tenant: the migration at fault, the
 * message, the SQLSTATE (or the library's code), and PostgreSQL's detail,
 * hint, schema, table, column and constraint where the database sent them.
 */
export function fleetErrorOf(error: unknown): FleetTenantError {
  const failure = error instanceof MigrationFailure ? error.cause : error;
  const migration = error instanceof MigrationFailure && error.migration !== undefined ? { migration: error.migration } : {};
  const code = failure instanceof TenancyError ? failure.code : sqlStateOf(failure);
  const invalid = error instanceof MigrationFailure && error.invalidIndexes.length > 0 ? { invalidIndexes: error.invalidIndexes } : {};
  return {
    ...migration,
    message: failure instanceof Error ? failure.message : String(failure),
    ...(code === undefined ? {} : { code }),
    ...databaseFieldsOf(failure),
    ...invalid,
  };
}

/** PostgreSQL's fields of the failure, in a report line's shape (the SQLSTATE is the line's `code`). */
function databaseFieldsOf(error: unknown): Partial<Pick<FleetTenantError, (typeof FLEET_ERROR_DATABASE_FIELDS)[number]>> {
  const { code: _code, ...fields } = databaseErrorOf(error) ?? { code: '' };
  return fields;
}

/** The line of a tenant in scope that is not served, so not processed. */
function notServedLine(tenant: LedgerScopeTenant, verb: (typeof VERB)[keyof typeof VERB]): FleetTenantResult {
  return { slug: tenant.slug, status: 'skipped', applied: [], error: { message: `Not ${verb}: the tenant is ${tenant.status}.` }, ms: 0 };
}
