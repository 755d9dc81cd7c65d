import { Client as PgClient } from 'pg';
import { expect } from 'chai';
import { tenantContext, type TenantDataSourceManager } from '../../src';
import { sleep } from '../support/fixtures';
import type { ServerDatabase } from '../support/second-server';

/** How the moved copies a move leaves on a server are named. */
export const MOVED_NAME = /^typeorm_tenants_moved_[0-9a-f]+_\d{14}$/;

/** The moved copies on a server (schemas of the library's reserved `moved` prefix), with their marks. */
export async function movedCopiesOn(db: ServerDatabase): Promise<Array<{ schema: string; mark: string | null }>> {
  return db.query<{ schema: string; mark: string | null }>(
    `SELECT nspname AS schema, obj_description(oid, 'pg_namespace') AS mark FROM pg_namespace
      WHERE nspname LIKE 'typeorm\\_tenants\\_moved\\_%' ORDER BY nspname`,
  );
}

/**
 * The schemas of a server that hold tenant data: every schema but
 * PostgreSQL's own, `public`, the manager's extensions schema and the
 * library's own (`typeorm_tenants_*`), moved copies and archives included.
 */
export async function userSchemasOn(db: ServerDatabase): Promise<string[]> {
  const rows = await db.query<{ name: string }>(
    `SELECT nspname AS name FROM pg_namespace
      WHERE nspname NOT IN ('public', 'information_schema', 'extensions') AND nspname NOT LIKE 'pg\\_%'
        AND (nspname NOT LIKE 'typeorm\\_tenants\\_%' OR nspname LIKE 'typeorm\\_tenants\\_moved\\_%' OR nspname LIKE 'typeorm\\_tenants\\_archive\\_%')
      ORDER BY nspname`,
  );
  return rows.map((row) => row.name);
}

/** Triggers that are not PostgreSQL's own (foreign keys) on the tables of a schema: a move's capture triggers left behind show here. */
export async function userTriggersOn(db: ServerDatabase, schema: string): Promise<string[]> {
  const rows = await db.query<{ name: string }>(
    `SELECT c.relname || '.' || t.tgname AS name FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND NOT t.tgisinternal ORDER BY 1`,
    [schema],
  );
  return rows.map((row) => row.name);
}

/** The notes of moves in progress the library keeps on a server (none once every move ended), or 0 when it has none. */
export async function moveNotesOn(db: ServerDatabase): Promise<number> {
  const [{ found }] = (await db.query<{ found: boolean }>("SELECT to_regclass('typeorm_tenants_moves.touched') IS NOT NULL AS found")) as [{ found: boolean }];
  if (!found) return 0;
  const [row] = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM typeorm_tenants_moves.touched');
  return row!.n;
}

/** A table's full content, read on the server: row count and md5 of every row's text in id order. */
export async function fingerprint(db: ServerDatabase, schema: string, table: string): Promise<{ rows: number; md5: string }> {
  const [row] = await db.query<{ rows: number; md5: string }>(
    `SELECT count(*)::int AS rows, md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t.id), '')) AS md5 FROM "${schema}"."${table}" t`,
  );
  return row!;
}

/** Fingerprints of the tenant tables of the example model (client, project). */
export async function tenantFingerprint(db: ServerDatabase, schema: string): Promise<Record<string, { rows: number; md5: string }>> {
  return { client: await fingerprint(db, schema, 'client'), project: await fingerprint(db, schema, 'project') };
}

/** A sequence's last value and is_called flag, read on the server. */
export async function sequenceState(db: ServerDatabase, schema: string, sequence: string): Promise<{ last: number; called: boolean }> {
  const [row] = await db.query<{ last: number; called: boolean }>(`SELECT last_value::int AS last, is_called AS called FROM "${schema}"."${sequence}"`);
  return row!;
}

/** The registry row's server column on the home server (`null`: the home server). */
export async function registryServer(home: ServerDatabase, slug: string): Promise<string | null | undefined> {
  const rows = await home.query<{ server: string | null }>('SELECT server FROM public.tenants WHERE slug = $1', [slug]);
  return rows.length === 0 ? undefined : rows[0]!.server;
}

/** The registry's identity, from its table's comment on the home server. */
export async function registryId(home: ServerDatabase): Promise<string> {
  const [row] = await home.query<{ comment: string }>("SELECT obj_description('public.tenants'::regclass, 'pg_class') AS comment");
  expect(row!.comment).to.match(/^typeorm-tenants registry /);
  return row!.comment.slice('typeorm-tenants registry '.length);
}

/** The mark a move leaves on the former schema. */
export function movedMark(id: string, slug: string, to: string, keep: boolean): string {
  return `typeorm-tenants: moved copy of tenant ${JSON.stringify(slug)} of registry ${id} to server ${JSON.stringify(to)}; ${keep ? 'keep' : 'drop'}`;
}

