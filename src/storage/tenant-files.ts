import { Readable } from 'node:stream';
import { refuseInSeed, runStorage } from '../context/tenant-context';
import { InvalidArgumentError, TenancyConfigurationError, TenantContextMissingError } from '../errors';
import { tenantIncarnation, type LifecycleTenant } from '../lifecycle/lifecycle-plugins';
import type { TenantDataSourceManager } from '../manager/tenant-data-source-manager';
import { normaliseFileKey, normaliseFilePrefix } from './file-key';
import type { FileUrlOptions, PutFileOptions, StorageDriver, TenantFileInfo, TenantFilesScope } from './storage-driver';

/** Options of `tenantFiles()`. */
export interface TenantFilesOptions {
  /** Where the files are kept: `localDiskDriver({ root })`, `s3Driver({ client, bucket })`, or your own `StorageDriver`. */
  readonly driver: StorageDriver;
  /** The name of its lifecycle plugin on the manager. Default `DEFAULT_TENANT_FILES_PLUGIN_NAME`; give each of several `tenantFiles` of one manager its own. */
  readonly pluginName?: string;
}

/** The lifecycle plugin name of `tenantFiles()` unless `pluginName` says otherwise. */
export const DEFAULT_TENANT_FILES_PLUGIN_NAME = 'tenant-files';

/** What `put()` stores: bytes, a string (stored as UTF-8), or a stream of bytes. */
export type TenantFileBody = Buffer | Uint8Array | string | Readable;

/**
 * Files of the active tenant. Every call works on the files of the tenant
 * whose `manager.run()` it is in, under that tenant's own folder or prefix
 * (`<schema>/<incarnation>/`); outside a run it throws
 * `TenantContextMissingError`. Keys follow `FILE_KEY_RULE` (refusals are
 * `InvalidFileKeyError`, before anything is read or written); a missing file
 * is `TenantFileNotFoundError`. Made by `tenantFiles()`.
 */
export class TenantFiles {
  readonly #manager: TenantDataSourceManager;
  readonly #driver: StorageDriver;
  readonly #removePlugin: () => void;

