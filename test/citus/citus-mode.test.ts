/**
 * Citus mode on a real cluster (CITUS_URL: a coordinator with its workers
 * registered): every tenant schema a distributed schema, shared entities'
 * tables reference tables, the library's own schemas on the coordinator,
 * nodes, moves and the rebalancer through Citus, shard names in errors
 * renamed, and Citus's refusals met at initialize(). Rows are checked on the
 * worker that physically holds them.
 */
import { expect } from 'chai';
import type { QueryRunner } from 'typeorm';
import { TenancyConfigurationError, TenantProvisioningError, tenantContext, type TenantDataSourceManager } from '../../src';
import { Column, Entity, PrimaryGeneratedColumn } from 'typeorm';
import { Client } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { describeOnCitus, startCitusDatabase, type CitusDatabase } from '../support/citus';
import { migration } from '../support/tenant-migrations';
import { spawn } from 'node:child_process';
import { Readable, Writable } from 'node:stream';
import { CLI_CONFIG, CLI_MAIN, cliEnvironment, finished } from '../cli/cli-support';
import { renderRecords } from '../../src/cli/text-format';

/** A shared entity of a model with a shared schema of its own. */
@Entity()
class Tier {
  @PrimaryGeneratedColumn() id!: number;
  @Column() name!: string;
}

const createTier = migration('CitusCreateTier', undefined, async (runner: QueryRunner) => {
  await runner.query('CREATE TABLE tier (id serial PRIMARY KEY, name varchar NOT NULL)');
});

