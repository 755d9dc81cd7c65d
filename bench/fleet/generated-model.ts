import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Migration classes for a generated model of `tables` tables (each with a
 * primary key, a few columns, a foreign key to the previous table and an
 * index), `perMigration` tables per migration: the "realistic model" on which
 * inline provisioning is slow enough for a warm pool to matter.
 */
export function generatedModelMigrations(tables: number, perMigration = 10): Function[] {
  const migrations: Function[] = [];
  for (let first = 0; first < tables; first += perMigration) {
    const last = Math.min(tables, first + perMigration);
    const timestamp = 1800000000000 + first;
    const name = `GeneratedTables${timestamp}`;
    const statements: string[] = [];
    for (let t = first; t < last; t += 1) {
      const reference = t === 0 ? '' : `, parent_id integer REFERENCES gen_${t - 1} (id)`;
      statements.push(
        `CREATE TABLE gen_${t} (id serial PRIMARY KEY, name varchar(200) NOT NULL, amount numeric(12, 2) NOT NULL DEFAULT 0, ` +
          `created_at timestamptz NOT NULL DEFAULT now()${reference})`,
        `CREATE INDEX gen_${t}_name_idx ON gen_${t} (name)`,
      );
    }
    const migration = {
      [name]: class implements MigrationInterface {
        async up(queryRunner: QueryRunner): Promise<void> {
          for (const statement of statements) await queryRunner.query(statement);
        }

        async down(queryRunner: QueryRunner): Promise<void> {
          for (let t = last - 1; t >= first; t -= 1) await queryRunner.query(`DROP TABLE gen_${t}`);
        }
      },
    }[name]!;
    migrations.push(migration);
  }
  return migrations;
}

/** A one-statement migration adding a column to the example client table (named by `timestamp`). */
export function addColumnMigration(timestamp: number): Function {
  const name = `AddClientColumn${timestamp}`;
  return {
    [name]: class implements MigrationInterface {
      async up(queryRunner: QueryRunner): Promise<void> {
        await queryRunner.query(`ALTER TABLE client ADD COLUMN extra_${timestamp} varchar`);
      }

      async down(queryRunner: QueryRunner): Promise<void> {
        await queryRunner.query(`ALTER TABLE client DROP COLUMN extra_${timestamp}`);
      }
    },
  }[name]!;
}
