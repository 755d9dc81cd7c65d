import { expect } from 'chai';
import { Client } from '../../entities';
import { tenantContext, type TenantDataSourceManager } from '../../src';
import { sleep, uniqueSlug } from '../support/fixtures';

/** Runs SQL on the server under test through a connection that is not the manager's. */
export type AdminQuery = <T = Record<string, unknown>>(sql: string, params?: unknown[]) => Promise<T[]>;

export const schemaOf = (slug: string): string => slug.replace(/-/g, '_');
export const suffixOf = (slug: string): string => `@${slug}.test`;

/** `dropTenant(slug, { force: true })`: lifecycle refuses to drop an active tenant without it. */
export function dropTenantForce(manager: TenantDataSourceManager, slug: string): Promise<void> {
  return (manager.dropTenant as (slug: string, options?: { force?: boolean }) => Promise<void>).call(manager, slug, { force: true });
}

/** Creates `count` tenants ten at a time, slugs starting with `prefix`. */
export async function createTenantsInBatches(manager: TenantDataSourceManager, count: number, prefix: string): Promise<string[]> {
  const slugs = Array.from({ length: count }, () => uniqueSlug(prefix));
  for (let i = 0; i < slugs.length; i += 10) await Promise.all(slugs.slice(i, i + 10).map((slug) => manager.createTenant(slug)));
  return slugs;
}

/** What a load run saw: every write attempted, acknowledged or refused, and every read checked. */
export interface LoadOutcome {
  /** email -> slug of every write attempted. */
  readonly attempted: Map<string, string>;
  /** email -> id of every write whose promise resolved (acknowledged). */
  readonly acknowledged: Map<string, number>;
  /** Writes and reads whose promise rejected, with the error. */
  readonly failures: Array<{ readonly slug: string; readonly op: 'write' | 'read'; readonly error: unknown }>;
  /** Reads that returned a row of another tenant, or ran under the wrong tenant. */
  readonly violations: string[];
  /** Every operation that settled, by kind. */
  readonly settled: { writes: number; reads: number };
  /** Failures seen since the given time (ms, performance.now()). */
  failuresSince(t: number): number;
  /** Stops the workers after their current operation and waits for everything in flight to settle. */
  stop(): Promise<void>;
}

/**
 * Starts `workers` loops that, until stopped, pick a random tenant and either
 * save a client whose email names the tenant (3 in 4) or read the tenant's
 * newest clients and check that each one names it. Nothing is retried: each
 * call's outcome is recorded as it is. A worker pauses `pauseOnErrorMs` after
 * a failure, so a server that is down is not spun against.
 */
export function startLoad(
  manager: TenantDataSourceManager,
  slugs: readonly string[],
  options: { readonly workers: number; readonly pauseOnErrorMs?: number },
): LoadOutcome {
  const attempted = new Map<string, string>();
  const acknowledged = new Map<string, number>();
  const failures: Array<{ slug: string; op: 'write' | 'read'; error: unknown; at: number }> = [];
  const violations: string[] = [];
  const settled = { writes: 0, reads: 0 };
  let stopping = false;
  let sequence = 0;

  const worker = async (w: number): Promise<void> => {
    while (!stopping) {
      const slug = slugs[Math.floor(Math.random() * slugs.length)]!;
      if (Math.random() < 0.75) {
        const email = `w${w}-${(sequence += 1)}${suffixOf(slug)}`;
        attempted.set(email, slug);
        try {
          const saved = await manager.run(slug, () => tenantContext.getRepository(Client).save({ name: slug, email }));
          if (typeof saved.id !== 'number') violations.push(`${email}: save resolved without an id`);
          acknowledged.set(email, saved.id);
        } catch (error) {
          failures.push({ slug, op: 'write', error, at: performance.now() });
          await sleep(options.pauseOnErrorMs ?? 5);
        } finally {
          settled.writes += 1;
        }
      } else {
        try {
          await manager.run(slug, async () => {
            const rows = await tenantContext.getRepository(Client).find({ order: { id: 'DESC' }, take: 10 });
            if (tenantContext.current()?.slug !== slug) violations.push(`${slug}: read ran as ${String(tenantContext.current()?.slug)}`);
            for (const row of rows) if (!row.email.endsWith(suffixOf(slug))) violations.push(`${slug}: read ${row.email}`);
          });
        } catch (error) {
          failures.push({ slug, op: 'read', error, at: performance.now() });
          await sleep(options.pauseOnErrorMs ?? 5);
        } finally {
          settled.reads += 1;
        }
      }
    }
  };
  const running = Array.from({ length: options.workers }, (_, w) => worker(w));
  return {
    attempted,
    acknowledged,
    failures,
    violations,
    settled,
    failuresSince: (t) => failures.filter((f) => f.at >= t).length,
    async stop() {
      stopping = true;
      await Promise.all(running);
    },
  };
}

/** What `auditRows` found besides the assertions it makes. */
export interface AuditResult {
  /** Rows checked, over all schemas. */
  readonly rows: number;
  /** Rows whose write was reported as failed but that did commit (the reply was lost). Allowed. */
  readonly committedDespiteError: number;
}

/**
 * Reads every row of every tenant's `client` table on the server itself and
 * checks: every acknowledged write is there, once, in its tenant's schema,
 * with the id the caller got; every row names the schema's tenant and is a
 * write this test attempted in that tenant; a failed write may have
 * committed (the connection died after COMMIT), but never elsewhere.
 */
