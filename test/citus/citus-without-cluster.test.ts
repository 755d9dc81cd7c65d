/**
 * What Citus mode decides and refuses, tested without a cluster (CI has
 * none): the option, the refusals at initialize(), the methods that need
 * Citus, the reserved names, the order reference tables are made in, how
 * shard names in errors are mapped (through a pg_dist_shard of the test's
 * own), and node names.
 */
import { expect } from 'chai';
import { Column, DataSource, Entity, JoinTable, ManyToMany, ManyToOne, PrimaryGeneratedColumn, type Relation } from 'typeorm';
import { InvalidArgumentError, InvalidTenantNameError, TenancyConfigurationError, TenantDataSourceManager } from '../../src';
import { decideCitusMode, type CitusCandidate } from '../../src/citus/citus-mode';
import { sharedTablesInReferenceOrder } from '../../src/citus/reference-tables';
import { transferModeOf } from '../../src/citus/schema-move';
import { shardNameRenamer } from '../../src/citus/shard-names';
import { parseNodeName } from '../../src/citus/tenant-nodes';
import { runInWaves } from '../../src/migration/fleet-run';
import { Client, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { databaseUrl, openManager } from '../support/fixtures';
import { withFreshDatabase } from '../support/fresh-database';
import { runCli, uniqueRegistry } from '../cli/cli-support';

function candidate(name: string, version: string | undefined, coordinator = version !== undefined): CitusCandidate {
  return { name, citus: { version, coordinator }, describe: () => `postgres://app@${name}:5432/app` };
}

describe('Citus mode: the decision at initialize()', () => {
  it("'auto' is on only where the database has the extension; false is always off", () => {
    expect(decideCitusMode('auto', [candidate('default', undefined)], 'schema')).to.equal(false);
    expect(decideCitusMode('auto', [candidate('default', '13.2-1')], 'schema')).to.equal(true);
    expect(decideCitusMode(false, [candidate('default', '13.2-1')], 'role')).to.equal(false);
  });

  it('refuses true without the extension, a worker instead of the coordinator, several servers with Citus among them, and role isolation, each saying what to do', () => {
    expect(() => decideCitusMode(true, [candidate('default', undefined)], 'schema')).to.throw(TenancyConfigurationError, /postgres:\/\/app@default:5432\/app has no citus extension/);
    expect(() => decideCitusMode('auto', [candidate('default', '13.2-1', false)], 'schema')).to.throw(TenancyConfigurationError, /not the Citus coordinator.*Connect to the coordinator/);
    expect(() => decideCitusMode('auto', [candidate('a', undefined), candidate('b', '13.2-1')], 'schema')).to.throw(TenancyConfigurationError, /Server "b" .* is a Citus database, and the manager has 2 servers/);
    expect(() => decideCitusMode(true, [candidate('default', '13.2-1')], 'role')).to.throw(TenancyConfigurationError, /isolation: 'role' cannot work on Citus/);
  });

  it("citus: true on this test database (no extension) fails initialize() before anything is created; a bad value fails at construction", async function () {
    this.timeout(60_000);
    await withFreshDatabase({ entities: [Client, Project, Plan], tenantMigrations, sharedMigrations }, async (db) => {
      const manager = db.manager({ citus: true });
      await expect(manager.initialize()).to.be.rejectedWith(TenancyConfigurationError, /Option "citus" is true, but the database at postgres:\/\/.* has no citus extension/);
      const tables = await db.query(`SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'`);
      expect(tables, 'no registry was made').to.deep.equal([]);
    });
    expect(() => new TenantDataSourceManager({ dataSource: { type: 'postgres', url: databaseUrl() }, entities: [Client, Project, Plan], citus: 'yes' as never })).to.throw(
      TenancyConfigurationError,
      /Option "citus" must be 'auto', true or false; got "yes"/,
    );
  });
});

// citus: false, so that these hold on a Citus test database too (a manager not in Citus mode).
describe('Citus mode: what needs a cluster, asked of a manager without one', () => {
  it('moveTenant(slug, { node }) and rebalanceTenants() say they need Citus mode; { server, node } together is refused', async () => {
    const manager = await openManager({ citus: false });
    await expect(manager.moveTenant('acme', { node: '10.0.0.6:5432' })).to.be.rejectedWith(InvalidArgumentError, /not in Citus mode.*Between servers: moveTenant\(slug, \{ server \}\)/);
    await expect(manager.moveTenant('acme', { node: '10.0.0.6:5432', server: 'default' } as never)).to.be.rejectedWith(InvalidArgumentError, /not both/);
    await expect(manager.rebalanceTenants()).to.be.rejectedWith(InvalidArgumentError, /rebalancer of a Citus cluster, and this manager is not in Citus mode/);
  });

  it("getTenant() and listTenants() carry no node outside Citus mode", async () => {
    const manager = await openManager({ citus: false });
    const record = await manager.createTenant(`nonode-${Date.now().toString(36)}`);
    expect((await manager.getTenant(record.slug))!).to.not.have.property('node');
    expect((await manager.listTenants()).find((t) => t.slug === record.slug)).to.not.have.property('node');
  });

  it("the Citus extension's schemas are reserved slugs everywhere (a database may become a cluster later)", async () => {
    const manager = await openManager();
    for (const slug of ['citus', 'citus_internal', 'columnar', 'columnar-internal']) {
      await expect(manager.createTenant(slug), slug).to.be.rejectedWith(InvalidTenantNameError, /a schema of the Citus extension/);
    }
  });
});

describe('Citus mode: the CLI without a cluster', () => {
  it('move needs exactly one of --server and --node; move --node and rebalance say Citus mode is needed, in one line each', async function () {
    this.timeout(60_000);
    const env = { registry: uniqueRegistry() };
    const neither = await runCli(['move', 'acme'], env);
    expect({ code: neither.code, stderr: neither.stderr.trim() }).to.deep.include({ code: 1 });
    expect(neither.stderr).to.match(/move needs one of --server <name> \(several servers\) or --node <host:port> \(a Citus cluster\)/);
    const both = await runCli(['move', 'acme', '--server', 'default', '--node', '10.0.0.6:5432'], env);
    expect(both.code).to.equal(1);
    const node = await runCli(['move', 'acme', '--node', '10.0.0.6:5432'], env);
    expect(node.code).to.equal(1);
    expect(node.stderr.trimEnd().split('\n'), node.stderr).to.have.length(1);
    expect(node.stderr).to.match(/not in Citus mode/);
    const rebalance = await runCli(['rebalance'], env);
    expect(rebalance.code).to.equal(1);
    expect(rebalance.stderr).to.match(/rebalancer of a Citus cluster, and this manager is not in Citus mode/);
  });
});

describe('Citus mode: the order shared tables become reference tables in', () => {
  @Entity({ name: 'rt_region' })
  class Region {
    @PrimaryGeneratedColumn() id!: number;
  }
  @Entity({ name: 'rt_country' })
  class Country {
    @PrimaryGeneratedColumn() id!: number;
    @ManyToOne(() => Region) region!: Relation<Region>;
  }
  @Entity({ name: 'rt_city' })
  class City {
    @PrimaryGeneratedColumn() id!: number;
    @ManyToOne(() => Country) country!: Relation<Country>;
    @ManyToOne(() => City, { nullable: true }) twin?: Relation<City>;
    @ManyToMany(() => Region) @JoinTable({ name: 'rt_city_regions' }) regions!: Relation<Region>[];
    @Column() name!: string;
  }

  it('each table after the tables its foreign keys reference (a self-reference does not count), junction tables included', async () => {
    const dataSource = new DataSource({ type: 'postgres', entities: [City, Country, Region], schema: 'public' });
    await (dataSource as unknown as { buildMetadatas(): Promise<void> }).buildMetadatas();
    for (const metadata of dataSource.entityMetadatas) (metadata as { schema?: string }).schema = 'public';
    const order = sharedTablesInReferenceOrder(dataSource.entityMetadatas, 'public').map((table) => table.table);
    expect(order).to.have.members(['rt_region', 'rt_country', 'rt_city', 'rt_city_regions']);
    const at = (name: string): number => order.indexOf(name);
    expect(at('rt_region')).to.be.lessThan(at('rt_country'));
    expect(at('rt_country')).to.be.lessThan(at('rt_city'));
    expect(at('rt_city')).to.be.lessThan(at('rt_city_regions'));
  });
});

describe('Citus mode: shard names in errors', () => {
  it("renames name_<n> only where pg_dist_shard has shard n and name is its table's, constraint's or index's: data in the error and a table called order_2024 keep their text; without pg_dist_shard nothing is renamed", async function () {
    this.timeout(60_000);
    await withFreshDatabase({ entities: [Client, Project, Plan] }, async (db) => {
      const rename = shardNameRenamer({ connectionString: db.url });
      try {
        const untouched = new Error('new row for relation "client_102016" violates check constraint "email_lower_102016"');
        await rename(untouched);
        expect(untouched.message, 'no pg_dist_shard: nothing known, nothing renamed').to.equal('new row for relation "client_102016" violates check constraint "email_lower_102016"');

        // Citus's catalog table, as this test's own (the lookup reads shardid and logicalrelid), over real tables and constraints.
        await db.query('CREATE TABLE public.client (id int PRIMARY KEY, email text CONSTRAINT email_lower CHECK (email = lower(email)))');
        await db.query('CREATE TABLE public.plan (id int PRIMARY KEY, code text CONSTRAINT plan_code_key UNIQUE)');
        await db.query('CREATE TABLE public.pg_dist_shard (shardid bigint, logicalrelid regclass)');
        await db.query(`INSERT INTO public.pg_dist_shard VALUES (102016, 'public.client'), (102008, 'public.plan')`);
        const driverError = Object.assign(new Error('new row for relation "client_102016" violates check constraint "email_lower_102016"'), {
          detail: 'Failing row contains (1, A@X). Key (plan_id)=(999) is not present in table "plan_102008".',
          constraint: 'email_lower_102016',
        });
        const error = Object.assign(new Error(driverError.message), { driverError, detail: driverError.detail, code: '23514' });
        await rename(error);
        expect(error.message).to.equal('new row for relation "client" violates check constraint "email_lower"');
        expect(error.detail).to.equal('Failing row contains (1, A@X). Key (plan_id)=(999) is not present in table "plan".');
        expect(driverError.message).to.equal(error.message);
        expect(driverError.constraint).to.equal('email_lower');
        expect(error.stack!.split('\n')[0]).to.equal(`Error: ${error.message}`);
        expect(error.code, 'the SQLSTATE is kept').to.equal('23514');

        // Data quoted in an error, with a real shard id as its suffix: not a name of that shard's table.
        const data = Object.assign(new Error('duplicate key value violates unique constraint "plan_code_key_102008"'), { detail: 'Key (code)=(batch_102016) already exists.' });
        await rename(data);
        expect({ message: data.message, detail: data.detail }).to.deep.equal({
          message: 'duplicate key value violates unique constraint "plan_code_key"',
          detail: 'Key (code)=(batch_102016) already exists.',
        });
        const failedIndex = new Error('could not create unique index "client_name_key_102016"');
        await rename(failedIndex);
        expect(failedIndex.message, "a name derived from the shard's table (in no catalog: its creation failed)").to.equal('could not create unique index "client_name_key"');
        const own = new Error('duplicate key value violates unique constraint "order_2024_pkey" of "order_2024"');
        await rename(own);
        expect(own.message, 'not shard ids: kept').to.equal('duplicate key value violates unique constraint "order_2024_pkey" of "order_2024"');
      } finally {
        await rename.close();
      }
    });
  });
});

describe('Citus mode: fleet scheduling over nodes that share one pool', () => {
  it('interleaveGroups: concurrency bounds the whole run, and the groups are taken in turn (without it, concurrency bounds each group)', async () => {
    const node = (slug: string): string => slug.slice(0, 1);
    const slugs = ['a1', 'a2', 'a3', 'b1', 'b2', 'c1'];
    const schedule = async (interleaveGroups: boolean): Promise<{ order: string[]; most: number }> => {
      const order: string[] = [];
      let inFlight = 0;
      let most = 0;
      await runInWaves(
        slugs,
        async (slug) => {
          order.push(slug);
          most = Math.max(most, (inFlight += 1));
          await new Promise((resolve) => setTimeout(resolve, 5));
          inFlight -= 1;
          return { status: 'done' };
        },
        { concurrency: 2, groupOf: node, interleaveGroups },
      );
      return { order, most };
    };
    expect(await schedule(true)).to.deep.equal({ order: ['a1', 'b1', 'c1', 'a2', 'b2', 'a3'], most: 2 });
    expect((await schedule(false)).most, 'two per group, three groups').to.equal(5);
  });
});

describe('Citus mode: node names and transfer modes', () => {
  it("parses 'host:port' (the port last, so an IPv6 host keeps its colons) and refuses anything else", () => {
    expect(parseNodeName('10.0.0.6:5432')).to.deep.equal({ host: '10.0.0.6', port: 5432 });
    expect(parseNodeName('worker-1.internal:6432')).to.deep.equal({ host: 'worker-1.internal', port: 6432 });
    expect(parseNodeName('[::1]:5432')).to.deep.equal({ host: '::1', port: 5432 });
    for (const bad of ['10.0.0.6', ':5432', '10.0.0.6:0', '10.0.0.6:70000', 5432, undefined]) expect(parseNodeName(bad), String(bad)).to.equal(undefined);
  });

  it("maps 'online' to Citus's force_logical and 'block-writes' to block_writes, online by default; refuses anything else", () => {
    expect(transferModeOf(undefined)).to.deep.equal({ transfer: 'online', mode: 'force_logical' });
    expect(transferModeOf('block-writes')).to.deep.equal({ transfer: 'block-writes', mode: 'block_writes' });
    expect(() => transferModeOf('auto')).to.throw(InvalidArgumentError, /must be 'online' or 'block-writes'; got "auto"/);
  });
});
