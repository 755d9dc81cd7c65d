import { randomBytes } from 'node:crypto';
import { schemaExists } from '../naming/schema-exists';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { PoolClient } from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { createGzip } from 'node:zlib';
import type { DataSource, QueryRunner } from 'typeorm';
import type { TenantServer } from '../data-source/tenant-server';
import { InvalidArgumentError, InvalidTenantStateError, TenantNotFoundError, sqlStateOf } from '../errors';
import type { MigrationGuardMode } from '../migration/migration-guard';
import { applyPendingMigrations } from '../migration/schema-migrator';
import { movedSchemaName, movedSchemaPrefix } from '../naming/derived-schema-name';
import { LIBRARY_SCHEMA_PREFIX } from '../naming/tenant-slug';
import { quoteIdent, quoteIdentList, quoteLiteral } from '../naming/quote-ident';
import type { SearchPaths } from '../naming/search-paths';
import { dropOrphanedTenantSchema, markTenantSchema } from '../provisioning/tenant-schema-mark';
import type { TenantRecord } from '../registry/tenant-record';
import type { SqlRunner, TenantRegistry } from '../registry/tenant-registry';
import { writeTenantSnapshot, type ExportSettings } from './export-tenant';
import { loadTenantArchive, migrationsAfterHead, openTenantArchive } from './import-tenant';
import { allCapturedTables, captureFingerprint, changedTables, startChangeCapture, stopChangeCapture, tablesToRecopy } from './change-capture';
import { COPY_TEXT_RESETS, COPY_TEXT_SETTINGS, qualified, tableChecksum, tenantSequences, tenantTables, type TenantTable } from './tenant-tables';

/** What `moveTenant` takes besides the slug. */
export interface MoveTenantOptions {
  /** The server to move the tenant to (a name of the `servers` option). */
  readonly server: string;
  /**
   * Keep the tenant's schema on its former server, renamed to a reserved
   * name (`typeorm_tenants_moved_<hash>_<time>`), instead of dropping it.
   * Default false.
   */
  readonly keepSource?: boolean;
  /** Called as the move goes: each table copied (with its rows), then the switch. */
  readonly onProgress?: (progress: MoveTenantProgress) => void;
}

/** Where a move is. */
export interface MoveTenantProgress {
  readonly step: 'copying' | 'catching-up' | 'switched';
  /** The table just copied (step `copying`). */
  readonly table?: string;
  /** The tables copied again under the freeze, written while the first copy ran (step `catching-up`). */
  readonly recopied?: readonly string[];
  readonly tablesDone: number;
  /** The tenant's tables (TypeORM's migrations and metadata tables are not counted: the migrations write them). */
  readonly tables: number;
  /** Rows copied so far, a decimal string. */
  readonly rowsCopied: string;
}

/** What `moveTenant` did. */
export interface MoveTenantResult {
  readonly slug: string;
  /** The server it was on, and the one it is on now (the same when it was already there). */
  readonly from: string;
  readonly to: string;
  /** False when the tenant was on `to` already (a move run again after it completed): nothing was copied. */
  readonly moved: boolean;
  readonly tables: number;
  /** Rows copied, a decimal string (those copied again under the freeze counted again). */
  readonly rows: string;
  /** The tables written during the first copy, copied again under the freeze (with those whose foreign keys reference them). */
  readonly recopied: readonly string[];
  /** The kept copy on the former server (`keepSource`), if any. */
  readonly keptSchema?: string;
  /** Wall time, in milliseconds. */
  readonly ms: number;
  /** How long writes to the tenant were held (from the tables' locks, after the first copy, to the former server's commit), in milliseconds. */
  readonly freezeMs: number;
}

/** What the move needs from the manager. */
export interface MoveAccess {
  readonly home: TenantServer;
  serverOf(name: string): TenantServer;
  /** Every server of the manager. */
  servers(): readonly TenantServer[];
  readonly registry: TenantRegistry;
  /** The registry's identity, named in the marks the move leaves. */
  readonly registryId: string;
  readonly settings: ExportSettings;
  readonly tenantMigrationNames: readonly string[];
  readonly searchPaths: SearchPaths;
  readonly migrationGuard: MigrationGuardMode;
  /** Under role isolation: creates and grants the tenant's role on `server`, in the caller's transaction there. */
  grantRole(runner: SqlRunner, server: TenantServer, schemaName: string): Promise<void>;
  /** Under role isolation: drops the tenant's role on `server` (a no-op when there is none). */
  dropRole(runner: SqlRunner, server: TenantServer, schemaName: string): Promise<void>;
}

