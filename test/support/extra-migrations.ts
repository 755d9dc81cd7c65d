import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * A tenant migration the example model does not have, for fleet tests: adds
 * a column, then a check that every email is lower case, so it fails (SQLSTATE
 * 23514) in a tenant holding an upper-case email: a data-dependent failure.
 */
export class AddClientPhone1700000000003 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('ALTER TABLE client ADD COLUMN phone varchar');
    await queryRunner.query('ALTER TABLE client ADD CONSTRAINT client_email_lower CHECK (email = lower(email))');
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('ALTER TABLE client DROP CONSTRAINT client_email_lower');
    await queryRunner.query('ALTER TABLE client DROP COLUMN phone');
  }
}
