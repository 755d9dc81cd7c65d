import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { expect } from 'chai';
import {
  Column,
  Entity,
  JoinTable,
  ManyToMany,
  ManyToOne,
  PrimaryGeneratedColumn,
  ViewColumn,
  ViewEntity,
  type MigrationInterface,
  type QueryRunner,
  type Relation,
} from 'typeorm';
import { TenantScoped, type TenantDataSourceManagerOptions } from '../../src';
import { CLI_MAIN, finished } from '../cli/cli-support';
import { adminQuery, databaseUrl, newManager, openManager } from '../support/fixtures';
import { loadGenerated, removeGenerated } from './load-generated';

/**
 * Findings of an adversarial review of migration:generate, the startup
 * checks and the CLI's migration commands. Each test failed before the fix
 * of the problem it names. Every test has its own shared schema and
 * registry table.
 */


async function failureOf(promise: Promise<unknown>): Promise<Error | undefined> {
  return promise.then(
    () => undefined,
    (error: Error) => error,
  );
}

// --- models ---------------------------------------------------------------

/** Shared entities with a many-to-many between them (the junction table is shared too), and a tenant entity pointing at one. */
@Entity('rf_feature')
class RfFeature {
  @PrimaryGeneratedColumn() id!: number;
}
@Entity('rf_plan')
class RfPlan {
  @PrimaryGeneratedColumn() id!: number;
  @ManyToMany(() => RfFeature) @JoinTable() features?: Relation<RfFeature>[];
}
@TenantScoped()
@Entity('rf_subscription')
class RfSubscription {
  @PrimaryGeneratedColumn() id!: number;
  @ManyToOne(() => RfPlan, { nullable: true }) plan?: Relation<RfPlan> | null;
}

enum RfTier {
  Free = 'free',
  Pro = 'pro',
}
enum RfTierV2 {
  Free = 'free',
  Pro = 'pro',
  Team = 'team',
}

/** A shared entity with an enum; V2 adds a value and makes it the default. */
@Entity('rf_offer')
class RfOffer {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ type: 'enum', enum: RfTier, default: RfTier.Free }) tier!: RfTier;
}
@Entity('rf_offer')
class RfOfferV2 {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ type: 'enum', enum: RfTierV2, default: RfTierV2.Team }) tier!: RfTierV2;
}

/** A table that moves from the tenants to the shared schema: v1 tenant entity, v2 shared entity of the same table. */
@TenantScoped()
@Entity('rf_country')
class RfCountryPerTenant {
  @PrimaryGeneratedColumn() id!: number;
}
@Entity('rf_country')
class RfCountryShared {
  @PrimaryGeneratedColumn() id!: number;
}
class CreateTenantCountry1791000000010 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE TABLE rf_country (id serial PRIMARY KEY)');
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE rf_country');
  }
}
class DropTenantCountry1791000000011 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE rf_country');
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE TABLE rf_country (id serial PRIMARY KEY)');
  }
}
class CreateSharedCountry1791000000012 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE TABLE rf_country (id serial PRIMARY KEY)');
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE rf_country');
  }
}

/** Global settings (shared) and per-tenant settings, mapped to tables of the same name in their own schemas. */
@Entity('rf_settings')
class RfGlobalSettings {
  @PrimaryGeneratedColumn() id!: number;
}
@TenantScoped()
@Entity('rf_settings')
class RfTenantSettings {
  @PrimaryGeneratedColumn() id!: number;
}
class CreateTenantSettings1791000000020 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE TABLE rf_settings (id serial PRIMARY KEY)');
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE rf_settings');
  }
}
class CreateGlobalSettings1791000000021 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE TABLE rf_settings (id serial PRIMARY KEY)');
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE rf_settings');
  }
}

