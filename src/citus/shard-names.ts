import type { Pool } from 'pg';

/** A name with a numeric suffix, as Citus names a shard (`client_102016`) or a shard's constraint (`email_lower_102016`). */
const SUFFIXED_NAME = /\b([A-Za-z_][A-Za-z0-9_$]*?)_(\d+)\b/g;

/** The fields of a PostgreSQL error (and of TypeORM's `QueryFailedError`, which copies them) that name relations or constraints. */
const NAMING_FIELDS = ['message', 'detail', 'constraint', 'table', 'hint', 'where'] as const;

/**
 * Errors a worker relays through the coordinator name the shards
 * (`new row for relation "client_102016" violates check constraint
 * "email_lower_102016"`): returns the function that renames them, in place,
 * to the tenant's tables and constraints (`"client"`, `"email_lower"`). A
 * suffix counts as a shard's only when `pg_dist_shard` has that shard id
 * (asked on a connection of `pool`, never on the failed transaction's), so
 * a table that is really called `order_2024` keeps its name. The error keeps
 * its class, SQLSTATE and cause; when the lookup itself fails, the error is
 * left as it came.
 */
export function shardNameRenamer(pool: Pool): (error: unknown) => Promise<void> {
  return async (error) => {
    if (typeof error !== 'object' || error === null) return;
    const targets = [error as Record<string, unknown>];
    const driverError = (error as { driverError?: unknown }).driverError;
    if (typeof driverError === 'object' && driverError !== null && driverError !== error) targets.push(driverError as Record<string, unknown>);
    const ids = new Set<string>();
    for (const target of targets) {
      for (const field of NAMING_FIELDS) {
        const value = target[field];
        if (typeof value === 'string') for (const match of value.matchAll(SUFFIXED_NAME)) ids.add(match[2]!);
      }
    }
    if (ids.size === 0) return;
    let shards: Set<string>;
    try {
      const { rows } = await pool.query<{ id: string }>('SELECT shardid::text AS id FROM pg_dist_shard WHERE shardid = ANY($1::bigint[])', [[...ids]]);
      shards = new Set(rows.map((row) => row.id));
    } catch {
      return; // the error as it came is still the one to report
    }
    if (shards.size === 0) return;
    const rename = (text: string): string => text.replace(SUFFIXED_NAME, (whole, name: string, id: string) => (shards.has(id) ? name : whole));
    for (const target of targets) {
      const before = target.message;
      for (const field of NAMING_FIELDS) {
        const value = target[field];
        if (typeof value === 'string') target[field] = rename(value);
      }
      if (typeof before === 'string' && typeof target.stack === 'string') target.stack = target.stack.replace(before, target.message as string);
    }
  };
}
