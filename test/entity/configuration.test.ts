import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { BaseEntity, Column, Entity, JoinColumn, ManyToOne, OneToMany, PrimaryGeneratedColumn, type Relation } from 'typeorm';
import { Client, Plan, Project } from '../../entities';
import {
  TenancyConfigurationError,
  TenantDataSourceManager,
  TenantScoped,
  isTenantScoped,
  tenantContext,
  type TenantDataSourceManagerOptions,
} from '../../src';
import { adminQuery, databaseUrl, managerOptions, newManager, openManager, schemaExists, uniqueSlug } from '../support/fixtures';

// Entities that break the rules. Each is listed only in the manager of its own test.

@TenantScoped()
@Entity({ name: 'cfg_schema_pinned', schema: 'x' })
class CfgSchemaPinned {
  @PrimaryGeneratedColumn() id!: number;
}

@TenantScoped()
@Entity('cfg_active_record')
class CfgActiveRecord extends BaseEntity {
  @PrimaryGeneratedColumn() id!: number;
}

/** Shared, with a one-to-many into a tenant entity. */
@Entity('cfg_company')
class CfgCompany {
  @PrimaryGeneratedColumn() id!: number;

  @OneToMany(() => CfgEmployee, (employee) => employee.company)
  employees?: Relation<CfgEmployee>[];
}

@TenantScoped()
@Entity('cfg_employee')
class CfgEmployee {
  @PrimaryGeneratedColumn() id!: number;

  @ManyToOne(() => CfgCompany, (company) => company.employees)
  @JoinColumn({ name: 'company_id' })
  company?: Relation<CfgCompany>;
}

/** Shared, with a many-to-one into a tenant entity. */
@Entity('cfg_badge')
class CfgBadge {
  @PrimaryGeneratedColumn() id!: number;

  @ManyToOne(() => CfgHolder)
  @JoinColumn({ name: 'holder_id' })
  holder?: Relation<CfgHolder>;
}

@TenantScoped()
@Entity('cfg_holder')
class CfgHolder {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ default: '' }) label!: string;
}

/** A harmless shared entity, for a manager on another shared schema. */
@Entity('cfg_lonely')
class CfgLonely {
  @PrimaryGeneratedColumn() id!: number;
}

/** Tenant entity pointing at a shared one: the allowed direction. */
@Entity('cfg_currency')
class CfgCurrency {
  @PrimaryGeneratedColumn() id!: number;
}

@TenantScoped()
@Entity('cfg_order')
class CfgOrder {
  @PrimaryGeneratedColumn() id!: number;

  @ManyToOne(() => CfgCurrency)
  @JoinColumn({ name: 'currency_id' })
  currency?: Relation<CfgCurrency>;
}

/** A subclass of a tenant-scoped entity (no decorator of its own). */
class SpecialClient extends Client {}

class NotAnEntity {}

async function expectRefused(options: Partial<TenantDataSourceManagerOptions>, ...mentions: string[]): Promise<TenancyConfigurationError> {
  const manager = newManager(options);
  const error = await manager.initialize().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, 'initialize() rejects').to.be.instanceOf(TenancyConfigurationError);
  for (const mention of mentions) expect((error as Error).message).to.include(mention);
  expect(() => manager.sharedDataSource, 'the refused manager does not serve').to.throw();
  return error as TenancyConfigurationError;
}

