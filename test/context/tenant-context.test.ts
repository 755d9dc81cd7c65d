import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { expect } from 'chai';
import type { DataSource, EntityManager } from 'typeorm';
import { Client, Plan } from '../../entities';
import { AmbiguousManagerError, TenantContextMissingError, tenantContext, type TenantDataSourceManager } from '../../src';
import { adminQuery, openManager, sleep, uniqueSlug } from '../support/fixtures';

/** The schema name of a slug (the documented rule: `-` becomes `_`). */
function schemaOf(slug: string): string {
  return slug.replace(/-/g, '_');
}

/** An email that names its tenant: every row read can be checked against the tenant that asked. */
function emailFor(slug: string, label: string): string {
  return `${label}@${slug}.test`;
}

/** Creates tenants and gives each one seed client whose email names the tenant. */
async function tenantsWithSeed(manager: TenantDataSourceManager, count: number, prefix: string): Promise<string[]> {
  const slugs = Array.from({ length: count }, () => uniqueSlug(prefix));
  for (const slug of slugs) {
    await manager.createTenant(slug);
    await manager.run(slug, () => tenantContext.getRepository(Client).save({ name: slug, email: emailFor(slug, 'seed') }));
  }
  return slugs;
}

/** Emails in the tenant's physical client table, sorted. */
async function physicalEmails(slug: string): Promise<string[]> {
  const rows = await adminQuery<{ email: string }>(`SELECT email FROM "${schemaOf(slug)}".client ORDER BY email`);
  return rows.map((r) => r.email);
}

/** The active tenant and the emails a repository read returns, seen from where it is called. */
async function observe(): Promise<{ slug: string | undefined; emails: string[] }> {
  const slug = tenantContext.current()?.slug;
  const rows = await tenantContext.getRepository(Client).find({ order: { id: 'ASC' } });
  return { slug, emails: rows.map((r) => r.email) };
}

/** The SQLSTATE of a failure, whether TypeORM wrapped the driver error or not. */
function sqlState(error: unknown): string | undefined {
  const e = error as { code?: unknown; driverError?: { code?: unknown } } | undefined;
  const code = e?.driverError?.code ?? e?.code;
  return typeof code === 'string' ? code : undefined;
}

async function failureOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected the promise to reject, and it resolved');
    },
    (error: unknown) => error,
  );
}

