import { PassThrough } from 'node:stream';
import { createGzip } from 'node:zlib';
import type { DataSource, QueryRunner } from 'typeorm';
import type { TenantServer } from '../data-source/tenant-server';
import { InvalidTenantStateError, TenantNotFoundError, sqlStateOf } from '../errors';
import type { MigrationGuardMode } from '../migration/migration-guard';
import { applyPendingMigrations } from '../migration/schema-migrator';
import { movedSchemaName } from '../naming/derived-schema-name';
import { quoteIdent, quoteLiteral } from '../naming/quote-ident';
import type { SearchPaths } from '../naming/search-paths';
import { dropOrphanedTenantSchema, markTenantSchema } from '../provisioning/tenant-schema-mark';
import type { TenantRecord } from '../registry/tenant-record';
import type { SqlRunner, TenantRegistry } from '../registry/tenant-registry';
import { writeTenantSnapshot, type ExportSettings } from './export-tenant';
import { loadTenantArchive, migrationsAfterHead, openTenantArchive } from './import-tenant';
import { qualified } from './tenant-tables';

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
  readonly step: 'copying' | 'switched';
  /** The table just copied (step `copying`). */
  readonly table?: string;
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
  /** Rows copied, a decimal string. */
  readonly rows: string;
  /** The kept copy on the former server (`keepSource`), if any. */
  readonly keptSchema?: string;
  /** Wall time, in milliseconds. */
  readonly ms: number;
  /** How long writes to the tenant were held (from the tables' locks to the former server's commit), in milliseconds. */
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
 *    source (its server now), every table of its schema is locked against
 *    writes (`LOCK ... IN EXCLUSIVE MODE`: reads go on, writes wait): the
 *    write freeze.
 * 2. Under the lock on the target, the schema is created there, brought to
 *    the source's migration head, and the rows are streamed over (the
 *    archive format of `exportTenant`, never written to disk), each table's
 *    row count and checksum compared with the source's, sequences set to
 *    the source's values; the copy is marked as the library's. The target
 *    commits.
 * 3. The source schema is renamed to a reserved name and marked as a moved
 *    copy, and the source commits: the freeze ends, and writes that waited
 *    fail (their schema is gone; a run's failure is `TenantMovedError`):
 *    nothing lands in the old copy.
 * 4. The registry records the target, and the home server commits. Then the
 *    old copy is dropped (unless `keepSource`).
 *
 * A failure before step 2 commits leaves everything as it was, and the
 * partial copy goes with the target's rollback. A crash between the commits
 * leaves a state this function, called again, completes: a copy on the
 * target while the source schema still serves is stale and is replaced; a
 * source renamed while the registry still names it is switched; a moved
 * copy marked `drop` is dropped.
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
  let copied = { tables: 0, rows: 0n };
  let keptSchema: string | undefined;

  const outcome = await home.inLockedTransaction(home.sharedDataSource, lock, async (registry) => {
    const tenant = await access.registry.find(registry, slug);
    if (tenant === undefined) throw new TenantNotFoundError(slug);
    if (tenant.status !== 'active' && tenant.status !== 'suspended') {
      throw new InvalidTenantStateError(slug, tenant.status, 'moveTenant()', 'Only an active or suspended tenant can be moved; restore an archived one first.');
    }
    const source = access.serverOf(tenant.server);
    if (source === target) return { from: tenant.server, moved: false };
    // The home server's transaction holds the tenant's lock there: a source or target that is the home server is not locked twice.
    const locked = <T>(server: TenantServer, dataSource: DataSource, work: (runner: SqlRunner & QueryRunner) => Promise<T>): Promise<T> =>
      server === home ? server.inTransaction(dataSource, work) : server.inLockedTransaction(dataSource, lock, work);
    const sourceData = await source.buildDataSource(schemaName);
    try {
      await locked(source, sourceData, async (src) => {
        if (!(await schemaExists(src, schemaName))) {
          // A move that crashed after the source's commit and before the registry's: its copy on the target is complete.
          keptSchema = await finishInterruptedMove(src, target, tenant, access.registryId, (work) => locked(target, target.sharedDataSource, work));
          return;
        }
        const tables: Array<{ name: string }> = await src.query(
          `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY c.relname`,
          [schemaName],
        );
        if (tables.length > 0) await src.query(`LOCK TABLE ${tables.map((t) => qualified(schemaName, t.name)).join(', ')} IN EXCLUSIVE MODE`);
        freezeStarted = performance.now();
        copied = await copyToTarget(access, src, tenant, target, (dataSource, work) => locked(target, dataSource, work), options);
        keptSchema = movedSchemaName(schemaName, new Date());
        await src.query(`ALTER SCHEMA ${quoteIdent(schemaName)} RENAME TO ${quoteIdent(keptSchema)}`);
        await src.query(`COMMENT ON SCHEMA ${quoteIdent(keptSchema)} IS ${quoteLiteral(movedMark(access.registryId, slug, target.name, keep))}`);
      });
      freezeEnded = performance.now();
    } finally {
      await sourceData.destroy();
    }
    await access.registry.setServer(registry, slug, target.name);
    return { from: tenant.server, moved: true };
  });
  if (outcome.moved) {
    options.onProgress?.({ step: 'switched', tablesDone: copied.tables, tables: copied.tables, rowsCopied: String(copied.rows) });
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
    ...(kept === undefined ? {} : { keptSchema: kept }),
    ms: Math.round(performance.now() - started),
    freezeMs: Math.round((freezeEnded - freezeStarted) * 10) / 10,
  };
}

