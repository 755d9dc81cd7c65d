import { MigrationOutsideTenantError, TenancyConfigurationError, sqlStateOf, type MigrationOutsideTenantObject } from '../errors';
import { LIBRARY_SCHEMA_PREFIX } from '../naming/tenant-slug';
import type { SqlRunner } from '../registry/tenant-registry';

/**
 * How a tenant migration is kept inside its tenant schema (the manager option
 * `migrationGuard`):
 * - `'catalog'`: after each tenant migration, inside its transaction, one
 *   catalog query looks for objects the transaction created or altered
 *   outside the tenant schema. Needs no privilege; cannot see drops.
 * - `'event-trigger'`: two event triggers (`ddl_command_end`, `sql_drop`)
 *   refuse the statement itself, drops included. Installing them needs a
 *   superuser, once per database.
 * - `'off'`: no check.
 */
export type MigrationGuardMode = 'event-trigger' | 'catalog' | 'off';

/**
 * The default `migrationGuard`, as DESIGN decides: the event triggers (no
 * measurable cost; they need a superuser at the first `initialize()` of a
 * database, else a `TenancyConfigurationError` names `'catalog'` and `'off'`).
 */
export const DEFAULT_MIGRATION_GUARD: MigrationGuardMode = 'event-trigger';

const MODES: readonly MigrationGuardMode[] = ['event-trigger', 'catalog', 'off'];

/**
 * The schema of the event-trigger functions. Event triggers belong to the
 * database, not to a manager, so their functions live in one schema of the
 * library's own, the same whatever a manager's shared schema is (two
 * configurations on one database share the triggers): its name starts with
 * the reserved prefix, so no tenant can take it, and no search path names
 * it, so no tenant SQL can shadow or reach it.
 */
export const GUARD_SCHEMA = `${LIBRARY_SCHEMA_PREFIX}guard`;

/**
 * The transaction-local setting that arms the triggers with the schema being
 * migrated. Set with `set_config(..., true)` (`SET LOCAL`), so it ends with
 * the transaction and works behind a transaction pooler.
 */
export const GUARD_SETTING = 'typeorm_tenants.migrating';

/** The SQLSTATE the trigger functions raise (class `TT` is free: implementation-defined). */
export const GUARD_SQLSTATE = 'TT001';

// Versioned names: a new body gets a new function, and initialize() sees the old triggers as missing.
const DDL_FUNCTION = 'ddl_command_end_v3';
const DROP_FUNCTION = 'sql_drop_v3';
const DDL_TRIGGER = `${LIBRARY_SCHEMA_PREFIX}guard_ddl`;
const DROP_TRIGGER = `${LIBRARY_SCHEMA_PREFIX}guard_drop`;

/** Checks the option's value; `undefined` gives the default. */
export function validateMigrationGuard(value: unknown): MigrationGuardMode {
  if (value === undefined) return DEFAULT_MIGRATION_GUARD;
  if (MODES.includes(value as MigrationGuardMode)) return value as MigrationGuardMode;
  throw new TenancyConfigurationError(`Option "migrationGuard" must be 'event-trigger', 'catalog' or 'off'; got ${JSON.stringify(value)}.`);
}

