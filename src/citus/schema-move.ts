import { InvalidArgumentError, InvalidTenantStateError, TenantMoveError, TenantNotFoundError, TenantRebalanceError } from '../errors';
import type { TenantServer } from '../data-source/tenant-server';
import { quoteIdent } from '../naming/quote-ident';
import type { TenantRecord } from '../registry/tenant-record';
import type { SqlRunner } from '../registry/tenant-registry';
import { nodesOfSchemas, parseNodeName, tenantNodes } from './tenant-nodes';

/** How Citus copies a tenant's shards: `'online'` (logical replication; writes go on) or `'block-writes'` (writes wait for the copy). */
export type CitusTransfer = 'online' | 'block-writes';

/** `moveTenant(slug, options)` in Citus mode: the node to move the tenant's schema to. */
export interface MoveTenantToNodeOptions {
  /** The target node, `'host:port'` as Citus names it (`getTenant(slug).node`, `pg_dist_node`). */
  readonly node: string;
  /**
   * `'online'` (default): Citus copies the shards by logical replication while the tenant
   * keeps writing, and blocks writes only for the final switch; every table needs a primary
   * key (or a replica identity), checked before anything moves. `'block-writes'`: writes to
   * the tenant wait for the whole copy; for tables without a primary key.
   */
  readonly transfer?: CitusTransfer;
  /** Called before the move starts and when it is done. */
  readonly onProgress?: (progress: NodeMoveProgress) => void;
}

/** Where a move between nodes is. */
export interface NodeMoveProgress {
  readonly step: 'moving' | 'moved';
  readonly from: string;
  readonly to: string;
}

/** What `moveTenant(slug, { node })` did. */
export interface NodeMoveResult {
  readonly slug: string;
  /** The node it was on, and the one it is on now (the same when it was already there). */
  readonly from: string;
  readonly to: string;
  /** False when the tenant was on `to` already: nothing moved. */
  readonly moved: boolean;
  readonly transfer: CitusTransfer;
  /** Wall time, in milliseconds. */
  readonly ms: number;
}

/** What a move through Citus needs from the manager. */
export interface CitusMoveAccess {
  /** The coordinator (the manager's one server, in Citus mode). */
  readonly server: TenantServer;
  findTenant(slug: string): Promise<TenantRecord | undefined>;
}

const TRANSFER_MODES: Record<CitusTransfer, string> = { online: 'force_logical', 'block-writes': 'block_writes' };

/** Checks `transfer`, and returns Citus's `shard_transfer_mode` for it. */
export function transferModeOf(transfer: unknown): { transfer: CitusTransfer; mode: string } {
  const chosen = transfer ?? 'online';
  if (chosen !== 'online' && chosen !== 'block-writes') {
    throw new InvalidArgumentError(`Option "transfer" must be 'online' or 'block-writes'; got ${JSON.stringify(transfer)}.`);
  }
  return { transfer: chosen, mode: TRANSFER_MODES[chosen] };
}

/**
 * Moves one tenant's schema to another node of the Citus cluster with
 * `citus_schema_move`, while the tenant's advisory lock is held (on a
 * connection of its own) so that no lifecycle change, migration or drop
 * of the tenant runs meanwhile. Its runs keep being served throughout
 * (every statement goes through the coordinator, which routes it to
 * wherever the shards are); with `'online'` they keep writing too.
 *
 * @throws InvalidArgumentError for a node that is not one of the cluster's, or an online move of tables without a primary key.
 * @throws TenantNotFoundError; InvalidTenantStateError for an archived or dropping tenant.
 * @throws TenantMoveError when Citus fails the move (the tenant is served from wherever Citus left its shards: the source unless the switch happened).
 */
