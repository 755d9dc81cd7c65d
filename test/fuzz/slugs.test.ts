import { expect } from 'chai';
import fc from 'fast-check';
import { hostileInput, oracleSchemaName } from './slug-arbitraries';
import type { Logger } from 'typeorm';
import { Client } from '../../entities';
import {
  InvalidTenantNameError,
  TenantAlreadyExistsError,
  TenantNotFoundError,
  tenantContext,
  type TenantDataSourceManager,
} from '../../src';
import { adminQuery, databaseUrl, openManager } from '../support/fixtures';

/**
 * Hostile input, property-based: every generated value is thrown at
 * createTenant, run, getDataSource, getTenant and dropTenant. Whether it is a
 * valid slug is decided by an oracle written here independently of the
 * library (character codes, not the library's regular expression). An
 * invalid one must get InvalidTenantNameError from every entry point with
 * no SQL run at all (counted by a TypeORM logger that sees every query); a
 * valid one behaves normally (created once, served, dropped). Nothing else
 * may escape. At the end the schemas in pg_namespace are exactly the
 * starting ones plus the valid slugs created and not dropped.
 */

const RUNS = 10_000;
/** Valid slugs actually created (each costs a schema and migrations); the rest get read-only checks. */
const MAX_CREATED = 150;
const SEED = Number(process.env.FUZZ_SEED ?? 20_240_606);

/** Counts every statement any DataSource of the manager sends (TypeORM calls logQuery for each one). */
class CountingLogger implements Logger {
  queries = 0;
  logQuery(): void {
    this.queries += 1;
  }
  logQueryError(): void {}
  logQuerySlow(): void {}
  logSchemaBuild(): void {}
  logMigration(): void {}
  log(): void {}
}

