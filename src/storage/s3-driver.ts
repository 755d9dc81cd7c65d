import type { S3Client } from '@aws-sdk/client-s3';
import { Readable } from 'node:stream';
import { InvalidArgumentError, TenancyConfigurationError, TenantFileNotFoundError } from '../errors';
import { normaliseFilePrefix } from './file-key';
import {
  DEFAULT_URL_EXPIRES_IN_SECONDS,
  type FileUrlOptions,
  type PutFileOptions,
  type StorageDriver,
  type TenantFileInfo,
  type TenantFilesScope,
} from './storage-driver';
import { encodeKeyPath, scopePrefix, validateBaseUrl } from './storage-scope';

/**
 * Makes a presigned URL, with the signature of `getSignedUrl` from
 * `@aws-sdk/s3-request-presigner` (pass that function itself).
 */
export type S3Presigner = (client: S3Client, command: any, options: { expiresIn: number }) => Promise<string>;

/** Options of `s3Driver()`. */
export interface S3DriverOptions {
  /** An `S3Client` of `@aws-sdk/client-s3` v3, configured by you (region, credentials, endpoint). */
  readonly client: S3Client;
  readonly bucket: string;
  /** Put before every tenant's prefix, as `<prefix>/<schema>/<incarnation>/<key>`; for one bucket shared by several databases or apps. */
  readonly prefix?: string;
  /**
   * For `url()`: `getSignedUrl` of `@aws-sdk/s3-request-presigner` (not a
   * dependency of this library; install it yourself). Gives URLs that expire.
   */
  readonly presign?: S3Presigner;
  /**
   * For `url()` without `presign`: the public address of the bucket (a CDN or
   * a public-read bucket). `url(key)` is `<publicBaseUrl>/<object key>`,
   * unsigned and without expiry: whoever has it reads the file.
   */
  readonly publicBaseUrl?: string;
  /** Objects per `DeleteObjects` request when a tenant is dropped, at most 1,000 (S3's limit). Default `DEFAULT_S3_DELETE_BATCH_SIZE`. */
  readonly deleteBatchSize?: number;
}

/** Objects per `DeleteObjects` request when a tenant is dropped: S3's maximum. */
export const DEFAULT_S3_DELETE_BATCH_SIZE = 1000;

/** The longest `prefix` option, in UTF-8 bytes, so that prefix + schema + incarnation + key stay within S3's 1,024. */
export const MAX_S3_PREFIX_BYTES = 160;

type S3Module = typeof import('@aws-sdk/client-s3');

/**
 * A storage driver over an S3 bucket (AWS S3 or an S3-compatible store),
 * through the AWS SDK v3 client you pass. Tenant `acme` (incarnation
 * `lq2x9k1c`) keeps `invoices/1.pdf` as the object
 * `<prefix>/acme/lq2x9k1c/invoices/1.pdf`. Uses PutObject, GetObject,
 * HeadObject, DeleteObject, ListObjectsV2 and, to drop a tenant,
 * DeleteObjects of up to 1,000 keys at a time. `@aws-sdk/client-s3` is an
 * optional peer dependency, loaded when this function is first called.
 *
 * @example
 * ```ts
 * import { S3Client } from '@aws-sdk/client-s3';
 * const files = tenantFiles(tenants, { driver: s3Driver({ client: new S3Client({}), bucket: 'acme-app-files' }) });
 * ```
 */
export function s3Driver(options: S3DriverOptions): StorageDriver {
  return new S3Driver(options);
}

class S3Driver implements StorageDriver {
  readonly kind = 's3';
  readonly #sdk: S3Module;
  readonly #client: S3Client;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #presign: S3Presigner | undefined;
  readonly #publicBaseUrl: string | undefined;
  readonly #deleteBatchSize: number;

