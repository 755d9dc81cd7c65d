import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { expect } from 'chai';
import { Column, Entity, PrimaryGeneratedColumn, QueryFailedError, type Logger, type MigrationInterface, type QueryRunner } from 'typeorm';
import { DatabaseUnreachableError, TenancyConfigurationError, TenantDataSourceManager, tenantContext, type TenancyLogEntry } from '../../src';
import { freePort } from '../../support/free-port';
import { adminQuery, databaseUrl, managerOptions, newManager, openManager, uniqueSlug } from '../support/fixtures';

/**
 * What a first run gets wrong, said in the error: a server that does not
 * answer, a database that does not exist, options that name no server, the
 * maintenance database, and an entity that lacks @TenantScoped().
 */

/** A manager over `url` whose initialize() is expected to fail: nothing to destroy afterwards. */
function managerAt(url: string): TenantDataSourceManager {
  return newManager({ dataSource: { type: 'postgres', url, poolSize: 2 }, pool: { connectionTimeoutMillis: 5_000 } });
}

async function initializeError(manager: TenantDataSourceManager): Promise<unknown> {
  return manager.initialize().then(
    () => {
      throw new Error('initialize() succeeded');
    },
    (error: unknown) => error,
  );
}

describe('first run: connection failures name the server and database', () => {
  it('a server that does not answer: DatabaseUnreachableError (503) naming user, host, port and database, never the password, the cause kept', async () => {
    const port = await freePort();
    const error = await initializeError(managerAt(`postgres://app:s3cret-pw@127.0.0.1:${port}/appdb`));
    expect(error).to.be.instanceOf(DatabaseUnreachableError);
    const unreachable = error as DatabaseUnreachableError;
    expect(unreachable.message).to.match(new RegExp(`^could not connect to postgres://app@127\\.0\\.0\\.1:${port}/appdb: .*ECONNREFUSED`));
    expect(unreachable.message).not.to.include('s3cret-pw');
    expect(unreachable.target).to.equal(`postgres://app@127.0.0.1:${port}/appdb`);
    expect(unreachable.code).to.equal('DATABASE_UNREACHABLE');
    expect(unreachable.statusCode).to.equal(503);
    expect((unreachable.cause as { code?: string }).code).to.equal('ECONNREFUSED');
  });

  it('a database that does not exist: the server\'s refusal, with its SQLSTATE, naming the database', async () => {
    const url = new URL(databaseUrl());
    url.pathname = `/no_such_db_${randomBytes(3).toString('hex')}`;
    const error = await initializeError(managerAt(url.toString()));
    expect(error).to.be.instanceOf(DatabaseUnreachableError);
    const unreachable = error as DatabaseUnreachableError;
    expect(unreachable.sqlState).to.equal('3D000');
    expect(unreachable.message).to.include(`${url.hostname}:${url.port || 5432}${url.pathname}: database "${url.pathname.slice(1)}" does not exist`);
    if (url.password !== '') expect(unreachable.message).not.to.include(url.password);
  });

  it('options that name no server (url: process.env.DATABASE_URL, unset): the error says pg used its defaults and asks whether DATABASE_URL is set', () => {
    // A child process with no PG* variables and no USER, as in a container: pg then has no user name to send.
    const script = `
      require('reflect-metadata');
      const { TenantDataSourceManager } = require(${JSON.stringify(join(__dirname, '..', '..', 'src'))});
      const { Client, Plan, Project } = require(${JSON.stringify(join(__dirname, '..', '..', 'entities'))});
      const manager = new TenantDataSourceManager({ dataSource: { type: 'postgres', url: process.env.DATABASE_URL }, entities: [Client, Plan, Project], pool: { connectionTimeoutMillis: 5000 } });
      manager.initialize().then(
        () => { console.log(JSON.stringify({ ok: true })); return manager.destroy(); },
        (error) => console.log(JSON.stringify({ name: error.name, code: error.code, message: error.message, target: error.target })),
      );`;
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME };
    const child = spawnSync(process.execPath, ['-e', script], { env, encoding: 'utf8', timeout: 30_000 });
    expect(child.status, child.stderr).to.equal(0);
    const out = JSON.parse(child.stdout.trim().split('\n').pop()!) as Record<string, string>;
    expect(out.name).to.equal('DatabaseUnreachableError');
    expect(out.code).to.equal('DATABASE_UNREACHABLE');
    expect(out.target).to.equal('postgres://(none)@localhost:5432/(none)');
    expect(out.message).to.include('could not connect to postgres://(none)@localhost:5432/(none): ');
    expect(out.message).to.include('is DATABASE_URL unset?');
  });
});