  constructor(manager: TenantDataSourceManager, options: TenantFilesOptions) {
    if (options === null || typeof options !== 'object' || options.driver === null || typeof options.driver !== 'object') {
      throw new TenancyConfigurationError('tenantFiles(manager, { driver }) needs a driver: localDiskDriver({ root }) or s3Driver({ client, bucket }).');
    }
    this.#manager = manager;
    this.#driver = options.driver;
    const driver = options.driver;
    this.#removePlugin = manager.use({
      name: options.pluginName ?? DEFAULT_TENANT_FILES_PLUGIN_NAME,
      // Archive and restore keep the files as they are: the incarnation (the
      // creation time) does not change, so a restored tenant finds them again.
      onDropping: (tenant: LifecycleTenant) => driver.deleteScope({ schemaName: tenant.schemaName, incarnation: tenant.incarnation }),
    });
  }

  /** The driver's kind: `'local-disk'`, `'s3'`, ... */
  get driverKind(): string {
    return this.#driver.kind;
  }

  /**
   * Stores `body` under `key` for the active tenant, replacing any file with
   * that key.
   *
   * @throws TenantContextMissingError outside a run; InvalidFileKeyError for a key that breaks the rule.
   * @example
   * ```ts
   * await tenants.run('acme', () => files.put('invoices/0001.pdf', pdf, { contentType: 'application/pdf' }));
   * ```
   */
  async put(key: string, body: TenantFileBody, options: PutFileOptions = {}): Promise<void> {
    const scope = this.#scope('put()');
    refuseInSeed('tenantFiles.put()');
    const normal = normaliseFileKey(key);
    checkPutOptions(options);
    await this.#driver.put(scope, normal, toBody(body), options);
  }

  /**
   * The whole file, as a Buffer.
   *
   * @throws TenantContextMissingError outside a run; InvalidFileKeyError; TenantFileNotFoundError when the tenant has no such file.
   */
  async get(key: string): Promise<Buffer> {
    const scope = this.#scope('get()');
    return this.#driver.get(scope, normaliseFileKey(key));
  }

  /**
   * The file as a stream. The promise settles once the file is open, so a
   * missing file rejects with `TenantFileNotFoundError` before any response
   * headers are sent.
   *
   * @example
   * ```ts
   * app.get('/files/*key', async (req, res) => (await files.stream(req.params.key.join('/'))).pipe(res));
   * ```
   */
  async stream(key: string): Promise<Readable> {
    const scope = this.#scope('stream()');
    return this.#driver.stream(scope, normaliseFileKey(key));
  }

  /**
   * The active tenant's files whose key starts with `prefix` (all of them by
   * default), as an async iterable in UTF-8 byte order of the keys, fetched a
   * page (S3: 1,000 keys) or a folder (disk) at a time. The tenant is the one
   * active when `list()` is called; the context check and the prefix check
   * throw at once.
   *
   * @throws TenantContextMissingError outside a run; InvalidFileKeyError for a bad prefix.
   * @example
   * ```ts
   * for await (const file of files.list('invoices/')) console.log(file.key, file.size);
   * ```
   */
  list(prefix?: string): AsyncIterable<TenantFileInfo> {
    const scope = this.#scope('list()');
    return this.#driver.list(scope, normaliseFilePrefix(prefix));
  }

  /** Deletes the file; deleting a key with no file is not an error. */
  async delete(key: string): Promise<void> {
    const scope = this.#scope('delete()');
    await this.#driver.delete(scope, normaliseFileKey(key));
  }

  /** Whether the active tenant has a file with this key. */
  async exists(key: string): Promise<boolean> {
    const scope = this.#scope('exists()');
    return this.#driver.exists(scope, normaliseFileKey(key));
  }

  /**
   * An address the file can be fetched from: with the local-disk driver
   * `<baseUrl>/<schema>/<incarnation>/<key>` (needs `baseUrl`); with S3 a
   * presigned URL (needs `presign`) or `<publicBaseUrl>/<object key>`. The URL
   * does not check who asks: a signed one expires, an unsigned one does not.
   *
   * @throws TenancyConfigurationError when the driver has no way to make URLs.
   */
  async url(key: string, options: FileUrlOptions = {}): Promise<string> {
    const scope = this.#scope('url()');
    const normal = normaliseFileKey(key);
    if (options.expiresInSeconds !== undefined && (!Number.isInteger(options.expiresInSeconds) || options.expiresInSeconds < 1)) {
      throw new InvalidArgumentError(`expiresInSeconds must be a positive integer; got ${String(options.expiresInSeconds)}.`);
    }
    return this.#driver.url(scope, normal, options);
  }

  /** Removes the lifecycle plugin from the manager: dropped tenants' files are no longer deleted. Safe to call twice. */
  close(): void {
    this.#removePlugin();
  }

  #scope(operation: string): TenantFilesScope {
    const state = runStorage.getStore();
    if (state === undefined) throw new TenantContextMissingError(`tenantFiles.${operation}`);
    if (state.owner !== (this.#manager as unknown)) {
      throw new TenancyConfigurationError(
        `tenantFiles.${operation} was called inside a run of another TenantDataSourceManager than the one it was made for; make a tenantFiles() per manager.`,
      );
    }
    return { schemaName: state.tenant.schemaName, incarnation: tenantIncarnation(state.tenant) };
  }
}

/**
 * Files per tenant on `manager`: `put/get/stream/list/delete/exists/url`
 * scoped to the active tenant, over a local-disk or S3 driver. It adds a
 * lifecycle plugin (`manager.use()`) so that `dropTenant()` deletes the
 * tenant's files (a batch at a time; a failure leaves the tenant `dropping`
 * and `dropTenant()` again finishes), while `archiveTenant()` and
 * `restoreTenant()` keep them.
 *
 * @example
 * ```ts
 * import { tenantFiles, localDiskDriver } from 'typeorm-tenants/storage';
 * const files = tenantFiles(tenants, { driver: localDiskDriver({ root: './data/files' }) });
 * await tenants.run('acme', async () => {
 *   await files.put('logo.png', png, { contentType: 'image/png' });
 *   return files.get('logo.png');
 * });
 * ```
 */
export function tenantFiles(manager: TenantDataSourceManager, options: TenantFilesOptions): TenantFiles {
  return new TenantFiles(manager, options);
}

function toBody(body: TenantFileBody): Buffer | Readable {
  if (Buffer.isBuffer(body)) return body;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (body instanceof Readable) return body;
  throw new InvalidArgumentError(`put() takes a Buffer, a Uint8Array, a string or a Readable stream as the body; got ${body === null ? 'null' : typeof body}.`);
}

function checkPutOptions(options: PutFileOptions): void {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('put() takes options { contentType?, contentLength? }.');
  if (options.contentType !== undefined && (typeof options.contentType !== 'string' || /[\r\n\0]/.test(options.contentType) || options.contentType.length > 255)) {
    throw new InvalidArgumentError(`contentType must be a MIME type such as "application/pdf"; got ${JSON.stringify(options.contentType)}.`);
  }
  if (options.contentLength !== undefined && (!Number.isSafeInteger(options.contentLength) || options.contentLength < 0)) {
    throw new InvalidArgumentError(`contentLength must be a non-negative integer; got ${String(options.contentLength)}.`);
  }
}
