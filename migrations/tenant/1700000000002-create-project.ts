import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The tenant's project table, in raw SQL with unqualified names: the tenant
 * migration runs with `SET LOCAL search_path TO "<tenant>", "<shared>"`, so
 * "project" and the reference to "client" resolve in the tenant schema.
 */
export class CreateProject1700000000002 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE project (
        id serial PRIMARY KEY,
        name varchar NOT NULL,
        client_id integer NOT NULL REFERENCES client (id) ON DELETE CASCADE
      )`);
    await queryRunner.query('CREATE INDEX project_client_id_idx ON project (client_id)');
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE project');
  }
}