/** Tenant many-to-many whose migration forgets the junction table. */
@TenantScoped()
@Entity('rf_tag')
class RfTag {
  @PrimaryGeneratedColumn() id!: number;
}
@TenantScoped()
@Entity('rf_note')
class RfNote {
  @PrimaryGeneratedColumn() id!: number;
  @ManyToMany(() => RfTag) @JoinTable() tags?: Relation<RfTag>[];
}
class CreateNotesWithoutJunction1791000000030 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE TABLE rf_tag (id serial PRIMARY KEY)');
    await queryRunner.query('CREATE TABLE rf_note (id serial PRIMARY KEY)');
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE rf_note');
    await queryRunner.query('DROP TABLE rf_tag');
  }
}

/** A tenant view: its generated migration records it in typeorm_metadata under the schema it runs in. */
@TenantScoped()
@Entity('rf_line')
class RfLine {
  @PrimaryGeneratedColumn() id!: number;
  @Column() cents!: number;
}
@TenantScoped()
@ViewEntity({ name: 'rf_line_total', expression: 'SELECT coalesce(sum("cents"), 0)::int AS "total" FROM "rf_line"' })
class RfLineTotal {
  @ViewColumn() total!: number;
}

// --- tests ----------------------------------------------------------------

describe('review findings: migration:generate, startup checks, migration commands', () => {
  const schemas: string[] = [];
  const own = (tag: string): Partial<TenantDataSourceManagerOptions> & { sharedSchema: string; registryTable: string } => {
    const token = `${tag}_${randomBytes(3).toString('hex')}`;
    schemas.push(`rf_shared_${token}`);
    return { sharedSchema: `rf_shared_${token}`, registryTable: `rf_reg_${token}`, sharedMigrations: [], tenantMigrations: [], slugReuseDelayMs: 0 };
  };
  const tenantSchemas: string[] = [];
  const slug = (prefix: string): string => {
    const value = `${prefix}-${randomBytes(4).toString('hex')}`;
    tenantSchemas.push(value.replace(/-/g, '_'));
    return value;
  };

  after(async () => {
    for (const schema of [...tenantSchemas, ...schemas]) await adminQuery(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    removeGenerated();
  });

  it('a tenant migration never creates or changes the shared entities\' junction tables (they belong to the shared schema and its --shared migrations)', async () => {
    const base = own('junction');
    const manager = await openManager({ ...base, entities: [RfFeature, RfPlan, RfSubscription] });
    const generated = await manager.generateMigration('Subscriptions', { timestamp: 1_791_000_000_100 });
    expect(generated).not.to.equal(undefined);
    const shared = `"${base.sharedSchema}".`;
    const touchingShared = generated!.up
      .map((statement) => statement.sql)
      .filter((sql) => sql.startsWith(`CREATE TABLE ${shared}`) || sql.startsWith(`ALTER TABLE ${shared}`) || /^CREATE (UNIQUE )?INDEX "[^"]+" ON /.test(sql) && sql.includes(` ON ${shared}`));
    // Today: CREATE TABLE "<shared>"."rf_plan_features_rf_feature", its indexes and foreign keys, in a TENANT migration
    // (the first tenant would create the shared table, every later createTenant fail with 42P07).
    expect(touchingShared).to.deep.equal([]);
  });

  it('--shared: a new enum value used in the same migration (here as the default) applies at initialize(), which runs shared migrations in one transaction', async () => {
    const base = own('sharedenum');
    const v1 = await openManager({ ...base, entities: [RfOffer] });
    const first = await v1.generateMigration('Offers', { shared: true, timestamp: 1_791_000_000_200 });
    await v1.destroy();
    const firstMigration = loadGenerated(first!);
    await (await openManager({ ...base, entities: [RfOffer], sharedMigrations: [firstMigration] })).destroy();

    const v2 = await openManager({ ...base, entities: [RfOfferV2], sharedMigrations: [firstMigration] });
    const second = await v2.generateMigration('TeamTier', { shared: true, timestamp: 1_791_000_000_201 });
    await v2.destroy();
    expect(second).not.to.equal(undefined);
    // Today: ALTER TYPE ... ADD VALUE 'team' then SET DEFAULT 'team': 55P04 "unsafe use of new value", initialize() fails.
    const error = await failureOf(newManager({ ...base, entities: [RfOfferV2], sharedMigrations: [firstMigration, loadGenerated(second!)] }).initialize());
    expect(error?.cause instanceof Error ? error.cause.message : error?.message).to.equal(undefined);
  });

  it('moving a table from the tenants to the shared schema: initialize() lets the tenant migration that drops the old per-tenant tables run', async () => {
    const base = own('move');
    const tenant = slug('rf-move');
    const v1 = await openManager({ ...base, entities: [RfCountryPerTenant], tenantMigrations: [CreateTenantCountry1791000000010] });
    await v1.createTenant(tenant);
    await v1.destroy();
    // v2: the entity is shared now; the shared migration creates the shared table, a tenant migration drops the tenants' copies.
    const v2 = newManager({
      ...base,
      entities: [RfCountryShared],
      tenantMigrations: [CreateTenantCountry1791000000010, DropTenantCountry1791000000011],
      sharedMigrations: [CreateSharedCountry1791000000012],
    });
    // Today: TenancyConfigurationError "Shared entity RfCountryShared (table "rf_country") has its table in tenant schemas",
    // so migrateTenants(), which would drop those tables, can never run (neither from code nor from the CLI).
    expect((await failureOf(v2.initialize()))?.message).to.equal(undefined);
    const report = await v2.migrateTenants();
    expect(report.results.map((r) => [r.slug, r.status])).to.deep.equal([[tenant, 'migrated']]);
  });

  it('a shared entity and a tenant entity that map tables of one name are refused for what they are (not as a forgotten @TenantScoped())', async () => {
    const base = own('samename');
    const options = {
      ...base,
      entities: [RfGlobalSettings, RfTenantSettings],
      tenantMigrations: [CreateTenantSettings1791000000020],
      sharedMigrations: [CreateGlobalSettings1791000000021],
    };
    // Was refused with "Mark the entity @TenantScoped()", although the per-tenant table is RfTenantSettings's. Such a pair is
    // refused at every start (DESIGN: foreign keys written without a schema could not tell the two tables apart), saying so.
    const message = (await failureOf(newManager(options).initialize()))?.message;
    expect(message).to.contain('RfTenantSettings').and.contain('RfGlobalSettings').and.contain('both map the table "rf_settings"');
    expect(message).not.to.contain('@TenantScoped()');
  });

  it('checkEntities: a tenant many-to-many whose junction table no migration creates is refused, naming the junction table', async () => {
    const base = own('junctioncheck');
    const error = await failureOf(
      newManager({ ...base, entities: [RfTag, RfNote], tenantMigrations: [CreateNotesWithoutJunction1791000000030], checkEntities: true }).initialize(),
    );
    // Today: initialize() passes; the first save of a note with tags fails with 42P01.
    expect(error?.message ?? 'initialize() passed').to.contain('rf_note_tags_rf_tag');
  });

  it('a view migration run in a warm spare names the tenant\'s schema in typeorm_metadata once claimed, so reverting it removes its row', async () => {
    const base = own('warmview');
    const bootstrap = await openManager({ ...base, entities: [RfLine, RfLineTotal] });
    const generated = await bootstrap.generateMigration('Lines', { timestamp: 1_791_000_000_400 });
    await bootstrap.destroy();
    const manager = await openManager({ ...base, entities: [RfLine, RfLineTotal], tenantMigrations: [loadGenerated(generated!)], warmPool: { size: 1 } });
    await manager.refillWarmPool();
    const tenant = await manager.createTenant(slug('rf-warm'));
    try {
      // Today: [{ schema: 'typeorm_tenants_warm_<random>' }]: the spare's name, kept by the rename.
      expect(await adminQuery(`SELECT schema FROM "${tenant.schemaName}".typeorm_metadata`)).to.deep.equal([{ schema: tenant.schemaName }]);
      await manager.revertTenants({ tenants: [tenant.slug] });
      expect(await adminQuery(`SELECT schema FROM "${tenant.schemaName}".typeorm_metadata`), 'the down() removed the view\'s row').to.deep.equal([]);
    } finally {
      await manager.destroy();
      const spares = await adminQuery<{ schema_name: string }>(`SELECT schema_name FROM "${base.sharedSchema}"."${base.registryTable}_warm"`);
      for (const spare of spares) await adminQuery(`DROP SCHEMA IF EXISTS "${spare.schema_name}" CASCADE`);
    }
  });

  it('migration:generate --dryrun makes no warm spare (it starts the manager as every command does, so pending shared migrations are applied: documented)', async function () {
    this.timeout(120_000);
    const token = randomBytes(3).toString('hex');
    const dir = mkdtempSync(join(tmpdir(), 'rf-dryrun-'));
    const registryTable = `rf_dry_${token}`;
    const marker = `rf_dry_marker_${token}`;
    const build = resolve(__dirname, '..', '..');
    writeFileSync(
      join(dir, 'tenancy.config.js'),
      `'use strict';
require(${JSON.stringify(require.resolve('reflect-metadata'))});
const { Client, Plan, Project } = require(${JSON.stringify(join(build, 'entities'))});
const { sharedMigrations, tenantMigrations } = require(${JSON.stringify(join(build, 'migrations'))});
class DryRunMarker1791000000500 {
  async up(queryRunner) { await queryRunner.query('CREATE TABLE ${marker} (id int)'); }
  async down(queryRunner) { await queryRunner.query('DROP TABLE ${marker}'); }
}
module.exports = {
  dataSource: { type: 'postgres', url: process.env.DATABASE_URL, poolSize: 4 },
  entities: [Client, Project, Plan],
  tenantMigrations,
  sharedMigrations: [...sharedMigrations, DryRunMarker1791000000500],
  registryTable: ${JSON.stringify(registryTable)},
  warmPool: { size: 1 },
};
`,
    );
    try {
      const child = spawn(process.execPath, [CLI_MAIN, '--config', join(dir, 'tenancy.config.js'), 'migration:generate', join(dir, 'out', 'Nothing'), '--dryrun'], {
        env: { ...process.env, DATABASE_URL: databaseUrl() },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const result = await finished(child);
      expect(result.stderr, 'the command ran against the database').to.contain('No changes');
      expect(readdirSync(dir)).to.deep.equal(['tenancy.config.js']);
      const [state] = await adminQuery<{ marker: string | null; warm: string | null }>(`SELECT to_regclass($1) AS marker, to_regclass($2) AS warm`, [
        `public.${marker}`,
        `public.${registryTable}_warm`,
      ]);
      const spares = state!.warm === null ? [] : await adminQuery(`SELECT schema_name FROM public."${registryTable}_warm"`);
      // Was: a warm spare schema created and migrated. The pending shared migration is applied, as by every command.
      expect({ marker: state!.marker, spares }).to.deep.equal({ marker: marker, spares: [] });
    } finally {
      const [warm] = await adminQuery<{ warm: string | null }>(`SELECT to_regclass($1) AS warm`, [`public.${registryTable}_warm`]);
      if (warm!.warm !== null) {
        for (const spare of await adminQuery<{ schema_name: string }>(`SELECT schema_name FROM public."${registryTable}_warm"`)) {
          await adminQuery(`DROP SCHEMA IF EXISTS "${spare.schema_name}" CASCADE`);
        }
      }
      await adminQuery(`DROP TABLE IF EXISTS public."${marker}", public."${registryTable}_warm", public."${registryTable}_migrations", public."${registryTable}_dropped", public."${registryTable}_domains", public."${registryTable}_domain_gen", public."${registryTable}"`);
      await adminQuery(`DELETE FROM public.migrations WHERE name = 'DryRunMarker1791000000500'`).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
