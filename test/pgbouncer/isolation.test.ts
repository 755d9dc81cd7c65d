import { expect } from 'chai';
import { Pool, type PoolClient } from 'pg';
import type { PostgresDriver } from 'typeorm/driver/postgres/PostgresDriver';
import { Client, Plan, Project } from '../../entities';
import { tenantMigrations } from '../../migrations';
import { tenantContext, type TenantDataSourceManager } from '../../src';
import { closeSharedPool } from '../../src/data-source/shared-pool';
import { startPgBouncer } from '../../support/pgbouncer';
import { usePgBouncer } from '../support/pgbouncer-hooks';
import { adminQuery, databaseUrl, newManager, openManager, uniqueSlug } from '../support/fixtures';
import { AddClientPhone1700000000003 } from '../support/extra-migrations';

/** Server connections PgBouncer keeps per database/user pair. */
const BOUNCER_POOL = 4;
/** Connections of the manager's pool (client side of PgBouncer). */
const CLIENT_POOL = 10;
const TENANTS = 50;

const schemaOf = (slug: string): string => slug.replace(/-/g, '_');
const suffixOf = (slug: string): string => `@${slug}.test`;

/** A manager whose every connection goes through PgBouncer (`bouncerUrl`). */
function openManagerVia(bouncerUrl: string): Promise<TenantDataSourceManager> {
  return openManager({ dataSource: { type: 'postgres', url: bouncerUrl, poolSize: CLIENT_POOL } });
}

async function createTenantsVia(manager: TenantDataSourceManager, count: number, prefix: string): Promise<string[]> {
  const slugs = Array.from({ length: count }, () => uniqueSlug(prefix));
  // Ten at a time: concurrent provisioning through the pooler is part of the test.
  for (let i = 0; i < slugs.length; i += 10) await Promise.all(slugs.slice(i, i + 10).map((slug) => manager.createTenant(slug)));
  return slugs;
}

/** Emails of a tenant's client table, read directly (not through PgBouncer). */
async function emailsInSchema(slug: string): Promise<string[]> {
  const rows = await adminQuery<{ email: string }>(`SELECT email FROM "${schemaOf(slug)}".client ORDER BY id`);
  return rows.map((r) => r.email);
}

