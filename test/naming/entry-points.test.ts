import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { Client as PgClient, Pool as PgPool } from 'pg';
import {
  InvalidTenantNameError,
  SLUG_RULE,
  TenancyConfigurationError,
  TenantAlreadyExistsError,
  TenantContextMissingError,
  TenantDataSourceManager,
  TenantNotFoundError,
  tenantContext,
} from '../../src';
import { Client } from '../../entities';
import { adminQuery, managerOptions, newManager, openManager, schemaExists, tablesOf, uniqueSlug } from '../support/fixtures';


type EntryPoint = 'createTenant' | 'run' | 'getDataSource' | 'getTenant' | 'dropTenant';
const ENTRY_POINTS: readonly EntryPoint[] = ['createTenant', 'run', 'getDataSource', 'getTenant', 'dropTenant'];

/** Bad inputs for every entry point; the role name is added once it is known. */
const BAD_INPUTS: readonly unknown[] = [
  'x"; DROP SCHEMA public CASCADE; --',
  "acme'); DROP TABLE tenants; --",
  'acme;drop schema public cascade',
  'public',
  'information_schema',
  'pg-catalog',
  'typeorm-tenants-x',
  'Acme',
  '',
  'acme\u0000',
  '\u0430cme',
  'a'.repeat(64),
  'a'.repeat(10_000),
  undefined,
  null,
  42,
  {},
  ['acme'],
];

/** Calls one entry point with `slug`, recording whether run()'s fn was called. */
function call(manager: TenantDataSourceManager, entry: EntryPoint, slug: unknown, onFn: () => void): Promise<unknown> {
  const s = slug as string;
  switch (entry) {
    case 'createTenant':
      return manager.createTenant(s);
    case 'run':
      return manager.run(s, () => {
        onFn();
        return 'ran';
      });
    case 'getDataSource':
      return manager.getDataSource(s);
    case 'getTenant':
      return manager.getTenant(s);
    case 'dropTenant':
      return manager.dropTenant(s);
  }
}

async function snapshot(): Promise<{ schemas: string[]; registryRows: number }> {
  const schemas = await adminQuery<{ nspname: string }>('SELECT nspname FROM pg_namespace ORDER BY nspname');
  const [{ count }] = await adminQuery<{ count: string }>('SELECT count(*) FROM public.tenants');
  return { schemas: schemas.map((r) => r.nspname), registryRows: Number(count) };
}

/**
 * Counts every statement sent and every connection checked out through the
 * `pg` module (the manager's pool included) while `work` runs. The admin pool
 * of the fixtures is not used meanwhile.
 */
async function countSql<T>(work: () => Promise<T>): Promise<{ result: T; statements: string[]; checkouts: number }> {
  const clientProto = PgClient.prototype as unknown as { query: (...args: unknown[]) => unknown };
  const poolProto = PgPool.prototype as unknown as { connect: (...args: unknown[]) => unknown; query: (...args: unknown[]) => unknown };
  const originalQuery = clientProto.query;
  const originalConnect = poolProto.connect;
  const originalPoolQuery = poolProto.query;
  const statements: string[] = [];
  let checkouts = 0;
  clientProto.query = function (this: unknown, ...args: unknown[]) {
    const sql = args[0];
    statements.push(typeof sql === 'string' ? sql : String((sql as { text?: unknown } | null)?.text ?? sql));
    return originalQuery.apply(this, args);
  };
  poolProto.connect = function (this: unknown, ...args: unknown[]) {
    checkouts += 1;
    return originalConnect.apply(this, args);
  };
  poolProto.query = function (this: unknown, ...args: unknown[]) {
    checkouts += 1;
    return originalPoolQuery.apply(this, args);
  };
  try {
    const result = await work();
    return { result, statements, checkouts };
  } finally {
    clientProto.query = originalQuery;
    poolProto.connect = originalConnect;
    poolProto.query = originalPoolQuery;
  }
}