const show = (value: unknown): string => {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…(${value.length})` : value);
  if (typeof value === 'symbol' || typeof value === 'bigint') return `${typeof value} ${String(value)}`;
  try {
    return `${typeof value} ${JSON.stringify(value) ?? String(value)}`;
  } catch {
    return typeof value;
  }
};

/** Calls `call` (sync throws included) and returns what it rejected with, or fails if it resolved. */
async function rejectionOf(what: string, call: () => unknown): Promise<unknown> {
  let result: unknown;
  try {
    result = await call();
  } catch (error) {
    return error;
  }
  throw new Error(`${what} resolved (${show(result)}) where it should have failed`);
}

function expectErrorClass(error: unknown, expected: Function, what: string): void {
  if (!(error instanceof expected)) {
    const detail = error instanceof Error ? `${error.constructor.name}: ${error.message}` : show(error);
    throw new Error(`${what}: expected ${expected.name}, got ${detail}`);
  }
}

describe('hostile tenant slugs (fast-check)', function () {
  this.timeout(120_000);

  it(`${RUNS.toLocaleString('en')} generated inputs at createTenant, run, getDataSource, getTenant and dropTenant: each is a valid slug that behaves normally, or InvalidTenantNameError with no SQL run; no other error; pg_namespace gains exactly the valid slugs created`, async () => {
    const logger = new CountingLogger();
    const manager: TenantDataSourceManager = await openManager({
      dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 5, logger },
      slugReuseDelayMs: 0, // generated inputs create, drop and create names again
    });
    const [{ role }] = await adminQuery<{ role: string }>('SELECT current_user AS role');
    const namespacesNow = async (): Promise<Set<string>> =>
      new Set((await adminQuery<{ nspname: string }>('SELECT nspname FROM pg_namespace')).map((r) => r.nspname));
    const startNamespaces = await namespacesNow();

    // The oracle's view of the database: schema -> owning slug (null: a schema with no tenant).
    const owner = new Map<string, string | null>([...startNamespaces].map((s) => [s, null]));
    const preexisting = new Set<string>();
    for (const t of await manager.listTenants()) {
      owner.set(t.schemaName, t.slug);
      preexisting.add(t.slug);
    }
    const liveCreated = new Map<string, string>(); // schema -> slug, created by this test and not dropped
    const counts = { inputs: 0, invalid: 0, valid: 0, created: 0, dropped: 0, notFoundChecks: 0, duplicateChecks: 0 };

    const expectInvalid = async (value: unknown): Promise<void> => {
      const before = logger.queries;
      let fnCalled = false;
      const calls: Array<[string, () => unknown]> = [
        ['createTenant', () => manager.createTenant(value as string)],
        ['run', () => manager.run(value as string, () => (fnCalled = true))],
        ['getDataSource', () => manager.getDataSource(value as string)],
        ['getTenant', () => manager.getTenant(value as string)],
        ['dropTenant', () => (manager.dropTenant as (s: unknown, o?: unknown) => Promise<void>).call(manager, value, { force: true })],
      ];
      for (const [name, call] of calls) {
        const error = await rejectionOf(`${name}(${show(value)})`, call);
        expectErrorClass(error, InvalidTenantNameError, `${name}(${show(value)})`);
        expect((error as InvalidTenantNameError).code).to.equal('INVALID_TENANT_NAME');
        expect((error as InvalidTenantNameError).statusCode).to.equal(400);
      }
      expect(fnCalled, `run(${show(value)}) called fn`).to.equal(false);
      expect(logger.queries - before, `SQL statements run for ${show(value)}`).to.equal(0);
    };

    const expectUnknown = async (slug: string): Promise<void> => {
      counts.notFoundChecks += 1;
      expect(await manager.getTenant(slug), `getTenant(${slug})`).to.equal(undefined);
      let fnCalled = false;
      expectErrorClass(await rejectionOf(`run(${slug})`, () => manager.run(slug, () => (fnCalled = true))), TenantNotFoundError, `run(${slug})`);
      expect(fnCalled).to.equal(false);
      expectErrorClass(await rejectionOf(`getDataSource(${slug})`, () => manager.getDataSource(slug)), TenantNotFoundError, `getDataSource(${slug})`);
      expectErrorClass(
        await rejectionOf(`dropTenant(${slug})`, () =>
          (manager.dropTenant as (s: string, o?: unknown) => Promise<void>).call(manager, slug, { force: true }),
        ),
        TenantNotFoundError,
        `dropTenant(${slug})`,
      );
    };

    const expectServed = async (slug: string, schema: string): Promise<void> => {
      const record = await manager.getTenant(slug);
      expect(record?.schemaName, `getTenant(${slug})`).to.equal(schema);
      const dataSource = await manager.getDataSource(slug);
      expect((dataSource.options as { schema?: string }).schema, `getDataSource(${slug})`).to.equal(schema);
      const seen = await manager.run(slug, async () => {
        const email = `fuzz@${slug}.test`;
        await tenantContext.getRepository(Client).save({ name: slug, email });
        const rows = await tenantContext.getRepository(Client).find();
        const [{ current }] = await tenantContext.query<Array<{ current: string }>>('SELECT current_schema() AS current');
        return { active: tenantContext.current()?.slug, emails: rows.map((r) => r.email), current };
      });
      expect(seen.active).to.equal(slug);
      expect(seen.emails.every((e) => e === `fuzz@${slug}.test`), `${slug} reads only its rows: ${seen.emails.join(', ')}`).to.equal(true);
      expect(seen.current).to.equal(schema);
    };

    const expectValid = async (slug: string, schema: string): Promise<void> => {
      const holder = owner.get(schema);
      if (holder === slug) {
        // Exists already: a second create is refused; ours are served.
        counts.duplicateChecks += 1;
        expectErrorClass(await rejectionOf(`createTenant(${slug}) again`, () => manager.createTenant(slug)), TenantAlreadyExistsError, `createTenant(${slug}) again`);
        if (preexisting.has(slug)) expect((await manager.getTenant(slug))?.slug).to.equal(slug);
        else await expectServed(slug, schema);
        return;
      }
      if (holder !== undefined) {
        // Its schema name belongs to another slug (a-b vs a_b) or to a schema with no tenant.
        counts.duplicateChecks += 1;
        expectErrorClass(await rejectionOf(`createTenant(${slug})`, () => manager.createTenant(slug)), TenantAlreadyExistsError, `createTenant(${slug}) colliding with ${String(holder)}`);
        await expectUnknown(slug);
        return;
      }
      if (counts.created >= MAX_CREATED) {
        await expectUnknown(slug);
        return;
      }
      const record = await manager.createTenant(slug);
      counts.created += 1;
      expect(record).to.include({ slug, schemaName: schema, status: 'active' });
      owner.set(schema, slug);
      liveCreated.set(schema, slug);
      expectErrorClass(await rejectionOf(`createTenant(${slug}) twice`, () => manager.createTenant(slug)), TenantAlreadyExistsError, `createTenant(${slug}) twice`);
      await expectServed(slug, schema);
      if (counts.created % 2 === 0) {
        await (manager.dropTenant as (s: string, o?: unknown) => Promise<void>).call(manager, slug, { force: true });
        counts.dropped += 1;
        owner.delete(schema);
        liveCreated.delete(schema);
        await expectUnknown(slug);
      }
    };

    await fc.assert(
      fc.asyncProperty(hostileInput, async (value) => {
        counts.inputs += 1;
        const schema = oracleSchemaName(value, role);
        if (schema === undefined) {
          counts.invalid += 1;
          await expectInvalid(value);
        } else {
          counts.valid += 1;
          await expectValid(value as string, schema);
        }
      }),
      { numRuns: RUNS, seed: SEED, endOnFailure: true },
    );
    console.log(
      `      ${counts.inputs} inputs: ${counts.invalid} invalid, ${counts.valid} valid (${counts.created} created, ${counts.dropped} dropped, ` +
        `${counts.duplicateChecks} duplicate/colliding, ${counts.notFoundChecks} not-found checks); seed ${SEED}`,
    );
    expect(counts.inputs).to.be.at.least(RUNS);
    expect(counts.invalid, 'invalid inputs tried').to.be.greaterThan(RUNS / 2);
    expect(counts.created, 'valid slugs created').to.be.greaterThan(20);
    expect(counts.dropped, 'valid slugs dropped').to.be.greaterThan(10);

    // No unexpected schema: exactly the starting ones plus the valid slugs created and not dropped.
    const endNamespaces = await namespacesNow();
    const expected = new Set([...startNamespaces, ...liveCreated.keys()]);
    expect([...endNamespaces].filter((s) => !expected.has(s)).sort(), 'schemas that appeared unexpectedly').to.deep.equal([]);
    expect([...expected].filter((s) => !endNamespaces.has(s)).sort(), 'schemas that disappeared').to.deep.equal([]);
    // And the registry says the same.
    const registered = new Set((await manager.listTenants()).map((t) => t.slug));
    for (const slug of liveCreated.values()) expect(registered.has(slug), `${slug} registered`).to.equal(true);
  });
});