describe('first run: the maintenance database', () => {
  const token = randomBytes(3).toString('hex');
  const sharedSchema = `mnt_shared_${token}`;
  const extensionsSchema = `mnt_ext_${token}`;
  const maintenanceUrl = (): string => {
    const url = new URL(databaseUrl());
    url.pathname = '/postgres';
    return url.toString();
  };

  after(async () => {
    // The postgres database of the server: leave nothing of this test there.
    const { Client } = await import('pg');
    const client = new Client({ connectionString: maintenanceUrl() });
    await client.connect();
    try {
      await client.query(`DROP SCHEMA IF EXISTS "${sharedSchema}" CASCADE`);
      await client.query(`DROP SCHEMA IF EXISTS "${extensionsSchema}" CASCADE`);
    } finally {
      await client.end();
    }
  });

  const optionsOn = (logger: (entry: TenancyLogEntry) => void, allowMaintenanceDatabase?: boolean) =>
    managerOptions({
      dataSource: { type: 'postgres', url: maintenanceUrl(), poolSize: 2 },
      sharedSchema,
      extensionsSchema,
      migrationGuard: 'catalog',
      logger,
      ...(allowMaintenanceDatabase === undefined ? {} : { allowMaintenanceDatabase }),
    });

  it('initialize() in "postgres" works and warns once, naming the database and the server, not the password', async () => {
    const entries: TenancyLogEntry[] = [];
    const manager = new TenantDataSourceManager(optionsOn((entry) => entries.push(entry)));
    await manager.initialize();
    try {
      const warnings = entries.filter((entry) => entry.source === 'typeorm-tenants' && entry.level === 'warn' && /maintenance database/.test(entry.message));
      expect(warnings).to.have.length(1);
      expect(warnings[0]!.kind).to.equal('configuration');
      expect(warnings[0]!.message).to.match(/maintenance database "postgres" of postgres:\/\/[^@]+@[^/]+\/postgres/);
      expect(warnings[0]!.message).to.include('allowMaintenanceDatabase');
      const password = new URL(databaseUrl()).password;
      if (password !== '') expect(warnings[0]!.message).not.to.include(password);
      // Really there: the registry went to the maintenance database.
      expect(await manager.listTenants()).to.deep.equal([]);
    } finally {
      await manager.destroy();
    }
  });

  it('allowMaintenanceDatabase: true silences it; the application database gets no such warning', async () => {
    const allowed: TenancyLogEntry[] = [];
    const manager = new TenantDataSourceManager(optionsOn((entry) => allowed.push(entry), true));
    await manager.initialize();
    await manager.destroy();
    expect(allowed.filter((entry) => /maintenance database/.test(entry.message))).to.deep.equal([]);

    const ordinary: TenancyLogEntry[] = [];
    await openManager({ logger: (entry) => ordinary.push(entry) });
    expect(ordinary.filter((entry) => /maintenance database/.test(entry.message))).to.deep.equal([]);
  });

  it('allowMaintenanceDatabase must be a boolean when given', () => {
    expect(() => new TenantDataSourceManager({ ...managerOptions(), allowMaintenanceDatabase: 'yes' as unknown as boolean })).to.throw(/allowMaintenanceDatabase/);
  });
});

@Entity('fr_note')
class FrNoteWithoutDecorator {
  @PrimaryGeneratedColumn() id!: number;
  @Column() body!: string;
}

class CreateFrNote1794000000001 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE TABLE fr_note (id serial PRIMARY KEY, body text NOT NULL)');
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE fr_note');
  }
}

