import { expect } from 'chai';
import { Client, Plan, Project } from '../../entities';
import { tenantContext } from '../../src';
import { adminQuery, databaseUrl, openManager, sleep, uniqueSlug } from '../support/fixtures';
import { createTenantsInBatches, describeError, expectRegistryMatchesNamespaces, schemaOf, suffixOf, type AdminQuery } from './fault-support';

const admin: AdminQuery = (sql, params) => adminQuery(sql, params);

/** Connections the server sees with this application_name in the test database. */
async function serverConnections(applicationName: string): Promise<number> {
  const [{ n }] = await adminQuery<{ n: number }>(
    'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1',
    [applicationName],
  );
  return n;
}

/** Polls `condition` every 10 ms until it holds; throws after `timeoutMs` (a bound, so a broken setup fails instead of hanging). */
async function waitUntil(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting until ${what}`);
    await sleep(10);
  }
}

/** The PostgreSQL SQLSTATE of a TypeORM or pg error. */
function sqlState(error: unknown): string | undefined {
  const e = error as { code?: unknown; driverError?: { code?: unknown } } | undefined;
  const code = e?.code ?? e?.driverError?.code;
  return typeof code === 'string' ? code : undefined;
}

describe('faults: pool exhaustion and timeouts', function () {
  this.timeout(120_000);

  it('poolSize 3: 50 concurrent runs over 5 tenants, each holding a connection 50 ms, queue and all complete in their own schema, with never more than 3 connections', async () => {
    // Its own application_name, so connections of managers closed by earlier tests are not counted.
    const manager = await openManager({
      dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 3, applicationName: 'faults-pool-3' },
      tenantRecordTtlMs: 60_000,
    });
    const slugs = await createTenantsInBatches(manager, 5, 'fpool');

    let maxWaiting = 0;
    let maxTotal = 0;
    let maxServer = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const { pool } = manager.stats();
        maxWaiting = Math.max(maxWaiting, pool.waiting);
        maxTotal = Math.max(maxTotal, pool.total);
        maxServer = Math.max(maxServer, await serverConnections('faults-pool-3'));
        await sleep(5);
      }
    })();
    const schemas = await Promise.all(
      Array.from({ length: 50 }, (_, i) => {
        const slug = slugs[i % slugs.length]!;
        return manager.run(slug, async () => {
          await tenantContext.query('SELECT pg_sleep(0.05)');
          await tenantContext.getRepository(Client).save({ name: slug, email: `q${i}${suffixOf(slug)}` });
          const [{ schema }] = await tenantContext.query<Array<{ schema: string }>>('SELECT current_schema() AS schema');
          return schema;
        });
      }),
    );
    sampling = false;
    await sampler;

    expect(schemas).to.deep.equal(Array.from({ length: 50 }, (_, i) => schemaOf(slugs[i % slugs.length]!)));
    expect(maxWaiting, 'callers seen waiting for a connection (the pool really was exhausted)').to.be.greaterThan(0);
    expect(maxTotal, 'pool connections').to.be.at.most(3);
    expect(maxServer, 'connections seen by the server').to.be.at.most(3);
    for (const slug of slugs) {
      const [{ n }] = await adminQuery<{ n: number }>(`SELECT count(*)::int AS n FROM "${schemaOf(slug)}".client`);
      expect(n, slug).to.equal(10);
    }
    await expectRegistryMatchesNamespaces(manager, admin, ['fpool_']);
  });

  it('pool.connectionTimeoutMillis: with all 3 connections held by pg_sleep(3), a 4th call fails with pg\'s connect timeout instead of waiting; the holders and later calls complete', async () => {
    const manager = await openManager({
      dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 3, applicationName: 'faults-pool-timeout' },
      pool: { connectionTimeoutMillis: 500 },
      tenantRecordTtlMs: 60_000,
    });
    const [slug] = await createTenantsInBatches(manager, 1, 'fpoolt');
    await manager.run(slug!, () => tenantContext.query('SELECT 1')); // cached: run() itself needs no connection

    let holdersSettled = false;
    const holders = Promise.all(
      [0, 1, 2].map(() => manager.run(slug!, () => tenantContext.query<Array<{ ok: number }>>('SELECT 1 AS ok FROM pg_sleep(3)'))),
    ).finally(() => {
      holdersSettled = true;
    });
    await waitUntil('the three holders are sleeping on the server', async () => {
      const [{ n }] = await adminQuery<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = 'faults-pool-timeout' AND state = 'active' AND query = 'SELECT 1 AS ok FROM pg_sleep(3)'`,
      );
      return n === 3;
    });
    expect(manager.stats().pool).to.include({ total: 3, idle: 0 });

    const error = await manager.run(slug!, () => tenantContext.query('SELECT 1')).then(
      () => undefined,
      (e: unknown) => e,
    );
    // Failed while every connection was still held: it did not wait for one to come back.
    expect(holdersSettled, 'the holders were still running when the 4th call failed').to.equal(false);
    expect(error, 'the 4th call rejected').to.be.instanceOf(Error);
    expect((error as Error).message, describeError(error)).to.match(/timeout exceeded when trying to connect/);

    const held = await holders;
    expect(held.map((rows) => rows[0]!.ok)).to.deep.equal([1, 1, 1]);
    expect(await manager.run(slug!, () => tenantContext.query<Array<{ n: number }>>('SELECT 42 AS n'))).to.deep.equal([{ n: 42 }]);
    await expectRegistryMatchesNamespaces(manager, admin, ['fpoolt_']);
  });

  it('pool.statementTimeoutMillis: a statement running past it is cancelled with SQLSTATE 57014, its transaction rolls back, and the connection serves the next call', async () => {
    const manager = await openManager({ pool: { statementTimeoutMillis: 500 }, tenantRecordTtlMs: 60_000 });
    const slug = uniqueSlug('fpools');
    await manager.createTenant(slug);

    const [{ timeout }] = await manager.run(slug, () => tenantContext.query<Array<{ timeout: string }>>("SELECT current_setting('statement_timeout') AS timeout"));
    expect(timeout).to.equal('500ms');

    const error = await manager
      .run(slug, () =>
        tenantContext.transaction(async (em) => {
          await em.save(Client, { name: slug, email: `before-timeout${suffixOf(slug)}` });
          await tenantContext.query('SELECT pg_sleep(5)'); // 10 x the bound
        }),
      )
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(sqlState(error), describeError(error)).to.equal('57014');
    expect(await admin(`SELECT 1 FROM "${schemaOf(slug)}".client`), 'the row written before the timeout').to.have.length(0);

    // Statements under the bound run, and the pool (pool size 10) is healthy: all ten at once.
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        manager.run(slug, async () => {
          await tenantContext.query('SELECT pg_sleep(0.05)');
          return tenantContext.getRepository(Client).save({ name: slug, email: `after${i}${suffixOf(slug)}` });
        }),
      ),
    );
    expect(results).to.have.length(10);
    const [{ n }] = await admin<{ n: number }>(`SELECT count(*)::int AS n FROM "${schemaOf(slug)}".client`);
    expect(n).to.equal(10);
    await expectRegistryMatchesNamespaces(manager, admin, ['fpools_']);
  });

  it('poolSize 1: tenantContext.transaction nesting repository calls (tenant and shared), raw SQL and a nested transaction completes without deadlock, 6 runs of 3 tenants at once', async () => {
    const manager = await openManager({
      dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 1 },
      // A call that waited for a second connection would fail after this, not hang.
      pool: { connectionTimeoutMillis: 5_000 },
      tenantRecordTtlMs: 60_000,
    });
    const slugs: string[] = [];
    for (let i = 0; i < 3; i += 1) {
      slugs.push(uniqueSlug('fpool1'));
      await manager.createTenant(slugs[i]!);
    }
    const plan = await manager.sharedDataSource.getRepository(Plan).save({ code: uniqueSlug('plan'), name: 'Pool', monthlyPriceCents: 1 });

    const work = (slug: string, round: number): Promise<{ inside: number; raw: number; plans: number }> =>
      manager.run(slug, () =>
        tenantContext.transaction(async (em) => {
          const first = await em.save(Client, { name: slug, email: `em${round}${suffixOf(slug)}`, plan });
          // Tenant-agnostic code: joins the transaction through the context, on the one connection.
          await tenantContext.getRepository(Client).save({ name: slug, email: `repo${round}${suffixOf(slug)}` });
          await tenantContext.getRepository(Project).save({ name: `p${round}`, client: first });
          const plans = await tenantContext.getRepository(Plan).countBy({ id: plan.id });
          await tenantContext.transaction(() =>
            tenantContext.getRepository(Client).save({ name: slug, email: `nested${round}${suffixOf(slug)}` }),
          );
          const [{ n: raw }] = await tenantContext.query<Array<{ n: number }>>('SELECT count(*)::int AS n FROM client');
          const inside = await tenantContext.getManager().count(Client);
          return { inside, raw, plans };
        }),
      );

    // Two rounds for each tenant, all six at once: they queue for the single connection.
    const results = await Promise.all([0, 1].flatMap((round) => slugs.map((slug) => work(slug, round))));
    for (const r of results) {
      expect(r.plans).to.equal(1);
      expect(r.raw, 'raw SQL inside the transaction sees its uncommitted rows').to.equal(r.inside);
      expect(r.inside === 3 || r.inside === 6, `rows seen inside: ${r.inside}`).to.equal(true);
    }
    for (const slug of slugs) {
      const rows = await admin<{ email: string }>(`SELECT email FROM "${schemaOf(slug)}".client ORDER BY email`);
      expect(rows.map((r) => r.email)).to.deep.equal(
        ['em0', 'em1', 'nested0', 'nested1', 'repo0', 'repo1'].map((p) => `${p}${suffixOf(slug)}`),
      );
      const [{ n }] = await admin<{ n: number }>(`SELECT count(*)::int AS n FROM "${schemaOf(slug)}".project`);
      expect(n).to.equal(2);
    }
    expect(manager.stats().pool.total).to.be.at.most(1);
    await expectRegistryMatchesNamespaces(manager, admin, ['fpool1_']);
  });
});

