import { expect } from 'chai';
import { Client as PgClient } from 'pg';
import type { FleetReport } from '../../src';
import { adminQuery, createTenants, databaseUrl, openManager, sleep } from '../support/fixtures';
import { CONCURRENT_MIGRATION, SLOW_MIGRATION, finished, runCliJson, schemaOf, spawnCli, uniqueRegistry, type CliEnv } from './cli-support';

/** A fleet of `count` tenants with the base migrations, in a registry of its own. */
async function fleet(count: number, prefix: string): Promise<{ env: CliEnv; slugs: string[] }> {
  const registry = uniqueRegistry();
  const manager = await openManager({ registryTable: registry });
  const slugs = (await createTenants(manager, count, prefix)).sort();
  await manager.destroy();
  return { env: { registry, extra: 'slow' }, slugs };
}

/** Tenants the ledger records as having the slow migration. */
async function ledgerCount(registry: string): Promise<number> {
  const rows = await adminQuery<{ n: number }>(`SELECT count(*)::int AS n FROM public."${registry}_migrations" WHERE name = $1`, [SLOW_MIGRATION]);
  return rows[0]!.n;
}

async function waitUntil(what: string, condition: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting until ${what}.`);
    await sleep(20);
  }
}

/** Waits until the killed CLI's server connections are gone, so no transaction of it can still commit. */
async function waitForOrphanBackends(): Promise<void> {
  await waitUntil('the killed CLI has no backend left', async () => {
    const rows = await adminQuery(
      "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'typeorm-tenants' AND pid <> pg_backend_pid()",
    );
    return rows.length === 0;
  });
}

/**
 * Where one tenant stands with the slow migration, read in ONE statement (one
 * snapshot): its effect (the table), its own migrations table, the ledger.
 */
async function standing(slug: string, registry: string): Promise<{ table: boolean; own: boolean; ledger: boolean }> {
  const [row] = await adminQuery<{ table: boolean; own: boolean; ledger: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'slow_marker') AS table,
            EXISTS (SELECT 1 FROM "${schemaOf(slug)}".migrations WHERE name = $2) AS own,
            EXISTS (SELECT 1 FROM public."${registry}_migrations" WHERE slug = $3 AND name = $2) AS ledger`,
    [schemaOf(slug), SLOW_MIGRATION, slug],
  );
  return row!;
}

