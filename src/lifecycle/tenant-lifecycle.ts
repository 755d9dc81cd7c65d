import type { DataSource, QueryRunner } from 'typeorm';
import { distributeTenantSchema } from '../citus/distributed-schema';
import { InvalidTenantStateError, TenantNotFoundError, sqlStateOf } from '../errors';
import type { TenantEvents } from '../manager/tenant-events';
import { lifecycleTenant, type LifecyclePlugins } from './lifecycle-plugins';
import { archiveSchemaName } from '../naming/derived-schema-name';
import { quoteIdent } from '../naming/quote-ident';
import type { TenantDomains } from '../registry/tenant-domains';
import type { SqlRunner, TenantRegistry } from '../registry/tenant-registry';
import type { TenantRecord, TenantStatus } from '../registry/tenant-record';
import type { TenantServer } from '../data-source/tenant-server';
import { inPlacedTransaction, type PlacedRunners } from '../data-source/placed-transaction';

/** What `dropTenant` takes besides the slug. */
export interface DropTenantOptions {
  /** Drop an active tenant without suspending or archiving it first. Default false. */
  readonly force?: boolean;
}

/** What the lifecycle needs from the manager. */
export interface LifecycleAccess {
  /** The home server: its shared schema holds the registry and the domains. */
  readonly home: TenantServer;
  /** The server of the given name (a tenant's `server`); throws for a name the manager does not have. */
  serverOf(name: string): TenantServer;
  readonly registry: TenantRegistry;
  /** The domains registry: a dropped tenant's hostnames are freed with it. */
  readonly domains: TenantDomains;
  readonly events: TenantEvents;
  /** The plugins of `manager.use()`, for the tenant's data kept outside PostgreSQL. */
  readonly plugins: LifecyclePlugins;
  /** Relations dropped per transaction when dropping a tenant. */
  readonly dropBatchSize: number;
  /** Forgets the tenant's cached DataSource and record in this process. */
  evict(slug: string): void;
  /** Drops the tenant's role on `server` (under role isolation; a no-op when it has none), in the caller's transaction there. */
  dropTenantRole(runner: QueryRunner & SqlRunner, schemaName: string, server: TenantServer): Promise<void>;
  /** Applies pending tenant migrations with `dataSource` (bound to the tenant) inside the tenant's transaction, and updates the ledger in the home one. */
  migrateInTransaction(dataSource: DataSource, runners: PlacedRunners, slug: string, schemaName: string): Promise<void>;
}

type Transition = 'suspended' | 'resumed' | 'archived' | 'restored';

// DROP statement per pg_class.relkind; dropping the tables first, a few per
// transaction, keeps each transaction's lock count small.
const DROP_BY_KIND: Readonly<Record<string, string>> = {
  r: 'TABLE',
  p: 'TABLE',
  f: 'FOREIGN TABLE',
  m: 'MATERIALIZED VIEW',
  v: 'VIEW',
};

/**
 * Tenant status changes: suspend and resume (not served, data untouched),
 * archive and restore (the schema renamed to a reserved archive name and
 * back, an instant operation), and dropping in batches. Every change runs in
 * a transaction holding the tenant schema's advisory lock, so it serialises
 * with provisioning and migrations of that tenant. For a tenant on another
 * server than the home one, a change to its schema and the registry's
 * record of it are two transactions (the schema's committed first; see
 * `inPlacedTransaction`), and each step is written so that calling the
 * operation again after a crash between them completes it.
 */
export class TenantLifecycle {
  readonly #access: LifecycleAccess;
  /** Drops of this process past their first step, by schema: a second `drop` joins the first. */
  readonly #completing = new Map<string, Promise<void>>();

  constructor(access: LifecycleAccess) {
    this.#access = access;
  }

  suspend(slug: string, schemaName: string): Promise<TenantRecord> {
    return this.#transition(slug, schemaName, 'suspendTenant()', ['active'], 'suspended', 'suspended', 'Only an active tenant can be suspended.');
  }

  resume(slug: string, schemaName: string): Promise<TenantRecord> {
    return this.#transition(slug, schemaName, 'resumeTenant()', ['suspended'], 'active', 'resumed', 'Only a suspended tenant can be resumed; an archived one is restored with restoreTenant().');
  }