/** How the comment on a moved tenant's former schema begins: whose copy it is (tenant and registry). */
function movedMarkPrefix(registryId: string, slug: string): string {
  return `typeorm-tenants: moved copy of tenant ${JSON.stringify(slug)} of registry ${registryId} to server `;
}

/** The comment on a moved tenant's former schema: whose copy it is, where the tenant went, and whether it is kept. */
function movedMark(registryId: string, slug: string, to: string, keep: boolean): string {
  return `${movedMarkPrefix(registryId, slug)}${JSON.stringify(to)}; ${keep ? 'keep' : 'drop'}`;
}

/**
 * Moves one tenant's schema to another server, nothing lost:
 *
 * 1. Under the tenant's advisory lock on the home server, then on the
 *    source (its server now), capture triggers start noting which of its
 *    tables are written (statement-level, committed on their own).
 * 2. Under the lock on the target, the schema is created there, brought to
 *    the source's migration head, and the rows of a snapshot of the source
 *    are streamed over (the archive format of `exportTenant`, never written
 *    to disk), each table's row count and checksum compared with the
 *    snapshot's, while the service goes on reading and writing the tenant.
 * 3. The freeze: every table of the source schema is locked against writes
 *    (`LOCK ... IN EXCLUSIVE MODE`: reads go on, writes wait). The tables
 *    written since step 1 (and those whose foreign keys reference them)
 *    are emptied on the target and copied again, checked the same way, and
 *    the sequences are set to the source's values; the copy is marked as
 *    the library's and the target commits.
 * 4. The source schema is renamed to a reserved name and marked as a moved
 *    copy, and the source commits: the freeze ends, and writes that waited
 *    fail (their schema is gone; a run's failure is `TenantMovedError`):
 *    nothing lands in the old copy.
 * 5. The registry records the target, and the home server commits. Then the
 *    old copy is dropped (unless `keepSource`).
 *
 * A failure before the target commits leaves everything as it was, and the
 * partial copy goes with the target's rollback. A crash between the commits
 * leaves a state this function, called again, completes: a copy on the
 * target while the source schema still serves is stale and is replaced; a
 * source renamed while the registry still names it is switched; a moved
 * copy marked `drop` is dropped; capture triggers left behind are dropped.
 * It uses up to three connections of the source server's pool at once
 * (the freeze's, the snapshot's, and the home server's when that is the
 * source) and one of the target's.
 */