/** The mark of a tenant schema on a server other than the home one. */
export function tenantMark(id: string, slug: string): string {
  return `typeorm-tenants: schema of tenant ${JSON.stringify(slug)} of registry ${id}`;
}

/**
 * Fills a tenant through raw SQL in a run: `clients` clients (some with
 * awkward text: quotes, backslashes, newlines, non-ASCII, tabs), `projects`
 * projects over them, then the last `deleteTail` clients deleted (so the
 * sequence is ahead of max(id)).
 */
export async function seedTenant(tenants: TenantDataSourceManager, slug: string, clients: number, projects: number, deleteTail = 0): Promise<void> {
  await tenants.run(slug, async () => {
    await tenantContext.query(
      `INSERT INTO client (name, email, internal_note)
       SELECT 'client ' || g, 'c' || g || '@seed.test',
              CASE WHEN g % 7 = 0 THEN E'it''s a "note"\\\\ with\\nnewline, tab\\t and é ✓' WHEN g % 11 = 0 THEN repeat('x', 300) ELSE '' END
         FROM generate_series(1, $1::int) AS g`,
      [clients],
    );
    await tenantContext.query(
      `INSERT INTO project (name, client_id) SELECT 'project ' || g, (g % $2::int) + 1 FROM generate_series(1, $1::int) AS g`,
      [projects, clients - deleteTail],
    );
    if (deleteTail > 0) await tenantContext.query('DELETE FROM client WHERE id > $1', [clients - deleteTail]);
  });
}

/** Polls `check` until it holds (every 20 ms, up to `timeoutMs`). */
export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * A session on a server holding the advisory lock a move takes on a server
 * for the tenant's schema (`typeorm-tenants:schema:<schema>`): a move that
 * reaches that server waits there until `release()`.
 */
export async function holdTenantLock(db: ServerDatabase, schema: string): Promise<{ release(): Promise<void> }> {
  const client = new PgClient({ connectionString: db.url, application_name: 'servers-test-catalog' });
  client.on('error', () => undefined);
  await client.connect();
  await client.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', [`typeorm-tenants:schema:${schema}`]);
  return {
    release: async () => {
      try {
        await client.query('SELECT pg_advisory_unlock_all()');
      } finally {
        await client.end();
      }
    },
  };
}

/** The tables of `schema` on which some backend holds (`granted`) or waits for (`!granted`) a lock of `mode`, sorted. */
export async function tableLocks(db: ServerDatabase, schema: string, mode: string, granted: boolean): Promise<string[]> {
  const rows = await db.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND l.mode = $2 AND l.granted = $3 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      ORDER BY 1`,
    [schema, mode, granted],
  );
  return rows.map((row) => row.name);
}

/**
 * A transaction on a server that updates the catalog row of `schema`
 * (a GRANT on it) and stays open: a move's rename of that schema (the
 * source's last step, under the freeze, after the target committed) waits
 * for it. `blocking()` tells whether some backend waits for it;
 * `release()` rolls it back.
 */
export async function holdSchemaRow(db: ServerDatabase, schema: string): Promise<{ blocking(): Promise<boolean>; release(): Promise<void> }> {
  const client = new PgClient({ connectionString: db.url, application_name: 'servers-test-catalog' });
  client.on('error', () => undefined);
  await client.connect();
  await client.query('BEGIN');
  await client.query(`GRANT USAGE ON SCHEMA "${schema}" TO PUBLIC`);
  const { rows } = await client.query<{ xid: string }>('SELECT backend_xid::text AS xid FROM pg_stat_activity WHERE pid = pg_backend_pid()');
  const xid = rows[0]!.xid;
  let released = false;
  return {
    blocking: async () =>
      (await db.query("SELECT 1 FROM pg_locks WHERE locktype = 'transactionid' AND transactionid::text = $1 AND NOT granted", [xid])).length > 0,
    release: async () => {
      if (released) return;
      released = true;
      try {
        await client.query('ROLLBACK');
      } finally {
        await client.end();
      }
    },
  };
}

/** Whether a backend of the server's database is polling for a library advisory lock (a move waiting there for `holdTenantLock`). */
export async function pollingForLock(db: ServerDatabase): Promise<boolean> {
  // A waiting lock taker ends each failed try's transaction (its last statement is then ROLLBACK), and
  // tries at most every 200 ms: only a try in flight shows, so look without pause for longer than that.
  const until = Date.now() + 400;
  do {
    const rows = await db.query(
      "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND xact_start IS NOT NULL AND query LIKE '%pg_try_advisory_xact_lock%' AND pid <> pg_backend_pid()",
    );
    if (rows.length > 0) return true;
  } while (Date.now() < until);
  return false;
}
