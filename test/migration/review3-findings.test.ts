import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import type { MigrationInterface, QueryRunner } from 'typeorm';
import { tenantMigrations } from '../../migrations';
import { TenantProvisioningError } from '../../src';
import { MigrationOutsideTenantError } from '../../src/errors';
import type { MigrationGuardMode } from '../../src/migration/migration-guard';
import { adminQuery, openManager, uniqueSlug } from '../support/fixtures';

/**
 * Findings of an adversarial review of the migration guard: tenant
 * migrations that left their tenant schema and were not refused (disarming
 * or re-aiming the guard, session_replication_role, PARTITION OF / INHERITS
 * a shared table, ALTER ... SET SCHEMA). Each failed before its fix.
 */

let stamp = 1_810_000_000_000;

/** A tenant migration class named `<Name><timestamp>` whose up() runs the SQL `up(schema)` gives for the schema being migrated. */
function migration(name: string, up: (schema: string) => readonly string[]): Function {
  const className = `${name}${(stamp += 1)}`;
  const holder = {
    [className]: class implements MigrationInterface {
      async up(runner: QueryRunner): Promise<void> {
        const [{ schema }] = await runner.query('SELECT current_schema() AS schema');
        for (const sql of up(schema)) await runner.query(sql);
      }
      async down(): Promise<void> {}
    },
  };
  return holder[className]!;
}

const rand = (): string => randomBytes(4).toString('hex');
const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

