import { constants, existsSync, promises as fsp, type Dirent, type Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

const PROC_FD = '/proc/self/fd';
const OPEN_FOLDER = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

let procUsable: boolean | undefined;

/** Whether `/proc/self/fd/<fd>/<name>` reaches names relative to an open folder (Linux). */
export function anchoredByDescriptor(): boolean {
  procUsable ??= process.platform === 'linux' && existsSync(PROC_FD);
  return procUsable;
}

/** What a name in a folder is, by `lstat` (links are never followed). */
export type EntryKind = 'file' | 'folder' | 'link' | 'other' | 'missing';

/**
 * A folder held open, so that names in it are reached through the open
 * folder and not through a path that could change under us. Node has no
 * `openat()`; on Linux `/proc/self/fd/<fd>/<name>` gives the same thing (the
 * kernel resolves the descriptor, not the path it was opened by), so a
 * folder higher up swapped for a symbolic link after it was opened cannot
 * redirect anything. Subfolders are entered with `O_NOFOLLOW | O_DIRECTORY`,
 * which refuses a link. Where `/proc` is missing (macOS, BSD) names are
 * reached by path after an `lstat` of each component, which a concurrent
 * swap can still race.
 */
export class AnchoredFolder {
  readonly #handle: FileHandle | undefined;

  private constructor(
    /** The folder's path when it was opened (for messages and the path fallback). */
    readonly path: string,
    handle: FileHandle | undefined,
  ) {
    this.#handle = handle;
  }

  /** Opens `realPath`, a folder whose path holds no link the caller did not accept. */
  static async open(realPath: string): Promise<AnchoredFolder> {
    if (!anchoredByDescriptor()) return new AnchoredFolder(realPath, undefined);
    return new AnchoredFolder(realPath, await fsp.open(realPath, constants.O_RDONLY | constants.O_DIRECTORY));
  }

  /** Whether names are reached through the open descriptor (else by path). */
  get anchored(): boolean {
    return this.#handle !== undefined;
  }

  /** The path by which `name` in this folder is reached. */
  at(name: string): string {
    return this.#handle === undefined ? join(this.path, name) : `${PROC_FD}/${this.#handle.fd}/${name}`;
  }

  /** The folder's entries, link types as they are (`readdir` with file types). */
  entries(): Promise<Dirent[]> {
    return fsp.readdir(this.#handle === undefined ? this.path : `${PROC_FD}/${this.#handle.fd}`, { withFileTypes: true });
  }

  /** `lstat` of `name`, or `undefined` when it does not exist. */
  async stat(name: string): Promise<Stats | undefined> {
    try {
      return await fsp.lstat(this.at(name));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw error;
    }
  }

  /** What `name` is. */
  async kindOf(name: string): Promise<EntryKind> {
    return kindOfStats(await this.stat(name));
  }

  /** Opens the subfolder `name`; a link, a file or nothing there is said instead. The caller closes what it gets. */
  async enter(name: string): Promise<AnchoredFolder | Exclude<EntryKind, 'folder'>> {
    if (this.#handle === undefined) {
      const kind = await this.kindOf(name);
      return kind === 'folder' ? new AnchoredFolder(join(this.path, name), undefined) : kind;
    }
    try {
      return new AnchoredFolder(join(this.path, name), await fsp.open(this.at(name), OPEN_FOLDER));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return 'missing';
      // O_NOFOLLOW | O_DIRECTORY on a link gives ENOTDIR (or ELOOP): tell a link from a file.
      if (code === 'ENOTDIR' || code === 'ELOOP') {
        const kind = await this.kindOf(name);
        return kind === 'folder' ? 'other' : kind;
      }
      throw error;
    }
  }

  async close(): Promise<void> {
    await this.#handle?.close();
  }
}

export function kindOfStats(stat: Stats | undefined): EntryKind {
  if (stat === undefined) return 'missing';
  if (stat.isSymbolicLink()) return 'link';
  if (stat.isDirectory()) return 'folder';
  if (stat.isFile()) return 'file';
  return 'other';
}