describe('tenantContext: runs and propagation', () => {
  it('nested run() switches to the inner tenant and restores the outer one after, for current() and for data', async () => {
    const manager = await openManager();
    const [a, b] = await tenantsWithSeed(manager, 2, 'nest');

    expect(tenantContext.current()).to.equal(undefined);
    await manager.run(a, async () => {
      expect(await observe()).to.deep.equal({ slug: a, emails: [emailFor(a, 'seed')] });

      const inner = await manager.run(b, async () => {
        await sleep(1);
        const seen = await observe();
        await tenantContext.getRepository(Client).save({ name: b, email: emailFor(b, 'inner') });
        return seen;
      });
      expect(inner).to.deep.equal({ slug: b, emails: [emailFor(b, 'seed')] });

      // Outer tenant restored, for the record and for the data.
      expect(await observe()).to.deep.equal({ slug: a, emails: [emailFor(a, 'seed')] });
      await tenantContext.getRepository(Client).save({ name: a, email: emailFor(a, 'outer-after') });

      // An inner run that throws restores the outer tenant too.
      await expect(
        manager.run(b, async () => {
          await sleep(1);
          throw new Error('inner failed');
        }),
      ).to.be.rejectedWith('inner failed');
      expect(tenantContext.current()?.slug).to.equal(a);
      expect((await observe()).emails).to.deep.equal([emailFor(a, 'seed'), emailFor(a, 'outer-after')]);
    });
    expect(tenantContext.current(), 'no tenant after the outer run').to.equal(undefined);

    expect(await physicalEmails(a)).to.deep.equal([emailFor(a, 'outer-after'), emailFor(a, 'seed')]);
    expect(await physicalEmails(b)).to.deep.equal([emailFor(b, 'inner'), emailFor(b, 'seed')]);
  });

  it('a run of another tenant nested inside a transaction writes to the inner tenant, outside the outer transaction', async () => {
    const manager = await openManager();
    const [a, b] = await tenantsWithSeed(manager, 2, 'nesttx');
    await expect(
      manager.run(a, () =>
        tenantContext.transaction(async () => {
          await tenantContext.getRepository(Client).save({ name: a, email: emailFor(a, 'tx') });
          const inner = await manager.run(b, async () => {
            await tenantContext.getRepository(Client).save({ name: b, email: emailFor(b, 'nested') });
            return observe();
          });
          expect(inner).to.deep.equal({ slug: b, emails: [emailFor(b, 'seed'), emailFor(b, 'nested')] });
          // Back in the outer transaction: the uncommitted row is visible here.
          expect((await observe()).emails).to.deep.equal([emailFor(a, 'seed'), emailFor(a, 'tx')]);
          throw new Error('roll back the outer');
        }),
      ),
    ).to.be.rejectedWith('roll back the outer');
    expect(await physicalEmails(a), 'outer transaction rolled back').to.deep.equal([emailFor(a, 'seed')]);
    expect(await physicalEmails(b), 'inner tenant wrote to its own table').to.deep.equal([emailFor(b, 'nested'), emailFor(b, 'seed')]);
  });

  it('work started inside a run keeps its tenant: setTimeout, setImmediate, promise chains, EventEmitter listeners', async () => {
    const manager = await openManager();
    const slugs = await tenantsWithSeed(manager, 3, 'prop');
    const emitter = new EventEmitter(); // created outside any run, shared by all runs

    type Observation = Awaited<ReturnType<typeof observe>>;
    const perTenant = async (slug: string): Promise<Record<string, Observation>> =>
      manager.run(slug, async () => {
        await sleep(Math.random() * 3);
        const viaTimeout = new Promise<Observation>((resolve, reject) => {
          setTimeout(() => void observe().then(resolve, reject), 1 + Math.random() * 4);
        });
        const viaImmediate = new Promise<Observation>((resolve, reject) => {
          setImmediate(() => void observe().then(resolve, reject));
        });
        const viaNextTick = new Promise<Observation>((resolve, reject) => {
          process.nextTick(() => void observe().then(resolve, reject));
        });
        const viaChain = Promise.resolve()
          .then(() => sleep(Math.random() * 3))
          .then(() => new Promise((resolve) => setTimeout(resolve, 1)))
          .then(() => observe());
        const viaListener = new Promise<Observation>((resolve, reject) => {
          const event = `go:${slug}`;
          emitter.once(event, () => void observe().then(resolve, reject));
          // Emitted later, from deeper in this run's async flow.
          void (async () => {
            await sleep(Math.random() * 3);
            await new Promise((r) => setImmediate(r));
            emitter.emit(event);
          })();
        });
        const [timeout, immediate, nextTick, chain, listener] = await Promise.all([viaTimeout, viaImmediate, viaNextTick, viaChain, viaListener]);
        return { timeout, immediate, nextTick, chain, listener };
      });

    // All tenants at once, so a "current tenant" kept anywhere but in the async context gets mixed up.
    const results = await Promise.all(slugs.map((slug) => perTenant(slug)));
    slugs.forEach((slug, i) => {
      for (const [via, seen] of Object.entries(results[i]!)) {
        expect(seen, `${via} in the run of ${slug}`).to.deep.equal({ slug, emails: [emailFor(slug, 'seed')] });
      }
    });
  });

  it('work scheduled outside any run does not pick up a run that is active when it fires', async () => {
    const manager = await openManager();
    const [a] = await tenantsWithSeed(manager, 1, 'outside');
    let fired: (() => void) | undefined;
    const outsideCallback = new Promise<{ current: unknown; error: unknown }>((resolve) => {
      fired = () => {
        let error: unknown;
        try {
          tenantContext.getRepository(Client);
        } catch (e) {
          error = e;
        }
        resolve({ current: tenantContext.current(), error });
      };
    });
    const timer = setTimeout(() => fired!(), 10);
    const emitter = new EventEmitter();
    const listenerSaw: unknown[] = [];
    emitter.on('tick', () => listenerSaw.push(tenantContext.current()?.slug));
    // The run is active, and waiting, while the timer fires.
    const seen = await manager.run(a, async () => {
      emitter.emit('tick'); // a listener runs in the context of whoever emits
      const result = await outsideCallback;
      return { ...result, inRun: tenantContext.current()?.slug };
    });
    clearTimeout(timer);
    expect(seen.current, 'the timer scheduled outside sees no tenant').to.equal(undefined);
    expect(seen.error).to.be.instanceOf(TenantContextMissingError);
    expect(seen.inRun).to.equal(a);
    expect(listenerSaw).to.deep.equal([a]);
  });
});