export async function moveTenantSchema(access: MoveAccess, slug: string, target: TenantServer, options: MoveTenantOptions): Promise<MoveTenantResult> {
  const started = performance.now();
  const keep = options.keepSource === true;
  const home = access.home;
  const found = await access.registry.find(home.sharedDataSource, slug);
  if (found === undefined) throw new TenantNotFoundError(slug);
  const schemaName = found.schemaName;
  const lock = `schema:${schemaName}`;
  let freezeStarted = 0;
  let freezeEnded = 0;
  let copied: { tables: number; rows: bigint; recopied: string[] } = { tables: 0, rows: 0n, recopied: [] };
  let keptSchema: string | undefined;
  /** The capture of a move that switched: its server, id and the old copy's name, cleaned up after the registry's commit. */
  let capture: { server: TenantServer; moveId: string; schema: string } | undefined;

  const outcome = await home.inLockedTransaction(home.sharedDataSource, lock, async (registry) => {
    const tenant = await access.registry.find(registry, slug);
    if (tenant === undefined) throw new TenantNotFoundError(slug);
    if (tenant.status !== 'active' && tenant.status !== 'suspended') {
      throw new InvalidTenantStateError(slug, tenant.status, 'moveTenant()', 'Only an active or suspended tenant can be moved; restore an archived one first.');
    }
    const source = access.serverOf(tenant.server);
    if (source === target) return { from: tenant.server, moved: false };
    refuseSmallPools(source, target, home);
    // The home server's transaction holds the tenant's lock there: a source or target that is the home server is not locked twice.
    const locked = <T>(server: TenantServer, dataSource: DataSource, work: (runner: SqlRunner & QueryRunner) => Promise<T>): Promise<T> =>
      server === home ? server.inTransaction(dataSource, work) : server.inLockedTransaction(dataSource, lock, work);
    const sourceData = await source.buildDataSource(schemaName);
    // Set once the capture triggers are committed: whatever then happens to the copy, they go (after the freeze's transaction ended).
    let captured: string | undefined;
    try {
      await locked(source, sourceData, async (src) => {
        if (!(await schemaExists(src, schemaName))) {
          // A move that crashed after the source's commit and before the registry's: its copy on the target is complete.
          keptSchema = await finishInterruptedMove(src, target, tenant, access.registryId, (work) => locked(target, target.sharedDataSource, work));
          await access.registry.setServer(registry, slug, target.name);
          return;
        }
        // Every write from now on is in the snapshot the copy reads, or noted by the capture triggers.
        const moveId = randomBytes(8).toString('hex');
        // Creating the triggers takes each table's lock in turn, as the freeze does: a deadlock with a write is taken again.
        await againOnDeadlock(() => source.inTransaction(sourceData, (runner) => startChangeCapture(runner, schemaName, moveId)));
        captured = moveId;
        const fingerprint = await captureFingerprint(src, schemaName, moveId);
        copied = await copyToTarget(
          access,
          { server: source, dataSource: sourceData, frozen: src, moveId, fingerprint, onFreeze: () => (freezeStarted = performance.now()) },
          tenant,
          target,
          (dataSource, work) => locked(target, dataSource, work),
          options,
        );
        // The capture triggers go with the renamed schema (dropping them here would lock the tables against reads too).
        keptSchema = movedSchemaName(schemaName, new Date());
        await src.query(`ALTER SCHEMA ${quoteIdent(schemaName)} RENAME TO ${quoteIdent(keptSchema)}`);
        await src.query(`COMMENT ON SCHEMA ${quoteIdent(keptSchema)} IS ${quoteLiteral(movedMark(access.registryId, slug, target.name, keep))}`);
        // Written now, committed after the source: a run refused by the renamed schema that reads the row FOR SHARE waits for the commit.
        await access.registry.setServer(registry, slug, target.name);
      });
      freezeEnded = performance.now();
    } catch (error) {
      // The freeze's transaction has ended (its locks with it): the capture triggers, committed on their own, go now.
      if (captured !== undefined) {
        const moveId = captured;
        await locked(source, sourceData, (runner) => stopChangeCapture(runner, schemaName, moveId)).catch((cleanup: unknown) => {
          throw new AggregateError([error, cleanup], `${String(error)}; and removing the move's capture triggers from schema "${schemaName}" failed: ${String(cleanup)}`);
        });
      }
      throw error;
    } finally {
      await sourceData.destroy();
    }
    if (captured !== undefined && keptSchema !== undefined) capture = { server: source, moveId: captured, schema: keptSchema };
    return { from: tenant.server, moved: true };
  });
  // After the registry's commit (so that no run waits on it): a kept copy keeps no capture trigger (nobody writes
  // there; it is the old schema as it was), and the move's notes go. Dropping a trigger waits for the reads of its table.
  if (capture !== undefined) {
    const { server, moveId, schema } = capture;
    await server.inLockedTransaction(server.sharedDataSource, lock, (runner) => stopChangeCapture(runner, keep ? schema : undefined, moveId));
  }
  // The old copy goes once the registry names the target (a crash before this is cleaned up by the next call).
  const kept = await dropMovedCopies(access, slug, schemaName, keep ? keptSchema : undefined);
  return {
    slug,
    from: outcome.from,
    to: target.name,
    moved: outcome.moved,
    tables: copied.tables,
    rows: String(copied.rows),
    recopied: copied.recopied,
    ...(kept === undefined ? {} : { keptSchema: kept }),
    ms: Math.round(performance.now() - started),
    freezeMs: Math.round((freezeEnded - freezeStarted) * 10) / 10,
  };
}

