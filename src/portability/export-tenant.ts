import { open, rm } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import type { PoolClient } from 'pg';
import type { QueryRunner } from 'typeorm';
import type { SqlRunner } from '../registry/tenant-registry';
import { to as copyTo } from 'pg-copy-streams';
import type { TenantServer } from '../data-source/tenant-server';
import { InvalidArgumentError } from '../errors';
import { quoteIdentList } from '../naming/quote-ident';
import type { TenantRecord } from '../registry/tenant-record';
import { writeArchive, type TenantArchiveManifest } from './tenant-archive';
import { COPY_TEXT_SETTINGS, qualified, tableChecksum, tenantSequences, tenantTables } from './tenant-tables';

/** What the export needs to know about the model. */
export interface ExportSettings {
  /** TypeORM's migrations table (`migrationsTableName`), inside each tenant schema. */
  readonly migrationsTableName: string;
  /** TypeORM's metadata table (`metadataTableName`): filled by the migrations, so not carried. */
  readonly metadataTableName: string;
}

/**
 * Writes the tenant `record` (active or suspended, on `server`) to
 * `destination` as a gzip-compressed archive: its migration head, then each
 * table's rows in COPY text format, with row counts, checksums and sequence
 * values in the manifest. Reads one snapshot (REPEATABLE READ) under the
 * tenant schema's advisory lock, so no migration or lifecycle change of the
 * tenant runs meanwhile, while the service goes on reading and writing it:
 * the archive is the tenant as of the export's first statement. A path is
 * created (never overwritten) and removed again if the export fails; a
 * stream is ended.
 */
export async function exportTenantArchive(
  server: TenantServer,
  record: TenantRecord,
  destination: string | Writable,
  settings: ExportSettings,
): Promise<TenantArchiveManifest> {
  const schema = record.schemaName;
  const out = typeof destination === 'string' ? await createArchiveFile(destination) : destination;
  const dataSource = await server.buildDataSource(schema);
  const gzip = createGzip();
  const written = pipeline(gzip, out);
  written.catch(() => undefined); // awaited below; a failure before then must not go unhandled
  try {
    const manifest = await server.inLockedTransaction(
      dataSource,
      `schema:${schema}`,
      (runner) => writeTenantSnapshot(runner, record, gzip, settings),
      'REPEATABLE READ',
    );
    gzip.end();
    await written;
    return manifest;
  } catch (error) {
    gzip.destroy();
    await written.catch(() => undefined);
    if (typeof destination === 'string') await rm(destination, { force: true });
    throw error;
  } finally {
    await dataSource.destroy();
  }
}

/**
 * Writes the tenant's archive (manifest, then every table's rows) to `out`
 * from `runner`'s transaction, which the caller opened and holds the locks
 * of: a REPEATABLE READ snapshot for an export, tables locked against
 * writes for a move. Returns the manifest.
 */
export async function writeTenantSnapshot(
  runner: QueryRunner & SqlRunner,
  record: Pick<TenantRecord, 'slug' | 'name' | 'schemaName'>,
  out: Writable,
  settings: ExportSettings,
): Promise<TenantArchiveManifest> {
  const schema = record.schemaName;
  for (const setting of COPY_TEXT_SETTINGS) await runner.query(setting);
  const migrations: Array<{ name: string }> = await runner.query(`SELECT name FROM ${qualified(schema, settings.migrationsTableName)} ORDER BY id`);
  const tables = await tenantTables(runner, schema, [settings.migrationsTableName, settings.metadataTableName]);
  const described = [];
  for (const table of tables) described.push({ name: table.name, columns: table.columns, ...(await tableChecksum(runner, schema, table.name, table.columns)) });
  const manifest: TenantArchiveManifest = {
    format: 'typeorm-tenants-archive',
    version: 1,
    exportedAt: new Date().toISOString(),
    slug: record.slug,
    name: record.name,
    schemaName: schema,
    migrations: migrations.map((m) => m.name),
    tables: described,
    sequences: await tenantSequences(runner, schema),
  };
  const client = (runner as unknown as { databaseConnection: PoolClient }).databaseConnection;
  await writeArchive(out, manifest, async (name) => {
    const table = tables.find((t) => t.name === name)!;
    return client.query(copyTo(`COPY ${qualified(schema, name)} (${quoteIdentList(table.columns)}) TO STDOUT`)) as unknown as Readable;
  });
  return manifest;
}

/** Creates the archive file; one that exists is never overwritten. */
async function createArchiveFile(path: string): Promise<Writable> {
  try {
    return (await open(path, 'wx')).createWriteStream();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new InvalidArgumentError(`The archive file ${JSON.stringify(path)} exists: exportTenant never overwrites one. Remove it or name another.`);
    }
    throw error;
  }
}