describe('behind PgBouncer 1.18 (transaction pooling)', function () {
  this.timeout(120_000);
  /** The running PgBouncer; throws (failing the test) when it could not start, e.g. is not installed. */
  const bouncer = usePgBouncer({ poolSize: BOUNCER_POOL });

  it(`the manager works through PgBouncer: ${TENANTS} tenants created with migrations, repositories, transaction() commit and rollback, query() with unqualified names, all isolated`, async () => {
    const manager = await openManagerVia(bouncer().url);
    const slugs = await createTenantsVia(manager, TENANTS, 'pgb');

    // Every tenant got its tables (migrations ran inside its schema), checked on the server directly.
    const tables = await adminQuery<{ schema: string; tables: string[] }>(
      `SELECT table_schema AS schema, array_agg(table_name::text ORDER BY table_name) AS tables
         FROM information_schema.tables WHERE table_schema = ANY($1) GROUP BY table_schema`,
      [slugs.map(schemaOf)],
    );
    expect(tables).to.have.length(TENANTS);
    for (const row of tables) expect(row.tables, row.schema).to.deep.equal(['client', 'migrations', 'project']);
    expect((await manager.listTenants()).filter((t) => slugs.includes(t.slug))).to.have.length(TENANTS);

    // A shared row, referenced from tenant tables (foreign key to public.plan).
    const plan = await manager.sharedDataSource
      .getRepository(Plan)
      .save({ code: uniqueSlug('plan'), name: 'Pro', monthlyPriceCents: 1000 });

    // Repositories: one client and one project per tenant, all at once.
    await Promise.all(
      slugs.map((slug) =>
        manager.run(slug, async () => {
          const client = await tenantContext.getRepository(Client).save({ name: slug, email: `first${suffixOf(slug)}`, plan });
          await tenantContext.getRepository(Project).save({ name: `p-${slug}`, client });
        }),
      ),
    );

    // transaction(): a commit and a rollback in every tenant, concurrently.
    await Promise.all(
      slugs.map((slug) =>
        manager.run(slug, async () => {
          await tenantContext.transaction(async (em) => {
            await em.save(Client, { name: slug, email: `tx-commit${suffixOf(slug)}` });
            // Tenant-agnostic code joins the transaction through the context.
            await tenantContext.getRepository(Client).save({ name: slug, email: `tx-joined${suffixOf(slug)}` });
          });
          const rolledBack = tenantContext.transaction(async (em) => {
            await em.save(Client, { name: slug, email: `tx-rollback${suffixOf(slug)}` });
            await tenantContext.query('INSERT INTO client (name, email) VALUES ($1, $2)', [slug, `tx-raw-rollback${suffixOf(slug)}`]);
            throw new Error('roll back');
          });
          await expect(rolledBack).to.be.rejectedWith('roll back');
        }),
      ),
    );

    // Reads: repositories and raw unqualified SQL see exactly the tenant's rows.
    await Promise.all(
      slugs.map((slug) =>
        manager.run(slug, async () => {
          const expected = ['first', 'tx-commit', 'tx-joined'].map((p) => `${p}${suffixOf(slug)}`);
          const viaRepo = await tenantContext.getRepository(Client).find({ order: { id: 'ASC' }, relations: { plan: true, projects: true } });
          expect(viaRepo.map((c) => c.email), slug).to.deep.equal(expected);
          expect(viaRepo[0]!.plan?.id).to.equal(plan.id);
          expect(viaRepo[0]!.projects!.map((p) => p.name)).to.deep.equal([`p-${slug}`]);

          const viaSql = await tenantContext.query<Array<{ email: string }>>('SELECT email FROM client ORDER BY id');
          expect(viaSql.map((r) => r.email), slug).to.deep.equal(expected);
          const [{ schema }] = await tenantContext.query<Array<{ schema: string }>>('SELECT current_schema() AS schema');
          expect(schema).to.equal(schemaOf(slug));

          // Raw SQL inside transaction() joins it, with the tenant's search_path.
          const inTx = await tenantContext.transaction(async () => {
            await tenantContext.query('INSERT INTO client (name, email) VALUES ($1, $2)', [slug, `raw${suffixOf(slug)}`]);
            return tenantContext.query<Array<{ count: number }>>('SELECT count(*)::int AS count FROM client');
          });
          expect(inTx[0]!.count).to.equal(4);
        }),
      ),
    );

    // Physically: each schema holds its own rows and nothing else.
    for (const slug of slugs) {
      expect(await emailsInSchema(slug), slug).to.deep.equal(
        ['first', 'tx-commit', 'tx-joined', 'raw'].map((p) => `${p}${suffixOf(slug)}`),
      );
    }
    expect(await adminQuery("SELECT 1 FROM information_schema.tables WHERE table_schema = 'public' AND table_name = 'client'")).to.have.length(0);
    expect(await bouncer().serverConnections(), 'server connections of PgBouncer').to.be.at.most(BOUNCER_POOL);
  });

  it(`stress: 20,000 interleaved writes and reads over ${TENANTS} tenants at concurrency 20 through PgBouncer; every row read and written stays in its tenant`, async () => {
    const manager = await openManagerVia(bouncer().url);
    const slugs = await createTenantsVia(manager, TENANTS, 'pgbs');
    const OPERATIONS = 20_000;
    const WORKERS = 20;

    const violations: string[] = [];
    const inserted = new Map<string, Array<{ id: number; email: string }>>(slugs.map((s) => [s, []]));
    let next = 0;
    let rowsChecked = 0;
    let maxBackends = 0;

    const check = (slug: string, where: string, rows: Array<Pick<Client, 'email'> | null>): void => {
      if (tenantContext.current()?.slug !== slug) violations.push(`${slug} ${where}: current() is ${tenantContext.current()?.slug}`);
      for (const row of rows) {
        if (row === null) continue;
        rowsChecked += 1;
        if (!row.email.endsWith(suffixOf(slug))) violations.push(`${slug} ${where}: read ${row.email}`);
      }
    };

    const worker = async (w: number): Promise<void> => {
      for (let op = next++; op < OPERATIONS; op = next++) {
        const slug = slugs[Math.floor(Math.random() * slugs.length)]!;
        const mine = inserted.get(slug)!;
        const roll = Math.random();
        await manager.run(slug, async () => {
          const repo = tenantContext.getRepository(Client);
          if (roll < 0.4 || mine.length === 0) {
            const email = `w${w}-op${op}${suffixOf(slug)}`;
            const saved = await repo.save({ name: slug, email });
            mine.push({ id: saved.id, email });
            check(slug, 'save', [saved]);
          } else if (roll < 0.65) {
            // Ids are serial per schema, so every id exists in other tenants too: a leak returns their row.
            const own = mine[Math.floor(Math.random() * mine.length)]!;
            const found = await repo.findOneBy({ id: own.id });
            if (found?.email !== own.email) violations.push(`${slug} findOneBy(${own.id}): ${found?.email} instead of ${own.email}`);
            check(slug, 'findOneBy own', [found]);
          } else if (roll < 0.8) {
            const id = 1 + Math.floor(Math.random() * 200);
            check(slug, `findOneBy(${id})`, [await repo.findOneBy({ id })]);
          } else {
            const rows = await repo.find({ order: { id: 'DESC' }, take: 20 });
            check(slug, 'find', rows);
          }
        });
      }
    };

    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        maxBackends = Math.max(maxBackends, await bouncer().serverConnections());
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    })();
    const started = Date.now();
    try {
      await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
    } finally {
      sampling = false;
      await sampler;
    }
    const seconds = (Date.now() - started) / 1000;
    console.log(`      (${OPERATIONS} operations in ${seconds.toFixed(1)} s, ${rowsChecked} rows checked, at most ${maxBackends} server connections)`);

    expect(violations.slice(0, 20), `${violations.length} isolation violations`).to.deep.equal([]);
    expect(rowsChecked).to.be.greaterThan(OPERATIONS * 0.5);

    // Every row is in the right schema, with the expected count, checked directly on the server.
    let total = 0;
    for (const slug of slugs) {
      const expected = inserted.get(slug)!.map((r) => r.email);
      const actual = await emailsInSchema(slug);
      expect(actual.length, `${slug} row count`).to.equal(expected.length);
      expect([...actual].sort(), slug).to.deep.equal([...expected].sort());
      total += actual.length;
    }
    expect(total).to.be.greaterThan(OPERATIONS * 0.35);
    // Our 10 pooled connections were multiplexed onto at most 4 server connections.
    expect(maxBackends, 'server connections opened by PgBouncer').to.be.at.most(BOUNCER_POOL);
    expect(manager.stats().pool.total).to.be.at.most(CLIENT_POOL);
  });

  it('fleet migrations, lifecycle and the warm pool work through PgBouncer (transaction-level locks only)', async () => {
    const registryTable = `bouncer_${uniqueSlug('f').replace(/-/g, '_')}`;
    const via = { dataSource: { type: 'postgres' as const, url: bouncer().url, poolSize: CLIENT_POOL }, registryTable };
    const base = await openManager({ ...via, warmPool: { size: 2 } });
    const slugs = await Promise.all(Array.from({ length: 12 }, async () => {
      const slug = uniqueSlug('bf');
      await base.createTenant(slug);
      return slug;
    }));
    const newer = await openManager({ ...via, warmPool: { size: 2 }, tenantMigrations: [...tenantMigrations, AddClientPhone1700000000003] });
    const [first, second] = await Promise.all([newer.migrateTenants({ concurrency: 4 }), newer.migrateTenants({ concurrency: 4 })]);
    const migrated = [...first.results, ...second.results].filter((r) => r.status === 'migrated').map((r) => r.slug).sort();
    expect(migrated, 'each tenant migrated exactly once').to.deep.equal([...slugs].sort());
    expect([...first.results, ...second.results].filter((r) => r.status === 'failed')).to.deep.equal([]);
    await newer.suspendTenant(slugs[0]!);
    await newer.archiveTenant(slugs[1]!);
    await newer.restoreTenant(slugs[1]!);
    await newer.dropTenant(slugs[0]!);
    expect(await newer.getTenant(slugs[0]!)).to.equal(undefined);
    expect((await newer.migrationStatus()).every((s) => s.pending.length === 0)).to.equal(true);
    await newer.refillWarmPool();
    expect(await newer.warmPoolStatus()).to.deep.equal({ total: 2, ready: 2, servers: { default: { total: 2, ready: 2 } } });
  });

  it('pool.statementTimeoutMillis is refused by PgBouncer at connect, loudly (a startup parameter it does not support)', async () => {
    // pg sends statement_timeout as a startup parameter; PgBouncer 1.18 only
    // accepts the ones it tracks. Behind a transaction pooler, set the timeout
    // on the server role/database or in PgBouncer's connect_query instead.
    const manager = newManager({
      dataSource: { type: 'postgres', url: bouncer().url, poolSize: CLIENT_POOL },
      pool: { statementTimeoutMillis: 5_000 },
    });
    await expect(manager.initialize()).to.be.rejectedWith(/unsupported startup parameter: statement_timeout/);
  });

  describe('control: session-level SET search_path through the same PgBouncer setup', () => {
    const CONTROL_TENANTS = 8;
    const CONTROL_CLIENTS = 20;
    const ROUNDS = 100; // 20 x 100 = 2,000 inserts

    /**
     * The naive approach, on its own PgBouncer (same settings) so that the
     * session state it leaves on server connections does not reach the other
     * tests: `SET search_path` as its own statement, then an unqualified INSERT.
     */
    async function naiveInserts(url: string, slugs: readonly string[]): Promise<{ attempted: number; failed: number }> {
      const pool = new Pool({ connectionString: url, max: CONTROL_CLIENTS });
      pool.on('error', () => undefined);
      let attempted = 0;
      let failed = 0;
      try {
        await Promise.all(
          Array.from({ length: CONTROL_CLIENTS }, async (_, w) => {
            for (let round = 0; round < ROUNDS; round += 1) {
              const slug = slugs[(w + round) % slugs.length]!;
              const client: PoolClient = await pool.connect();
              try {
                attempted += 1;
                await client.query(`SET search_path TO "${schemaOf(slug)}"`);
                await client.query('INSERT INTO client (name, email) VALUES ($1, $2)', [slug, `naive-w${w}-r${round}${suffixOf(slug)}`]);
              } catch {
                failed += 1; // e.g. "relation client does not exist" on a server connection still on the default path
              } finally {
                client.release();
              }
            }
          }),
        );
      } finally {
        await closeSharedPool(pool);
      }
      return { attempted, failed };
    }

    it('leaks: SET search_path then an unqualified INSERT puts rows into other tenants\' schemas, with no error', async () => {
      bouncer().url; // fail clearly when PgBouncer is missing
      const manager = await openManager(); // direct: only the naive writes go through PgBouncer
      const slugs = await createTenantsVia(manager, CONTROL_TENANTS, 'naive');
      const control = await startPgBouncer(databaseUrl(), { poolSize: BOUNCER_POOL });
      let result: { attempted: number; failed: number };
      try {
        result = await naiveInserts(control.url, slugs);
      } finally {
        await control.stop();
      }
      let landed = 0;
      let misplaced = 0;
      for (const slug of slugs) {
        const emails = await emailsInSchema(slug);
        landed += emails.length;
        misplaced += emails.filter((e) => !e.endsWith(suffixOf(slug))).length;
      }
      console.log(
        `      (${result.attempted} naive inserts: ${landed} landed, ${misplaced} in the wrong tenant's schema, ${result.failed} failed)`,
      );
      expect(landed, 'naive inserts that succeeded').to.be.greaterThan(0);
      expect(misplaced, 'rows whose email names another tenant than the schema they landed in').to.be.greaterThan(0);
    });

    it('the manager stays isolated on server connections another client left with a foreign search_path', async () => {
      bouncer().url;
      const manager = await openManager();
      const slugs = await createTenantsVia(manager, 4, 'polluted');
      const polluted = await startPgBouncer(databaseUrl(), { poolSize: BOUNCER_POOL });
      let tenants: TenantDataSourceManager | undefined;
      try {
        // Leave each of the 4 server connections on a tenant's search_path:
        // 4 concurrent transactions hold 4 distinct server connections, and a
        // plain SET inside a transaction outlives its COMMIT.
        const pool = new Pool({ connectionString: polluted.url, max: 8 });
        pool.on('error', () => undefined);
        const onServers = async (sql: string): Promise<Array<Record<string, string>>> =>
          Promise.all(
            Array.from({ length: BOUNCER_POOL }, async (_, i) => {
              const client = await pool.connect();
              try {
                const results = (await client.query(sql.replace('$SCHEMA', `"${schemaOf(slugs[i]!)}"`))) as unknown as Array<{ rows: Array<Record<string, string>> }>;
                return results[1]!.rows[0]!;
              } finally {
                client.release();
              }
            }),
          );
        await onServers('BEGIN; SET search_path TO $SCHEMA; SELECT pg_sleep(0.2); COMMIT');
        const seen = await onServers("BEGIN; SELECT current_setting('search_path') AS path, pg_sleep(0.2)::text; COMMIT");
        await closeSharedPool(pool);
        // Precondition: the server connections really are polluted.
        expect(seen.map((r) => r.path).sort()).to.deep.equal(slugs.map((slug) => `"${schemaOf(slug)}"`.replace(/^"([a-z_][a-z0-9_]*)"$/, '$1')).sort());

        tenants = await openManagerVia(polluted.url);
        console.log(`      (TypeORM's current schema, read through PgBouncer at initialize(): ${(tenants.sharedDataSource.driver as PostgresDriver).searchSchema})`);
        const fresh = await createTenantsVia(tenants, 4, 'afterpoll');
        const all = [...slugs, ...fresh];
        await Promise.all(
          Array.from({ length: 200 }, (_, i) =>
            tenants!.run(all[i % all.length]!, async () => {
              const slug = all[i % all.length]!;
              await tenantContext.getRepository(Client).save({ name: slug, email: `p${i}${suffixOf(slug)}` });
              const rows = await tenantContext.getRepository(Client).find();
              for (const row of rows) expect(row.email, slug).to.match(new RegExp(`${suffixOf(slug).replace(/\./g, '\\.')}$`));
              const raw = await tenantContext.query<Array<{ email: string }>>('SELECT email FROM client');
              for (const row of raw) expect(row.email, slug).to.match(new RegExp(`${suffixOf(slug).replace(/\./g, '\\.')}$`));
            }),
          ),
        );
        for (const slug of all) {
          const emails = await emailsInSchema(slug);
          expect(emails).to.have.length(200 / all.length);
          expect(emails.every((e) => e.endsWith(suffixOf(slug))), slug).to.equal(true);
        }
      } finally {
        await tenants?.destroy();
        await polluted.stop();
      }
    });
  });
});