/** The source side of a copy: where the snapshot is read, and the transaction that holds the tenant's lock and freezes its tables. */
interface CopySource {
  readonly server: TenantServer;
  /** A DataSource of the source server bound to the tenant's schema. */
  readonly dataSource: DataSource;
  /** The transaction that holds the tenant's lock on the source; it takes the tables' locks for the freeze. */
  readonly frozen: SqlRunner & QueryRunner;
  /** The move's id, which its capture triggers note the written tables under. */
  readonly moveId: string;
  /** The capture triggers as they were once committed (`captureFingerprint`). */
  readonly fingerprint: string;
  /** Called when the tables are locked against writes. */
  onFreeze(): void;
}

/**
 * Copies the tenant to a new schema of its name on the target, in one
 * transaction of the target under the tenant's lock there, and commits it:
 * first every row from a snapshot of the source (while the service goes on
 * writing), then, with the source's tables locked against writes (the
 * freeze), again those tables written since the capture began, and the
 * sequences. Returns what was copied.
 */
async function copyToTarget(
  access: MoveAccess,
  source: CopySource,
  tenant: TenantRecord,
  target: TenantServer,
  lockedOnTarget: (dataSource: DataSource, work: (runner: SqlRunner & QueryRunner) => Promise<void>) => Promise<void>,
  options: MoveTenantOptions,
): Promise<{ tables: number; rows: bigint; recopied: string[] }> {
  const schemaName = tenant.schemaName;
  const gzip = createGzip({ level: 1 });
  const pipe = new PassThrough();
  gzip.pipe(pipe);
  // The snapshot: a transaction of its own on the source, REPEATABLE READ, taken after the capture triggers committed.
  let snapshotClient: PoolClient | undefined;
  const written = source.server
    .inTransaction(
      source.dataSource,
      async (snapshot) => {
        snapshotClient = (snapshot as unknown as { databaseConnection: PoolClient }).databaseConnection;
        return writeTenantSnapshot(snapshot, tenant, gzip, access.settings);
      },
      'REPEATABLE READ',
    )
    .then(
      (manifest) => {
        gzip.end();
        return manifest;
      },
      (error: unknown) => {
        gzip.destroy(error instanceof Error ? error : new Error(String(error)));
        throw error;
      },
    );
  let snapshotEnded = false;
  written.then(
    () => (snapshotEnded = true),
    () => (snapshotEnded = true),
  ); // awaited below
  let archive: Awaited<ReturnType<typeof openTenantArchive>> | undefined;
  let targetData: DataSource | undefined;
  const excluded = [access.settings.migrationsTableName, access.settings.metadataTableName];
  try {
    archive = await openTenantArchive(pipe);
    const opened = archive;
    const after = migrationsAfterHead(opened.manifest, access.tenantMigrationNames);
    targetData = await target.buildDataSource(schemaName);
    const ds = targetData;
    const total = opened.manifest.tables.length;
    let rows = 0n;
    let done = 0;
    let recopied: string[] = [];
    await lockedOnTarget(ds, async (tgt) => {
      // A copy an earlier move left here while the source kept serving (it crashed before the source's commit) is stale.
      await dropOrphanedTenantSchema(tgt, schemaName, access.registryId);
      try {
        await tgt.query(`CREATE SCHEMA ${quoteIdent(schemaName)}`);
      } catch (error) {
        if (sqlStateOf(error) === '42P06') {
          throw new InvalidTenantStateError(
            tenant.slug,
            tenant.status,
            'moveTenant()',
            `Server "${target.name}" has a schema "${schemaName}" the library did not make; rename or drop it there first.`,
          );
        }
        throw error;
      }
      const searchPath = access.searchPaths.tenantMigration(schemaName);
      await applyPendingMigrations(ds, tgt, searchPath, { freshSchema: true, guard: access.migrationGuard, stopBefore: after });
      // Only what the migrations make, and the rows, are carried: anything else in the source schema would be lost.
      const made = new Set(await schemaObjects(tgt, schemaName));
      const extra = (await schemaObjects(source.frozen, schemaName)).filter((object) => !made.has(object));
      if (extra.length > 0) {
        throw new InvalidTenantStateError(
          tenant.slug,
          tenant.status,
          'moveTenant()',
          `Its schema holds objects the tenant migrations do not make, which a move would not carry: ${extra.slice(0, 10).join(', ')}${extra.length > 10 ? `, and ${extra.length - 10} more` : ''}. ` +
            'Drop them, or make them in a tenant migration, then move it.',
        );
      }
      await loadTenantArchive(tgt, schemaName, opened, excluded, (table, count) => {
        done += 1;
        rows += BigInt(count);
        options.onProgress?.({ step: 'copying', table, tablesDone: done, tables: total, rowsCopied: String(rows) });
      });
      await written;

      // The freeze: no write reaches the source's tables from here to its commit.
      const frozen = source.frozen;
      await lockAgainstWrites(frozen, schemaName, excluded);
      source.onFreeze();
      // Triggers the tenant's own SQL dropped or disabled meanwhile may have let writes go unnoted: then every table again.
      const changed = (await captureFingerprint(frozen, schemaName, source.moveId)) === source.fingerprint
        ? await changedTables(frozen, source.moveId)
        : await allCapturedTables(frozen, schemaName);
      const again = await tablesToRecopy(frozen, schemaName, changed);
      const order = (await tenantTables(tgt, schemaName, excluded)).filter((table) => again.has(table.name));
      rows += await recopyTables(frozen, tgt, schemaName, order);
      recopied = order.map((table) => table.name);
      if (recopied.length > 0) {
        options.onProgress?.({ step: 'catching-up', tablesDone: total, tables: total, rowsCopied: String(rows), recopied });
      }
      for (const sequence of await tenantSequences(frozen, schemaName)) {
        await tgt.query(`SELECT setval($1::regclass, $2::bigint, $3)`, [qualified(schemaName, sequence.name), sequence.lastValue, sequence.isCalled]);
      }
      await access.grantRole(tgt, target, schemaName);
      await markTenantSchema(tgt, schemaName, tenant.slug, access.registryId);
    });
    return { tables: total, rows, recopied };
  } catch (error) {
    // The snapshot's writer may be waiting for a reader that stopped: end it, and wait for its transaction to end (it holds table locks).
    // Destroyed without an error: no 'error' event without a listener (an uncaught exception); a waiting writer sees 'close'.
    gzip.destroy();
    pipe.destroy();
    // A COPY the server is still sending leaves the connection unable to take the rollback (its socket stays
    // paused by the stopped reader): the connection is closed, and the snapshot's transaction ends as with any
    // connection lost; the pool drops it.
    if (snapshotClient !== undefined && !snapshotEnded) {
      (snapshotClient as unknown as { connection?: { stream?: { destroy(error?: Error): void } } }).connection?.stream?.destroy();
    }
    await written.catch(() => undefined); // its failure is the stop just made
    throw error;
  } finally {
    archive?.close();
    await targetData?.destroy();
  }
}