  constructor(options: S3DriverOptions) {
    if (options === null || typeof options !== 'object') throw new TenancyConfigurationError('s3Driver() takes { client, bucket, prefix?, presign?, publicBaseUrl?, deleteBatchSize? }.');
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      this.#sdk = require('@aws-sdk/client-s3') as S3Module;
    } catch (error) {
      throw new TenancyConfigurationError('s3Driver() needs the package @aws-sdk/client-s3 (v3): npm install @aws-sdk/client-s3.', { cause: error });
    }
    if (!(options.client instanceof this.#sdk.S3Client) && typeof (options.client as { send?: unknown } | undefined)?.send !== 'function') {
      throw new TenancyConfigurationError('Option "client" of s3Driver() must be an S3Client of @aws-sdk/client-s3 v3.');
    }
    if (typeof options.bucket !== 'string' || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(options.bucket)) {
      throw new TenancyConfigurationError(`Option "bucket" of s3Driver() must be an S3 bucket name (3 to 63 lowercase letters, digits, "." and "-"); got ${JSON.stringify(options.bucket)}.`);
    }
    this.#client = options.client;
    this.#bucket = options.bucket;
    this.#prefix = options.prefix === undefined || options.prefix === '' ? '' : normalisePrefixOption(options.prefix);
    if (options.presign !== undefined && typeof options.presign !== 'function') {
      throw new TenancyConfigurationError('Option "presign" of s3Driver() must be getSignedUrl of @aws-sdk/s3-request-presigner.');
    }
    this.#presign = options.presign;
    this.#publicBaseUrl = options.publicBaseUrl === undefined ? undefined : validateBaseUrl(options.publicBaseUrl, 'publicBaseUrl', 's3Driver()');
    const batch = options.deleteBatchSize ?? DEFAULT_S3_DELETE_BATCH_SIZE;
    if (!Number.isInteger(batch) || batch < 1 || batch > 1000) {
      throw new TenancyConfigurationError(`Option "deleteBatchSize" of s3Driver() must be an integer from 1 to 1000 (S3's DeleteObjects limit); got ${String(batch)}.`);
    }
    this.#deleteBatchSize = batch;
  }