function guardErrorIn(error: unknown): MigrationOutsideTenantError | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 6 && current !== undefined && current !== null; depth += 1) {
    if (current instanceof MigrationOutsideTenantError) return current;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

async function schemaOfRelation(name: string): Promise<string | undefined> {
  const rows = await adminQuery<{ nspname: string }>(
    'SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = $1',
    [name],
  );
  return rows[0]?.nspname;
}

/** createTenant with `bad` after the example migrations must fail with MigrationOutsideTenantError. */
async function expectRefused(mode: MigrationGuardMode, bad: Function): Promise<void> {
  const manager = await openManager({ migrationGuard: mode, tenantMigrations: [...tenantMigrations, bad] });
  const slug = uniqueSlug('r3');
  const outcome = await manager.createTenant(slug).then(
    () => 'created',
    (error: unknown) => error,
  );
  if (outcome === 'created') {
    await manager.dropTenant(slug, { force: true }).catch(() => undefined);
    expect.fail(`createTenant accepted ${bad.name}, a migration that changed objects outside its schema`);
  }
  expect(outcome).to.be.instanceOf(TenantProvisioningError);
  expect(guardErrorIn(outcome), String(outcome)).to.not.equal(undefined);
}

describe('review 3: migrationGuard false negatives', () => {
  describe("'event-trigger'", () => {
    it('a migration cannot disarm the guard with set_config() and then create a shared table', async () => {
      const table = `r3_disarm_${rand()}`;
      try {
        await expectRefused(
          'event-trigger',
          migration('Disarm', () => [`SELECT set_config('typeorm_tenants.migrating', '', true)`, `CREATE TABLE public.${table} (id int)`]),
        );
      } finally {
        await adminQuery(`DROP TABLE IF EXISTS public.${table}`);
      }
    });

    it('a migration cannot re-aim the guard at another tenant (SET LOCAL typeorm_tenants.migrating) and alter it', async () => {
      const owner = await openManager({ migrationGuard: 'event-trigger' });
      const victim = uniqueSlug('r3-victim');
      await owner.createTenant(victim);
      const victimSchema = schemaOf(victim);
      await adminQuery(`CREATE TABLE "${victimSchema}".r3_secret (id int)`);
      try {
        await expectRefused(
          'event-trigger',
          migration('Reaim', () => [`SET LOCAL typeorm_tenants.migrating = '${victimSchema}'`, `ALTER TABLE "${victimSchema}".r3_secret ADD COLUMN stolen int`]),
        );
      } finally {
        await owner.dropTenant(victim, { force: true });
      }
    });

    it('RESET ALL inside a migration does not disarm the guard', async () => {
      const table = `r3_reset_${rand()}`;
      try {
        await expectRefused('event-trigger', migration('ResetAll', () => ['RESET ALL', `CREATE TABLE public.${table} (id int)`]));
      } finally {
        await adminQuery(`DROP TABLE IF EXISTS public.${table}`);
      }
    });

    it('SET LOCAL session_replication_role = replica does not switch the triggers off (they should be ENABLE ALWAYS)', async () => {
      const table = `r3_replica_${rand()}`;
      try {
        await expectRefused(
          'event-trigger',
          migration('Replica', () => ['SET LOCAL session_replication_role = replica', `CREATE TABLE public.${table} (id int)`]),
        );
      } finally {
        await adminQuery(`DROP TABLE IF EXISTS public.${table}`);
      }
    });

    it('CREATE TABLE ... PARTITION OF a shared partitioned table (rows of the shared table now land in the tenant) is refused', async () => {
      const parent = `r3_parent_${rand()}`;
      await adminQuery(`CREATE TABLE public.${parent} (id int, k int) PARTITION BY LIST (k)`);
      try {
        await expectRefused('event-trigger', migration('PartitionOfShared', () => [`CREATE TABLE part_one PARTITION OF public.${parent} FOR VALUES IN (1)`]));
      } finally {
        await adminQuery(`DROP TABLE IF EXISTS public.${parent} CASCADE`);
      }
    });

    it('CREATE TABLE ... INHERITS (a shared table) (tenant rows appear in the shared table) is refused', async () => {
      const parent = `r3_inh_${rand()}`;
      await adminQuery(`CREATE TABLE public.${parent} (id int)`);
      try {
        await expectRefused('event-trigger', migration('InheritsShared', () => [`CREATE TABLE child () INHERITS (public.${parent})`]));
      } finally {
        await adminQuery(`DROP TABLE IF EXISTS public.${parent} CASCADE`);
      }
    });
  });

  // 'catalog' cannot see a move into the tenant schema (the object is inside afterwards): a documented gap.
  for (const mode of ['event-trigger'] as const) {
    describe(`'${mode}': ALTER ... SET SCHEMA into the tenant schema`, () => {
      it('moving a shared table into the tenant schema (it disappears from the shared schema) is refused', async () => {
        const table = `r3_move_${rand()}`;
        await adminQuery(`CREATE TABLE public.${table} (id int)`);
        try {
          await expectRefused(mode, migration('MoveShared', (schema) => [`ALTER TABLE public.${table} SET SCHEMA "${schema}"`]));
          expect(await schemaOfRelation(table)).to.equal('public');
        } finally {
          await adminQuery(`DROP TABLE IF EXISTS public.${table}`);
        }
      });

      it("moving another tenant's table into this tenant's schema is refused", async () => {
        const owner = await openManager({ migrationGuard: mode });
        const victim = uniqueSlug('r3-victim');
        await owner.createTenant(victim);
        const victimSchema = schemaOf(victim);
        const table = `r3_secret_${rand()}`;
        await adminQuery(`CREATE TABLE "${victimSchema}".${table} (id int)`);
        try {
          await expectRefused(mode, migration('StealTenant', (schema) => [`ALTER TABLE "${victimSchema}".${table} SET SCHEMA "${schema}"`]));
          expect(await schemaOfRelation(table)).to.equal(victimSchema);
        } finally {
          await owner.dropTenant(victim, { force: true });
        }
      });

      it('moving a shared function into the tenant schema is refused', async () => {
        const fn = `r3_fn_${rand()}`;
        await adminQuery(`CREATE FUNCTION public.${fn}() RETURNS int LANGUAGE sql AS 'SELECT 1'`);
        try {
          await expectRefused(mode, migration('MoveFunction', (schema) => [`ALTER FUNCTION public.${fn}() SET SCHEMA "${schema}"`]));
        } finally {
          await adminQuery(`DROP FUNCTION IF EXISTS public.${fn}()`);
        }
      });
    });
  }
});