/**
 * Empties `tables` (in load order) on the target and copies them again from
 * the frozen source, connection to connection, each table's row count and
 * checksum compared on both sides. Returns the rows copied.
 */
async function recopyTables(frozen: SqlRunner & QueryRunner, tgt: SqlRunner & QueryRunner, schemaName: string, tables: readonly TenantTable[]): Promise<bigint> {
  if (tables.length === 0) return 0n;
  for (const setting of COPY_TEXT_SETTINGS) {
    await frozen.query(setting);
    await tgt.query(setting);
  }
  for (const table of tables) if (table.hasUserTriggers) await tgt.query(`ALTER TABLE ${qualified(schemaName, table.name)} DISABLE TRIGGER USER`);
  await tgt.query(`TRUNCATE ${tables.map((table) => qualified(schemaName, table.name)).join(', ')}`);
  const from = (frozen as unknown as { databaseConnection: PoolClient }).databaseConnection;
  const into = (tgt as unknown as { databaseConnection: PoolClient }).databaseConnection;
  let rows = 0n;
  for (const table of tables) {
    const name = qualified(schemaName, table.name);
    const columns = quoteIdentList(table.columns);
    await pipeline(
      from.query(copyTo(`COPY ${name} (${columns}) TO STDOUT`)) as unknown as Readable,
      into.query(copyFrom(`COPY ${name} (${columns}) FROM STDIN`)) as unknown as Writable,
    );
    const [there, here] = [await tableChecksum(frozen, schemaName, table.name, table.columns), await tableChecksum(tgt, schemaName, table.name, table.columns)];
    if (there.rows !== here.rows || there.checksum !== here.checksum) {
      throw new Error(
        `Copying table "${table.name}" of schema "${schemaName}" again under the freeze gave ${here.rows} rows (checksum ${here.checksum}) for the source's ${there.rows} (checksum ${there.checksum}).`,
      );
    }
    rows += BigInt(here.rows);
  }
  for (const table of tables) if (table.hasUserTriggers) await tgt.query(`ALTER TABLE ${qualified(schemaName, table.name)} ENABLE TRIGGER USER`);
  for (const reset of COPY_TEXT_RESETS) await tgt.query(reset);
  return rows;
}

