import type { Readable } from 'node:stream';

/**
 * Whose files a driver call concerns: the tenant's schema name and its
 * incarnation (`tenantIncarnation(record)`). Drivers keep each pair under a
 * prefix of its own (`<schema>/<incarnation>/`), so a tenant dropped and
 * created again under the same slug never meets the old tenant's files.
 */
export interface TenantFilesScope {
  readonly schemaName: string;
  readonly incarnation: string;
}

/** One file of `list()`. */
export interface TenantFileInfo {
  /** The key, as given to `put()` (in NFC), without the tenant's prefix. */
  readonly key: string;
  /** Size in bytes. */
  readonly size: number;
  readonly lastModified: Date;
}

/** Options of `put()`. */
export interface PutFileOptions {
  /** Stored as the object's `Content-Type` by the S3 driver; the local-disk driver keeps no metadata and ignores it. */
  readonly contentType?: string;
  /**
   * The body's length in bytes, when the body is a stream: the S3 driver
   * then streams it to `PutObject` instead of buffering it first (S3 needs
   * the length up front).
   */
  readonly contentLength?: number;
}

/** Options of `url()`. */
export interface FileUrlOptions {
  /**
   * How long a signed URL is valid (S3 with `presign`; default
   * `DEFAULT_URL_EXPIRES_IN_SECONDS`). Unsigned URLs (a `baseUrl` or
   * `publicBaseUrl`) do not expire, so asking for an expiry there is refused.
   */
  readonly expiresInSeconds?: number;
}

/** How long a presigned URL is valid when `expiresInSeconds` is not given: 15 minutes. */
export const DEFAULT_URL_EXPIRES_IN_SECONDS = 900;

/**
 * Where tenant files are kept. The driver is handed validated, normalised
 * keys (`normaliseFileKey`) and the tenant's scope, and keeps every file of
 * a scope under that scope's own folder or prefix. `localDiskDriver()` and
 * `s3Driver()` are the two the library ships; another store can implement
 * this interface.
 */
export interface StorageDriver {
  /** `'local-disk'`, `'s3'`, ...: named in errors. */
  readonly kind: string;
  put(scope: TenantFilesScope, key: string, body: Buffer | Readable, options: PutFileOptions): Promise<void>;
  /** @throws TenantFileNotFoundError when there is no file with that key. */
  get(scope: TenantFilesScope, key: string): Promise<Buffer>;
  /** @throws TenantFileNotFoundError when there is no file with that key (before any byte is read). */
  stream(scope: TenantFilesScope, key: string): Promise<Readable>;
  /** Files whose key starts with `prefix` (`''` for all), in UTF-8 byte order of the key. */
  list(scope: TenantFilesScope, prefix: string): AsyncIterable<TenantFileInfo>;
  /** Deletes the file; no error when there is none. */
  delete(scope: TenantFilesScope, key: string): Promise<void>;
  exists(scope: TenantFilesScope, key: string): Promise<boolean>;
  url(scope: TenantFilesScope, key: string, options: FileUrlOptions): Promise<string>;
  /**
   * Deletes every file of the scope, a batch at a time. Idempotent: after a
   * failure part-way, calling it again deletes what is left.
   */
  deleteScope(scope: TenantFilesScope): Promise<void>;
}