describe('naming: every entry point validates the slug before any SQL', () => {
  it('the connecting role of the tests is a valid slug (so refusing it is the reserved-name rule at work)', async () => {
    const [{ role }] = await adminQuery<{ role: string }>('SELECT current_user AS role');
    expect(role).to.match(/^[a-z][a-z0-9_]*$/);
  });

  it('createTenant, run, getDataSource, getTenant and dropTenant refuse every bad input with InvalidTenantNameError, and nothing changes', async () => {
    const manager = await openManager();
    const existing = await manager.createTenant(uniqueSlug('entry'));
    const [{ role }] = await adminQuery<{ role: string }>('SELECT current_user AS role');
    const inputs = [...BAD_INPUTS, role];
    const before = await snapshot();

    let fnCalls = 0;
    const failures: string[] = [];
    const { statements, checkouts } = await countSql(async () => {
      for (const input of inputs) {
        for (const entry of ENTRY_POINTS) {
          let outcome: unknown;
          try {
            outcome = await call(manager, entry, input, () => (fnCalls += 1));
            failures.push(`${entry}(${show(input)}) resolved to ${show(outcome)}`);
            continue;
          } catch (error) {
            outcome = error;
          }
          if (!(outcome instanceof InvalidTenantNameError)) {
            failures.push(`${entry}(${show(input)}) rejected with ${String(outcome)}`);
          } else if (outcome.code !== 'INVALID_TENANT_NAME') {
            failures.push(`${entry}(${show(input)}) has code ${outcome.code}`);
          } else if (!outcome.message.includes(SLUG_RULE) && !outcome.message.includes('reserved')) {
            failures.push(`${entry}(${show(input)}) message names neither the rule nor a reserved name: ${outcome.message}`);
          }
        }
      }
    });

    expect(failures).to.deep.equal([]);
    expect(fnCalls, "run()'s fn is never called").to.equal(0);
    expect(statements, 'no SQL statement was sent').to.deep.equal([]);
    expect(checkouts, 'no connection was checked out').to.equal(0);
    expect(await snapshot()).to.deep.equal(before);
    expect(await schemaExists('public')).to.equal(true);
    expect(await schemaExists(existing.schemaName)).to.equal(true);
    expect(await manager.getTenant(existing.slug)).to.deep.equal(existing);
  });

  it('the SQL probe does see statements: a valid unknown slug reaches the database', async () => {
    const manager = await openManager();
    const { result, statements, checkouts } = await countSql(() => manager.getTenant(uniqueSlug('probe')));
    expect(result).to.equal(undefined);
    expect(statements.length).to.be.greaterThan(0);
    expect(checkouts).to.be.greaterThan(0);
  });

  it('the connecting role is refused by name once the manager is initialised', async () => {
    const manager = await openManager();
    const [{ role }] = await adminQuery<{ role: string }>('SELECT current_user AS role');
    const error = await manager.createTenant(role).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(InvalidTenantNameError);
    expect((error as Error).message).to.include('reserved');
    expect(await manager.getTenant(`${role.replace(/_/g, '-')}x`)).to.equal(undefined);
  });

  it('a run() refused for a bad slug leaves no tenant context behind', async () => {
    const manager = await openManager();
    await expect(manager.run('public', () => tenantContext.getRepository(Client).find())).to.be.rejectedWith(InvalidTenantNameError);
    expect(() => tenantContext.getRepository(Client)).to.throw(TenantContextMissingError);
  });
});