/**
 * The freeze: locks every plain and partitioned table of the schema in
 * EXCLUSIVE mode (reads go on, writes wait), children before the tables
 * their foreign keys reference, the order in which a write takes them (its
 * table, then a share lock on the referenced one for the key check), so the
 * freeze does not deadlock with single-table writes. A write that takes
 * tables in another order can still deadlock with it: PostgreSQL then
 * cancels one of the two, and when it is the freeze, it is taken again
 * (up to 5 times, under a savepoint).
 */
async function lockAgainstWrites(frozen: SqlRunner, schemaName: string, excluded: readonly string[]): Promise<void> {
  const loadOrder = (await tenantTables(frozen, schemaName, excluded)).map((table) => table.name).reverse();
  const rest = (await allCapturedTables(frozen, schemaName)).filter((name) => !loadOrder.includes(name));
  const order = [...loadOrder, ...rest];
  if (order.length === 0) return;
  for (let attempt = 1; ; attempt += 1) {
    await frozen.query('SAVEPOINT typeorm_tenants_freeze');
    try {
      for (const name of order) await frozen.query(`LOCK TABLE ${qualified(schemaName, name)} IN EXCLUSIVE MODE`);
      await frozen.query('RELEASE SAVEPOINT typeorm_tenants_freeze');
      return;
    } catch (error) {
      await frozen.query('ROLLBACK TO SAVEPOINT typeorm_tenants_freeze');
      if (sqlStateOf(error) !== '40P01' || attempt >= 5) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20 * attempt));
    }
  }
}

/**
 * A move holds at once, of the source server's pool, the freeze's
 * connection and the snapshot's (and the home transaction's when the
 * source is the home server), and of the target's, the copy's (and the
 * home transaction's when the target is the home server): a smaller pool
 * would wait for itself until its connection timeout.
 */
function refuseSmallPools(source: TenantServer, target: TenantServer, home: TenantServer): void {
  for (const [server, needed] of [
    [source, source === home ? 3 : 2],
    [target, target === home ? 2 : 1],
  ] as const) {
    if (server.poolMax < needed) {
      throw new InvalidArgumentError(
        `moveTenant() needs ${needed} connections of server "${server.name}" at once, and its pool has ${server.poolMax}: raise its poolSize to at least ${needed}.`,
      );
    }
  }
}

/** Runs `work` (a transaction of its own) again when PostgreSQL cancelled it to break a deadlock (40P01), up to 5 times. */
async function againOnDeadlock<T>(work: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await work();
    } catch (error) {
      if (sqlStateOf(error) !== '40P01' || attempt >= 5) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20 * attempt));
    }
  }
}

/**
 * The objects of a schema by kind and name (relations, indexes, sequences,
 * views, functions, types, triggers), leaving out the move's capture
 * triggers: what the migrations made, on a fresh schema, or what a tenant's
 * schema holds.
 */
