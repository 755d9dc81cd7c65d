/**
 * Review probes: the shard-name renamer of Citus mode (src/citus/shard-names.ts).
 * Each probe asserts what the library should do; a failing probe is a finding.
 */
import { expect } from 'chai';
import { tenantContext, type TenantDataSourceManager } from '../../src';
import { Client, Plan } from '../../entities';
import { describeOnCitus, startCitusDatabase, type CitusDatabase } from '../support/citus';

/** A foreign-key violation reported within 3 s of `started`, with no shard name left in its message. */
function expectRenamedAtOnce(error: (Error & { code?: string }) | undefined, started: number): void {
  const ms = Date.now() - started;
  expect(error?.code).to.equal('23503');
  expect({ shardNameLeftIn: /_\d{6,}/.test(error!.message) ? error!.message : 'none', reportedWithin3s: ms < 3000 }, `${ms} ms`).to.deep.equal({
    shardNameLeftIn: 'none',
    reportedWithin3s: true,
  });
}

describeOnCitus('review: Citus shard-name renamer', function () {
  this.timeout(180_000);
  let db: CitusDatabase;
  let manager: TenantDataSourceManager;

  before(async () => {
    db = await startCitusDatabase();
    manager = db.manager();
    await manager.initialize();
    await manager.createTenant('rn-a');
    await manager.createTenant('rn-b');
  });
  after(async () => {
    await db?.stop();
  });

  async function shardIdOf(schema: string, table: string): Promise<string> {
    const [row] = await db.query<{ id: string }>(
      `SELECT s.shardid::text AS id FROM pg_dist_shard s JOIN pg_class c ON c.oid = s.logicalrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = $2`,
      [schema, table],
    );
    return row!.id;
  }

  it("does not rewrite the application's data quoted in an error (a value like 'batch_<a shard id>' in a unique-violation detail)", async () => {
    // A value that happens to end in _<number>, the number being some shard id (here: another tenant's client shard).
    const value = `batch_${await shardIdOf('rn_b', 'client')}`;
    await manager.run('rn-a', () => tenantContext.getRepository(Plan).save({ code: value, name: 'p', monthlyPriceCents: 1 }));
    const error = await manager
      .run('rn-a', () => tenantContext.getRepository(Plan).insert({ code: value, name: 'dup', monthlyPriceCents: 1 }))
      .then(
        () => undefined,
        (caught: Error & { detail?: string }) => caught,
      );
    expect(error, 'the duplicate is refused').to.not.equal(undefined);
    // PostgreSQL says which value collided; the renamer must not cut the user's value down to "batch".
    expect(error!.detail).to.equal(`Key (code)=(${value}) already exists.`);
  });

  it("does not rewrite a value in an invalid-input error's message (SELECT $1::int with 'order_<a shard id>')", async () => {
    const value = `order_${await shardIdOf('rn_a', 'client')}`;
    const error = await manager
      .run('rn-a', () => tenantContext.query('SELECT $1::int AS n', [value]))
      .then(
        () => undefined,
        (caught: Error) => caught,
      );
    expect(error!.message).to.equal(`invalid input syntax for type integer: "${value}"`);
  });

  it('a failing statement on a pool of one connection is reported at once, its shard names renamed (the lookup does not wait for the connection the failed statement holds)', async () => {
    const small = db.manager({ dataSource: { type: 'postgres', url: db.url, poolSize: 1 } });
    await small.initialize();
    await small.createTenant('rn-small');
    const started = Date.now();
    const error = await small
      .run('rn-small', () => tenantContext.query(`INSERT INTO client (name, email, plan_id) VALUES ('x', 'y', 999999)`))
      .then(
        () => undefined,
        (caught: Error & { code?: string }) => caught,
      );
    expectRenamedAtOnce(error, started);
  });

  it('inside tenantContext.transaction() on a pool of one connection, a failing statement is reported at once, its shard names renamed', async () => {
    const small = db.manager({ dataSource: { type: 'postgres', url: db.url, poolSize: 1 } });
    await small.initialize();
    const started = Date.now();
    const error = await small
      .run('rn-a', () =>
        tenantContext.transaction(async (em) => {
          await em.getRepository(Client).save({ name: 'ok', email: 'ok@x' });
          await em.query(`INSERT INTO client (name, email, plan_id) VALUES ('x', 'y', 999999)`);
        }),
      )
      .then(
        () => undefined,
        (caught: Error & { code?: string }) => caught,
      );
    expectRenamedAtOnce(error, started);
  });

  it("errors from the shared DataSource (a duplicate Plan code, a reference table) name the table's constraint, not a shard's", async () => {
    await manager.sharedDataSource.getRepository(Plan).save({ code: 'shared-dup', name: 'p', monthlyPriceCents: 1 });
    const error = await manager.sharedDataSource
      .getRepository(Plan)
      .insert({ code: 'shared-dup', name: 'p', monthlyPriceCents: 1 })
      .then(
        () => undefined,
        (caught: Error & { constraint?: string }) => caught,
      );
    expect(error!.message).to.equal('duplicate key value violates unique constraint "' + /constraint "([a-z_A-Z0-9]+?)(_\d{6,})?"/.exec(error!.message)![1] + '"');
  });
});