export async function moveTenantToNode(access: CitusMoveAccess, slug: string, options: MoveTenantToNodeOptions): Promise<NodeMoveResult> {
  const started = performance.now();
  const target = parseNodeName(options.node);
  if (target === undefined) throw new InvalidArgumentError(`Option "node" must be "host:port", as Citus names a node; got ${JSON.stringify(options.node)}.`);
  const { transfer, mode } = transferModeOf(options.transfer);
  const server = access.server;
  const shared = server.sharedDataSource;
  const nodes = await tenantNodes(shared);
  const to = `${target.host}:${target.port}`;
  if (!nodes.includes(to)) {
    throw new InvalidArgumentError(`Node "${to}" is not a node of the cluster that holds tenants; the nodes are: ${nodes.join(', ') || 'none'}.`);
  }
  if (server.poolMax < 2) {
    throw new InvalidArgumentError(
      `moveTenant() needs 2 connections of the pool (one holds the tenant's lock while citus_schema_move runs on the other), and the pool has ${server.poolMax}. ` +
        'Use a poolSize of at least 2.',
    );
  }
  // Checked before, so that a refusal costs no lock; checked again under the lock, which a lifecycle change may have held.
  const found = await placedTenant(access, slug);
  if (found.from === to) return { slug, from: found.from, to, moved: false, transfer, ms: performance.now() - started };
  if (transfer === 'online') await refuseTablesWithoutIdentity(shared, slug, found.schemaName);

  return holdingTenantLock(server, found.schemaName, async () => {
    const { schemaName, from } = await placedTenant(access, slug);
    if (from === to) return { slug, from, to, moved: false, transfer, ms: performance.now() - started };
    if (transfer === 'online') await refuseTablesWithoutIdentity(shared, slug, schemaName);
    options.onProgress?.({ step: 'moving', from, to });
    try {
      // Outside a transaction: an online move replicates while the tenant writes.
      await shared.query(`SELECT citus_schema_move($1::regnamespace, $2, $3, $4::citus.shard_transfer_mode)`, [quoteIdent(schemaName), target.host, target.port, mode]);
    } catch (error) {
      const now = (await nodesOfSchemas(shared, [schemaName]).catch(() => new Map<string, string>())).get(schemaName);
      throw new TenantMoveError(slug, to, now === to, error, 'node');
    }
    options.onProgress?.({ step: 'moved', from, to });
    return { slug, from, to, moved: true, transfer, ms: performance.now() - started };
  });
}

/** The tenant's schema and node, for a move: only an active or suspended tenant placed by Citus moves. */
async function placedTenant(access: CitusMoveAccess, slug: string): Promise<{ schemaName: string; from: string }> {
  const tenant = await access.findTenant(slug);
  if (tenant === undefined) throw new TenantNotFoundError(slug);
  if (tenant.status !== 'active' && tenant.status !== 'suspended') {
    throw new InvalidTenantStateError(slug, tenant.status, 'moveTenant()', 'Only an active or suspended tenant can be moved; restore an archived one first.');
  }
  const from = (await nodesOfSchemas(access.server.sharedDataSource, [tenant.schemaName])).get(tenant.schemaName);
  if (from === undefined) {
    throw new InvalidTenantStateError(slug, tenant.status, 'moveTenant()', `Its schema "${tenant.schemaName}" is not placed on a node by Citus (not a distributed schema, or without tables).`);
  }
  return { schemaName: tenant.schemaName, from };
}

/** Options of `rebalanceTenants()`. */
export interface RebalanceTenantsOptions {
  /** How Citus copies each moved tenant (see `MoveTenantToNodeOptions.transfer`). Default `'online'`. */
  readonly transfer?: CitusTransfer;
  /** Called at each poll of the rebalance job (every `pollMs`), with Citus's task counts. */
  readonly onProgress?: (progress: RebalanceProgress) => void;
  /** How often to ask Citus how the job is going, in milliseconds. Default 500. */
  readonly pollMs?: number;
}

/** A rebalance job as Citus reports it. */
export interface RebalanceProgress {
  readonly job: string;
  /** Citus's job state: `scheduled`, `running`, `finished`, `cancelled`, `failed`... */
  readonly state: string;
  /** Citus's task counts by state (`done`, `running`, `runnable`, `blocked`, `error`...). */
  readonly tasks: Readonly<Record<string, number>>;
}

/** What `rebalanceTenants()` did. */
export interface RebalanceTenantsResult {
  /** Citus's job id, or `undefined` when Citus found nothing to move. */
  readonly job: string | undefined;
  /** The tenants whose node changed, with where they were and are. */
  readonly moved: ReadonlyArray<{ readonly slug: string; readonly from: string; readonly to: string }>;
  readonly ms: number;
}

/**
 * Runs Citus's rebalancer (`citus_rebalance_start`, background tasks on
 * the coordinator) and waits for its job to end, reporting its progress;
 * then compares each tenant's node with where it was.
 *
 * @throws TenantRebalanceError when the job ends in any state but `finished` (what moved stays moved).
 */