/**
 * Streams the frozen source schema into a new schema of that name on the
 * target, in one transaction of the target under the tenant's lock there,
 * and commits it. Returns what was copied.
 */
async function copyToTarget(
  access: MoveAccess,
  src: SqlRunner & QueryRunner,
  tenant: TenantRecord,
  target: TenantServer,
  lockedOnTarget: (dataSource: DataSource, work: (runner: SqlRunner & QueryRunner) => Promise<void>) => Promise<void>,
  options: MoveTenantOptions,
): Promise<{ tables: number; rows: bigint }> {
  const schemaName = tenant.schemaName;
  const gzip = createGzip({ level: 1 });
  const pipe = new PassThrough();
  gzip.pipe(pipe);
  const written = writeTenantSnapshot(src, tenant, gzip, access.settings).then(
    (manifest) => {
      gzip.end();
      return manifest;
    },
    (error: unknown) => {
      gzip.destroy(error instanceof Error ? error : new Error(String(error)));
      throw error;
    },
  );
  written.catch(() => undefined); // awaited below
  const archive = await openTenantArchive(pipe);
  let targetData: DataSource | undefined;
  try {
    const after = migrationsAfterHead(archive.manifest, access.tenantMigrationNames);
    targetData = await target.buildDataSource(schemaName);
    const ds = targetData;
    const total = archive.manifest.tables.length;
    let rows = 0n;
    let done = 0;
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
      await loadTenantArchive(tgt, schemaName, archive, [access.settings.migrationsTableName, access.settings.metadataTableName], (table, count) => {
        done += 1;
        rows += BigInt(count);
        options.onProgress?.({ step: 'copying', table, tablesDone: done, tables: total, rowsCopied: String(rows) });
      });
      await access.grantRole(tgt, target, schemaName);
      await markTenantSchema(tgt, schemaName, tenant.slug, access.registryId);
    });
    await written;
    return { tables: total, rows };
  } finally {
    archive.close();
    await targetData?.destroy();
  }
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
  const moved = await movedCopies(src, registryId, tenant.slug);
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
      const copies = await movedCopies(runner, access.registryId, slug);
      const dropping = copies.filter((copy) => !copy.keep && copy.schema !== kept);
      for (const copy of dropping) await runner.query(`DROP SCHEMA ${quoteIdent(copy.schema)} CASCADE`);
      if (dropping.length > 0 && copies.every((copy) => dropping.includes(copy))) await access.dropRole(runner, server, schemaName);
    });
  }
  return kept;
}

/** The moved copies of a tenant on a server, from their marks. */
async function movedCopies(sql: SqlRunner, registryId: string, slug: string): Promise<Array<{ schema: string; to: string; keep: boolean }>> {
  const prefix = movedMarkPrefix(registryId, slug);
  const rows: Array<{ schema: string; mark: string }> = await sql.query(
    `SELECT nspname AS schema, obj_description(oid, 'pg_namespace') AS mark FROM pg_namespace
      WHERE starts_with(coalesce(obj_description(oid, 'pg_namespace'), ''), $1) ORDER BY nspname`,
    [prefix],
  );
  return rows.map((row) => {
    const rest = row.mark.slice(prefix.length);
    const separator = rest.lastIndexOf('; ');
    return { schema: row.schema, to: JSON.parse(rest.slice(0, separator)) as string, keep: rest.slice(separator + 2) === 'keep' };
  });
}

async function schemaExists(sql: SqlRunner, schemaName: string): Promise<boolean> {
  const [row] = (await sql.query('SELECT to_regnamespace($1) IS NOT NULL AS found', [quoteIdent(schemaName)])) as Array<{ found: boolean }>;
  return row!.found;
}
