import type { Readable, Writable } from 'node:stream';
import { TenantArchiveError } from '../errors';
import type { TableChecksum, TenantSequence } from './tenant-tables';

/** The first line of every tenant archive (after gunzip). */
export const ARCHIVE_SIGNATURE = 'TYPEORM-TENANTS-ARCHIVE 1';

/** What a tenant archive holds besides the rows: read first, checked before anything is created. */
export interface TenantArchiveManifest {
  readonly format: 'typeorm-tenants-archive';
  readonly version: 1;
  /** ISO time of the export. */
  readonly exportedAt: string;
  /** The tenant it was exported from. */
  readonly slug: string;
  readonly name: string;
  readonly schemaName: string;
  /** The tenant migrations applied to it, in the order TypeORM applied them: its migration head is the last. */
  readonly migrations: readonly string[];
  /** Its tables in load order, each with the columns carried and the row count and checksum at export. */
  readonly tables: ReadonlyArray<{ readonly name: string; readonly columns: readonly string[] } & TableChecksum>;
  readonly sequences: readonly TenantSequence[];
}

/** The line that ends a table's rows (COPY's own end-of-data marker: never a row of COPY's text format). */
const END_OF_DATA = Buffer.from('\\.\n');

/**
 * Writes an archive (uncompressed: the caller pipes it through gzip): the
 * signature line, the manifest as one JSON line, then each table's rows in
 * COPY text format, each table's ended by `\.`. `rowsOf` gives a table's
 * COPY output, in manifest order.
 */
export async function writeArchive(
  out: Writable,
  manifest: TenantArchiveManifest,
  rowsOf: (table: string) => Promise<Readable>,
): Promise<void> {
  await write(out, Buffer.from(`${ARCHIVE_SIGNATURE}\n${JSON.stringify(manifest)}\n`));
  for (const table of manifest.tables) {
    const rows = await rowsOf(table.name);
    for await (const chunk of rows) await write(out, chunk as Buffer);
    await write(out, END_OF_DATA);
  }
}

async function write(out: Writable, chunk: Buffer): Promise<void> {
  // A destroyed stream emits neither 'drain' nor, once it has, 'error' again: waiting for it would never end.
  if (out.destroyed) throw new Error('The archive stream was closed before the archive was written.');
  if (out.write(chunk)) return;
  await new Promise<void>((resolve, reject) => {
    const settle = (error?: Error): void => {
      out.off('drain', drained);
      out.off('close', closed);
      out.off('error', settle);
      if (error === undefined) resolve();
      else reject(error);
    };
    const drained = (): void => settle();
    const closed = (): void => settle(new Error('The archive stream was closed before the archive was written.'));
    out.on('drain', drained);
    out.on('close', closed);
    out.on('error', settle);
    if (out.destroyed) closed();
  });
}

/** Reads an archive line by line (the caller gives it the gunzipped bytes). */
export class TenantArchiveReader {
  readonly #chunks: AsyncIterator<Buffer>;
  readonly #failed: Promise<never> | undefined;
  #buffer: Buffer = Buffer.alloc(0);
  #ended = false;

  /** `failed` rejects when something upstream of `source` fails (a file that cannot be read). */
  constructor(source: Readable, failed?: Promise<never>) {
    this.#chunks = (source as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    this.#failed = failed;
  }

  /** Checks the signature and parses the manifest (its shape; what it names is checked against the schema by the importer). */
  async manifest(): Promise<TenantArchiveManifest> {
    const signature = await this.#line(1024);
    if (signature?.toString('utf8') !== ARCHIVE_SIGNATURE) {
      throw new TenantArchiveError('it does not start as a typeorm-tenants archive does (exportTenant writes gzip-compressed archives)');
    }
    const line = await this.#line(64 * 1024 * 1024);
    let manifest: unknown;
    try {
      manifest = JSON.parse(line?.toString('utf8') ?? '');
    } catch {
      throw new TenantArchiveError('its manifest is not JSON');
    }
    return checkManifest(manifest);
  }

  /**
   * Hands the rows of the next table to `sink`, in chunks of whole lines,
   * up to its end-of-data line; returns how many lines it held.
   */
  async rows(table: string, sink: (chunk: Buffer) => Promise<void>): Promise<number> {
    let lines = 0;
    let batch: Buffer[] = [];
    let size = 0;
    for (;;) {
      const line = await this.#line(Number.MAX_SAFE_INTEGER, true);
      if (line === undefined) throw new TenantArchiveError(`it ends inside the rows of table "${table}" (truncated?)`);
      if (line.length === 3 && line.equals(END_OF_DATA)) break;
      batch.push(line);
      size += line.length;
      lines += 1;
      if (size >= 256 * 1024) {
        await sink(Buffer.concat(batch, size));
        batch = [];
        size = 0;
      }
    }
    if (size > 0) await sink(Buffer.concat(batch, size));
    return lines;
  }

  /** Checks nothing follows the last table. */
  async end(): Promise<void> {
    const extra = await this.#line(1, true);
    if (extra !== undefined) throw new TenantArchiveError('it holds data after its last table');
  }

  /** The next line: without its newline, or with it (`keepNewline`); `undefined` at the end. */
  async #line(max: number, keepNewline = false): Promise<Buffer | undefined> {
    for (;;) {
      const at = this.#buffer.indexOf(10);
      if (at >= 0) {
        const line = this.#buffer.subarray(0, keepNewline ? at + 1 : at);
        this.#buffer = this.#buffer.subarray(at + 1);
        return line;
      }
      if (this.#buffer.length > max) throw new TenantArchiveError('a line of its header is longer than any archive writes');
      if (this.#ended) {
        if (this.#buffer.length === 0) return undefined;
        throw new TenantArchiveError('its last line is cut short (truncated?)');
      }
      let next: IteratorResult<Buffer>;
      try {
        next = await (this.#failed === undefined ? this.#chunks.next() : Promise.race([this.#chunks.next(), this.#failed]));
      } catch (error) {
        if (error instanceof TenantArchiveError) throw error;
        throw new TenantArchiveError(`it cannot be read (${(error as Error).message})`);
      }
      if (next.done === true) this.#ended = true;
      else this.#buffer = this.#buffer.length === 0 ? next.value : Buffer.concat([this.#buffer, next.value]);
    }
  }
}

function checkManifest(value: unknown): TenantArchiveManifest {
  const m = value as Partial<TenantArchiveManifest> | null;
  const strings = (list: unknown): boolean => Array.isArray(list) && list.every((s) => typeof s === 'string');
  const digits = (s: unknown): boolean => typeof s === 'string' && /^-?\d+$/.test(s);
  const ok =
    m !== null &&
    typeof m === 'object' &&
    m.format === 'typeorm-tenants-archive' &&
    m.version === 1 &&
    typeof m.slug === 'string' &&
    typeof m.name === 'string' &&
    typeof m.schemaName === 'string' &&
    strings(m.migrations) &&
    Array.isArray(m.tables) &&
    m.tables.every((t) => typeof t?.name === 'string' && strings(t.columns) && digits(t.rows) && digits(t.checksum)) &&
    Array.isArray(m.sequences) &&
    m.sequences.every((s) => typeof s?.name === 'string' && digits(s.lastValue) && typeof s.isCalled === 'boolean');
  if (!ok) throw new TenantArchiveError('its manifest lacks fields an archive of this version has');
  return m as TenantArchiveManifest;
}
