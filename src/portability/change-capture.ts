import { LIBRARY_SCHEMA_PREFIX } from '../naming/tenant-slug';
import { quoteIdent, quoteLiteral } from '../naming/quote-ident';
import type { SqlRunner } from '../registry/tenant-registry';
import { qualified } from './tenant-tables';

/**
 * The library's schema on a server for moves in progress: the table of the
 * tables each move saw written, and the trigger function that notes them.
 * Under the reserved prefix: no tenant can take the name, and no tenant
 * role has rights in it.
 */
const MOVES_SCHEMA = `${LIBRARY_SCHEMA_PREFIX}moves`;
const TOUCHED = `${quoteIdent(MOVES_SCHEMA)}.touched`;
const TOUCH_FUNCTION = `${quoteIdent(MOVES_SCHEMA)}.touch`;
/** The name of every capture trigger begins with this. */
const TRIGGER_PREFIX = `${LIBRARY_SCHEMA_PREFIX}move_`;

/**
 * Starts noting which tables of `schemaName` are written from now on, for
 * the move `moveId`: a statement-level trigger on each of its tables
 * (partitioned ones included) records the table's name once, through a
 * `SECURITY DEFINER` function, so writes of a tenant role are noted too.
 * Run it in a transaction of its own and commit it before the move's
 * snapshot is taken: creating a trigger waits for the writers of its table,
 * so every write is either in the snapshot or noted. Capture triggers an
 * earlier move left (it crashed) are dropped first.
 */
export async function startChangeCapture(sql: SqlRunner, schemaName: string, moveId: string): Promise<void> {
  // One server-wide lock for the setup: moves of several tenants set it up at once otherwise, and DDL of the same objects collides.
  await sql.query(`SELECT pg_advisory_xact_lock(hashtextextended('typeorm-tenants:moves-setup', 0))`);
  await sql.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(MOVES_SCHEMA)}`);
  await sql.query(`REVOKE ALL ON SCHEMA ${quoteIdent(MOVES_SCHEMA)} FROM PUBLIC`);
  // No unique key: a note never waits for another writer's uncommitted note of the same table (duplicates are harmless).
  await sql.query(`CREATE TABLE IF NOT EXISTS ${TOUCHED} (move_id text NOT NULL, table_name text NOT NULL)`);
  await sql.query(`CREATE INDEX IF NOT EXISTS touched_move ON ${TOUCHED} (move_id, table_name)`);
  await sql.query(
    `CREATE OR REPLACE FUNCTION ${TOUCH_FUNCTION}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
     BEGIN
       -- Once per table and move as far as this transaction sees: a write is noted even while another writer's note is not committed.
       IF NOT EXISTS (SELECT 1 FROM ${TOUCHED} WHERE move_id = TG_ARGV[0] AND table_name = TG_TABLE_NAME) THEN
         INSERT INTO ${TOUCHED} (move_id, table_name) VALUES (TG_ARGV[0], TG_TABLE_NAME);
       END IF;
       RETURN NULL;
     END
     $body$`,
  );
  await sql.query(`REVOKE ALL ON FUNCTION ${TOUCH_FUNCTION}() FROM PUBLIC`);
  await stopChangeCapture(sql, schemaName);
  for (const table of await capturedTables(sql, schemaName)) {
    await sql.query(
      `CREATE TRIGGER ${quoteIdent(`${TRIGGER_PREFIX}${moveId}`)} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${qualified(schemaName, table)}
       FOR EACH STATEMENT EXECUTE FUNCTION ${TOUCH_FUNCTION}(${quoteLiteral(moveId)})`,
    );
  }
}

/**
 * The tables of `schemaName` written since `startChangeCapture` (call it
 * with the tables locked against writes). A partitioned table written
 * through its parent is named by the parent; `tablesOf` gives its
 * partitions.
 */
export async function changedTables(sql: SqlRunner, moveId: string): Promise<string[]> {
  const rows: Array<{ name: string }> = await sql.query(`SELECT DISTINCT table_name AS name FROM ${TOUCHED} WHERE move_id = $1 ORDER BY 1`, [moveId]);
  return rows.map((row) => row.name);
}

/**
 * The move's capture triggers as the catalog holds them: each table's
 * trigger row version (`xmin`, which every `ALTER TABLE ... DISABLE` or
 * `ENABLE TRIGGER` and every re-creation changes) and state, and every
 * table without one. Taken once the capture committed and again under the
 * freeze: any difference means writes may have gone unnoted (the tenant's
 * own SQL turned a trigger off, even if it turned it on again), and the
 * caller then copies every table again.
 */
export async function captureFingerprint(sql: SqlRunner, schemaName: string, moveId: string): Promise<string> {
  const [{ fingerprint }] = (await sql.query(
    `SELECT coalesce(string_agg(c.oid::text || ':' || coalesce(t.xmin::text || ':' || t.tgenabled::text, 'none'), ',' ORDER BY c.oid), '') AS fingerprint
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_trigger t ON t.tgrelid = c.oid AND t.tgname = $2
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')`,
    [schemaName, `${TRIGGER_PREFIX}${moveId}`],
  )) as Array<{ fingerprint: string }>;
  return fingerprint;
}