describe('tenantContext: fail closed outside a run', () => {
  it('getRepository and getManager throw TenantContextMissingError synchronously; transaction and query reject; current() is undefined', async () => {
    const manager = await openManager();
    const [a] = await tenantsWithSeed(manager, 1, 'closed');

    expect(tenantContext.current()).to.equal(undefined);
    expect(() => tenantContext.getRepository(Client)).to.throw(TenantContextMissingError);
    expect(() => tenantContext.getManager()).to.throw(TenantContextMissingError);

    let called = false;
    const tx = tenantContext.transaction(async () => {
      called = true;
      return 1;
    });
    expect(tx, 'transaction() returns a promise, not a synchronous throw').to.be.instanceOf(Promise);
    await expect(tx).to.be.rejectedWith(TenantContextMissingError);
    expect(called, 'fn of transaction() never runs without a tenant').to.equal(false);

    const q = tenantContext.query('SELECT email FROM client');
    expect(q).to.be.instanceOf(Promise);
    await expect(q).to.be.rejectedWith(TenantContextMissingError);
    // Nothing fell back to the shared schema: there is no client table there to read or create.
    const inShared = await adminQuery("SELECT 1 FROM information_schema.tables WHERE table_schema = 'public' AND table_name = 'client'");
    expect(inShared).to.have.length(0);

    // After a run has come and gone, the context is empty again.
    await manager.run(a, () => expect(tenantContext.current()?.slug).to.equal(a));
    expect(tenantContext.current()).to.equal(undefined);
    expect(() => tenantContext.getRepository(Client)).to.throw(TenantContextMissingError);
    expect(() => tenantContext.getManager()).to.throw(TenantContextMissingError);
  });
  it('a tenant entity named by its string name outside a run throws TenantContextMissingError, too', async () => {
    const manager = await openManager();
    const [a] = await tenantsWithSeed(manager, 1, 'byname');
    // Inside a run the name resolves to the tenant's entity ...
    const inside = await manager.run(a, () => tenantContext.getRepository<Client>('Client').find());
    expect(inside.map((c) => c.email)).to.deep.equal([emailFor(a, 'seed')]);
    // ... and outside one, fail closed must not depend on how the entity is named.
    expect(() => tenantContext.getRepository<Client>('Client')).to.throw(TenantContextMissingError);
  });
});