// The two functions do nothing unless the setting names a schema: every other
// DDL statement in the database pays one current_setting() call. Objects in
// pg_temp and pg_toast are the session's or the table's own, never shared.
// Objects outside any schema (a schema, an extension, a cast...) belong to the
// whole database, except the tenant schema itself. GRANT and REVOKE report no
// object to event triggers: they pass (a documented gap).
const DDL_FUNCTION_BODY = `
DECLARE
  target text := current_setting('${GUARD_SETTING}', true);
  r record;
BEGIN
  IF target IS NULL OR target = '' THEN RETURN; END IF;
  FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    -- Moving an object between schemas: the command reports only where it went, so one taken from
    -- the shared schema or another tenant would look like the tenant's own. No tenant migration needs it.
    IF r.command_tag LIKE 'ALTER %' AND current_query() ~* '\\mSET\\s+SCHEMA\\M' THEN
      RAISE EXCEPTION USING ERRCODE = '${GUARD_SQLSTATE}',
        MESSAGE = format('%s ... SET SCHEMA on %s %s, refused by typeorm-tenants: a tenant migration may not move objects between schemas', r.command_tag, r.object_type, r.object_identity),
        DETAIL = json_build_object('action', r.command_tag || ' SET SCHEMA', 'kind', r.object_type, 'schema', r.schema_name, 'identity', r.object_identity)::text,
        HINT = 'Create the object in the tenant instead; shared objects belong in sharedMigrations.';
    END IF;
    -- A tenant table that is a partition or a child of a table outside the tenant puts its rows there.
    IF r.classid = 'pg_class'::regclass AND EXISTS (
         SELECT 1 FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace
          WHERE i.inhrelid = r.objid AND n.nspname <> target) THEN
      RAISE EXCEPTION USING ERRCODE = '${GUARD_SQLSTATE}',
        MESSAGE = format('%s on %s %s makes it a partition or child of a table outside the tenant schema %I, refused by typeorm-tenants', r.command_tag, r.object_type, r.object_identity, target),
        DETAIL = json_build_object('action', r.command_tag || ' (PARTITION OF / INHERITS)', 'kind', r.object_type, 'schema', r.schema_name, 'identity', r.object_identity)::text,
        HINT = 'A tenant table may only inherit from, or be a partition of, a tenant table.';
    END IF;
    IF r.schema_name IS NOT NULL THEN
      CONTINUE WHEN r.schema_name = target OR r.schema_name IN ('pg_temp', 'pg_toast') OR r.schema_name ~ '^pg_(toast_)?temp_';
    ELSIF r.object_type = 'schema' THEN
      CONTINUE WHEN r.object_identity = quote_ident(target);
    ELSIF r.object_type IN ('trigger', 'rule', 'policy') THEN
      -- No schema of their own: their table's (the first of their address names).
      CONTINUE WHEN (pg_identify_object_as_address(r.classid, r.objid, r.objsubid)).object_names[1] = target;
    ELSIF r.object_identity IS NULL THEN
      CONTINUE;
    END IF;
    RAISE EXCEPTION USING ERRCODE = '${GUARD_SQLSTATE}',
      MESSAGE = format('%s on %s %s, outside the tenant schema %I, refused by typeorm-tenants', r.command_tag, r.object_type, r.object_identity, target),
      DETAIL = json_build_object('action', r.command_tag, 'kind', r.object_type, 'schema', r.schema_name, 'identity', r.object_identity)::text,
      HINT = 'A tenant migration may only touch its own schema: write names unqualified, and put shared objects in sharedMigrations.';
  END LOOP;
END`;

// Dropped objects that only depend on a tenant object (internal or automatic
// dependencies, such as the foreign-key triggers a tenant table puts on the
// shared table it references) are neither original nor normal: they go with it.
const DROP_FUNCTION_BODY = `
DECLARE
  target text := current_setting('${GUARD_SETTING}', true);
  r record;
BEGIN
  IF target IS NULL OR target = '' THEN RETURN; END IF;
  FOR r IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
    CONTINUE WHEN NOT (r.original OR r.normal) OR r.is_temporary;
    IF r.schema_name IS NOT NULL THEN
      CONTINUE WHEN r.schema_name = target OR r.schema_name IN ('pg_temp', 'pg_toast') OR r.schema_name ~ '^pg_(toast_)?temp_';
    ELSIF r.object_type = 'schema' THEN
      CONTINUE WHEN r.object_identity = quote_ident(target);
    ELSIF r.object_type IN ('trigger', 'rule', 'policy') THEN
      CONTINUE WHEN r.address_names[1] = target;
    END IF;
    RAISE EXCEPTION USING ERRCODE = '${GUARD_SQLSTATE}',
      MESSAGE = format('DROP of %s %s, outside the tenant schema %I, refused by typeorm-tenants', r.object_type, r.object_identity, target),
      DETAIL = json_build_object('action', 'DROP', 'kind', r.object_type, 'schema', r.schema_name, 'identity', r.object_identity)::text,
      HINT = 'A tenant migration may only touch its own schema: an unqualified name resolves to the shared schema when the tenant has no such object.';
  END LOOP;
END`;

