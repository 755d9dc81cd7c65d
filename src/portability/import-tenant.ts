import { createReadStream } from 'node:fs';
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import type { PoolClient } from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { QueryRunner } from 'typeorm';
import { TenantArchiveError } from '../errors';
import { quoteIdentList } from '../naming/quote-ident';
import type { SqlRunner } from '../registry/tenant-registry';
import { TenantArchiveReader, type TenantArchiveManifest } from './tenant-archive';
import { COPY_TEXT_RESETS, COPY_TEXT_SETTINGS, qualified, tableChecksum, tenantSequences, tenantTables } from './tenant-tables';

/** An archive opened for import: its manifest read and checked in shape, its rows still to come. */
export interface OpenedArchive {
  readonly manifest: TenantArchiveManifest;
  readonly reader: TenantArchiveReader;
  /** Stops reading (the file is closed); safe to call twice. */
  close(): void;
}

/** Opens a gzip-compressed archive from a path or a stream and reads its manifest. */
export async function openTenantArchive(source: string | Readable): Promise<OpenedArchive> {
  const input = typeof source === 'string' ? createReadStream(source) : source;
  const gunzip = createGunzip();
  const failed = new Promise<never>((_, reject) => {
    const fail = (error: Error): void =>
      reject(error instanceof TenantArchiveError ? error : new TenantArchiveError(`it cannot be read (${error.message})`));
    input.once('error', fail);
    gunzip.once('error', fail);
  });
  failed.catch(() => undefined);
  input.pipe(gunzip);
  const reader = new TenantArchiveReader(gunzip, failed);
  const close = (): void => {
    input.unpipe(gunzip);
    gunzip.destroy();
    if (typeof source === 'string') input.destroy();
  };
  try {
    return { manifest: await reader.manifest(), reader, close };
  } catch (error) {
    close();
    throw error;
  }
}

/**
 * The migrations to run before the archive's rows are loaded: those of its
 * head, which must be the first ones of the code's, in the same order.
 * Returns the name of the first migration to hold back (run after the load,
 * so an archive of an older head comes out migrated), or `undefined`.
 *
 * @throws TenantArchiveError when the archive's migrations are not where the code's begin.
 */
export function migrationsAfterHead(manifest: TenantArchiveManifest, codeMigrations: readonly string[]): string | undefined {
  const applied = manifest.migrations;
  const unknown = applied.filter((name) => !codeMigrations.includes(name));
  if (unknown.length > 0) {
    throw new TenantArchiveError(
      `it was exported with tenant migrations this code does not have (${unknown.join(', ')}); import it with the code it was exported with, or a later one`,
    );
  }
  if (applied.some((name, i) => codeMigrations[i] !== name)) {
    throw new TenantArchiveError(
      `its migrations (${applied.join(', ')}) are not the first ones of this code's (${codeMigrations.slice(0, applied.length + 1).join(', ')}...), so no schema of this code matches it`,
    );
  }
  return codeMigrations[applied.length];
}

/**
 * Loads the archive's rows into `schema` (inside the caller's transaction,
 * the schema at the archive's migration head): checks that its tables and
 * columns are the schema's, empties the tables (rows the migrations seeded
 * are in the archive too), loads each with COPY (its own triggers disabled
 * meanwhile; foreign keys checked), checks row counts and checksums against
 * the manifest, and sets every sequence to the archive's value.
 *
 * @throws TenantArchiveError for any mismatch (the caller's transaction then rolls back).
 */
export async function loadTenantArchive(
  runner: QueryRunner & SqlRunner,
  schema: string,
  archive: OpenedArchive,
  excluded: readonly string[],
  onTable?: (table: string, rows: string) => void,
): Promise<void> {
  const { manifest, reader } = archive;
  for (const setting of COPY_TEXT_SETTINGS) await runner.query(setting);
  const tables = await tenantTables(runner, schema, excluded);
  const expected = tables.map((t) => `${t.name}(${t.columns.join(',')})`).join(' ');
  const given = manifest.tables.map((t) => `${t.name}(${t.columns.join(',')})`).join(' ');
  if (expected !== given) {
    throw new TenantArchiveError(
      `its tables and columns (${given || 'none'}) are not those the tenant migrations create at its head (${expected || 'none'})`,
    );
  }
  if (tables.length > 0) await runner.query(`TRUNCATE ${tables.map((t) => qualified(schema, t.name)).join(', ')}`);
  const client = (runner as unknown as { databaseConnection: PoolClient }).databaseConnection;
  for (const [i, table] of tables.entries()) {
    const described = manifest.tables[i]!;
    const target = qualified(schema, table.name);
    if (table.hasUserTriggers) await runner.query(`ALTER TABLE ${target} DISABLE TRIGGER USER`);
    const copy = client.query(copyFrom(`COPY ${target} (${quoteIdentList(table.columns)}) FROM STDIN`)) as unknown as Writable;
    const done = finished(copy);
    done.catch(() => undefined);
    try {
      await reader.rows(table.name, async (chunk) => {
        if (!copy.write(chunk)) await Promise.race([once(copy, 'drain'), done]);
      });
      copy.end();
      await done;
    } catch (error) {
      copy.destroy();
      throw error;
    }
    if (table.hasUserTriggers) await runner.query(`ALTER TABLE ${target} ENABLE TRIGGER USER`);
    const loaded = await tableChecksum(runner, schema, table.name, table.columns);
    if (loaded.rows !== described.rows || loaded.checksum !== described.checksum) {
      throw new TenantArchiveError(
        `the rows of table "${table.name}" do not match its manifest (${loaded.rows} rows loaded, checksum ${loaded.checksum}; ` +
          `the manifest says ${described.rows} rows, checksum ${described.checksum}): the archive was changed or damaged`,
      );
    }
    onTable?.(table.name, loaded.rows);
  }
  await reader.end();
  const sequences = new Set((await tenantSequences(runner, schema)).map((s) => s.name));
  for (const sequence of manifest.sequences) {
    if (!sequences.has(sequence.name)) {
      throw new TenantArchiveError(`it names a sequence "${sequence.name}" the tenant migrations do not create`);
    }
    await runner.query(`SELECT setval($1::regclass, $2::bigint, $3)`, [qualified(schema, sequence.name), sequence.lastValue, sequence.isCalled]);
  }
  for (const reset of COPY_TEXT_RESETS) await runner.query(reset);
}