describe('tenantContext.query', () => {
  it('returns rows like DataSource.query, and unqualified names resolve to the active tenant', async () => {
    const manager = await openManager();
    const [a, b] = await tenantsWithSeed(manager, 2, 'rawq');
    await manager.run(a, () => tenantContext.getRepository(Client).save({ name: 'second', email: emailFor(a, 'second') }));

    const viaContext = await manager.run(a, () => tenantContext.query('SELECT id, name, email FROM client ORDER BY id'));
    const viaDataSource = await (await manager.getDataSource(a)).query(`SELECT id, name, email FROM "${schemaOf(a)}".client ORDER BY id`);
    expect(viaContext).to.be.an('array').with.length(2);
    expect(viaContext).to.deep.equal(viaDataSource);
    expect(viaContext.map((r: { email: string }) => r.email)).to.deep.equal([emailFor(a, 'seed'), emailFor(a, 'second')]);

    const withParams = await manager.run(b, () => tenantContext.query('SELECT email FROM client WHERE email = $1', [emailFor(b, 'seed')]));
    expect(withParams).to.deep.equal([{ email: emailFor(b, 'seed') }]);
    const otherTenantsRow = await manager.run(b, () => tenantContext.query('SELECT email FROM client WHERE email = $1', [emailFor(a, 'seed')]));
    expect(otherTenantsRow).to.deep.equal([]);

    // Raw writes land in the tenant's table too.
    await manager.run(b, () => tenantContext.query('INSERT INTO client (name, email) VALUES ($1, $2)', ['raw', emailFor(b, 'raw')]));
    expect(await physicalEmails(b)).to.deep.equal([emailFor(b, 'raw'), emailFor(b, 'seed')]);
    expect(await physicalEmails(a)).to.deep.equal([emailFor(a, 'second'), emailFor(a, 'seed')]);
  });

  it('an unqualified shared-only table fails with 42P01 instead of silently reading the shared schema', async () => {
    const manager = await openManager();
    const [a] = await tenantsWithSeed(manager, 1, 'noleak');
    const code = uniqueSlug('plan');
    await manager.sharedDataSource.getRepository(Plan).save({ code, name: 'Public plan', monthlyPriceCents: 5 });
    expect(await adminQuery('SELECT 1 FROM public.plan WHERE code = $1', [code]), 'public.plan has a row to leak').to.have.length(1);

    const error = await manager.run(a, () => failureOf(tenantContext.query('SELECT * FROM plan')));
    expect(sqlState(error), String(error)).to.equal('42P01');
    // Qualified access to the shared schema is still possible, on purpose.
    const qualified = await manager.run(a, () => tenantContext.query('SELECT code FROM public.plan WHERE code = $1', [code]));
    expect(qualified).to.deep.equal([{ code }]);
    // The failure did not poison anything: the next query in the tenant works.
    const after = await manager.run(a, () => tenantContext.query('SELECT email FROM client'));
    expect(after).to.deep.equal([{ email: emailFor(a, 'seed') }]);
  });

  it('the search_path never leaks onto pooled connections, after success, failure or a transaction', async () => {
    const manager = await openManager();
    const [a] = await tenantsWithSeed(manager, 1, 'path');
    const schema = schemaOf(a);
    const [{ search_path: defaultPath }] = await adminQuery<{ search_path: string }>('SHOW search_path');
    expect(defaultPath).to.not.include(schema);

    // Ten concurrent raw queries occupy every connection of the pool (size 10).
    const inside = await manager.run(a, () =>
      Promise.all(
        Array.from({ length: 10 }, () =>
          tenantContext.query<Array<{ pid: number; path: string }>>(
            "SELECT pg_backend_pid() AS pid, current_setting('search_path') AS path FROM pg_sleep(0.05)",
          ),
        ),
      ),
    );
    const tenantPids = new Set(inside.map(([row]) => row!.pid));
    for (const [row] of inside) expect(row!.path, 'inside the query the tenant schema is on the path').to.include(schema);
    expect(tenantPids.size, 'the raw queries used several connections').to.be.greaterThan(1);

    // A failing one and one inside a transaction, too.
    await manager.run(a, () => failureOf(tenantContext.query('SELECT * FROM plan')));
    await manager.run(a, () => tenantContext.transaction(() => tenantContext.query('SELECT count(*) FROM client')));

    const sharedPids = new Set<number>();
    for (let round = 0; round < 3; round += 1) {
      const rows = await Promise.all(
        Array.from({ length: 10 }, () =>
          manager.sharedDataSource.query("SELECT pg_backend_pid() AS pid, current_setting('search_path') AS path FROM pg_sleep(0.02)"),
        ),
      );
      for (const [row] of rows as Array<Array<{ pid: number; path: string }>>) {
        sharedPids.add(row!.pid);
        expect(row!.path, `connection ${row!.pid}`).to.equal(defaultPath);
        expect(row!.path).to.not.include(schema);
      }
      for (let i = 0; i < 5; i += 1) {
        const [{ search_path }] = (await manager.sharedDataSource.query('SHOW search_path')) as Array<{ search_path: string }>;
        expect(search_path).to.equal(defaultPath);
      }
    }
    const reused = [...tenantPids].filter((pid) => sharedPids.has(pid));
    expect(reused.length, 'the check ran on connections the tenant queries had used').to.be.greaterThan(1);
  });

  it('querySearchPath adds schemas after the tenant one and the extensions schema: reachable, but never ahead of the tenant', async () => {
    const extra = `extensions_x_${randomBytes(3).toString('hex')}`;
    await adminQuery(`CREATE SCHEMA "${extra}"`);
    try {
      await adminQuery(`CREATE TABLE "${extra}".ext_probe (v text)`);
      await adminQuery(`INSERT INTO "${extra}".ext_probe VALUES ('from-extra')`);
      // A table with the tenant table's name in the extra schema: the tenant's must win.
      await adminQuery(`CREATE TABLE "${extra}".client (id int, name text, email text)`);
      await adminQuery(`INSERT INTO "${extra}".client VALUES (1, 'x', 'decoy@${extra}.test')`);

      const manager = await openManager({ querySearchPath: [extra] });
      const [a] = await tenantsWithSeed(manager, 1, 'extpath');
      const seen = await manager.run(a, async () => ({
        probe: await tenantContext.query('SELECT v FROM ext_probe'),
        clients: await tenantContext.query('SELECT email FROM client'),
        path: await tenantContext.query("SELECT current_setting('search_path') AS path"),
        plan: await failureOf(tenantContext.query('SELECT * FROM plan')),
      }));
      expect(seen.probe).to.deep.equal([{ v: 'from-extra' }]);
      expect(seen.clients).to.deep.equal([{ email: emailFor(a, 'seed') }]);
      // The tenant, the extensions schema, the extras, pg_temp last.
      expect(seen.path[0].path.replace(/"/g, '').split(/,\s*/)).to.deep.equal([schemaOf(a), 'extensions', extra, 'pg_temp']);
      expect(sqlState(seen.plan), 'the shared schema is still not on the path').to.equal('42P01');

      // Without the option the extra schema is not reachable.
      const plain = await openManager();
      const error = await plain.run(a, () => failureOf(tenantContext.query('SELECT v FROM ext_probe')));
      expect(sqlState(error)).to.equal('42P01');
    } finally {
      await adminQuery(`DROP SCHEMA IF EXISTS "${extra}" CASCADE`);
    }
  });
});

describe('tenantContext.transaction', () => {
  it('commits: fn gets the EntityManager, its result is returned, rows are visible after', async () => {
    const manager = await openManager();
    const [a, b] = await tenantsWithSeed(manager, 2, 'txok');
    const result = await manager.run(a, () =>
      tenantContext.transaction(async (em) => {
        await em.save(Client, { name: a, email: emailFor(a, 'via-em') });
        await tenantContext.getRepository(Client).save({ name: a, email: emailFor(a, 'via-repo') });
        await tenantContext.query('INSERT INTO client (name, email) VALUES ($1, $2)', [a, emailFor(a, 'via-query')]);
        return 'done';
      }),
    );
    expect(result).to.equal('done');
    expect(await physicalEmails(a)).to.deep.equal([emailFor(a, 'seed'), emailFor(a, 'via-em'), emailFor(a, 'via-query'), emailFor(a, 'via-repo')]);
    expect(await physicalEmails(b)).to.deep.equal([emailFor(b, 'seed')]);
  });

  it('rolls back everything when fn throws and rethrows the same error', async () => {
    const manager = await openManager();
    const [a] = await tenantsWithSeed(manager, 1, 'txfail');
    const failure = new Error('fn failed');
    const error = await manager.run(a, () =>
      failureOf(
        tenantContext.transaction(async (em) => {
          await em.save(Client, { name: a, email: emailFor(a, 'via-em') });
          await tenantContext.getRepository(Client).save({ name: a, email: emailFor(a, 'via-repo') });
          await tenantContext.getManager().save(Client, { name: a, email: emailFor(a, 'via-manager') });
          await tenantContext.query('INSERT INTO client (name, email) VALUES ($1, $2)', [a, emailFor(a, 'via-query')]);
          await sleep(1);
          throw failure;
        }),
      ),
    );
    expect(error).to.equal(failure);
    expect(await physicalEmails(a), 'nothing kept').to.deep.equal([emailFor(a, 'seed')]);
  });

  it('getRepository(), getManager() and query() inside fn join the transaction (they see its uncommitted rows)', async () => {
    const manager = await openManager();
    const [a] = await tenantsWithSeed(manager, 1, 'txjoin');
    const seen = await manager.run(a, () =>
      failureOf(
        tenantContext.transaction(async (em: EntityManager) => {
          expect(tenantContext.getManager(), 'getManager() is the transaction manager').to.equal(em);
          expect(tenantContext.getRepository(Client).manager, 'repositories use the transaction manager').to.equal(em);
          await tenantContext.getRepository(Client).save({ name: a, email: emailFor(a, 'uncommitted') });
          // Through the tenant-agnostic helpers, in code that never saw `em`.
          const viaManager = (await tenantContext.getManager().find(Client, { order: { id: 'ASC' } })).map((c) => c.email);
          const viaQuery = (await tenantContext.query<Array<{ email: string }>>('SELECT email FROM client ORDER BY id')).map((r) => r.email);
          const [{ pid: queryPid }] = await tenantContext.query<Array<{ pid: number }>>('SELECT pg_backend_pid() AS pid');
          const [{ pid: emPid }] = (await em.query('SELECT pg_backend_pid() AS pid')) as Array<{ pid: number }>;
          // From outside the transaction the row does not exist yet.
          const outside = await physicalEmails(a);
          const outsideViaRun = await manager.run(a, () => tenantContext.getRepository(Client).count());
          const error = new Error('discard') as Error & { seen?: unknown };
          error.seen = { viaManager, viaQuery, queryPid, emPid, outside, outsideViaRun };
          throw error;
        }),
      ),
    );
    const observed = (seen as { seen: Record<string, unknown> }).seen;
    expect(observed.viaManager).to.deep.equal([emailFor(a, 'seed'), emailFor(a, 'uncommitted')]);
    expect(observed.viaQuery).to.deep.equal([emailFor(a, 'seed'), emailFor(a, 'uncommitted')]);
    expect(observed.queryPid, 'query() ran on the transaction connection').to.equal(observed.emPid);
    expect(observed.outside).to.deep.equal([emailFor(a, 'seed')]);
    expect(observed.outsideViaRun).to.equal(1);
    expect(await physicalEmails(a), 'the row inserted via getRepository inside is gone after the throw').to.deep.equal([emailFor(a, 'seed')]);
  });

  it('a nested transaction() is a savepoint: a caught inner failure rolls back only the inner work', async () => {
    const manager = await openManager();
    const [a] = await tenantsWithSeed(manager, 1, 'txnest');
    await manager.run(a, () =>
      tenantContext.transaction(async () => {
        await tenantContext.getRepository(Client).save({ name: a, email: emailFor(a, 'outer-1') });
        await expect(
          tenantContext.transaction(async () => {
            await tenantContext.getRepository(Client).save({ name: a, email: emailFor(a, 'inner-lost') });
            await tenantContext.query('INSERT INTO client (name, email) VALUES ($1, $2)', [a, emailFor(a, 'inner-lost-raw')]);
            throw new Error('inner failed');
          }),
        ).to.be.rejectedWith('inner failed');
        // The outer transaction is still usable after the savepoint rollback.
        const visible = (await tenantContext.getRepository(Client).find({ order: { id: 'ASC' } })).map((c) => c.email);
        expect(visible).to.deep.equal([emailFor(a, 'seed'), emailFor(a, 'outer-1')]);
        const kept = await tenantContext.transaction(async () => {
          await tenantContext.getRepository(Client).save({ name: a, email: emailFor(a, 'inner-kept') });
          return 'kept';
        });
        expect(kept).to.equal('kept');
        await tenantContext.getRepository(Client).save({ name: a, email: emailFor(a, 'outer-2') });
      }),
    );
    expect(await physicalEmails(a)).to.deep.equal([emailFor(a, 'inner-kept'), emailFor(a, 'outer-1'), emailFor(a, 'outer-2'), emailFor(a, 'seed')]);

    // An inner transaction that succeeded is still undone when the outer one fails.
    await expect(
      manager.run(a, () =>
        tenantContext.transaction(async () => {
          await tenantContext.transaction(() => tenantContext.getRepository(Client).save({ name: a, email: emailFor(a, 'inner-ok') }));
          throw new Error('outer failed');
        }),
      ),
    ).to.be.rejectedWith('outer failed');
    expect(await physicalEmails(a)).to.not.include(emailFor(a, 'inner-ok'));
  });
});

describe('tenantContext with several managers', () => {
  it('shared repositories outside a run throw AmbiguousManagerError with two live managers, and use the run\'s manager inside one', async () => {
    const m1 = await openManager();
    const m2 = await openManager();
    const slug = uniqueSlug('amb');
    await m1.createTenant(slug);

    expect(() => tenantContext.getRepository(Plan)).to.throw(AmbiguousManagerError);
    expect(() => tenantContext.getRepository(Client), 'tenant entities still say "no tenant"').to.throw(TenantContextMissingError);

    for (const [label, manager] of [['m1', m1], ['m2', m2]] as const) {
      const code = uniqueSlug(`plan-${label}`);
      const { repoSource, found, tenantSource } = await manager.run(slug, async () => {
        const repo = tenantContext.getRepository(Plan);
        await repo.save({ code, name: `Plan ${label}`, monthlyPriceCents: 7 });
        await sleep(1);
        return {
          repoSource: tenantContext.getRepository(Plan).manager.dataSource,
          found: await tenantContext.getRepository(Plan).findOneBy({ code }),
          tenantSource: await manager.getDataSource(slug),
        };
      });
      expect(repoSource, `the shared repository inside a run of ${label} uses ${label}`).to.equal(tenantSource);
      expect(found?.name).to.equal(`Plan ${label}`);
      expect(await adminQuery('SELECT name FROM public.plan WHERE code = $1', [code])).to.deep.equal([{ name: `Plan ${label}` }]);
    }
    expect(await m1.getDataSource(slug)).to.not.equal(await m2.getDataSource(slug));

    // With one live manager left, shared repositories outside a run use it.
    await m1.destroy();
    const repo = tenantContext.getRepository(Plan);
    expect(repo.manager.dataSource).to.equal(m2.sharedDataSource);
    expect(await repo.countBy({ name: 'Plan m1' })).to.equal(1);
  });

  it('interleaved runs of two managers each see their own manager\'s DataSource', async () => {
    const m1 = await openManager();
    const m2 = await openManager();
    const slugs = [uniqueSlug('two'), uniqueSlug('two')];
    for (const slug of slugs) {
      await m1.createTenant(slug);
      await m1.run(slug, () => tenantContext.getRepository(Client).save({ name: slug, email: emailFor(slug, 'seed') }));
    }
    const sources = new Map<TenantDataSourceManager, Map<string, DataSource>>();
    for (const manager of [m1, m2]) {
      const bySlug = new Map<string, DataSource>();
      for (const slug of slugs) bySlug.set(slug, await manager.getDataSource(slug));
      sources.set(manager, bySlug);
    }
    expect(sources.get(m1)!.get(slugs[0]!)).to.not.equal(sources.get(m2)!.get(slugs[0]!));

    const mismatches: string[] = [];
    const check = (manager: TenantDataSourceManager, name: string, slug: string, step: string): void => {
      const expected = sources.get(manager)!.get(slug)!;
      if (tenantContext.current()?.slug !== slug) mismatches.push(`${name}/${slug}/${step}: current() is ${tenantContext.current()?.slug}`);
      if (tenantContext.getManager().dataSource !== expected) mismatches.push(`${name}/${slug}/${step}: getManager() of another DataSource`);
      if (tenantContext.getRepository(Client).manager.dataSource !== expected) mismatches.push(`${name}/${slug}/${step}: getRepository() of another DataSource`);
      if (tenantContext.getRepository(Plan).manager.dataSource !== expected) mismatches.push(`${name}/${slug}/${step}: shared repository of another DataSource`);
    };
    const jobs: Array<Promise<void>> = [];
    for (let i = 0; i < 20; i += 1) {
      for (const [name, manager] of [['m1', m1], ['m2', m2]] as const) {
        const slug = slugs[i % 2]!;
        jobs.push(
          manager.run(slug, async () => {
            check(manager, name, slug, 'start');
            await sleep(Math.random() * 3);
            check(manager, name, slug, 'after sleep');
            const rows = await tenantContext.getRepository(Client).find();
            if (rows.some((r) => r.email !== emailFor(slug, 'seed'))) mismatches.push(`${name}/${slug}: read ${rows.map((r) => r.email).join(',')}`);
            check(manager, name, slug, 'after read');
            await tenantContext.transaction(async (em) => {
              if (em.dataSource !== sources.get(manager)!.get(slug)) mismatches.push(`${name}/${slug}: transaction on another DataSource`);
              await sleep(Math.random() * 3);
              if (tenantContext.getManager() !== em) mismatches.push(`${name}/${slug}: getManager() left the transaction`);
            });
            check(manager, name, slug, 'after transaction');
          }),
        );
      }
    }
    await Promise.all(jobs);
    expect(mismatches).to.deep.equal([]);
  });
});