  async archive(slug: string, schemaName: string): Promise<TenantRecord> {
    const archived = await this.#transition(
      slug,
      schemaName,
      'archiveTenant()',
      ['active', 'suspended'],
      'archived',
      'archived',
      'Only an active or suspended tenant can be archived.',
      (runner) => renameSchema(runner, schemaName, archiveSchemaName(schemaName)),
      await this.#serverOfTenant(slug),
    );
    // Also on a tenant that was archived already: the way to retry a hook that failed.
    await this.#access.plugins.call('onArchived', lifecycleTenant(archived));
    return archived;
  }

  async restore(slug: string, schemaName: string): Promise<TenantRecord> {
    // Migrations must run on a DataSource bound to the tenant schema (TypeORM
    // resolves table names with the runner's DataSource), so the whole
    // restore runs on one.
    const server = await this.#serverOfTenant(slug);
    const dataSource = await server.buildDataSource(schemaName);
    let restored: TenantRecord;
    try {
      restored = await this.#transition(
        slug,
        schemaName,
        'restoreTenant()',
        ['archived'],
        'active',
        'restored',
        'Only an archived tenant can be restored; a suspended one is resumed with resumeTenant().',
        async (runner, runners) => {
          await renameSchema(runner, archiveSchemaName(schemaName), schemaName);
          await this.#access.migrateInTransaction(dataSource, runners, slug, schemaName);
          // Archived before Citus mode: distributed now, before it is served again.
          await distributeTenantSchema(runner, schemaName, server.citusMode);
        },
        server,
        dataSource,
      );
    } finally {
      await dataSource.destroy();
    }
    await this.#access.plugins.call('onRestored', lifecycleTenant(restored));
    return restored;
  }

  /**
   * Drops the tenant in three steps, each its own transaction: mark it
   * `dropping` (not served from then on), drop its relations a batch at a
   * time, then drop the schema and the registry row together. A crash in
   * between leaves it `dropping`; calling `drop` again completes it. The
   * plugins' `onDropping` hooks run once it is `dropping`, before its
   * relations go (so a hook that fails leaves the data in place).
   */
  async drop(slug: string, schemaName: string, options: DropTenantOptions): Promise<void> {
    const access = this.#access;
    const lock = `schema:${schemaName}`;
    const dropping = await access.home.inLockedTransaction(access.home.sharedDataSource, lock, async (runner) => {
      const tenant = await access.registry.find(runner, slug);
      if (tenant === undefined) throw new TenantNotFoundError(slug);
      if (tenant.status === 'active' && options.force !== true) {
        throw new InvalidTenantStateError(slug, 'active', 'dropTenant()', `Suspend or archive it first, or call dropTenant("${slug}", { force: true }).`);
      }
      if (tenant.status !== 'dropping') await access.registry.setStatus(runner, slug, 'dropping');
      return tenant;
    });
    access.evict(slug);
    // Two drops of one tenant in this process: the second waits for the
    // first's hooks and batches instead of running them alongside.
    let completion = this.#completing.get(schemaName);
    if (completion === undefined) {
      completion = this.#complete(slug, schemaName, dropping).finally(() => this.#completing.delete(schemaName));
      this.#completing.set(schemaName, completion);
    }
    await completion;
  }

  /** The rest of a drop once the tenant is `dropping`: the plugins' hooks, the relations in batches, then schema and row. */
  async #complete(slug: string, schemaName: string, dropping: TenantRecord): Promise<void> {
    const access = this.#access;
    const lock = `schema:${schemaName}`;
    await access.plugins.call('onDropping', lifecycleTenant(dropping));
    const server = access.serverOf(dropping.server);

    const schemas = [schemaName, archiveSchemaName(schemaName)];
    for (;;) {
      const dropped = await server.inLockedTransaction(server.sharedDataSource, lock, async (runner) => {
        const relations: Array<{ schema: string; name: string; kind: string }> = await runner.query(
          `SELECT n.nspname AS schema, c.relname AS name, c.relkind AS kind
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = ANY($1::text[]) AND c.relkind = ANY($2::"char"[]) AND NOT c.relispartition
            ORDER BY c.oid LIMIT $3`,
          [schemas, Object.keys(DROP_BY_KIND), access.dropBatchSize],
        );
        for (const relation of relations) {
          await runner.query(`DROP ${DROP_BY_KIND[relation.kind]} IF EXISTS ${quoteIdent(relation.schema)}.${quoteIdent(relation.name)} CASCADE`);
        }
        return relations.length;
      });
      if (dropped === 0) break;
    }

    const freed = await inPlacedTransaction(access.home, server, lock, async ({ tenant, home }) => {
      for (const schema of schemas) await tenant.query(`DROP SCHEMA IF EXISTS ${quoteIdent(schema)} CASCADE`);
      await access.dropTenantRole(tenant, schemaName, server);
      // Its hostnames are free for other tenants from the commit on (archive and restore keep them).
      const domains = await access.domains.freeTenant(home, slug);
      await access.registry.deleteDropped(home, slug, schemaName);
      return domains;
    });
    access.evict(slug);
    access.events.emit('dropped', { slug, schemaName });
    for (const domain of freed) access.events.emit('domain-removed', { slug, domain });
  }

  async #transition(
    slug: string,
    schemaName: string,
    operation: string,
    from: readonly TenantStatus[],
    to: TenantStatus,
    event: Transition,
    hint: string,
    change?: (runner: QueryRunner & SqlRunner, runners: PlacedRunners) => Promise<unknown>,
    server?: TenantServer,
    dataSource?: DataSource,
  ): Promise<TenantRecord> {
    const access = this.#access;
    // Status changes alone touch the registry only: the home server's transaction.
    const on = server ?? access.home;
    const outcome = await inPlacedTransaction(
      access.home,
      on,
      `schema:${schemaName}`,
      async (runners) => {
        const tenant = await access.registry.find(runners.home, slug);
        if (tenant === undefined) throw new TenantNotFoundError(slug);
        if (tenant.status === to && event !== 'restored') return { tenant, changed: false };
        if (!from.includes(tenant.status)) throw new InvalidTenantStateError(slug, tenant.status, operation, hint);
        if (server !== undefined && access.serverOf(tenant.server) !== server) {
          throw new InvalidTenantStateError(slug, tenant.status, operation, `It moved to server "${tenant.server}" meanwhile; call ${operation.replace('()', '')}("${slug}") again.`);
        }
        try {
          await change?.(runners.tenant, runners);
        } catch (error) {
          // 42P06: the target schema name is taken (for instance a stray schema of that name).
          if (sqlStateOf(error) === '42P06') {
            throw new InvalidTenantStateError(slug, tenant.status, operation, `A schema named like its ${event === 'archived' ? 'archive' : 'schema'} already exists; rename or drop it first.`);
          }
          throw error;
        }
        return { tenant: await access.registry.setStatus(runners.home, slug, to), changed: true };
      },
      { dataSource },
    );
    // Changes made here take effect at once in this process; other processes
    // see them when their cached record expires (tenantRecordTtlMs).
    access.evict(slug);
    if (outcome.changed) access.events.emit(event, { tenant: outcome.tenant });
    return outcome.tenant;
  }

  /** The server of the tenant's schema, from its registry record. */
  async #serverOfTenant(slug: string): Promise<TenantServer> {
    const tenant = await this.#access.registry.find(this.#access.home.sharedDataSource, slug);
    if (tenant === undefined) throw new TenantNotFoundError(slug);
    return this.#access.serverOf(tenant.server);
  }

}

/**
 * Renames a tenant's schema (archive, restore). When the new name exists
 * and the old one does not, an earlier call renamed it and crashed before
 * the registry said so (a tenant off the home server): nothing to do.
 */
async function renameSchema(runner: SqlRunner, from: string, to: string): Promise<void> {
  const [row] = (await runner.query('SELECT to_regnamespace($1) IS NOT NULL AS source, to_regnamespace($2) IS NOT NULL AS target', [
    quoteIdent(from),
    quoteIdent(to),
  ])) as Array<{ source: boolean; target: boolean }>;
  if (!row!.source && row!.target) return;
  await runner.query(`ALTER SCHEMA ${quoteIdent(from)} RENAME TO ${quoteIdent(to)}`);
}