export async function rebalanceTenants(
  server: TenantServer,
  listTenants: () => Promise<TenantRecord[]>,
  options: RebalanceTenantsOptions,
): Promise<RebalanceTenantsResult> {
  const started = performance.now();
  const { mode } = transferModeOf(options.transfer);
  const pollMs = options.pollMs ?? 500;
  if (!Number.isFinite(pollMs) || pollMs < 10) throw new InvalidArgumentError(`Option "pollMs" must be a number of milliseconds of at least 10; got ${JSON.stringify(options.pollMs)}.`);
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw new InvalidArgumentError('Option "onProgress" must be a function.');
  const shared = server.sharedDataSource;
  const before = await listTenants();
  // A rebalance already running (another process's): this call waits for it rather than starting one.
  let job = await runningRebalance(shared);
  if (job === undefined) {
    try {
      const [row] = (await shared.query(`SELECT citus_rebalance_start(shard_transfer_mode := $1::citus.shard_transfer_mode)::text AS job`, [mode])) as Array<{
        job: string | null;
      }>;
      job = row?.job ?? undefined;
    } catch (error) {
      // One started between the look and the start: Citus refuses a second; wait for that one.
      job = await runningRebalance(shared);
      if (job === undefined) throw error;
    }
  }
  if (job === undefined) return { job: undefined, moved: [], ms: performance.now() - started };
  for (;;) {
    // The job's state from Citus's job table (citus_rebalance_status() shows only the newest rebalance); its task counts from the view while it shows it.
    const [status] = (await shared.query(
      `SELECT j.state::text AS state, s.details FROM pg_dist_background_job j
         LEFT JOIN citus_rebalance_status() s ON s.job_id = j.job_id WHERE j.job_id = $1::bigint`,
      [job],
    )) as Array<{
      state: string;
      details: { task_state_counts?: Record<string, number>; tasks?: Array<{ message?: string }> } | null;
    }>;
    const state = status?.state ?? 'finished'; // a job Citus no longer keeps has ended
    options.onProgress?.({ job, state, tasks: Object.freeze({ ...(status?.details?.task_state_counts ?? {}) }) });
    if (state === 'finished') break;
    if (state === 'cancelled' || state === 'failed' || state === 'failing' || state === 'cancelling') {
      const messages = (status?.details?.tasks ?? []).map((task) => task.message).filter((message): message is string => typeof message === 'string' && message !== '');
      throw new TenantRebalanceError(job, state, messages);
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
  const after = new Map((await listTenants()).map((tenant) => [tenant.slug, tenant.node]));
  const moved = before
    .filter((tenant) => tenant.node !== undefined && after.get(tenant.slug) !== undefined && after.get(tenant.slug) !== tenant.node)
    .map((tenant) => Object.freeze({ slug: tenant.slug, from: tenant.node!, to: after.get(tenant.slug)! }));
  return { job, moved, ms: performance.now() - started };
}

/** The id of the rebalance job that is scheduled or running in the cluster, if any. */
async function runningRebalance(sql: SqlRunner): Promise<string | undefined> {
  const rows: Array<{ job: string }> = await sql.query(
    `SELECT job_id::text AS job FROM pg_dist_background_job
      WHERE job_type = 'rebalance' AND state IN ('scheduled', 'running', 'cancelling', 'failing') ORDER BY job_id DESC LIMIT 1`,
  );
  return rows[0]?.job;
}

/** Refuses an online move of a schema with tables that logical replication cannot carry updates and deletes of. */
async function refuseTablesWithoutIdentity(sql: SqlRunner, slug: string, schemaName: string): Promise<void> {
  const rows: Array<{ name: string }> = await sql.query(
    `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relreplident <> 'f'
        AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid
                         AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident)))
      ORDER BY 1`,
    [schemaName],
  );
  if (rows.length === 0) return;
  throw new InvalidArgumentError(
    `Tenant "${slug}" cannot move online: table${rows.length === 1 ? '' : 's'} ${rows.map((row) => `"${row.name}"`).join(', ')} ` +
      `${rows.length === 1 ? 'has' : 'have'} no primary key or replica identity, which logical replication needs to carry updates and deletes. ` +
      "Add a primary key in a tenant migration, or pass transfer: 'block-writes' (writes to the tenant then wait for the whole copy). Nothing moved.",
  );
}

/**
 * Runs `work` while a transaction on another connection holds the tenant's
 * advisory lock (the one its lifecycle, migrations and drop take).
 */
async function holdingTenantLock<T>(server: TenantServer, schemaName: string, work: () => Promise<T>): Promise<T> {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let locked!: () => void;
  const isLocked = new Promise<void>((resolve) => (locked = resolve));
  const holder = server.inLockedTransaction(server.sharedDataSource, `schema:${schemaName}`, async () => {
    locked();
    await released;
  });
  // A failure to take the lock ends the holder before `locked`: report it instead of waiting.
  await Promise.race([isLocked, holder]);
  try {
    return await work();
  } finally {
    release();
    await holder;
  }
}
