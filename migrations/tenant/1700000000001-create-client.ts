import { Table, type MigrationInterface, type QueryRunner } from 'typeorm';

/**
 * The tenant's client table, written with TypeORM's Table API. It runs on a
 * DataSource bound to the tenant schema, so "client" lands there; the foreign
 * key names the shared table with its schema.
 */
export class CreateClient1700000000001 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.createTable(
      new Table({
        name: 'client',
        columns: [
          { name: 'id', type: 'int', isPrimary: true, isGenerated: true, generationStrategy: 'increment' },
          { name: 'name', type: 'varchar' },
          { name: 'email', type: 'varchar' },
          { name: 'internal_note', type: 'varchar', default: "''" },
          { name: 'plan_id', type: 'int', isNullable: true },
        ],
        foreignKeys: [{ columnNames: ['plan_id'], referencedTableName: 'public.plan', referencedColumnNames: ['id'] }],
      }),
    );
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.dropTable('client');
  }
}