/**
 * At `initialize()`, inside its locked transaction: with `'event-trigger'`,
 * makes sure both event triggers exist, enabled, on the current functions,
 * and creates them (idempotently) when not. Checking needs no privilege, so a
 * role that is not a superuser starts fine once a superuser has run
 * `initialize()` on the database.
 *
 * @throws TenancyConfigurationError when the triggers are missing and the role may not create them.
 */
export async function ensureMigrationGuard(sql: SqlRunner, mode: MigrationGuardMode): Promise<void> {
  if (mode !== 'event-trigger') return;
  const [{ installed }]: Array<{ installed: number }> = await sql.query(
    `SELECT count(*)::int AS installed
       FROM pg_event_trigger e JOIN pg_proc p ON p.oid = e.evtfoid JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE e.evtenabled = 'A' AND n.nspname = $1
        AND ((e.evtname = $2 AND e.evtevent = 'ddl_command_end' AND p.proname = $3)
          OR (e.evtname = $4 AND e.evtevent = 'sql_drop' AND p.proname = $5))`,
    [GUARD_SCHEMA, DDL_TRIGGER, DDL_FUNCTION, DROP_TRIGGER, DROP_FUNCTION],
  );
  if (installed === 2) return;
  const schema = `"${GUARD_SCHEMA}"`;
  try {
    await sql.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await sql.query(`REVOKE ALL ON SCHEMA ${schema} FROM PUBLIC`);
    for (const [name, body] of [
      [DDL_FUNCTION, DDL_FUNCTION_BODY],
      [DROP_FUNCTION, DROP_FUNCTION_BODY],
    ] as const) {
      await sql.query(
        `CREATE OR REPLACE FUNCTION ${schema}."${name}"() RETURNS event_trigger LANGUAGE plpgsql SET search_path = pg_catalog AS $guard$${body}$guard$`,
      );
    }
    await sql.query(`DROP EVENT TRIGGER IF EXISTS "${DDL_TRIGGER}"`);
    await sql.query(`DROP EVENT TRIGGER IF EXISTS "${DROP_TRIGGER}"`);
    await sql.query(`CREATE EVENT TRIGGER "${DDL_TRIGGER}" ON ddl_command_end EXECUTE FUNCTION ${schema}."${DDL_FUNCTION}"()`);
    await sql.query(`CREATE EVENT TRIGGER "${DROP_TRIGGER}" ON sql_drop EXECUTE FUNCTION ${schema}."${DROP_FUNCTION}"()`);
    // ALWAYS: they fire under session_replication_role = replica too, which a migration could otherwise set to pass.
    await sql.query(`ALTER EVENT TRIGGER "${DDL_TRIGGER}" ENABLE ALWAYS`);
    await sql.query(`ALTER EVENT TRIGGER "${DROP_TRIGGER}" ENABLE ALWAYS`);
  } catch (error) {
    if (sqlStateOf(error) !== '42501') throw error;
    throw new TenancyConfigurationError(
      `Option "migrationGuard" is 'event-trigger', but the connecting role may not create event triggers (PostgreSQL requires a superuser): ` +
        `${error instanceof Error ? error.message : String(error)}. Have a superuser run initialize() once on this database (the triggers then serve every role), ` +
        `or set migrationGuard: 'catalog' (no superuser needed; cannot see drops) or 'off'.`,
      { cause: error },
    );
  }
}

/**
 * The SQL that arms the event triggers for `schemaName` in this transaction
 * (with the search path, in the statement that sets it), and the one that
 * disarms them once the migrations are done, so the library's own work
 * after them in the same transaction (role grants, the seed hook) is not
 * taken for a migration's.
 */
export const ARM_GUARD_SQL = `SELECT set_config('search_path', $1, true), set_config('${GUARD_SETTING}', $2, true)`;
export const DISARM_GUARD_SQL = `SELECT set_config('${GUARD_SETTING}', '', true)`;

