/**
 * `typeorm-tenants/storage`: files per tenant, scoped to the active tenant,
 * on local disk or in an S3 bucket. `@aws-sdk/client-s3` is an optional peer
 * dependency, loaded only by `s3Driver()`.
 */
export { tenantFiles, TenantFiles, DEFAULT_TENANT_FILES_PLUGIN_NAME } from './tenant-files';
export type { TenantFilesOptions, TenantFileBody } from './tenant-files';
export { localDiskDriver, DEFAULT_DISK_DELETE_BATCH_SIZE } from './local-disk-driver';
export type { LocalDiskDriverOptions } from './local-disk-driver';
export { s3Driver, DEFAULT_S3_DELETE_BATCH_SIZE, MAX_S3_PREFIX_BYTES } from './s3-driver';
export type { S3DriverOptions, S3Presigner } from './s3-driver';
export { FILE_KEY_RULE, MAX_FILE_KEY_BYTES, MAX_FILE_KEY_SEGMENT_BYTES, normaliseFileKey, normaliseFilePrefix } from './file-key';
export { DEFAULT_URL_EXPIRES_IN_SECONDS } from './storage-driver';
export type { FileUrlOptions, PutFileOptions, StorageDriver, TenantFileInfo, TenantFilesScope } from './storage-driver';
export { InvalidFileKeyError, TenantFileNotFoundError, TenantContextMissingError } from '../errors';