  async put(scope: TenantFilesScope, key: string, body: Buffer | Readable, options: PutFileOptions): Promise<void> {
    // S3 needs the length before the body: a stream of unknown length is read into memory first.
    const payload = Buffer.isBuffer(body) || options.contentLength !== undefined ? body : await collect(body);
    await this.#client.send(
      new this.#sdk.PutObjectCommand({
        Bucket: this.#bucket,
        Key: this.#objectKey(scope, key),
        Body: payload,
        ContentType: options.contentType,
        ContentLength: Buffer.isBuffer(payload) ? payload.length : options.contentLength,
      }),
    );
  }

  async get(scope: TenantFilesScope, key: string): Promise<Buffer> {
    const body = await this.#getObjectBody(scope, key);
    return Buffer.from(await body.transformToByteArray());
  }

  async stream(scope: TenantFilesScope, key: string): Promise<Readable> {
    const body = await this.#getObjectBody(scope, key);
    return body instanceof Readable ? body : Readable.from(body as unknown as AsyncIterable<Uint8Array>);
  }

  async *list(scope: TenantFilesScope, prefix: string): AsyncIterable<TenantFileInfo> {
    const base = this.#prefix + scopePrefix(scope);
    let token: string | undefined;
    do {
      const page = await this.#client.send(
        new this.#sdk.ListObjectsV2Command({ Bucket: this.#bucket, Prefix: base + prefix, ContinuationToken: token }),
      );
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined || !object.Key.startsWith(base)) continue;
        yield Object.freeze({ key: object.Key.slice(base.length), size: object.Size ?? 0, lastModified: object.LastModified ?? new Date(0) });
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  async delete(scope: TenantFilesScope, key: string): Promise<void> {
    await this.#client.send(new this.#sdk.DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#objectKey(scope, key) }));
  }

  async exists(scope: TenantFilesScope, key: string): Promise<boolean> {
    try {
      await this.#client.send(new this.#sdk.HeadObjectCommand({ Bucket: this.#bucket, Key: this.#objectKey(scope, key) }));
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  async url(scope: TenantFilesScope, key: string, options: FileUrlOptions): Promise<string> {
    const objectKey = this.#objectKey(scope, key);
    if (this.#presign !== undefined) {
      const expiresIn = options.expiresInSeconds ?? DEFAULT_URL_EXPIRES_IN_SECONDS;
      // SigV4 presigned URLs are valid for at most 7 days.
      if (!Number.isInteger(expiresIn) || expiresIn < 1 || expiresIn > 604_800) {
        throw new InvalidArgumentError(`expiresInSeconds must be an integer from 1 to 604800 (7 days, SigV4's limit); got ${String(expiresIn)}.`);
      }
      return this.#presign(this.#client, new this.#sdk.GetObjectCommand({ Bucket: this.#bucket, Key: objectKey }), { expiresIn });
    }
    if (this.#publicBaseUrl !== undefined) {
      if (options.expiresInSeconds !== undefined) {
        throw new InvalidArgumentError('url() with publicBaseUrl gives unsigned URLs, which do not expire: leave out expiresInSeconds, or give s3Driver() the presign option.');
      }
      return `${this.#publicBaseUrl}/${encodeKeyPath(objectKey)}`;
    }
    throw new TenancyConfigurationError(
      'url() of the S3 driver needs its "presign" option (getSignedUrl of @aws-sdk/s3-request-presigner, which you install) for signed URLs that expire, ' +
        'or "publicBaseUrl" for a public bucket or CDN. Or stream the file through your own route with tenantFiles.stream().',
    );
  }

  /**
   * Lists the scope's first `deleteBatchSize` objects and deletes them with
   * one DeleteObjects, until none is left. Listing from the start each time
   * needs no continuation state, so a rerun after a failure picks up what is
   * left.
   */
  async deleteScope(scope: TenantFilesScope): Promise<void> {
    const base = this.#prefix + scopePrefix(scope);
    let previous: string | undefined;
    for (;;) {
      const page = await this.#client.send(new this.#sdk.ListObjectsV2Command({ Bucket: this.#bucket, Prefix: base, MaxKeys: this.#deleteBatchSize }));
      const keys = (page.Contents ?? []).map((object) => object.Key).filter((objectKey): objectKey is string => objectKey?.startsWith(base) === true);
      if (keys.length === 0) return;
      if (keys[0] === previous) {
        throw new Error(`DeleteObjects reported success, but "${keys[0]}" is still listed in bucket "${this.#bucket}"; the store did not delete it.`);
      }
      previous = keys[0];
      const result = await this.#client.send(
        new this.#sdk.DeleteObjectsCommand({ Bucket: this.#bucket, Delete: { Objects: keys.map((objectKey) => ({ Key: objectKey })), Quiet: true } }),
      );
      const failed = result.Errors ?? [];
      if (failed.length > 0) {
        const first = failed[0]!;
        throw new Error(`DeleteObjects could not delete ${failed.length} of ${keys.length} objects in bucket "${this.#bucket}", the first "${first.Key}": ${first.Code} ${first.Message}.`);
      }
    }
  }

  #objectKey(scope: TenantFilesScope, key: string): string {
    return this.#prefix + scopePrefix(scope) + key;
  }

  async #getObjectBody(scope: TenantFilesScope, key: string): Promise<NonNullable<import('@aws-sdk/client-s3').GetObjectCommandOutput['Body']>> {
    try {
      const output = await this.#client.send(new this.#sdk.GetObjectCommand({ Bucket: this.#bucket, Key: this.#objectKey(scope, key) }));
      if (output.Body === undefined) throw new TenantFileNotFoundError(key);
      return output.Body;
    } catch (error) {
      if (isNotFound(error)) throw new TenantFileNotFoundError(key, { cause: error });
      throw error;
    }
  }
}

function normalisePrefixOption(value: unknown): string {
  if (typeof value !== 'string') throw new TenancyConfigurationError('Option "prefix" of s3Driver() must be a string such as "files/prod".');
  const trimmed = value.replace(/\/+$/, '');
  let normal: string;
  try {
    normal = normaliseFilePrefix(trimmed);
  } catch (error) {
    throw new TenancyConfigurationError(`Option "prefix" of s3Driver() follows the file key rule: ${(error as Error).message}`, { cause: error });
  }
  if (Buffer.byteLength(normal, 'utf8') > MAX_S3_PREFIX_BYTES) {
    throw new TenancyConfigurationError(`Option "prefix" of s3Driver() must be at most ${MAX_S3_PREFIX_BYTES} bytes, so that prefix, tenant and key fit S3's 1,024-byte object keys.`);
  }
  return `${normal}/`;
}

function isNotFound(error: unknown): boolean {
  // Not any 404: NoSuchBucket is one too, and is a configuration error, not a missing file.
  const name = (error as { name?: unknown } | null)?.name;
  return name === 'NoSuchKey' || name === 'NotFound';
}

async function collect(body: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}