describe('naming: a slug with "-" works end to end', () => {
  it('createTenant("acme-eu-<random>") makes schema acme_eu_<random>; run() works; the "_" twin collides', async () => {
    const manager = await openManager();
    const slug = `acme-eu-${randomBytes(4).toString('hex')}`;
    const schema = slug.replace(/-/g, '_');
    const before = await snapshot();

    const record = await manager.createTenant(slug);
    expect(record.slug).to.equal(slug);
    expect(record.schemaName).to.equal(schema);
    expect(await schemaExists(schema)).to.equal(true);
    expect(await schemaExists(slug), 'no schema with "-" in its name').to.equal(false);
    expect(await tablesOf(schema)).to.include('client');

    const saved = await manager.run(slug, () => tenantContext.getRepository(Client).save({ name: 'Eu', email: 'eu@acme.test' }));
    const physical = await adminQuery<{ name: string }>(`SELECT name FROM "${schema}".client WHERE id = $1`, [saved.id]);
    expect(physical.map((r) => r.name)).to.deep.equal(['Eu']);
    expect(await manager.run(slug, () => tenantContext.getRepository(Client).count())).to.equal(1);
    const dataSource = await manager.getDataSource(slug);
    expect(dataSource.options).to.have.property('schema', schema);

    const twin = schema;
    const error = await manager.createTenant(twin).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(TenantAlreadyExistsError);
    expect((error as Error).message).to.include(`"${slug}"`);
    const after = await snapshot();
    expect(after.registryRows).to.equal(before.registryRows + 1);

    // The twin slug names no tenant: it neither reaches nor drops acme-eu's schema.
    expect(await manager.getTenant(twin)).to.equal(undefined);
    await expect(manager.run(twin, () => 1)).to.be.rejectedWith(TenantNotFoundError);
    await expect(manager.dropTenant(twin)).to.be.rejectedWith(TenantNotFoundError);
    expect(await schemaExists(schema)).to.equal(true);
    expect(await manager.run(slug, () => tenantContext.getRepository(Client).count())).to.equal(1);

    // An upper-case spelling is not another way in.
    await expect(manager.run(slug.toUpperCase(), () => 1)).to.be.rejectedWith(InvalidTenantNameError);

    await manager.dropTenant(slug, { force: true });
    expect(await schemaExists(schema)).to.equal(false);
    expect(await snapshot()).to.deep.equal(before);
  });

  it('a custom shared schema is reserved against a live manager', async () => {
    const shared = `naming_shared_${randomBytes(4).toString('hex')}`;
    const manager = await openManager({ sharedSchema: shared, registryTable: 'naming_registry' });
    try {
      for (const slug of [shared, shared.replace(/_/g, '-'), 'public']) {
        const error = await manager.createTenant(slug).catch((e: unknown) => e);
        expect(error, slug).to.be.instanceOf(InvalidTenantNameError);
        expect((error as Error).message, slug).to.include('reserved');
      }
      const rows = await adminQuery<{ count: string }>(`SELECT count(*) FROM "${shared}".naming_registry`);
      expect(Number(rows[0]!.count)).to.equal(0);
    } finally {
      await manager.destroy();
      await adminQuery(`DROP SCHEMA IF EXISTS "${shared}" CASCADE`);
    }
  });
});

describe('naming: manager options that name identifiers', () => {
  const bad: Array<[string, Record<string, unknown>]> = [
    ['sharedSchema "Public"', { sharedSchema: 'Public' }],
    ['sharedSchema "bad name"', { sharedSchema: 'bad name' }],
    ['sharedSchema "x;y"', { sharedSchema: 'x;y' }],
    ['sharedSchema with a quote', { sharedSchema: 'x"; DROP SCHEMA public CASCADE; --' }],
    ['sharedSchema ""', { sharedSchema: '' }],
    ['sharedSchema of 64 characters', { sharedSchema: 'a'.repeat(64) }],
    ['sharedSchema "1abc"', { sharedSchema: '1abc' }],
    ['sharedSchema "a-b"', { sharedSchema: 'a-b' }],
    ['sharedSchema 42', { sharedSchema: 42 }],
    ['registryTable "x;y"', { registryTable: 'x;y' }],
    ['registryTable "Tenants"', { registryTable: 'Tenants' }],
    ['registryTable with a quote', { registryTable: 'tenants"' }],
    ['registryTable with NUL', { registryTable: 'tenants\u0000' }],
    ['registryTable ""', { registryTable: '' }],
    ['querySearchPath ["bad name"]', { querySearchPath: ['bad name'] }],
  ];
  for (const [title, overrides] of bad) {
    it(`new TenantDataSourceManager() refuses ${title} with TenancyConfigurationError naming the option`, () => {
      const option = Object.keys(overrides)[0]!;
      let error: unknown;
      try {
        new TenantDataSourceManager(managerOptions(overrides as never));
      } catch (e) {
        error = e;
      }
      expect(error).to.be.instanceOf(TenancyConfigurationError);
      expect((error as TenancyConfigurationError).code).to.equal('INVALID_CONFIGURATION');
      expect((error as Error).message).to.include(option);
    });
  }

  it('accepts plain identifiers for sharedSchema, registryTable and querySearchPath', () => {
    expect(() => newManager({ sharedSchema: 'shared_1', registryTable: 'tenant_registry', querySearchPath: ['extensions'] })).not.to.throw();
    expect(() => newManager({ sharedSchema: `_${'a'.repeat(62)}` })).not.to.throw();
  });
});

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
  if (typeof value === 'object' && value !== null) return Array.isArray(value) ? 'an array' : 'an object';
  return String(value);
}