describeOnCitus('Citus mode (a real cluster)', function () {
  this.timeout(180_000);
  let db: CitusDatabase;
  let manager: TenantDataSourceManager;

  before(async () => {
    db = await startCitusDatabase();
    // Schema-based sharding on by default for the database: the library's own schemas must stay local all the same.
    await db.query(`ALTER DATABASE ${JSON.stringify(new URL(db.url).pathname.slice(1))} SET citus.enable_schema_based_sharding TO on`);
    manager = db.manager({ warmPool: { size: 1 } });
    await manager.initialize();
  });
  after(async () => {
    await db?.stop();
  });

  /** Where Citus placed each table of `schema` (`'host:port'`), and its shard's name there. */
  async function placementsOf(schema: string): Promise<Array<{ table: string; node: string; shard: string }>> {
    return db.query(
      `SELECT c.relname AS table, nodename || ':' || nodeport AS node, shard_name AS shard
         FROM citus_shards s JOIN pg_class c ON c.oid = s.table_name JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 ORDER BY 1`,
      [schema],
    );
  }

  it('initialize(): shared entities\' tables are reference tables; the shared, extensions and guard schemas are not distributed, even with sharding on by default', async () => {
    const kinds = await db.query<{ name: string; type: string }>(`SELECT table_name::text AS name, citus_table_type AS type FROM citus_tables ORDER BY 1`);
    expect(kinds).to.deep.equal([{ name: 'plan', type: 'reference' }]);
    const distributed = await db.query<{ name: string }>(`SELECT schema_name::text AS name FROM citus_schemas ORDER BY 1`);
    const library = ['extensions', 'public', 'typeorm_tenants_guard'];
    expect(distributed.map((row) => row.name).filter((name) => library.includes(name))).to.deep.equal([]);
    // Run again: nothing to convert, nothing fails.
    const again = db.manager();
    await again.initialize();
    await again.destroy();
  });

  it('createTenant(): a distributed schema whose rows live on one worker only; each tenant reads its own, wherever it is', async () => {
    await manager.createTenant('cit-a');
    await manager.createTenant('cit-b');
    const schemas = await db.query<{ name: string }>(`SELECT schema_name::text AS name FROM citus_schemas WHERE schema_name::text IN ('cit_a', 'cit_b') ORDER BY 1`);
    expect(schemas.map((row) => row.name)).to.deep.equal(['cit_a', 'cit_b']);
    await manager.run('cit-a', () => tenantContext.getRepository(Client).save({ name: 'only-a', email: 'a@a' }));
    await manager.run('cit-b', () => tenantContext.getRepository(Client).save({ name: 'only-b', email: 'b@b' }));
    expect(await manager.run('cit-a', () => tenantContext.getRepository(Client).find())).to.have.length(1).and.satisfy((rows: Client[]) => rows[0]!.name === 'only-a');
    const tenant = (await manager.getTenant('cit-a'))!;
    const placements = await placementsOf('cit_a');
    expect(new Set(placements.map((p) => p.node)), 'every table of the tenant on one node').to.have.property('size', 1);
    expect(tenant.node).to.equal(placements[0]!.node);
    const clientShard = placements.find((p) => p.table === 'client')!.shard;
    // Physically: the row is in the shard on the tenant's node, and in no table of the other tenant's.
    const onNode = await db.queryNode<{ name: string }>(tenant.node!, `SELECT name FROM ${clientShard}`);
    expect(onNode.map((row) => row.name)).to.deep.equal(['only-a']);
    const bShard = (await placementsOf('cit_b')).find((p) => p.table === 'client')!;
    const onB = await db.queryNode<{ name: string }>(bShard.node, `SELECT name FROM ${bShard.shard}`);
    expect(onB.map((row) => row.name)).to.deep.equal(['only-b']);
  });

  it('a tenant table referencing a shared one works (reference table), and errors relayed from the worker name the tables, not the shards', async () => {
    await manager.createTenant('cit-err');
    const error = await manager
      .run('cit-err', () => tenantContext.query(`INSERT INTO client (name, email, plan_id) VALUES ('x', 'y', 999999)`))
      .then(
        () => undefined,
        (caught: Error & { code?: string; detail?: string }) => caught,
      );
    expect(error?.code).to.equal('23503');
    expect(error!.message).to.match(/on table "client" violates foreign key constraint/);
    expect(error!.message).to.not.match(/_\d{6,}/);
    expect(error!.detail).to.equal('Key (plan_id)=(999999) is not present in table "plan".');
  });

  it('the warm pool\'s spares are distributed schemas, and a claimed one is the tenant\'s, on a node', async () => {
    await manager.refillWarmPool();
    const record = await manager.createTenant('cit-warm');
    const [row] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM citus_schemas WHERE schema_name::text = 'cit_warm'`);
    expect(row!.n).to.equal(1);
    expect((await manager.getTenant(record.slug))!.node).to.match(/:\d+$/);
  });

  it('exportTenant() and importTenant(): the imported tenant is a distributed schema on a node, with every row', async () => {
    await manager.createTenant('cit-exp');
    await manager.run('cit-exp', () => tenantContext.getRepository(Client).save([{ name: 'e1', email: 'e1@x' }, { name: 'e2', email: 'e2@x' }]));
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        chunks.push(chunk);
        done();
      },
    });
    await manager.exportTenant('cit-exp', sink);
    await manager.importTenant('cit-imp', Readable.from([Buffer.concat(chunks)]));
    const [row] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM citus_schemas WHERE schema_name::text = 'cit_imp'`);
    expect(row!.n).to.equal(1);
    const placement = (await placementsOf('cit_imp')).find((p) => p.table === 'client')!;
    expect((await manager.getTenant('cit-imp'))!.node).to.equal(placement.node);
    const rows = await db.queryNode<{ name: string }>(placement.node, `SELECT name FROM ${placement.shard} ORDER BY id`);
    expect(rows.map((r) => r.name)).to.deep.equal(['e1', 'e2']);
  });

  it('archive and restore keep the schema distributed; drop removes it from Citus', async () => {
    await manager.createTenant('cit-arch');
    await manager.archiveTenant('cit-arch');
    await manager.restoreTenant('cit-arch');
    expect((await manager.getTenant('cit-arch'))!.node).to.match(/:\d+$/);
    await manager.suspendTenant('cit-arch');
    await manager.dropTenant('cit-arch');
    const [row] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM citus_schemas WHERE schema_name::text = 'cit_arch'`);
    expect(row!.n).to.equal(0);
  });

  it('moveTenant(slug, { node }): online while a writer keeps writing; every acknowledged write is on the new node, once', async () => {
    await manager.createTenant('cit-move');
    const before = (await manager.getTenant('cit-move'))!.node!;
    const nodes = await db.workers();
    const target = nodes.find((node) => node !== before)!;
    const acknowledged: string[] = [];
    let stop = false;
    const writer = (async () => {
      for (let i = 0; !stop; i += 1) {
        const name = `w${i}`;
        await manager.run('cit-move', () => tenantContext.getRepository(Client).save({ name, email: 'w@x' }));
        acknowledged.push(name);
      }
    })();
    const steps: string[] = [];
    const result = await manager.moveTenant('cit-move', { node: target, onProgress: (p) => steps.push(p.step) });
    stop = true;
    await writer;
    expect({ from: result.from, to: result.to, moved: result.moved, steps }).to.deep.equal({ from: before, to: target, moved: true, steps: ['moving', 'moved'] });
    expect((await manager.getTenant('cit-move'))!.node).to.equal(target);
    const shard = (await placementsOf('cit_move')).find((p) => p.table === 'client')!;
    expect(shard.node).to.equal(target);
    const rows = await db.queryNode<{ name: string }>(target, `SELECT name FROM ${shard.shard} ORDER BY id`);
    expect(rows.map((r) => r.name)).to.deep.equal(acknowledged);
    expect(acknowledged.length, 'the writer wrote during the move').to.be.greaterThan(0);
    expect((await manager.moveTenant('cit-move', { node: target })).moved).to.equal(false);
  });

  it('moveTenant: an online move of a table without a primary key is refused before anything moves; block-writes moves it', async () => {
    const noKey = migration('CitusNoKey', undefined, async (runner: QueryRunner) => {
      await runner.query('CREATE TABLE audit_line (message text)');
    });
    const keyless = db.manager({ tenantMigrations: [...tenantMigrations, noKey] });
    await keyless.initialize();
    await keyless.createTenant('cit-nokey');
    const from = (await keyless.getTenant('cit-nokey'))!.node!;
    const nodes = await db.workers();
    const target = nodes.find((node) => node !== from)!;
    const refused = await keyless.moveTenant('cit-nokey', { node: target }).then(
      () => 'moved',
      (error: Error) => error.message,
    );
    expect(refused).to.match(/"audit_line" has no primary key/);
    expect((await keyless.getTenant('cit-nokey'))!.node).to.equal(from);
    expect((await keyless.moveTenant('cit-nokey', { node: target, transfer: 'block-writes' })).to).to.equal(target);
  });

  it('rebalanceTenants(): with every tenant on one node, the rebalancer spreads them, reporting progress and who moved', async () => {
    for (const slug of ['cit-rb1', 'cit-rb2', 'cit-rb3', 'cit-rb4']) await manager.createTenant(slug);
    const nodes = await db.workers();
    for (const tenant of await manager.listTenants()) {
      if (tenant.node !== undefined && tenant.node !== nodes[0]) await manager.moveTenant(tenant.slug, { node: nodes[0]!, transfer: 'block-writes' });
    }
    const states: string[] = [];
    const result = await manager.rebalanceTenants({ pollMs: 100, onProgress: (p) => states.push(p.state) });
    expect(result.job).to.be.a('string');
    expect(result.moved.length).to.be.greaterThan(0);
    const after = await manager.listTenants();
    for (const move of result.moved) expect(after.find((t) => t.slug === move.slug)!.node).to.equal(move.to);
    expect(new Set(after.map((t) => t.node)).size, 'tenants on more than one node').to.be.greaterThan(1);
    expect(states.at(-1)).to.equal('finished');
  });

  it('fleet migrations run per node and reach every tenant', async () => {
    const addColumn = migration('CitusAddColumn', undefined, async (runner: QueryRunner) => {
      await runner.query(`ALTER TABLE client ADD COLUMN nickname varchar`);
    });
    const next = db.manager({ tenantMigrations: [...tenantMigrations, addColumn] });
    await next.initialize();
    const report = await next.migrateTenants({ concurrency: 1 });
    expect(report.results.filter((line) => line.status !== 'migrated').map((line) => `${line.slug}: ${line.status}`)).to.deep.equal([]);
    const [row] = await db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM information_schema.columns WHERE column_name = 'nickname' AND table_name = 'client' AND table_schema LIKE 'cit_%'`,
    );
    expect(row!.n).to.equal(report.results.length);
  });

  it('fleet runs take the nodes in turn within concurrency (one pool, the coordinator\'s): with concurrency 2, two tenants at once, of different nodes', async () => {
    for (const slug of ['cit-g1', 'cit-g2', 'cit-g3', 'cit-g4']) await manager.createTenant(slug);
    const nodes = await db.workers();
    for (const [slug, node] of [['cit-g1', nodes[0]!], ['cit-g2', nodes[0]!], ['cit-g3', nodes[1]!], ['cit-g4', nodes[1]!]] as const) {
      await manager.moveTenant(slug, { node, transfer: 'block-writes' });
    }
    const spans: Array<{ schema: string; start: number; end: number }> = [];
    const slow = migration('CitusSlowStep', undefined, async (runner: QueryRunner) => {
      const start = Date.now();
      const [{ schema }] = (await runner.query('SELECT current_schema() AS schema')) as Array<{ schema: string }>;
      await runner.query('SELECT pg_sleep(0.3)');
      // The startup check runs the migrations in a throwaway schema too: only the tenants' runs count.
      if (schema.startsWith('cit_g')) spans.push({ schema, start, end: Date.now() });
    });
    const grouped = db.manager({ tenantMigrations: [...tenantMigrations, slow] });
    await grouped.initialize();
    const report = await grouped.migrateTenants({ tenants: ['cit-g1', 'cit-g2', 'cit-g3', 'cit-g4'], concurrency: 2 });
    expect(report.results.map((line) => line.status)).to.deep.equal(['migrated', 'migrated', 'migrated', 'migrated']);
    const nodeOf = new Map((await grouped.listTenants()).map((t) => [t.schemaName, t.node]));
    const at = (time: number): typeof spans => spans.filter((span) => span.start <= time && time < span.end);
    for (const span of spans) expect(at(span.start).length, 'never more than concurrency at once').to.be.at.most(2);
    // The first two taken are one of each node (node 0's first, then node 1's), side by side.
    const first = [...spans].sort((a, b) => a.start - b.start).slice(0, 2);
    expect(new Set(first.map((span) => nodeOf.get(span.schema))).size, JSON.stringify(first)).to.equal(2);
    expect(first[1]!.start, `the first two ran at once: ${JSON.stringify(spans)}`).to.be.lessThan(first[0]!.end);
  });

  it('initialize() refuses tenant migrations Citus refuses in a distributed schema (a foreign key to a shared table that is not a reference table), naming the cause', async () => {
    const localTable = migration('CitusLocalShared', undefined, async (runner: QueryRunner) => {
      await runner.query('CREATE TABLE IF NOT EXISTS public.local_audit (id int PRIMARY KEY)');
    });
    const referencing = migration('CitusRefLocal', undefined, async (runner: QueryRunner) => {
      await runner.query('CREATE TABLE note (id serial PRIMARY KEY, audit_id int REFERENCES public.local_audit (id))');
    });
    const bad = db.manager({ sharedMigrations: [...sharedMigrations, localTable], tenantMigrations: [...tenantMigrations, referencing] });
    const error = await bad.initialize().then(
      () => undefined,
      (caught: Error) => caught,
    );
    expect(error).to.be.instanceOf(TenancyConfigurationError);
    expect(error!.message).to.match(/In Citus mode every tenant schema is a distributed schema/);
    expect(error!.message).to.match(/reference table|distributed table/);
  });

  it('CLI: list shows each tenant\'s node, move --node moves one (JSON result), rebalance reports', async () => {
    const env = { ...cliEnvironment({ registry: 'tenants' }), DATABASE_URL: db.url };
    const run = (args: string[]) => finished(spawn(process.execPath, [CLI_MAIN, '--config', CLI_CONFIG, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] }), 120_000);
    await manager.createTenant('cit-cli');
    const list = await run(['list']);
    expect(list.code, list.stderr).to.equal(0);
    const node = (await manager.getTenant('cit-cli'))!.node!;
    const listed = (JSON.parse(list.stdout) as Array<{ slug: string; node?: string }>).find((record) => record.slug === 'cit-cli');
    expect(listed).to.deep.include({ node });
    // At a terminal: a NODE column instead of SERVER.
    const text = renderRecords(await manager.listTenants());
    expect(text).to.match(/^SLUG +SCHEMA +STATUS +NODE +CREATED/m);
    expect(text).to.match(new RegExp(`^cit-cli +cit_cli +active +${node.replace(/\./g, '\\.')} `, 'm'));
    const nodes = await db.workers();
    const target = nodes.find((n) => n !== node)!;
    const moved = await run(['move', 'cit-cli', '--node', target, '--json']);
    expect(moved.code, moved.stderr).to.equal(0);
    expect(JSON.parse(moved.stdout)).to.deep.include({ slug: 'cit-cli', from: node, to: target, moved: true, transfer: 'online' });
    expect((await manager.getTenant('cit-cli'))!.node).to.equal(target);
    const rebalance = await run(['rebalance', '--json']);
    expect(rebalance.code, rebalance.stderr).to.equal(0);
    expect(JSON.parse(rebalance.stdout)).to.have.property('moved').that.is.an('array');
  });

  it('a tenant migration that fails anywhere (not Citus\'s refusal) does not keep the process from starting: a warning, and createTenant fails as on one server', async () => {
    const broken = migration('CitusBrokenStep', undefined, async (runner: QueryRunner) => {
      await runner.query('SELECT * FROM no_such_table_anywhere');
    });
    const warnings: string[] = [];
    const starting = db.manager({ tenantMigrations: [...tenantMigrations, broken], logger: (entry) => (entry.level === 'warn' ? warnings.push(entry.message) : undefined) });
    await starting.initialize();
    expect(warnings.join('\n')).to.match(/The tenant migrations fail in a throwaway schema \(rolled back\), distributed or not: .*no_such_table_anywhere/);
    await expect(starting.createTenant('cit-broken')).to.be.rejectedWith(TenantProvisioningError, /no_such_table_anywhere/);
    const [row] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'cit_broken'`);
    expect(row!.n, 'nothing kept').to.equal(0);
  });

  it("isolation: 'role' is refused at initialize() in Citus mode, saying why", async () => {
    const roles = db.manager({ isolation: 'role' });
    await expect(roles.initialize()).to.be.rejectedWith(TenancyConfigurationError, /Citus opens its connections to the workers as the role in force/);
  });
});

describeOnCitus('Citus mode with a shared schema of its own', function () {
  this.timeout(120_000);
  let db: CitusDatabase;
  before(async () => {
    db = await startCitusDatabase();
    await db.query(`ALTER DATABASE ${JSON.stringify(new URL(db.url).pathname.slice(1))} SET citus.enable_schema_based_sharding TO on`);
  });
  after(async () => {
    await db?.stop();
  });

  it('is created with schema sharding off (not a distributed schema), and its entities\' tables are reference tables, at every initialize()', async () => {
    // The example's tenant migrations name public.plan: a model of its own.
    for (let i = 0; i < 2; i += 1) {
      const manager = db.manager({ sharedSchema: 'shared_x', entities: [Tier], sharedMigrations: [createTier], tenantMigrations: [] });
      await manager.initialize();
      await manager.destroy();
    }
    const kinds = await db.query<{ name: string; type: string }>(`SELECT table_name::text AS name, citus_table_type AS type FROM citus_tables ORDER BY 1`);
    expect(kinds).to.deep.equal([{ name: 'shared_x.tier', type: 'reference' }]);
    const distributed = await db.query<{ name: string }>(`SELECT schema_name::text AS name FROM citus_schemas ORDER BY 1`);
    expect(distributed).to.deep.equal([]);
  });
});
