import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import fc from 'fast-check';
import { Client as PgClient } from 'pg';
import { Client } from '../../entities';
import { sqlCommentOf, tenantContext, type TenancyLogEntry, type TenantDataSourceManager } from '../../src';
import { startScratchDatabase } from '../../support/database';
import { adminQuery, databaseUrl, newManager, openManager, uniqueSlug } from '../support/fixtures';

const comment = (slug: string): string => `/*tenant='${slug}'*/ `;

/**
 * Starts `SELECT pg_sleep(30), <marker>` in a run of `slug`, waits until
 * pg_stat_activity shows it (it sleeps until cancelled, so the wait does not
 * depend on timing), reads its text there, then cancels it.
 */
async function activityTextOf(manager: TenantDataSourceManager, slug: string, send: (marker: string) => Promise<unknown>): Promise<string> {
  const marker = `mark_${randomBytes(6).toString('hex')}`;
  const running = manager.run(slug, () => send(marker));
  const settled = running.then(
    () => new Error('the sleeping statement was not cancelled'),
    (error: unknown) => error,
  );
  try {
    for (let attempt = 0; attempt < 1500; attempt += 1) {
      const rows = await adminQuery<{ pid: number; query: string }>(
        "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
        [marker],
      );
      if (rows.length === 1) return rows[0]!.query;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error(`the statement with ${marker} never showed in pg_stat_activity`);
  } finally {
    await adminQuery("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()", [marker]);
    const error = (await settled) as { code?: string };
    expect(error.code, 'cancelled by the test (57014)').to.equal('57014');
  }
}

/** The SQL of every `query` entry TypeORM logged for `schema`. */
function loggedQueries(entries: readonly TenancyLogEntry[], schema: string): string[] {
  return entries.filter((e) => e.kind === 'query' && e.schema === schema).map((e) => e.message);
}

describe('Observability: sqlComment', () => {
  it("pg_stat_activity shows /*tenant='<slug>'*/ in front of a tenant run's raw SQL and QueryBuilder statement", async () => {
    const manager = await openManager({ sqlComment: true });
    const slug = uniqueSlug('sc');
    await manager.createTenant(slug);
    const raw = await activityTextOf(manager, slug, (marker) => tenantContext.query(`SELECT pg_sleep(30), '${marker}' AS marker`));
    expect(raw).to.match(new RegExp(`^${escape(comment(slug))}SELECT pg_sleep\\(30\\)`));
    // One row, so that the WHERE (and its pg_sleep) is evaluated.
    await manager.run(slug, () => tenantContext.getRepository(Client).insert({ name: 'Ada', email: 'ada@x.test' }));
    const built = await activityTextOf(manager, slug, (marker) =>
      tenantContext.getRepository(Client).createQueryBuilder('c').select('c.id').where(`pg_sleep(30) IS NOT NULL AND '${marker}' <> ''`).getRawMany(),
    );
    expect(built.startsWith(comment(slug)), built).to.equal(true);
    expect(built).to.include(`FROM "${slug.replace(/-/g, '_')}"."client"`);
    await manager.dropTenant(slug, { force: true });
  });

  it('concurrent runs of two tenants: each statement carries its own slug', async () => {
    const manager = await openManager({ sqlComment: true });
    const slugs = [uniqueSlug('sc-a'), uniqueSlug('sc-b')];
    for (const slug of slugs) await manager.createTenant(slug);
    const texts = await Promise.all(slugs.map((slug) => activityTextOf(manager, slug, (marker) => tenantContext.query(`SELECT pg_sleep(30), '${marker}'`))));
    expect(texts[0]!.startsWith(comment(slugs[0]!)), texts[0]).to.equal(true);
    expect(texts[1]!.startsWith(comment(slugs[1]!)), texts[1]).to.equal(true);
    for (const slug of slugs) await manager.dropTenant(slug, { force: true });
  });

  it('every statement a run sends carries it: find, insert, a transaction with its control statements, raw SQL and its fence; none when the option is off', async () => {
    const entries: TenancyLogEntry[] = [];
    const workload = async (manager: TenantDataSourceManager, slug: string): Promise<void> => {
      await manager.run(slug, async () => {
        const clients = tenantContext.getRepository(Client);
        await clients.insert({ name: 'Ada', email: 'ada@x.test' });
        await clients.findOneBy({ email: 'ada@x.test' });
        await tenantContext.transaction(async (em) => {
          await em.getRepository(Client).update({ email: 'ada@x.test' }, { name: 'Ada L.' });
          await em.query('SELECT count(*) FROM client');
        });
        await tenantContext.query('SELECT 1');
      });
    };
    const on = await openManager({ sqlComment: true, dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 4, logging: ['query'] }, logger: (e) => entries.push(e) });
    const slug = uniqueSlug('sc-all');
    await on.createTenant(slug);
    const schema = slug.replace(/-/g, '_');
    entries.length = 0;
    await workload(on, slug);
    const commented = loggedQueries(entries, schema);
    expect(commented.length, 'statements logged').to.be.at.least(10);
    for (const sql of commented) expect(sql.startsWith(comment(slug)), sql).to.equal(true);
    const kinds = commented.map((sql) => sql.slice(comment(slug).length).split(/[ ;]/)[0]);
    expect(kinds).to.include.members(['INSERT', 'SELECT', 'UPDATE', 'START', 'COMMIT', 'SET']);

    const off = await openManager({ dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 4, logging: ['query'] }, logger: (e) => entries.push(e) });
    entries.length = 0;
    await workload(off, slug);
    const plain = loggedQueries(entries, schema);
    expect(plain.length).to.equal(commented.length);
    for (const sql of plain) expect(sql, 'no comment with sqlComment off').to.not.include('/*');
    // The shared DataSource's statements carry none either (they are no tenant's).
    const shared = entries.filter((e) => e.kind === 'query' && e.schema === 'public').map((e) => e.message);
    for (const sql of shared) expect(sql).to.not.include('/*tenant=');
    await on.dropTenant(slug, { force: true });
  });

  it('no value can end the comment early or open a nested one: */, /*, quotes and newlines are encoded; PostgreSQL runs the statement after it', async function () {
    this.timeout(60_000);
    expect(sqlCommentOf({ tenant: 'acme' })).to.equal("/*tenant='acme'*/");
    expect(sqlCommentOf({ tenant: "*/ DROP TABLE client; /*'" })).to.equal("/*tenant='*%2F%20DROP%20TABLE%20client%3B%20%2F*%27'*/");
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 40 }), (value) => {
        const text = sqlCommentOf({ tenant: value });
        const body = text.slice(2, -2);
        expect(text.startsWith('/*') && text.endsWith('*/')).to.equal(true);
        expect(body).to.not.include('*/');
        expect(body).to.not.include('/*');
        const match = /^tenant='([A-Za-z0-9\-_.!~*()%]*)'$/.exec(body);
        expect(match, body).to.not.equal(null);
        expect(decodeURIComponent(match![1]!)).to.equal(value);
      }),
      { numRuns: 2000 },
    );
    // And on the server: the statement after the comment is what runs, for hostile values too.
    const client = new PgClient({ connectionString: databaseUrl() });
    await client.connect();
    try {
      const hostile = ["*/ SELECT 2 AS one; /*", "/* nested", "'", "*/", "--", "\n*/ DROP TABLE x", "ü*/é"];
      await fc.assert(
        fc.asyncProperty(fc.oneof(fc.constantFrom(...hostile), fc.string({ maxLength: 20 })), async (value) => {
          const { rows } = await client.query(`${sqlCommentOf({ tenant: value })} SELECT 1 AS one`);
          expect(rows).to.deep.equal([{ one: 1 }]);
        }),
        { numRuns: 100 },
      );
    } finally {
      await client.end();
    }
  });

  it('pg_stat_statements (embedded PostgreSQL 18 with it preloaded): the comment does not change the query id, and on 18 tenants share one entry per statement shape', async function () {
    this.timeout(120_000);
    // The shared test server usually lacks it in shared_preload_libraries, so this test starts an embedded server that has it.
    const database = await startScratchDatabase({ forceEmbedded: true, settings: { shared_preload_libraries: 'pg_stat_statements' } });
    const managers: TenantDataSourceManager[] = [];
    try {
      const admin = new PgClient({ connectionString: database.url });
      await admin.connect();
      try {
        await admin.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
        const dataSource = { type: 'postgres' as const, url: database.url, poolSize: 2 };
        const on = newManager({ dataSource, sqlComment: true });
        const off = newManager({ dataSource });
        managers.push(on, off);
        await on.initialize();
        await off.initialize();
        const [a, b] = [uniqueSlug('pss-a'), uniqueSlug('pss-b')];
        await on.createTenant(a);
        await on.createTenant(b);
        await admin.query('SELECT pg_stat_statements_reset()');
        for (let i = 1; i <= 5; i += 1) await on.run(a, () => tenantContext.getRepository(Client).findOneBy({ id: i }));
        for (let i = 1; i <= 3; i += 1) await off.run(a, () => tenantContext.getRepository(Client).findOneBy({ id: i }));
        for (let i = 1; i <= 2; i += 1) await on.run(b, () => tenantContext.getRepository(Client).findOneBy({ id: i }));
        const { rows } = await admin.query<{ queryid: string; calls: string; query: string }>(
          `SELECT queryid::text, calls::text, query FROM pg_stat_statements WHERE query LIKE '%FROM "%"."client"%' AND query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC`,
        );
        // PostgreSQL 18 jumbles a table by its name, not its OID: the same statement over two
        // tenants' "client" tables is one entry, and the comment changes nothing (5 commented and
        // 3 plain calls of tenant a, 2 commented calls of tenant b: one query id, 10 calls). The
        // stored text starts at the statement, after the comment.
        const { rows: version } = await admin.query<{ v: string }>("SELECT current_setting('server_version_num') AS v");
        expect(Number(version[0]!.v)).to.be.at.least(180000);
        expect(rows, JSON.stringify(rows)).to.have.length(1);
        expect(rows[0]!.calls).to.equal('10');
        expect(rows[0]!.query).to.match(/^SELECT "Client"\."id"/);
        expect(rows[0]!.query).to.not.include('/*');
        for (const slug of [a, b]) await on.dropTenant(slug, { force: true });
      } finally {
        await admin.end();
      }
    } finally {
      await Promise.all(managers.map((m) => m.destroy()));
      await database.stop();
    }
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}
