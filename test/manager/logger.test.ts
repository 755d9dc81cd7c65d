import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Column, Entity, PrimaryGeneratedColumn, type Logger } from 'typeorm';
import { tenantMigrations } from '../../migrations';
import { TenancyConfigurationError, TenantDataSourceManager, tenantContext, type TenancyLogEntry } from '../../src';
import { AddClientPhone1700000000003 } from '../support/extra-migrations';
import { withFreshDatabase } from '../support/fresh-database';
import { adminQuery, managerOptions, newManager, openManager, sleep, uniqueSlug } from '../support/fixtures';
import { warningsDuring } from '../support/process-warnings';

const PHONE = 'AddClientPhone1700000000003';
const newCode = [...tenantMigrations, AddClientPhone1700000000003];
const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

/** Shared, with a uuid key: initialize() installs uuid-ossp, and warns when the role's default search_path misses the extensions schema. */
@Entity('log_region')
class LogRegion {
  @PrimaryGeneratedColumn('uuid') id!: string;
  @Column() name!: string;
}

/** What the console printed while `fn` ran (every method TypeORM's loggers use), with the console restored after. */
async function consoleDuring<T>(fn: () => Promise<T>): Promise<{ result: T; printed: string[] }> {
  const printed: string[] = [];
  const methods = ['log', 'info', 'warn', 'error', 'debug'] as const;
  const saved = methods.map((method) => console[method]);
  for (const method of methods) console[method] = (...args: unknown[]) => void printed.push(`${method}: ${args.map(String).join(' ')}`);
  try {
    return { result: await fn(), printed };
  } finally {
    methods.forEach((method, i) => (console[method] = saved[i]!));
  }
}

/** A TypeORM Logger recording each call. */
class RecordingLogger implements Logger {
  readonly calls: Array<{ method: string; args: unknown[] }> = [];
  logQuery(...args: unknown[]): void {
    this.calls.push({ method: 'logQuery', args });
  }
  logQueryError(...args: unknown[]): void {
    this.calls.push({ method: 'logQueryError', args });
  }
  logQuerySlow(...args: unknown[]): void {
    this.calls.push({ method: 'logQuerySlow', args });
  }
  logSchemaBuild(...args: unknown[]): void {
    this.calls.push({ method: 'logSchemaBuild', args });
  }
  logMigration(...args: unknown[]): void {
    this.calls.push({ method: 'logMigration', args });
  }
  log(...args: unknown[]): void {
    this.calls.push({ method: 'log', args });
  }
}

/**
 * Two tenants made by the old code (the base migrations) in a registry of
 * their own; the first holds an upper-case email, so the new code's
 * AddClientPhone migration fails there (23514) and passes in the second.
 */
async function fleetWithOneBroken(): Promise<{ registryTable: string; broken: string; clean: string }> {
  const registryTable = `lg_${randomBytes(3).toString('hex')}`;
  const old = await openManager({ registryTable });
  const broken = uniqueSlug('lg-broken');
  const clean = uniqueSlug('lg-clean');
  await old.createTenant(broken);
  await old.createTenant(clean);
  await old.destroy();
  await adminQuery(`INSERT INTO "${schemaOf(broken)}".client (name, email) VALUES ('Upper', 'UPPER@X.TEST')`);
  return { registryTable, broken, clean };
}