/**
 * `'catalog'`: the search path, and JIT off for the transaction (the check's
 * many-branch plan is estimated expensive enough for JIT, which then costs
 * 0.1 to 3 s per check, a hundred times the query). The first column is the
 * JIT setting to restore once the migrations are done.
 */
export const CATALOG_PREPARE_SQL = `SELECT current_setting('jit') AS jit, set_config('search_path', $1, true), set_config('jit', 'off', true)`;
export const CATALOG_RESTORE_SQL = `SELECT set_config('jit', $1, true)`;

/**
 * The `MigrationOutsideTenantError` of an error the event triggers raised
 * (their SQLSTATE), else `undefined`.
 */
export function guardErrorOf(error: unknown, migration: string | undefined, schemaName: string): MigrationOutsideTenantError | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth += 1) {
    if (sqlStateOf(current) === GUARD_SQLSTATE) {
      const detail = (current as { detail?: unknown }).detail;
      let parsed: { action?: string; kind?: string; schema?: string | null; identity?: string } = {};
      try {
        parsed = typeof detail === 'string' ? JSON.parse(detail) : {};
      } catch {
        // a DETAIL that is not ours: keep the message
      }
      const object: MigrationOutsideTenantObject = {
        kind: parsed.kind ?? 'object',
        schema: parsed.schema ?? null,
        name: unqualified(parsed.identity ?? '?', parsed.schema ?? null),
      };
      return new MigrationOutsideTenantError(migration, schemaName, parsed.action ?? 'DDL', [object], { cause: error });
    }
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** `public.f(integer)` → `f(integer)`; a trigger's identity (`t on public.x`) stays whole. */
function unqualified(identity: string, schema: string | null): string {
  if (schema === null) return identity;
  for (const prefix of [`${schema}.`, `"${schema.replace(/"/g, '""')}".`]) {
    if (identity.startsWith(prefix)) return identity.slice(prefix.length);
  }
  return identity;
}

// A row is this transaction's when its xmin is the transaction's id: every
// statement outside a savepoint writes with the top-level id. A savepoint's
// writes carry a later subtransaction id; such a row is recognised when the
// statement's snapshot already lies past it (another transaction finished
// since): a visible row whose writer is still in progress can only be ours
// (MVCC). The 32-bit xmin is widened with the epoch of the top-level id.
// A newer subtransaction id is missed (documented; the event triggers see it):
// telling it apart from the raw xmin of an ancient frozen row would need the
// server's next transaction id, which SQL cannot read.
function ours(xmin: string): string {
  const low = `${xmin}::text::bigint`;
  const full = `(me.top + ((${low} - me.top % 4294967296 + 4294967296) % 4294967296))`;
  return `(${low} = me.top % 4294967296 OR (${full} > me.top AND ${full} < me.next AND txid_status(${full}) = 'in progress'))`;
}

/** Whether relation `c` was created by this transaction (its row type is ours; false when `c` is null). */
function isNew(c: string): string {
  return `coalesce((SELECT ${ours('rt.xmin')} FROM pg_type rt WHERE rt.oid = ${c}.reltype), false)`;
}

/**
 * One query over the catalogs: objects the current transaction created or
 * altered outside schema `$1`. Relations, types, functions, schemas,
 * constraints, triggers, enum values, operators, collations, policies,
 * rules, sequences and extensions by scanning their catalog rows; columns and
 * column defaults only of the relations this transaction holds a lock on
 * (every ALTER TABLE takes one; scanning pg_attribute would cost ten times
 * pg_class). Drops leave no row and are not seen.
 */
const CATALOG_CHECK_SQL = `
WITH me AS (
  SELECT txid_current() AS top, txid_snapshot_xmax(txid_current_snapshot()) AS next, $1::text AS tenant
),
outside AS (
  SELECT n.oid, n.nspname::text AS nspname FROM pg_namespace n, me
   WHERE n.nspname <> me.tenant AND n.nspname <> 'pg_toast' AND n.nspname !~ '^pg_(toast_)?temp_'
),
locked AS (
  SELECT DISTINCT l.relation AS oid FROM pg_locks l
   WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation'
     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
),
found AS (
  SELECT 1 AS rank, 'schema' AS kind, NULL::text AS schema, n.nspname::text AS name, NULL::text AS parent
    FROM pg_namespace n, me WHERE n.nspname <> me.tenant AND n.nspname !~ '^pg_(toast_)?temp_' AND ${ours('n.xmin')}
  UNION ALL
  SELECT 3, CASE c.relkind WHEN 'i' THEN 'index' WHEN 'I' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view'
              WHEN 'm' THEN 'materialized view' WHEN 'c' THEN 'type' WHEN 'f' THEN 'foreign table' ELSE 'table' END,
         o.nspname, c.relname::text, NULL
    FROM pg_class c JOIN outside o ON o.oid = c.relnamespace, me
   WHERE ${ours('c.xmin')}
     -- A tenant table's new foreign key marks the shared table it references
     -- as having triggers (its pg_class row is rewritten once): not a change
     -- of the shared table, unless the table is new (its row type is ours too).
     AND NOT (c.relkind IN ('r', 'p')
              AND NOT ${isNew('c')}
              AND EXISTS (SELECT 1 FROM pg_trigger tg JOIN pg_constraint k ON k.oid = tg.tgconstraint
                                  JOIN pg_namespace kn ON kn.oid = k.connamespace
                           WHERE tg.tgrelid = c.oid AND tg.tgisinternal AND kn.nspname = me.tenant AND ${ours('tg.xmin')}))
  UNION ALL
  SELECT 2, 'column', o.nspname, c.relname || '.' || a.attname, c.relname::text
    FROM locked l JOIN pg_class c ON c.oid = l.oid JOIN outside o ON o.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid, me
   WHERE a.attnum > 0 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND ${ours('a.xmin')}
     AND NOT ${isNew('c')}
  UNION ALL
  SELECT 2, 'column default', o.nspname, c.relname || '.' || a.attname, c.relname::text
    FROM locked l JOIN pg_class c ON c.oid = l.oid JOIN outside o ON o.oid = c.relnamespace
    JOIN pg_attrdef d ON d.adrelid = c.oid JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum, me
   WHERE ${ours('d.xmin')} AND NOT ${isNew('c')}
  UNION ALL
  SELECT 2, 'constraint', o.nspname, k.conname || ' on ' || coalesce(c.relname::text, ty.typname::text), coalesce(c.relname::text, ty.typname::text)
    FROM pg_constraint k JOIN outside o ON o.oid = k.connamespace
    LEFT JOIN pg_class c ON c.oid = k.conrelid LEFT JOIN pg_type ty ON ty.oid = k.contypid, me
   WHERE ${ours('k.xmin')} AND NOT ${isNew('c')} AND NOT coalesce(${ours('ty.xmin')}, false)
  UNION ALL
  SELECT 2, 'trigger', o.nspname, tg.tgname || ' on ' || c.relname, c.relname::text
    FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN outside o ON o.oid = c.relnamespace, me
   WHERE NOT tg.tgisinternal AND ${ours('tg.xmin')} AND NOT ${isNew('c')}
  UNION ALL
  SELECT 2, 'policy', o.nspname, p.polname || ' on ' || c.relname, c.relname::text
    FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN outside o ON o.oid = c.relnamespace, me
   WHERE ${ours('p.xmin')} AND NOT ${isNew('c')}
  UNION ALL
  SELECT 2, 'rule', o.nspname, r.rulename || ' on ' || c.relname, c.relname::text
    FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN outside o ON o.oid = c.relnamespace, me
   WHERE r.rulename <> '_RETURN' AND ${ours('r.xmin')} AND NOT ${isNew('c')}
  UNION ALL
  SELECT 3, 'sequence', o.nspname, c.relname::text, NULL
    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN outside o ON o.oid = c.relnamespace, me
   WHERE ${ours('s.xmin')}
  UNION ALL
  SELECT 4, 'type', o.nspname, t.typname::text, NULL
    FROM pg_type t JOIN outside o ON o.oid = t.typnamespace, me
   WHERE ${ours('t.xmin')}
     AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.oid = t.typelem AND e.typarray = t.oid)
  UNION ALL
  SELECT 2, 'enum value', o.nspname, t.typname || '.' || e.enumlabel, t.typname::text
    FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid JOIN outside o ON o.oid = t.typnamespace, me
   WHERE ${ours('e.xmin')} AND NOT ${ours('t.xmin')}
  UNION ALL
  SELECT 3, CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
         o.nspname, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', NULL
    FROM pg_proc p JOIN outside o ON o.oid = p.pronamespace, me
   WHERE ${ours('p.xmin')}
  UNION ALL
  SELECT 3, 'operator', o.nspname, p.oprname::text, NULL
    FROM pg_operator p JOIN outside o ON o.oid = p.oprnamespace, me
   WHERE ${ours('p.xmin')}
  UNION ALL
  SELECT 3, 'collation', o.nspname, c.collname::text, NULL
    FROM pg_collation c JOIN outside o ON o.oid = c.collnamespace, me
   WHERE ${ours('c.xmin')}
  UNION ALL
  SELECT 1, 'extension', NULL, x.extname::text, NULL
    FROM pg_extension x, me WHERE ${ours('x.xmin')}
)
SELECT DISTINCT kind, schema, name, parent, rank FROM found ORDER BY rank, schema, name LIMIT 20`;

/**
 * `'event-trigger'`, after each migration: the guard is still armed for
 * `schemaName` and ordinary replication role is in force. A migration that
 * disarmed it (`set_config`, `RESET ALL`), aimed it at another schema, or set
 * `session_replication_role` is refused. (One that disarms, does its damage
 * and re-arms cannot be caught from the same session: the guard is against
 * mistakes, not against a hostile migration.)
 *
 * @throws MigrationOutsideTenantError naming the migration and the setting.
 */
export async function checkArmed(sql: SqlRunner, schemaName: string, migration: string): Promise<void> {
  const [row] = (await sql.query(
    `SELECT current_setting('${GUARD_SETTING}', true) AS armed, current_setting('session_replication_role') AS replication`,
  )) as Array<{ armed: string | null; replication: string }>;
  if (row!.armed === schemaName && row!.replication === 'origin') return;
  const setting = row!.armed === schemaName ? 'session_replication_role' : GUARD_SETTING;
  throw new MigrationOutsideTenantError(migration, schemaName, 'changed', [{ kind: 'setting', schema: null, name: setting }]);
}

/**
 * `'catalog'`: after migration `migration` ran in the open transaction of
 * `sql`, refuses what the transaction created or altered outside
 * `schemaName` (see `CATALOG_CHECK_SQL`).
 *
 * @throws MigrationOutsideTenantError naming the migration and the objects.
 */
export async function checkCatalog(sql: SqlRunner, schemaName: string, migration: string): Promise<void> {
  const rows: Array<{ kind: string; schema: string | null; name: string; parent: string | null }> = await sql.query(CATALOG_CHECK_SQL, [schemaName]);
  if (rows.length === 0) return;
  // A column, constraint or trigger of a shared table also rewrites the
  // table's own row: name the finer object only. A table's row type is the table.
  const finer = new Set(rows.filter((r) => r.parent !== null).map((r) => `${r.schema}\0${r.parent}`));
  const relations = new Set(rows.filter((r) => r.kind !== 'type' && r.parent === null).map((r) => `${r.schema}\0${r.name}`));
  const objects = rows
    .filter((r) => !(r.parent === null && finer.has(`${r.schema}\0${r.name}`)))
    .filter((r) => !(r.kind === 'type' && relations.has(`${r.schema}\0${r.name}`)))
    .map((r) => ({ kind: r.kind, schema: r.schema, name: r.name }));
  throw new MigrationOutsideTenantError(migration, schemaName, 'created or altered', objects);
}

/** Exposed for the benchmark in the tests: the catalog query, as sent. */
export const CATALOG_CHECK_QUERY = CATALOG_CHECK_SQL;