/** Every plain and partitioned table of `schemaName`: what the freeze locks, and what is copied again when the capture cannot be trusted. */
export function allCapturedTables(sql: SqlRunner, schemaName: string): Promise<string[]> {
  return capturedTables(sql, schemaName);
}

/**
 * Drops every capture trigger of `schemaName`'s tables (none without a
 * schema), and the notes of their moves and of `moveId`.
 */
export async function stopChangeCapture(sql: SqlRunner, schemaName: string | undefined, moveId?: string): Promise<void> {
  if (moveId !== undefined) await sql.query(`DELETE FROM ${TOUCHED} WHERE move_id = $1`, [moveId]);
  if (schemaName === undefined) return;
  const triggers: Array<{ table: string; trigger: string }> = await sql.query(
    `SELECT c.relname AS "table", t.tgname AS trigger FROM pg_trigger t
       JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND NOT t.tgisinternal AND starts_with(t.tgname, $2)`,
    [schemaName, TRIGGER_PREFIX],
  );
  for (const { table, trigger } of triggers) {
    await sql.query(`DROP TRIGGER ${quoteIdent(trigger)} ON ${qualified(schemaName, table)}`);
    await sql.query(`DELETE FROM ${TOUCHED} WHERE move_id = $1`, [trigger.slice(TRIGGER_PREFIX.length)]);
  }
}

/** The plain and partitioned tables of `schemaName`. */
async function capturedTables(sql: SqlRunner, schemaName: string): Promise<string[]> {
  const rows: Array<{ name: string }> = await sql.query(
    `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1`,
    [schemaName],
  );
  return rows.map((row) => row.name);
}

/**
 * The tables to copy again once `changed` were written: those, the
 * partitions of a partitioned one among them, and every table whose
 * foreign keys reference one of those, transitively (emptying a table
 * others reference empties them too).
 */
export async function tablesToRecopy(sql: SqlRunner, schemaName: string, changed: readonly string[]): Promise<Set<string>> {
  if (changed.length === 0) return new Set();
  const rows: Array<{ name: string }> = await sql.query(
    `WITH RECURSIVE
       tables AS (SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')),
       -- parent -> child: a partitioned table and its partitions, a referenced table and those whose foreign keys reference it
       edges AS (SELECT inhparent AS parent, inhrelid AS child FROM pg_inherits
                 UNION ALL SELECT confrelid, conrelid FROM pg_constraint WHERE contype = 'f'),
       hit AS (
         SELECT t.oid FROM tables t WHERE t.relname = ANY($2::text[])
         UNION
         SELECT e.child FROM edges e JOIN hit ON e.parent = hit.oid
       )
     SELECT t.relname AS name FROM tables t JOIN hit ON hit.oid = t.oid ORDER BY 1`,
    [schemaName, [...changed]],
  );
  return new Set(rows.map((row) => row.name));
}