describe('logger: what TypeORM and the library log, to a function or a TypeORM Logger', () => {
  it("a failing tenant migration in migrateTenants() reaches a function logger with the migration's name and the tenant's schema; console.log prints nothing", async () => {
    const { registryTable, broken, clean } = await fleetWithOneBroken();
    const entries: TenancyLogEntry[] = [];
    const manager = await openManager({ registryTable, tenantMigrations: newCode, logger: (entry) => entries.push(entry) });

    const { result: report, printed } = await consoleDuring(() => manager.migrateTenants());
    expect(report.totals).to.include({ migrated: 1, failed: 1 });
    expect(printed, 'TypeORM printed through the console').to.deep.equal([]);

    const failed = entries.filter((e) => e.source === 'typeorm' && e.kind === 'migration');
    expect(failed).to.have.length(1);
    expect(failed[0]).to.include({ level: 'info', schema: schemaOf(broken) });
    expect(failed[0]!.message).to.contain(`Migration "${PHONE}" failed`).and.contain('client_email_lower');

    const lifecycle = entries.filter((e) => e.kind === 'lifecycle');
    expect(lifecycle.map((e) => [e.source, e.level, e.tenant, e.schema])).to.have.deep.members([
      ['typeorm-tenants', 'info', clean, schemaOf(clean)],
      ['typeorm-tenants', 'error', broken, schemaOf(broken)],
    ]);
    expect(lifecycle.find((e) => e.tenant === clean)!.message).to.equal(`Tenant "${clean}" migrated: ${PHONE}.`);
    expect(lifecycle.find((e) => e.tenant === broken)!.message).to.contain(`failed to migrate at ${PHONE}`).and.contain('client_email_lower');
  });

  it('a TypeORM Logger given as logger is used as is: it gets logMigration for the failing migration, every query, and the library\'s messages through log()', async () => {
    const { registryTable, broken } = await fleetWithOneBroken();
    const logger = new RecordingLogger();
    const manager = await openManager({ registryTable, tenantMigrations: newCode, logger });

    const { printed } = await consoleDuring(() => manager.migrateTenants({ tenants: [broken] }));
    expect(printed).to.deep.equal([]);
    const migrations = logger.calls.filter((c) => c.method === 'logMigration').map((c) => String(c.args[0]));
    expect(migrations).to.have.length(1);
    expect(migrations[0]).to.contain(`Migration "${PHONE}" failed`);
    // As is: TypeORM calls it for every query, whatever `logging` says (the Logger decides what to keep).
    expect(logger.calls.some((c) => c.method === 'logQuery')).to.equal(true);

    const slug = uniqueSlug('lg-typeorm');
    await manager.createTenant(slug);
    await manager.suspendTenant(slug);
    const library = logger.calls.filter((c) => c.method === 'log').map((c) => c.args as [string, string]);
    // An error of the library reaches TypeORM's log() as 'warn', the highest level it has.
    const failure = library.find(([, message]) => message.startsWith(`typeorm-tenants: Tenant "${broken}" failed to migrate at ${PHONE} (rolled back): `));
    expect(failure?.[0], library.map((args) => args.join(' ')).join('\n')).to.equal('warn');
    expect(failure![1]).to.contain('client_email_lower');
    expect(library).to.deep.include(['info', `typeorm-tenants: Tenant "${slug}" created (schema "${schemaOf(slug)}").`]);
    expect(library).to.deep.include(['info', `typeorm-tenants: Tenant "${slug}" suspended.`]);
  });

  it("TypeORM's entries follow the connection's logging option by TypeORM's rules (schema builds with 'all' or ['schema'], queries with true, 'all' or ['query'])", async () => {
    const cases: Array<{ logging: boolean | 'all' | Array<'query' | 'schema' | 'error'> | undefined; schema: boolean; query: boolean; error: boolean }> = [
      { logging: undefined, schema: false, query: false, error: false },
      { logging: true, schema: false, query: true, error: true },
      { logging: ['schema'], schema: true, query: false, error: false },
      { logging: ['query'], schema: false, query: true, error: false },
      { logging: ['error'], schema: false, query: false, error: true },
      { logging: 'all', schema: true, query: true, error: true },
    ];
    for (const { logging, schema, query, error } of cases) {
      const entries: TenancyLogEntry[] = [];
      const base = managerOptions();
      const manager = newManager({ dataSource: { ...base.dataSource!, logging }, logger: (entry) => entries.push(entry) });
      await manager.initialize();
      const slug = uniqueSlug('lg-logging');
      await manager.createTenant(slug);
      await manager.run(slug, () => tenantContext.query('SELECT * FROM no_such_table')).catch(() => undefined);
      await manager.destroy();

      const label = JSON.stringify(logging);
      const kinds = new Set(entries.filter((e) => e.source === 'typeorm').map((e) => e.kind));
      expect(kinds.has('schema-build'), `schema-build with logging ${label}`).to.equal(schema);
      expect(kinds.has('query'), `query with logging ${label}`).to.equal(query);
      expect(kinds.has('query-error'), `query-error with logging ${label}`).to.equal(error);
      if (schema) {
        // createTenant's migrations ran on a DataSource of the new tenant's schema, and its adapter says so.
        const built = entries.filter((e) => e.kind === 'schema-build' && e.schema === schemaOf(slug)).map((e) => e.message);
        expect(built.some((message) => /Migration \w+ has been executed successfully\./.test(message)), built.join('\n')).to.equal(true);
      }
      if (query) {
        const inserts = entries.filter((e) => e.kind === 'query' && e.schema === schemaOf(slug) && Array.isArray(e.parameters) && e.parameters.length > 0);
        expect(inserts.length, 'parameterised queries of the tenant').to.be.greaterThan(0);
        expect(entries.some((e) => e.kind === 'query' && e.schema === 'public'), "the shared DataSource's queries").to.equal(true);
      }
      if (error) {
        const failed = entries.find((e) => e.kind === 'query-error' && e.query === 'SELECT * FROM no_such_table');
        expect(failed, entries.filter((e) => e.kind === 'query-error').map((e) => e.query).join('\n')).to.include({ level: 'error', schema: schemaOf(slug) });
        expect(failed!.message).to.contain('no_such_table');
      }
    }
  });

  it('a slow query is logged whatever logging says (TypeORM logs it once maxQueryExecutionTime is passed), with its SQL, parameters and duration', async () => {
    const entries: TenancyLogEntry[] = [];
    const base = managerOptions();
    const manager = await openManager({ dataSource: { ...base.dataSource!, maxQueryExecutionTime: 20 }, logger: (entry) => entries.push(entry) });
    const slug = uniqueSlug('lg-slow');
    await manager.createTenant(slug);
    await manager.run(slug, () => tenantContext.query('SELECT pg_sleep($1)', [0.05]));
    const slow = entries.find((e) => e.kind === 'query-slow' && e.query === 'SELECT pg_sleep($1)');
    expect(slow, entries.map((e) => `${e.kind}: ${e.query ?? e.message}`).join('\n')).to.include({ level: 'warn', source: 'typeorm', schema: schemaOf(slug) });
    expect(slow!.parameters).to.deep.equal([0.05]);
    expect(slow!.durationMs).to.be.at.least(20);
    expect(entries.some((e) => e.kind === 'query')).to.equal(false);
  });

  it("lifecycle events give one info entry each, with the tenant; a listener's error is an error entry, not a process warning", async () => {
    const entries: TenancyLogEntry[] = [];
    const manager = await openManager({ logger: (entry) => entries.push(entry) });
    manager.on('suspended', () => {
      throw new Error('listener boom');
    });
    const slug = uniqueSlug('lg-life');
    const warnings = await warningsDuring('TenancyListenerWarning', async () => {
      await manager.createTenant(slug);
      await manager.suspendTenant(slug);
      await manager.resumeTenant(slug);
      await manager.archiveTenant(slug);
      await manager.restoreTenant(slug);
      await manager.dropTenant(slug, { force: true });
    });
    expect(warnings).to.deep.equal([]);
    const ours = entries.filter((e) => e.source === 'typeorm-tenants' && e.tenant === slug);
    expect(ours.map((e) => [e.level, e.kind])).to.deep.equal([
      ['info', 'lifecycle'],
      ['info', 'lifecycle'],
      ['error', 'listener-error'],
      ['info', 'lifecycle'],
      ['info', 'lifecycle'],
      ['info', 'lifecycle'],
      ['info', 'lifecycle'],
    ]);
    expect(ours.filter((e) => e.kind === 'lifecycle').map((e) => e.message)).to.deep.equal([
      `Tenant "${slug}" created (schema "${schemaOf(slug)}").`,
      `Tenant "${slug}" suspended.`,
      `Tenant "${slug}" resumed.`,
      `Tenant "${slug}" archived.`,
      `Tenant "${slug}" restored.`,
      `Tenant "${slug}" dropped (schema "${schemaOf(slug)}").`,
    ]);
    expect(ours.every((e) => e.schema === schemaOf(slug))).to.equal(true);
    expect(ours[2]!.message).to.equal('a "suspended" listener threw: listener boom');
    expect((ours[2]!.error as Error).message).to.equal('listener boom');
  });

  it('without a logger, a listener\'s error is still a TenancyListenerWarning and lifecycle events print nothing', async () => {
    const manager = await openManager();
    manager.on('created', () => {
      throw new Error('listener boom');
    });
    const slug = uniqueSlug('lg-nolog');
    let printed: string[] = [];
    const warnings = await warningsDuring('TenancyListenerWarning', async () => {
      ({ printed } = await consoleDuring(() => manager.createTenant(slug)));
    });
    expect(warnings).to.deep.equal(['typeorm-tenants: a "created" listener threw: listener boom']);
    expect(printed).to.deep.equal([]);
  });

  it("the library's warnings go to the logger instead of process warnings: pendingMigrations 'warn', a failed pooled connection, initialize()'s configuration warning", async () => {
    const registryTable = `lg_${randomBytes(3).toString('hex')}`;
    const old = await openManager({ registryTable });
    const slug = uniqueSlug('lg-pending');
    await old.createTenant(slug);
    await old.destroy();

    const entries: TenancyLogEntry[] = [];
    const applicationName = `lg-${randomBytes(4).toString('hex')}`;
    const base = managerOptions();
    const manager = newManager({
      registryTable,
      tenantMigrations: newCode,
      pendingMigrations: 'warn',
      dataSource: { ...base.dataSource!, applicationName },
      logger: (entry) => entries.push(entry),
    });
    await manager.initialize();
    const processWarnings: string[] = [];
    const listener = (warning: Error): void => {
      if (warning.name.startsWith('Tenancy')) processWarnings.push(`${warning.name}: ${warning.message}`);
    };
    process.on('warning', listener);
    try {
      expect(await manager.run(slug, () => tenantContext.query('SELECT 1 AS one'))).to.deep.equal([{ one: 1 }]);
      const pending = entries.filter((e) => e.kind === 'pending-migrations');
      expect(pending).to.have.length(1);
      expect(pending[0]).to.include({ level: 'warn', source: 'typeorm-tenants', tenant: slug, schema: schemaOf(slug) });
      expect(pending[0]!.message).to.contain(`tenant "${slug}" is served with tenant migrations pending`);

      // The server ends an idle pooled connection: the default onPoolError logs it.
      const ended = await adminQuery<{ ok: boolean }>(
        'SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()',
        [applicationName],
      );
      expect(ended.length).to.be.greaterThan(0);
      for (let i = 0; i < 100 && !entries.some((e) => e.kind === 'pool-error'); i += 1) await sleep(20);
      const poolError = entries.find((e) => e.kind === 'pool-error');
      expect(poolError, 'a pool-error entry').to.not.equal(undefined);
      expect(poolError).to.include({ level: 'warn', source: 'typeorm-tenants' });
      expect(poolError!.message).to.match(/^a pooled connection failed: /);
      await new Promise((resolve) => setImmediate(resolve));
      expect(processWarnings).to.deep.equal([]);
    } finally {
      process.off('warning', listener);
    }

    await withFreshDatabase({ entities: [LogRegion] }, async (db) => {
      const fresh: TenancyLogEntry[] = [];
      const configured = db.manager({ logger: (entry) => fresh.push(entry) });
      const warnings = await warningsDuring('TenancyConfigurationWarning', () => configured.initialize());
      expect(warnings).to.deep.equal([]);
      const configuration = fresh.filter((e) => e.kind === 'configuration');
      expect(configuration).to.have.length(1);
      expect(configuration[0]).to.include({ level: 'warn', source: 'typeorm-tenants' });
      expect(configuration[0]!.message).to.contain('"extensions"').and.contain('uuid-ossp').and.contain('ALTER ROLE');
    });
  });

  it('a function logger that throws fails nothing: the tenant is created and the error becomes a TenancyLoggerWarning', async () => {
    const manager = await openManager({
      logger: () => {
        throw new Error('logger boom');
      },
    });
    const slug = uniqueSlug('lg-throws');
    const warnings = await warningsDuring('TenancyLoggerWarning', async () => {
      await manager.createTenant(slug);
    });
    expect(await manager.getTenant(slug)).to.include({ slug, status: 'active' });
    expect(warnings.length).to.be.greaterThan(0);
    expect(warnings[0]).to.equal('typeorm-tenants: the "logger" option threw: logger boom');
  });

  it('refuses logger together with dataSource.logger ("choose one"), and a logger that is neither a function nor a TypeORM Logger', () => {
    const base = managerOptions();
    expect(() => new TenantDataSourceManager({ ...base, dataSource: { ...base.dataSource!, logger: 'simple-console' }, logger: () => undefined })).to.throw(
      TenancyConfigurationError,
      /Options "logger" and "dataSource.logger" are both given: choose one\./,
    );
    expect(
      () => new TenantDataSourceManager({ ...base, dataSource: { ...base.dataSource!, logger: new RecordingLogger() }, logger: new RecordingLogger() }),
    ).to.throw(TenancyConfigurationError, /choose one/);
    for (const [value, got] of [
      ['simple-console', '"simple-console"'],
      [{}, 'an object without logQuery, logQueryError, logQuerySlow, logSchemaBuild, logMigration, log'],
      [{ logQuery: () => undefined, logMigration: () => undefined }, 'an object without logQueryError, logQuerySlow, logSchemaBuild, log'],
      [[], 'an array'],
      [42, 'a number'],
      [null, 'null'],
    ] as const) {
      expect(() => new TenantDataSourceManager({ ...base, logger: value as never }), JSON.stringify(value)).to.throw(
        TenancyConfigurationError,
        `Option "logger" must be a TypeORM Logger (an object with logQuery, logQueryError, logQuerySlow, logSchemaBuild, logMigration, log) or a function receiving each log entry; got ${got}.`,
      );
    }
    expect(() => new TenantDataSourceManager({ ...base, logger: 'file' as never })).to.throw(/TypeORM's named loggers .* go in "dataSource.logger"/);
    // Either one alone is taken.
    expect(() => new TenantDataSourceManager({ ...base, logger: new RecordingLogger() })).to.not.throw();
    expect(() => new TenantDataSourceManager({ ...base, dataSource: { ...base.dataSource!, logger: 'simple-console' } })).to.not.throw();
  });
});
