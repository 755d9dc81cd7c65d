import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Column, Entity, PrimaryGeneratedColumn, type MigrationInterface, type QueryRunner } from 'typeorm';
import { TenancyConfigurationError, TenantScoped } from '../../src';
import { adminQuery, newManager, openManager, uniqueSlug } from '../support/fixtures';

/**
 * initialize()'s checks of the model against the database: the forgotten
 * @TenantScoped() (a shared entity whose table the tenant migrations make in
 * every tenant), and, with checkEntities, a tenant entity that no tenant
 * migration gives a table.
 */

@Entity('sc_invoice')
@TenantScoped()
class ScInvoice {
  @PrimaryGeneratedColumn() id!: number;
  @Column() number!: string;
}

/** The same table, with the decorator forgotten. */
@Entity('sc_invoice')
class ScInvoiceWithoutDecorator {
  @PrimaryGeneratedColumn() id!: number;
  @Column() number!: string;
}

/** A tenant entity no migration makes a table for. */
@Entity('sc_receipt')
@TenantScoped()
class ScReceipt {
  @PrimaryGeneratedColumn() id!: number;
}

class CreateScInvoice1793000000001 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE TABLE sc_invoice (id serial PRIMARY KEY, number varchar NOT NULL)');
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE sc_invoice');
  }
}

describe('startup checks of the model (initialize)', () => {
  const token = randomBytes(3).toString('hex');
  const sharedSchema = `sc_shared_${token}`;
  const base = { sharedSchema, registryTable: `sc_tenants_${token}`, sharedMigrations: [], tenantMigrations: [CreateScInvoice1793000000001] };

  after(async () => {
    await adminQuery(`DROP SCHEMA IF EXISTS "${sharedSchema}" CASCADE`);
  });

  it('a shared entity whose table the tenant migrations create in tenants (the forgotten @TenantScoped) is refused, naming the entity and the tenants', async () => {
    const right = await openManager({ ...base, entities: [ScInvoice] });
    const slug = uniqueSlug('sc');
    await right.createTenant(slug);
    await right.destroy();

    const forgotten = newManager({ ...base, entities: [ScInvoiceWithoutDecorator] });
    const error = await forgotten.initialize().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).to.be.instanceOf(TenancyConfigurationError);
    expect((error as Error).message)
      .to.contain('ScInvoiceWithoutDecorator (table "sc_invoice")')
      .and.contain(`"${slug}"`)
      .and.contain('@TenantScoped()');
    // The same model with the decorator starts.
    await openManager({ ...base, entities: [ScInvoice] });
    await adminQuery(`DROP SCHEMA IF EXISTS "${slug.replace(/-/g, '_')}" CASCADE`);
  });

  it('checkEntities: a tenant entity without a table after every tenant migration is refused; without the option, or with its migration, initialize() passes', async () => {
    const own = { ...base, sharedSchema: `${sharedSchema}_b`, registryTable: `sc_tenants_b_${token}` };
    try {
      const error = await newManager({ ...own, entities: [ScInvoice, ScReceipt], checkEntities: true })
        .initialize()
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(error).to.be.instanceOf(TenancyConfigurationError);
      expect((error as Error).message).to.contain('ScReceipt (table "sc_receipt")').and.contain('migration:generate');
      expect((error as Error).message).not.to.contain('ScInvoice (');
      // Nothing of the check is left.
      expect(await adminQuery(`SELECT nspname FROM pg_namespace WHERE nspname LIKE 'typeorm\\_tenants\\_check\\_%'`)).to.deep.equal([]);
      await openManager({ ...own, entities: [ScInvoice, ScReceipt] });
      await openManager({ ...own, entities: [ScInvoice], checkEntities: true });
    } finally {
      await adminQuery(`DROP SCHEMA IF EXISTS "${own.sharedSchema}" CASCADE`);
    }
  });
});
