import { Pool, type PoolConfig } from 'pg';

/** A name with a numeric suffix, as Citus names a shard (`client_102016`) or a shard's constraint (`email_lower_102016`). */
const SUFFIXED_NAME = /\b([A-Za-z_][A-Za-z0-9_$]*?)_(\d+)\b/g;

/** The fields of a PostgreSQL error (and of TypeORM's `QueryFailedError`, which copies them) that name relations or constraints. */
const NAMING_FIELDS = ['message', 'detail', 'constraint', 'table', 'hint', 'where'] as const;

/** What a shard id's table is called, with its constraints' and indexes' names: the names Citus suffixes with the shard id. */
const SHARD_NAMES_SQL = `
  SELECT s.shardid::text AS id, c.relname AS name, 'table' AS kind FROM pg_dist_shard s JOIN pg_class c ON c.oid = s.logicalrelid WHERE s.shardid = ANY($1::bigint[])
  UNION ALL
  SELECT s.shardid::text, k.conname, 'constraint' FROM pg_dist_shard s JOIN pg_constraint k ON k.conrelid = s.logicalrelid WHERE s.shardid = ANY($1::bigint[])
  UNION ALL
  SELECT s.shardid::text, x.relname, 'index' FROM pg_dist_shard s JOIN pg_index i ON i.indrelid = s.logicalrelid JOIN pg_class x ON x.oid = i.indexrelid
   WHERE s.shardid = ANY($1::bigint[])`;

/** Renames the shards an error names; `close()` ends its connection. */
export interface ShardNameRenamer {
  (error: unknown): Promise<void>;
  close(): Promise<void>;
}

/**
 * Errors a worker relays through the coordinator name the shards
 * (`new row for relation "client_102016" violates check constraint
 * "email_lower_102016"`): returns the function that renames them, in place,
 * to the tenant's tables and constraints (`"client"`, `"email_lower"`).
 * `name_<n>` is renamed only when `pg_dist_shard` has shard `n` and `name`
 * is its table's name, one of its constraints' or indexes', or begins with
 * its table's name and `_` as the names PostgreSQL derives do (an index
 * whose creation failed is in no catalog); a value quoted in the error,
 * such as `Key (code)=(batch_102016)`, or a table really called
 * `order_2024`, keeps its text. The lookup runs on a
 * connection of its own (one, opened on the first error and closed after a
 * second idle), never on the pool the failed statement holds a connection
 * of: a pool of one would otherwise wait for itself. The error keeps its
 * class, SQLSTATE and cause; when the lookup itself fails, the error is
 * left as it came.
 */
export function shardNameRenamer(config: PoolConfig): ShardNameRenamer {
  let lookups: Pool | undefined;
  const rename = async (error: unknown): Promise<void> => {
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
    let names: Map<string, Set<string>>;
    const tables = new Map<string, string>();
    try {
      lookups ??= openLookups(config);
      const { rows } = await lookups.query<{ id: string; name: string; kind: string }>(SHARD_NAMES_SQL, [[...ids]]);
      names = new Map();
      for (const row of rows) {
        if (row.kind === 'table') tables.set(row.id, row.name);
        const known = names.get(row.id) ?? new Set<string>();
        known.add(row.name);
        names.set(row.id, known);
      }
    } catch {
      return; // the error as it came is still the one to report
    }
    if (names.size === 0) return;
    // A name of the shard's table, or one PostgreSQL derives from it (`client_name_key`: an index whose creation failed is in no catalog).
    const isShards = (name: string, id: string): boolean => {
      const known = names.get(id);
      if (known === undefined) return false;
      if (known.has(name)) return true;
      const table = tables.get(id);
      return table !== undefined && name.startsWith(`${table}_`);
    };
    const renamed = (text: string): string => text.replace(SUFFIXED_NAME, (whole, name: string, id: string) => (isShards(name, id) ? name : whole));
    for (const target of targets) {
      const before = target.message;
      for (const field of NAMING_FIELDS) {
        const value = target[field];
        if (typeof value === 'string') target[field] = renamed(value);
      }
      if (typeof before === 'string' && typeof target.stack === 'string') target.stack = target.stack.replace(before, target.message as string);
    }
  };
  return Object.assign(rename, {
    close: async (): Promise<void> => {
      const pool = lookups;
      lookups = undefined;
      if (pool !== undefined) await pool.end();
    },
  });
}

function openLookups(config: PoolConfig): Pool {
  const pool = new Pool({ ...config, max: 1, idleTimeoutMillis: 1_000, allowExitOnIdle: true, application_name: 'typeorm-tenants shard names' });
  pool.on('error', () => undefined); // an idle lookup connection that fails is opened again at the next error
  return pool;
}
