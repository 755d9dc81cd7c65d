import { quoteIdent } from '../naming/quote-ident';
import type { SqlRunner } from '../registry/tenant-registry';

/** A table of a tenant schema whose rows a tenant archive carries. */
export interface TenantTable {
  readonly name: string;
  /** The columns written and read, in `attnum` order; generated columns are left out (PostgreSQL computes them). */
  readonly columns: readonly string[];
  /** Whether the table has triggers of its own (not constraint triggers): they are disabled while its rows are loaded. */
  readonly hasUserTriggers: boolean;
}

/** A sequence of a tenant schema, with the value the next `nextval()` continues from. */
export interface TenantSequence {
  readonly name: string;
  /** `last_value`, as text (a bigint). */
  readonly lastValue: string;
  readonly isCalled: boolean;
}

/** Row count and an order-independent checksum of a table's rows. */
export interface TableChecksum {
  /** A bigint, as text. */
  readonly rows: string;
  /** The sum of the first 60 bits of each row's MD5, as text: equal rows in any order give the same sum. */
  readonly checksum: string;
}

/**
 * Settings that fix how values are written as text (COPY's output and the
 * checksums), so that both ends of a copy produce the same text for the same
 * value. Set for the transaction only.
 */
export const COPY_TEXT_SETTINGS: readonly string[] = Object.freeze([
  "SET LOCAL TimeZone TO 'UTC'",
  "SET LOCAL DateStyle TO 'ISO, YMD'",
  "SET LOCAL IntervalStyle TO 'postgres'",
  'SET LOCAL extra_float_digits TO 1',
  "SET LOCAL bytea_output TO 'hex'",
]);

/** Puts the settings of `COPY_TEXT_SETTINGS` back to the connection's defaults for the rest of the transaction. */
export const COPY_TEXT_RESETS: readonly string[] = Object.freeze(
  ['TimeZone', 'DateStyle', 'IntervalStyle', 'extra_float_digits', 'bytea_output'].map((name) => `SET LOCAL ${name} TO DEFAULT`),
);

/**
 * The plain tables of `schema` whose rows belong to the tenant, in an order
 * in which their rows can be loaded (a table after those its foreign keys
 * reference), leaving out the tables the tenant migrations fill themselves
 * (`excluded`: TypeORM's migrations and metadata tables).
 *
 * @throws Error naming the tables when their foreign keys form a cycle (no load order exists).
 */
export async function tenantTables(sql: SqlRunner, schema: string, excluded: readonly string[]): Promise<TenantTable[]> {
  const rows: Array<{ oid: number; name: string; columns: string[] | null; triggers: boolean }> = await sql.query(
    `SELECT c.oid::int AS oid, c.relname AS name,
            (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') AS columns,
            EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal) AS triggers
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind = 'r' AND NOT (c.relname = ANY($2::text[]))
      ORDER BY c.relname`,
    [schema, [...excluded]],
  );
  const keys: Array<{ child: number; parent: number }> = await sql.query(
    `SELECT DISTINCT conrelid::int AS child, confrelid::int AS parent FROM pg_constraint
      WHERE contype = 'f' AND conrelid <> confrelid AND conrelid = ANY($1::oid[]) AND confrelid = ANY($1::oid[])`,
    [rows.map((r) => r.oid)],
  );
  const parents = new Map<number, Set<number>>(rows.map((r) => [r.oid, new Set<number>()]));
  for (const { child, parent } of keys) parents.get(child)!.add(parent);
  const ordered: TenantTable[] = [];
  const placed = new Set<number>();
  while (placed.size < rows.length) {
    // By name among the tables whose parents are placed: the same order on every run.
    const ready = rows.find((r) => !placed.has(r.oid) && [...parents.get(r.oid)!].every((p) => placed.has(p)));
    if (ready === undefined) {
      const cycle = rows.filter((r) => !placed.has(r.oid)).map((r) => `"${r.name}"`);
      throw new Error(
        `The foreign keys of tables ${cycle.join(', ')} of schema "${schema}" form a cycle, so no order can load their rows one table after another.`,
      );
    }
    placed.add(ready.oid);
    ordered.push({ name: ready.name, columns: Object.freeze(ready.columns ?? []), hasUserTriggers: ready.triggers });
  }
  return ordered;
}

/** The sequences of `schema` and where each stands. */
export async function tenantSequences(sql: SqlRunner, schema: string): Promise<TenantSequence[]> {
  const names: Array<{ name: string }> = await sql.query(
    `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind = 'S' ORDER BY c.relname`,
    [schema],
  );
  const sequences: TenantSequence[] = [];
  for (const { name } of names) {
    const [state] = (await sql.query(`SELECT last_value::text AS value, is_called AS called FROM ${qualified(schema, name)}`)) as Array<{
      value: string;
      called: boolean;
    }>;
    sequences.push({ name, lastValue: state!.value, isCalled: state!.called });
  }
  return sequences;
}

/** Row count and checksum of `table`'s `columns` (under `COPY_TEXT_SETTINGS`, so both ends of a copy agree). */
export async function tableChecksum(sql: SqlRunner, schema: string, table: string, columns: readonly string[]): Promise<TableChecksum> {
  const row = columns.length === 0 ? "''" : `ROW(${columns.map(quoteIdent).join(', ')})::text`;
  const [result] = (await sql.query(
    `SELECT count(*)::text AS rows,
            coalesce(sum(('x' || substr(md5(${row}), 1, 15))::bit(60)::bigint), 0)::text AS checksum
       FROM ${qualified(schema, table)}`,
  )) as Array<{ rows: string; checksum: string }>;
  return { rows: result!.rows, checksum: result!.checksum };
}

/** `"schema"."name"`. */
export function qualified(schema: string, name: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(name)}`;
}