describe('CLI: a fleet run that is killed or interrupted', () => {
  it('SIGKILL in the middle of migrate --concurrency 2: every tenant fully migrated or untouched, registry intact; a rerun completes exactly the rest', async function () {
    this.timeout(120_000);
    const { env, slugs } = await fleet(20, 'cli-kill');

    const child = spawnCli(['migrate', '--concurrency', '2'], env);
    const ended = finished(child);
    await waitUntil('2 tenants have the slow migration', async () => (await ledgerCount(env.registry)) >= 2);
    child.kill('SIGKILL');
    const killed = await ended;
    expect(killed.signal).to.equal('SIGKILL');
    await waitForOrphanBackends();

    const migrated: string[] = [];
    for (const slug of slugs) {
      const s = await standing(slug, env.registry);
      expect([s.own, s.ledger], `${slug}: migrations table and ledger agree with the table's presence`).to.deep.equal([s.table, s.table]);
      if (s.table) migrated.push(slug);
    }
    expect(migrated.length, 'killed after some but not all tenants').to.be.within(2, 19);
    const registry = await adminQuery<{ slug: string; status: string }>(`SELECT slug, status FROM public."${env.registry}" ORDER BY slug`);
    expect(registry).to.deep.equal(slugs.map((slug) => ({ slug, status: 'active' })));

    const rerun = await runCliJson<FleetReport>(['migrate', '--concurrency', '4'], env);
    const remaining = slugs.filter((slug) => !migrated.includes(slug));
    expect(rerun.results.map((r) => r.slug), 'every tenant has its line').to.deep.equal(slugs);
    expect(rerun.results.filter((r) => r.status === 'migrated').map((r) => r.slug), 'exactly the rest is migrated').to.deep.equal(remaining);
    expect(rerun.results.every((r) => (r.status === 'migrated' && r.applied.join() === SLOW_MIGRATION) || (r.status === 'up-to-date' && migrated.includes(r.slug)))).to.equal(true);
    expect(rerun.totals).to.include({ tenants: 20, migrated: remaining.length, upToDate: migrated.length, failed: 0, skipped: 0 });
    for (const slug of slugs) expect(await standing(slug, env.registry), slug).to.deep.equal({ table: true, own: true, ledger: true });
  });

  it('SIGINT aborts the run through its AbortSignal: tenants in progress finish, the rest are skipped, exit 130, the process ends by itself', async function () {
    this.timeout(120_000);
    const { env, slugs } = await fleet(8, 'cli-int');

    const child = spawnCli(['migrate', '--concurrency', '1'], env);
    const ended = finished(child);
    await waitUntil('1 tenant has the slow migration', async () => (await ledgerCount(env.registry)) >= 1);
    child.kill('SIGINT');
    const result = await ended;
    expect(result.signal, result.stderr).to.equal(null);
    expect(result.code, result.stderr).to.equal(130);
    expect(result.stderr).to.match(/SIGINT: finishing the tenants in progress/);

    const report = JSON.parse(result.stdout) as FleetReport;
    expect(report.results.map((r) => r.slug)).to.deep.equal(slugs);
    const migrated = report.results.filter((r) => r.status === 'migrated').map((r) => r.slug);
    const skipped = report.results.filter((r) => r.status === 'skipped');
    expect(migrated.length).to.be.within(1, 7);
    expect(migrated.length + skipped.length).to.equal(8);
    expect(skipped.every((r) => r.error?.message === 'Not started: the run was aborted.')).to.equal(true);
    for (const slug of slugs) {
      const s = await standing(slug, env.registry);
      expect(s, slug).to.deep.equal(migrated.includes(slug) ? { table: true, own: true, ledger: true } : { table: false, own: false, ledger: false });
    }
  });
  it('SIGKILL while a transaction = false migration builds an index concurrently: unrecorded, index left invalid; the rerun reports it, drops it and builds it', async function () {
    this.timeout(120_000);
    const registry = uniqueRegistry();
    const manager = await openManager({ registryTable: registry });
    const slugs = (await createTenants(manager, 2, 'cli-cic')).sort();
    await manager.destroy();
    const env: CliEnv = { registry, extra: 'concurrent' };
    const [blocked, free] = [slugs[0]!, slugs[1]!];
    const indexOf = async (slug: string): Promise<string> => {
      const rows = await adminQuery<{ valid: boolean }>(
        `SELECT i.indisvalid AS valid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relname = 'client_email_cic'`,
        [schemaOf(slug)],
      );
      return rows.length === 0 ? 'missing' : rows[0]!.valid ? 'valid' : 'invalid';
    };
    const recorded = async (slug: string): Promise<boolean[]> => {
      const [row] = await adminQuery<{ own: boolean; ledger: boolean }>(
        `SELECT EXISTS (SELECT 1 FROM "${schemaOf(slug)}".migrations WHERE name = $1) AS own,
                EXISTS (SELECT 1 FROM public."${registry}_migrations" WHERE slug = $2 AND name = $1) AS ledger`,
        [CONCURRENT_MIGRATION, slug],
      );
      return [row!.own, row!.ledger];
    };

    // A write transaction left open on one tenant's table: that tenant's build waits for it, after its catalog entry is committed.
    const writer = new PgClient({ connectionString: databaseUrl() });
    await writer.connect();
    try {
      await writer.query('BEGIN');
      await writer.query(`INSERT INTO "${schemaOf(blocked)}".client (name, email) VALUES ('w', 'w@x')`);
      const child = spawnCli(['migrate', '--concurrency', '2'], env);
      const ended = finished(child);
      await waitUntil('the concurrent build waits for the open write', async () => {
        const rows = await adminQuery(
          `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'CREATE UNIQUE INDEX CONCURRENTLY%' AND query LIKE $1`,
          [`%${schemaOf(blocked)}%`],
        );
        return rows.length > 0;
      });
      child.kill('SIGKILL');
      expect((await ended).signal).to.equal('SIGKILL');
      // The build dies with the process (as it does once PostgreSQL notices the client is gone).
      await adminQuery(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'typeorm-tenants' AND pid <> pg_backend_pid()",
      );
      await waitForOrphanBackends();
    } finally {
      await writer.query('ROLLBACK').catch(() => undefined);
      await writer.end();
    }
    expect(await indexOf(blocked)).to.equal('invalid');
    expect(await recorded(blocked)).to.deep.equal([false, false]);
    const freeState = [await indexOf(free), ...(await recorded(free))];
    expect([['valid', true, true], ['valid', false, false], ['missing', false, false], ['invalid', false, false]]).to.deep.include(freeState);

    const rerun = await runCliJson<FleetReport & { logs: Array<{ kind: string; message: string }> }>(['migrate', '--json'], env);
    const line = rerun.results.find((r) => r.slug === blocked)!;
    expect(line.status, JSON.stringify(line)).to.equal('migrated');
    expect(line.applied).to.deep.equal([CONCURRENT_MIGRATION]);
    expect(line.invalidIndexes).to.deep.equal([{ index: 'client_email_cic', rebuilt: true }]);
    expect(rerun.logs.some((entry) => entry.kind === 'invalid-index' && entry.message.includes('client_email_cic'))).to.equal(true);
    for (const slug of slugs) {
      expect(await indexOf(slug), slug).to.equal('valid');
      expect(await recorded(slug), slug).to.deep.equal([true, true]);
    }
  });
});