export async function auditRows(query: AdminQuery, slugs: readonly string[], load: LoadOutcome): Promise<AuditResult> {
  const found = new Map<string, { slug: string; id: number }>();
  const problems: string[] = [];
  let rows = 0;
  for (const slug of slugs) {
    const inSchema = await query<{ id: number; email: string; name: string }>(`SELECT id, email, name FROM "${schemaOf(slug)}".client`);
    for (const row of inSchema) {
      rows += 1;
      if (found.has(row.email)) problems.push(`${row.email} is stored twice (${found.get(row.email)!.slug} and ${slug})`);
      found.set(row.email, { slug, id: row.id });
      const attemptedIn = load.attempted.get(row.email);
      if (attemptedIn === undefined) problems.push(`${slug} holds ${row.email}, which no one wrote`);
      else if (attemptedIn !== slug) problems.push(`${slug} holds ${row.email}, written in ${attemptedIn}`);
      if (!row.email.endsWith(suffixOf(slug)) || row.name !== slug) problems.push(`${slug} holds a row of another tenant: ${row.email} / ${row.name}`);
    }
  }
  let committedDespiteError = 0;
  for (const [email, slug] of load.attempted) {
    const at = found.get(email);
    const ackId = load.acknowledged.get(email);
    if (ackId !== undefined) {
      if (at === undefined) problems.push(`acknowledged write ${email} (id ${ackId}) is not in the database`);
      else if (at.slug !== slug || at.id !== ackId) problems.push(`acknowledged write ${email} (id ${ackId} in ${slug}) is stored as id ${at.id} in ${at.slug}`);
    } else if (at !== undefined) {
      committedDespiteError += 1;
    }
  }
  expect(problems.slice(0, 20), `${problems.length} audit problems`).to.deep.equal([]);
  return { rows, committedDespiteError };
}

/**
 * The end-to-end check after a fault: every registry row has its schema in
 * pg_namespace, and every schema whose name starts with one of
 * `schemaPrefixes` (the tenants the test created, dropped or tried to) has a
 * registry row. With `schemaPrefixes` = 'all' (a private server), every
 * non-system schema must have one.
 */
export async function expectRegistryMatchesNamespaces(
  manager: TenantDataSourceManager,
  query: AdminQuery,
  schemaPrefixes: readonly string[] | 'all',
): Promise<{ tenants: number; schemas: number }> {
  const records = await manager.listTenants();
  const namespaces = new Set(
    (await query<{ nspname: string }>('SELECT nspname FROM pg_namespace')).map((r) => r.nspname),
  );
  const registered = new Set(records.map((r) => r.schemaName));
  const withoutSchema = records.filter((r) => !namespaces.has(r.schemaName)).map((r) => `${r.slug} (${r.status})`);
  expect(withoutSchema, 'registry rows whose schema is missing').to.deep.equal([]);
  const isSystem = (name: string): boolean =>
    name === 'public' || name === 'extensions' || name === 'information_schema' || name.startsWith('pg_') || name.startsWith('typeorm_tenants_');
  const candidates = [...namespaces].filter((name) =>
    schemaPrefixes === 'all' ? !isSystem(name) : schemaPrefixes.some((prefix) => name.startsWith(prefix)),
  );
  const orphans = candidates.filter((name) => !registered.has(name));
  expect(orphans, 'schemas without a registry row').to.deep.equal([]);
  return { tenants: records.length, schemas: candidates.length };
}

/** Result of `churnTenants`: tenants created, dropped, and calls that failed. */
export interface ChurnOutcome {
  created: number;
  dropped: number;
  failed: number;
  stop(): Promise<void>;
}

/**
 * One loop creating a tenant (slug starting with `prefix`), writing to it and
 * dropping it, until stopped: provisioning and dropping under the fault, for
 * the registry/pg_namespace agreement check.
 */
export function churnTenants(manager: TenantDataSourceManager, prefix: string, pauseOnErrorMs = 20): ChurnOutcome {
  let stopping = false;
  const outcome: ChurnOutcome = {
    created: 0,
    dropped: 0,
    failed: 0,
    stop: async () => {
      stopping = true;
      await loop;
    },
  };
  const loop = (async () => {
    while (!stopping) {
      const slug = uniqueSlug(prefix);
      try {
        await manager.createTenant(slug);
        outcome.created += 1;
        await manager.run(slug, () => tenantContext.getRepository(Client).save({ name: slug, email: `churn${suffixOf(slug)}` }));
        await dropTenantForce(manager, slug);
        outcome.dropped += 1;
      } catch {
        outcome.failed += 1;
        await sleep(pauseOnErrorMs);
      }
    }
  })();
  return outcome;
}

/** A short description of an error for assertion messages: class, code, message. */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return `non-Error ${typeof error}: ${String(error)}`;
  const code = (error as { code?: unknown }).code;
  return `${error.constructor.name}${code === undefined ? '' : ` [${String(code)}]`}: ${error.message.split('\n')[0]}`;
}

/** Counts of each distinct error description, most frequent first, for logs. */
export function errorHistogram(errors: readonly unknown[]): string[] {
  const counts = new Map<string, number>();
  for (const error of errors) {
    const key = describeError(error).replace(/"[^"]*"/g, '"…"').replace(/\d+/g, 'N');
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].sort((a, b) => b[1] - a[1]).map(([key, n]) => `${n} x ${key}`);
}