describe('first run: an entity without @TenantScoped() at run time', () => {
  const token = randomBytes(3).toString('hex');
  const sharedSchema = `fr_shared_${token}`;

  after(async () => {
    await adminQuery(`DROP SCHEMA IF EXISTS "${sharedSchema}" CASCADE`);
  });

  it('"relation does not exist" of its shared table gets a hint naming the entity and @TenantScoped(); other errors are left as they are', async () => {
    const manager = await openManager({
      sharedSchema,
      registryTable: `fr_tenants_${token}`,
      entities: [FrNoteWithoutDecorator],
      sharedMigrations: [],
      tenantMigrations: [CreateFrNote1794000000001],
    });
    const slug = uniqueSlug('fr');
    await manager.createTenant(slug);
    // The tenant has its table (the migration made it there); the shared schema has none.
    expect(await adminQuery(`SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'fr_note'`, [slug.replace(/-/g, '_')])).to.have.length(1);

    const error = await manager.run(slug, () => tenantContext.getRepository(FrNoteWithoutDecorator).find()).then(
      () => {
        throw new Error('the find succeeded');
      },
      (e: unknown) => e,
    );
    expect(error).to.be.instanceOf(QueryFailedError);
    const failed = error as QueryFailedError & { code?: string; hint?: string };
    expect(failed.code).to.equal('42P01');
    expect(failed.message).to.match(new RegExp(`^relation "${sharedSchema}\\.fr_note" does not exist\\. Entity FrNoteWithoutDecorator has no @TenantScoped\\(\\)`));
    expect(failed.message).to.include(`shared schema "${sharedSchema}"`);
    expect(failed.hint).to.include('mark it @TenantScoped()');

    const other = await manager.run(slug, () => tenantContext.query('SELECT * FROM fr_nothing_here')).then(
      () => {
        throw new Error('the query succeeded');
      },
      (e: unknown) => e,
    );
    expect((other as Error).message).to.equal('relation "fr_nothing_here" does not exist');
  });

  it('with a TypeORM Logger of the user\'s that keeps private fields, every query still reaches it and the failed one carries the hint', async () => {
    class CountingLogger implements Logger {
      readonly #queries: string[] = [];
      readonly #errors: string[] = [];
      get queries(): readonly string[] {
        return this.#queries;
      }
      get errors(): readonly string[] {
        return this.#errors;
      }
      logQuery(query: string): void {
        this.#queries.push(query);
      }
      logQueryError(error: string | Error): void {
        this.#errors.push(typeof error === 'string' ? error : error.message);
      }
      logQuerySlow(): void {}
      logSchemaBuild(): void {}
      logMigration(): void {}
      log(): void {}
    }
    const logger = new CountingLogger();
    const manager = await openManager({
      sharedSchema,
      registryTable: `fr_tenants2_${token}`,
      entities: [FrNoteWithoutDecorator],
      sharedMigrations: [],
      tenantMigrations: [CreateFrNote1794000000001],
      dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 2, logging: true },
      logger,
    });
    const slug = uniqueSlug('fr');
    await manager.createTenant(slug);
    await manager.run(slug, () => tenantContext.query('SELECT 1 AS one'));
    expect(logger.queries.some((query) => query === 'SELECT 1 AS one')).to.equal(true);
    await manager.run(slug, () => tenantContext.getRepository(FrNoteWithoutDecorator).count()).catch(() => undefined);
    expect(logger.errors.some((message) => message.includes('Entity FrNoteWithoutDecorator has no @TenantScoped()'))).to.equal(true);
  });
});

describe('first run: a template database', () => {
  it('initialize() in template1 is refused before it writes anything there, naming the database and why', async () => {
    const url = new URL(databaseUrl());
    url.pathname = '/template1';
    const before = await templateSchemas(url.toString());
    const manager = newManager({ dataSource: { type: 'postgres', url: url.toString(), poolSize: 2 }, allowMaintenanceDatabase: true, migrationGuard: 'catalog' });
    const error = await initializeError(manager);
    expect(error).to.be.instanceOf(TenancyConfigurationError);
    expect((error as Error).message).to.match(/template database "template1" of postgres:\/\/.*\/template1: every database created later is copied from it/);
    expect(await templateSchemas(url.toString())).to.deep.equal(before);
  });
});

async function templateSchemas(url: string): Promise<string[]> {
  const { Client: PgClient } = await import('pg');
  const client = new PgClient({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ nspname: string }>('SELECT nspname FROM pg_namespace ORDER BY nspname');
    return rows.map((row) => row.nspname);
  } finally {
    await client.end();
  }
}