describe('Configuration refusals and tenant-scope marks', () => {
  describe('initialize() refuses entities that would break isolation', () => {
    it('a @TenantScoped entity that declares a schema', async () => {
      await expectRefused({ entities: [Client, Project, Plan, CfgSchemaPinned] }, 'CfgSchemaPinned', '"x"');
      expect(await schemaExists('x'), 'nothing was created for it').to.equal(false);
    });

    it('a shared entity with a @OneToMany relation to a tenant entity', async () => {
      await expectRefused({ entities: [CfgCompany, CfgEmployee], tenantMigrations: [], sharedMigrations: [] }, 'CfgCompany', 'CfgEmployee');
    });

    it('a shared entity with a @ManyToOne relation to a tenant entity', async () => {
      await expectRefused({ entities: [CfgBadge, CfgHolder], tenantMigrations: [], sharedMigrations: [] }, 'CfgBadge', 'CfgHolder');
    });

    it('a @TenantScoped entity extending BaseEntity (Active Record)', async () => {
      await expectRefused({ entities: [Client, Project, Plan, CfgActiveRecord] }, 'CfgActiveRecord', 'BaseEntity');
    });

    it('accepts the relation the other way round (tenant -> shared), as in the example model', async () => {
      const manager = await openManager({ entities: [CfgOrder, CfgCurrency], tenantMigrations: [], sharedMigrations: [] });
      expect(manager.sharedDataSource.isInitialized).to.equal(true);
      // The shared entity is pinned to the shared schema, so the relation points there.
      const meta = manager.sharedDataSource.getMetadata(CfgCurrency);
      expect(meta.schema).to.equal('public');
    });
  });

  describe('the constructor refuses dataSource options the manager owns or forbids', () => {
    const cases: Array<[string, Record<string, unknown>]> = [
      ['synchronize', { synchronize: true }],
      ['dropSchema', { dropSchema: true }],
      ['schema', { schema: 'acme' }],
      ['entities', { entities: [Client] }],
    ];
    for (const [option, extra] of cases) {
      it(`dataSource.${option}`, () => {
        const options = managerOptions({
          dataSource: { type: 'postgres', url: databaseUrl(), ...extra } as TenantDataSourceManagerOptions['dataSource'],
        });
        expect(() => new TenantDataSourceManager(options)).to.throw(TenancyConfigurationError, `dataSource.${option}`);
      });
    }
  });

  it('two live managers with different shared schemas: the second initialize() is refused', async () => {
    const first = await openManager();
    const otherSchema = `cfg_${randomBytes(5).toString('hex')}`;
    await expectRefused({ sharedSchema: otherSchema }, '"public"', `"${otherSchema}"`);
    expect(await schemaExists(otherSchema), 'the refused manager created nothing').to.equal(false);

    // The live manager is unharmed: Plan is still pinned to public inside tenant DataSources.
    const slug = uniqueSlug('cfg');
    await first.createTenant(slug);
    const code = uniqueSlug('plan');
    await first.run(slug, async () => {
      const plan = await tenantContext.getRepository(Plan).save({ code, name: 'Pinned', monthlyPriceCents: 1 });
      await tenantContext.getRepository(Client).save({ name: 'C', email: 'c@c.test', plan });
    });
    expect(await adminQuery('SELECT 1 FROM public.plan WHERE code = $1', [code])).to.have.length(1);

    // Once the first manager is gone, another shared schema may start.
    await first.destroy();
    const second = await openManager({ sharedSchema: otherSchema, entities: [CfgLonely], tenantMigrations: [], sharedMigrations: [] });
    expect(second.sharedDataSource.isInitialized).to.equal(true);
    expect(await schemaExists(otherSchema)).to.equal(true);
  });

  it('isTenantScoped: Client yes, Plan no, a subclass of a tenant-scoped class yes', () => {
    expect(isTenantScoped(Client)).to.equal(true);
    expect(isTenantScoped(Project)).to.equal(true);
    expect(isTenantScoped(Plan)).to.equal(false);
    expect(isTenantScoped(SpecialClient)).to.equal(true);
    expect(isTenantScoped(CfgLonely)).to.equal(false);
    expect(isTenantScoped(NotAnEntity)).to.equal(false);
    expect(isTenantScoped('Client')).to.equal(false);
    expect(isTenantScoped(undefined)).to.equal(false);
    expect(isTenantScoped(new Client())).to.equal(false);
  });
});