async function schemaObjects(sql: SqlRunner, schemaName: string): Promise<string[]> {
  const rows: Array<{ object: string }> = await sql.query(
    `SELECT 'relation ' || quote_ident(c.relname) || ' (' || c.relkind::text || ')' AS object
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1
     UNION ALL
     SELECT 'function ' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')'
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1
     UNION ALL
     SELECT 'type ' || quote_ident(t.typname)
       FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
      WHERE n.nspname = $1 AND t.typtype IN ('e', 'd', 'r', 'm', 'c') AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid AND c.relkind <> 'c')
     UNION ALL
     SELECT 'trigger ' || quote_ident(g.tgname) || ' on ' || quote_ident(c.relname)
       FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND NOT g.tgisinternal AND NOT starts_with(g.tgname, $2)
     ORDER BY 1`,
    [schemaName, `${LIBRARY_SCHEMA_PREFIX}move_`],
  );
  return rows.map((row) => row.object);
}


/**
 * The source schema is gone and the registry still names the source: an
 * earlier move renamed it (its commit made) and crashed before the
 * registry's. Its copy on `target` is then complete (the rename happened
 * under the freeze); returns the moved copy's name. Anything else is not a
 * state a move leaves, and is refused.
 */
async function finishInterruptedMove(
  src: SqlRunner,
  target: TenantServer,
  tenant: TenantRecord,
  registryId: string,
  lockedOnTarget: (work: (runner: SqlRunner) => Promise<boolean>) => Promise<boolean>,
): Promise<string> {
  const moved = await movedCopies(src, registryId, tenant.slug, tenant.schemaName);
  const towardTarget = moved.find((copy) => copy.to === target.name);
  const copyOnTarget = await lockedOnTarget((tgt) => schemaExists(tgt, tenant.schemaName));
  if (towardTarget === undefined || !copyOnTarget) {
    throw new InvalidTenantStateError(
      tenant.slug,
      tenant.status,
      'moveTenant()',
      `Its schema "${tenant.schemaName}" is missing on its server "${tenant.server}"` +
        (moved.length > 0 ? `, and the moved copies there (${moved.map((c) => `"${c.schema}" to "${c.to}"`).join(', ')}) do not match a complete copy on "${target.name}"` : '') +
        '; restore the schema from a backup.',
    );
  }
  return towardTarget.schema;
}

/**
 * After the registry names the tenant's new server: drops every moved copy
 * of the tenant marked `drop` on the other servers (with the tenant's role
 * there, under role isolation), leaving `kept`. Returns `kept`.
 */
async function dropMovedCopies(access: MoveAccess, slug: string, schemaName: string, kept: string | undefined): Promise<string | undefined> {
  const tenant = await access.registry.find(access.home.sharedDataSource, slug);
  if (tenant === undefined) return kept;
  for (const server of access.servers()) {
    if (server === access.serverOf(tenant.server)) continue;
    await server.inLockedTransaction(server.sharedDataSource, `schema:${schemaName}`, async (runner) => {
      const copies = await movedCopies(runner, access.registryId, slug, schemaName);
      const dropping = copies.filter((copy) => !copy.keep && copy.schema !== kept);
      for (const copy of dropping) await runner.query(`DROP SCHEMA ${quoteIdent(copy.schema)} CASCADE`);
      if (dropping.length > 0 && copies.every((copy) => dropping.includes(copy))) await access.dropRole(runner, server, schemaName);
    });
  }
  return kept;
}

/** The moved copies of a tenant on a server, from their marks. */
async function movedCopies(sql: SqlRunner, registryId: string, slug: string, schemaName: string): Promise<Array<{ schema: string; to: string; keep: boolean }>> {
  const prefix = movedMarkPrefix(registryId, slug);
  // Only schemas under the moved-copy name of this tenant's schema: a tenant cannot take such a name, so a mark it forged on its own schema counts for nothing.
  const rows: Array<{ schema: string; mark: string }> = await sql.query(
    `SELECT nspname AS schema, obj_description(oid, 'pg_namespace') AS mark FROM pg_namespace
      WHERE starts_with(nspname, $2) AND starts_with(coalesce(obj_description(oid, 'pg_namespace'), ''), $1) ORDER BY nspname`,
    [prefix, movedSchemaPrefix(schemaName)],
  );
  return rows.map((row) => {
    const rest = row.mark.slice(prefix.length);
    const separator = rest.lastIndexOf('; ');
    return { schema: row.schema, to: JSON.parse(rest.slice(0, separator)) as string, keep: rest.slice(separator + 2) === 'keep' };
  });
}

