import { randomBytes } from 'node:crypto';
import { constants, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { InvalidArgumentError, InvalidFileKeyError, TenancyConfigurationError, TenantFileNotFoundError } from '../errors';
import { AnchoredFolder } from './anchored-folder';
import { RESERVED_SEGMENT_PREFIX } from './file-key';
import type { FileUrlOptions, PutFileOptions, StorageDriver, TenantFileInfo, TenantFilesScope } from './storage-driver';
import { assertScope, encodeKeyPath, validateBaseUrl } from './storage-scope';

/** Options of `localDiskDriver()`. */
export interface LocalDiskDriverOptions {
  /**
   * The folder that holds every tenant's files, as `<root>/<schema>/<incarnation>/<key>`.
   * Created when missing. It may itself be (or sit under) a symbolic link;
   * below it, symbolic links are refused. Use one root per database: two
   * databases with a tenant of the same schema name would otherwise share
   * its folder (the incarnation tells them apart only by creation time).
   */
  readonly root: string;
  /**
   * Where `<root>` is served over HTTP, for `url()`: `url('a/b.pdf')` is
   * `<baseUrl>/<schema>/<incarnation>/a/b.pdf`. Without it `url()` throws.
   * Whoever serves it must check that the caller belongs to the tenant in
   * the path: these URLs are not signed and do not expire.
   */
  readonly baseUrl?: string;
  /** Files deleted concurrently per batch when a tenant is dropped. Default `DEFAULT_DISK_DELETE_BATCH_SIZE`. */
  readonly deleteBatchSize?: number;
}

/** Files removed concurrently per batch by the local-disk driver when a tenant is dropped. */
export const DEFAULT_DISK_DELETE_BATCH_SIZE = 100;

const OPEN_READ = constants.O_RDONLY | constants.O_NOFOLLOW;
const OPEN_NEW = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/**
 * A storage driver over a local folder: tenant `acme` (incarnation
 * `lq2x9k1c`) keeps `invoices/1.pdf` at `<root>/acme/lq2x9k1c/invoices/1.pdf`.
 * A symbolic link anywhere under `<root>` on a key's path is refused
 * (`InvalidFileKeyError`). On Linux the path is walked one open folder at a
 * time (`O_NOFOLLOW | O_DIRECTORY`, then names reached through
 * `/proc/self/fd/<fd>/`, the `openat()` Node lacks), and files are opened
 * with `O_NOFOLLOW`, so a link swapped in while a call runs is refused too.
 * Elsewhere each component is checked with `lstat` before use, which a
 * concurrent swap by a local process can race. `put()` writes a temporary
 * file next to the target and renames it over the target, so readers see
 * the old file or the new one, never half of one.
 *
 * @example
 * ```ts
 * const files = tenantFiles(tenants, { driver: localDiskDriver({ root: './data/files' }) });
 * ```
 */
export function localDiskDriver(options: LocalDiskDriverOptions): StorageDriver {
  return new LocalDiskDriver(options);
}

class LocalDiskDriver implements StorageDriver {
  readonly kind = 'local-disk';
  readonly #root: string;
  readonly #baseUrl: string | undefined;
  readonly #deleteBatchSize: number;
  #realRoot: Promise<string> | undefined;

  constructor(options: LocalDiskDriverOptions) {
    if (options === null || typeof options !== 'object') throw new TenancyConfigurationError('localDiskDriver() takes { root, baseUrl?, deleteBatchSize? }.');
    if (typeof options.root !== 'string' || options.root.length === 0 || options.root.includes('\0')) {
      throw new TenancyConfigurationError('Option "root" of localDiskDriver() must be the path of the folder that holds the tenants\' files.');
    }
    this.#root = resolve(options.root);
    this.#baseUrl = options.baseUrl === undefined ? undefined : validateBaseUrl(options.baseUrl, 'baseUrl', 'localDiskDriver()');
    const batch = options.deleteBatchSize ?? DEFAULT_DISK_DELETE_BATCH_SIZE;
    if (!Number.isInteger(batch) || batch < 1) throw new TenancyConfigurationError(`Option "deleteBatchSize" of localDiskDriver() must be a positive integer; got ${String(batch)}.`);
    this.#deleteBatchSize = batch;
  }

  async put(scope: TenantFilesScope, key: string, body: Buffer | Readable, _options: PutFileOptions): Promise<void> {
    const segments = key.split('/');
    const name = segments[segments.length - 1]!;
    const folder = (await this.#openFolder(scope, key, segments.slice(0, -1), true))!;
    try {
      switch (await folder.kindOf(name)) {
        case 'link':
          throw symlinkRefused(key, key);
        case 'folder':
          throw new InvalidFileKeyError(key, `other keys start with "${key}/", so on local disk it is a folder and cannot also be a file.`);
        case 'other':
          throw new InvalidFileKeyError(key, 'something other than a regular file (a socket, a device) has that name in the tenant\'s folder.');
        case 'file':
        case 'missing':
          break;
      }
      const temporary = `${RESERVED_SEGMENT_PREFIX}${randomBytes(8).toString('hex')}.tmp`;
      const handle = await fsp.open(folder.at(temporary), OPEN_NEW, 0o644);
      let closed = false;
      let renamed = false;
      try {
        if (!folder.anchored) await assertOpenedAt(handle, join(folder.path, temporary), key);
        if (Buffer.isBuffer(body)) {
          await handle.writeFile(body);
        } else {
          for await (const chunk of body) await handle.write(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Uint8Array));
        }
        await handle.close();
        closed = true;
        // rename() replaces a link at the target rather than following it.
        await fsp.rename(folder.at(temporary), folder.at(name));
        renamed = true;
      } finally {
        if (!closed) await handle.close();
        if (!renamed) await fsp.unlink(folder.at(temporary)).catch(ignoreMissing);
      }
    } finally {
      await folder.close();
    }
  }

  async get(scope: TenantFilesScope, key: string): Promise<Buffer> {
    const handle = await this.#openFile(scope, key);
    try {
      return await handle.readFile();
    } finally {
      await handle.close();
    }
  }

  async stream(scope: TenantFilesScope, key: string): Promise<Readable> {
    const handle = await this.#openFile(scope, key);
    return handle.createReadStream();
  }

  async *list(scope: TenantFilesScope, prefix: string): AsyncIterable<TenantFileInfo> {
    const slash = prefix.lastIndexOf('/');
    const folderKey = slash < 0 ? '' : prefix.slice(0, slash);
    const folder = await this.#openFolder(scope, prefix, folderKey === '' ? [] : folderKey.split('/'), false);
    if (folder === undefined) return;
    try {
      yield* this.#listFolder(folder, folderKey, prefix.slice(slash + 1));
    } finally {
      await folder.close();
    }
  }

  async delete(scope: TenantFilesScope, key: string): Promise<void> {
    await this.#withEntry(scope, key, async (folder, name, kind) => {
      if (kind === 'file') await fsp.unlink(folder!.at(name)).catch(ignoreMissing);
    });
  }

  async exists(scope: TenantFilesScope, key: string): Promise<boolean> {
    return this.#withEntry(scope, key, async (_folder, _name, kind) => kind === 'file');
  }

  async url(scope: TenantFilesScope, key: string, options: FileUrlOptions): Promise<string> {
    if (this.#baseUrl === undefined) {
      throw new TenancyConfigurationError(
        'url() of the local-disk driver needs its "baseUrl" option: the address where the storage root is served over HTTP ' +
          '(localDiskDriver({ root, baseUrl: "https://files.example.com" })). Or stream the file through your own route with tenantFiles.stream().',
      );
    }
    if (options.expiresInSeconds !== undefined) {
      throw new InvalidArgumentError('url() of the local-disk driver gives unsigned URLs, which do not expire: leave out expiresInSeconds, or serve the file through your own route.');
    }
    return `${this.#baseUrl}/${encodeKeyPath(`${scope.schemaName}/${scope.incarnation}/${key}`)}`;
  }

  async deleteScope(scope: TenantFilesScope): Promise<void> {
    assertScope(scope);
    const root = await AnchoredFolder.open(await this.#rootPath());
    try {
      const schemaFolder = await root.enter(scope.schemaName);
      if (schemaFolder === 'missing') return;
      if (typeof schemaFolder === 'string') {
        // A link or a file where the schema folder should be: removed, never followed.
        await fsp.unlink(root.at(scope.schemaName)).catch(ignoreMissing);
        return;
      }
      try {
        const folder = await schemaFolder.enter(scope.incarnation);
        if (folder instanceof AnchoredFolder) {
          try {
            await this.#removeTree(folder);
          } finally {
            await folder.close();
          }
          await fsp.rmdir(schemaFolder.at(scope.incarnation)).catch(ignoreMissing);
        } else if (folder !== 'missing') {
          await fsp.unlink(schemaFolder.at(scope.incarnation)).catch(ignoreMissing);
        }
      } finally {
        await schemaFolder.close();
      }
      // Other incarnations' leftovers may remain; the schema folder goes only when empty.
      await fsp.rmdir(root.at(scope.schemaName)).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT' && error.code !== 'ENOTEMPTY' && error.code !== 'EEXIST') throw error;
      });
    } finally {
      await root.close();
    }
  }

  #rootPath(): Promise<string> {
    this.#realRoot ??= (async () => {
      await fsp.mkdir(this.#root, { recursive: true });
      return fsp.realpath(this.#root);
    })().catch((error: unknown) => {
      this.#realRoot = undefined;
      throw error;
    });
    return this.#realRoot;
  }

  /**
   * Opens `<root>/<schema>/<incarnation>/<folders...>` one folder at a time,
   * refusing a link at any step; with `create`, missing folders are made on
   * the way (then entered like the others). `undefined` when a folder on the
   * way is missing, or is a file, and nothing is created. The caller closes
   * the folder it gets.
   */
  async #openFolder(scope: TenantFilesScope, key: string, folders: readonly string[], create: boolean): Promise<AnchoredFolder | undefined> {
    assertScope(scope);
    const components = [scope.schemaName, scope.incarnation, ...folders];
    let folder = await AnchoredFolder.open(await this.#rootPath());
    let handedOver = false;
    try {
      for (let i = 0; i < components.length; i += 1) {
        const component = components[i]!;
        const shown = i < 2 ? "(the tenant's own folder)" : folders.slice(0, i - 1).join('/');
        let next = await folder.enter(component);
        if (next === 'missing' && create) {
          await fsp.mkdir(folder.at(component)).catch((error: NodeJS.ErrnoException) => {
            if (error.code !== 'EEXIST') throw error;
          });
          next = await folder.enter(component);
        }
        if (next === 'link') throw symlinkRefused(key, shown);
        if (typeof next === 'string') {
          if (next === 'missing' || !create) return undefined;
          throw new InvalidFileKeyError(key, `"${shown}" is a file, so on local disk it cannot also be a folder of other keys.`);
        }
        await folder.close();
        folder = next;
      }
      handedOver = true;
      return folder;
    } finally {
      if (!handedOver) await folder.close();
    }
  }

  /** Calls `fn` with the key's folder, its last segment and what is there; a link there is refused. */
  async #withEntry<T>(
    scope: TenantFilesScope,
    key: string,
    fn: (folder: AnchoredFolder | undefined, name: string, kind: 'file' | 'folder' | 'other' | 'missing') => Promise<T>,
  ): Promise<T> {
    const segments = key.split('/');
    const name = segments[segments.length - 1]!;
    const folder = await this.#openFolder(scope, key, segments.slice(0, -1), false);
    if (folder === undefined) return fn(undefined, name, 'missing');
    try {
      const kind = await folder.kindOf(name);
      if (kind === 'link') throw symlinkRefused(key, key);
      return await fn(folder, name, kind);
    } finally {
      await folder.close();
    }
  }

  async #openFile(scope: TenantFilesScope, key: string): Promise<FileHandle> {
    const segments = key.split('/');
    const name = segments[segments.length - 1]!;
    const folder = await this.#openFolder(scope, key, segments.slice(0, -1), false);
    if (folder === undefined) throw new TenantFileNotFoundError(key);
    let handle: FileHandle;
    try {
      handle = await fsp.open(folder.at(name), OPEN_READ);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') throw new TenantFileNotFoundError(key, { cause: error });
      if (code === 'ELOOP') throw symlinkRefused(key, key);
      throw error;
    } finally {
      // The file's descriptor does not need its folder's.
      await folder.close();
    }
    try {
      if (!folder.anchored) await assertOpenedAt(handle, join(folder.path, name), key);
      if (!(await handle.stat()).isFile()) throw new TenantFileNotFoundError(key);
      return handle;
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  async *#listFolder(folder: AnchoredFolder, folderKey: string, namePrefix: string): AsyncIterable<TenantFileInfo> {
    // Sorting each folder's names with a "/" after folder names gives the
    // UTF-8 byte order of whole keys (S3's order): "a-b" before "a/c".
    const sorted = (await folder.entries())
      .filter((entry) => entry.name.startsWith(namePrefix) && !entry.name.startsWith(RESERVED_SEGMENT_PREFIX))
      .map((entry) => ({ entry, order: Buffer.from(entry.isDirectory() ? `${entry.name}/` : entry.name, 'utf8') }))
      .sort((a, b) => Buffer.compare(a.order, b.order));
    for (const { entry } of sorted) {
      const key = folderKey === '' ? entry.name : `${folderKey}/${entry.name}`;
      if (entry.isSymbolicLink()) throw symlinkRefused(key, key);
      if (entry.isDirectory()) {
        const child = await folder.enter(entry.name);
        if (child === 'link') throw symlinkRefused(key, key);
        if (typeof child === 'string') continue;
        try {
          yield* this.#listFolder(child, key, '');
        } finally {
          await child.close();
        }
      } else if (entry.isFile()) {
        const stat = await folder.stat(entry.name);
        if (stat?.isFile()) yield Object.freeze({ key, size: stat.size, lastModified: stat.mtime });
      }
    }
  }

  /** Depth first: a folder's subfolders, then its other entries a batch at a time. Links are unlinked, never followed. */
  async #removeTree(folder: AnchoredFolder): Promise<void> {
    const entries = await folder.entries();
    for (const entry of entries) {
      if (!entry.isDirectory()) continue;
      const child = await folder.enter(entry.name);
      if (child instanceof AnchoredFolder) {
        try {
          await this.#removeTree(child);
        } finally {
          await child.close();
        }
        await fsp.rmdir(folder.at(entry.name)).catch(ignoreMissing);
      } else if (child !== 'missing') {
        await fsp.unlink(folder.at(entry.name)).catch(ignoreMissing);
      }
    }
    const others = entries.filter((entry) => !entry.isDirectory());
    for (let i = 0; i < others.length; i += this.#deleteBatchSize) {
      await Promise.all(others.slice(i, i + this.#deleteBatchSize).map((entry) => fsp.unlink(folder.at(entry.name)).catch(ignoreMissing)));
    }
  }
}

/**
 * Where names cannot be reached through an open folder (no `/proc`): checks
 * that the descriptor is the file at `expected` by its real path.
 */
async function assertOpenedAt(handle: FileHandle, expected: string, key: string): Promise<void> {
  void handle;
  if ((await fsp.realpath(expected)) !== expected) {
    throw new InvalidFileKeyError(key, 'its path changed while it was opened (a symbolic link swapped in under the tenant\'s root); symlinks under a tenant\'s root are refused.');
  }
}

function symlinkRefused(key: string, component: string): InvalidFileKeyError {
  return new InvalidFileKeyError(
    key,
    `"${component}" in the tenant's folder is a symbolic link; symlinks under a tenant's root are refused (they could lead outside it, or into another tenant's files). Remove the link.`,
  );
}

function ignoreMissing(error: NodeJS.ErrnoException): void {
  if (error.code !== 'ENOENT') throw error;
}
