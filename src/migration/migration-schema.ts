import type { DataSource, QueryRunner } from 'typeorm';
import { InvalidArgumentError } from '../errors';

const schemaOfDataSource = new WeakMap<DataSource, string>();

/** Records the tenant schema a DataSource of the library is bound to (called as it is built). */
export function bindTenantSchema(dataSource: DataSource, schemaName: string): void {
  schemaOfDataSource.set(dataSource, schemaName);
}

/**
 * The name of the tenant schema a tenant migration is running on, for the
 * statements that must name it: those of a migration with
 * `transaction = false`, which outside `createTenant` run with no search path
 * set (`CREATE INDEX CONCURRENTLY ... ON "<schema>".client (...)`). Use it to
 * name objects in statements, never store it (a warm-pool spare is renamed
 * when it is claimed). Tenant schema names are validated slugs or names the
 * library derived, so they need no escaping inside double quotes.
 *
 * @throws InvalidArgumentError when the runner's DataSource is not one the
 * manager built for a tenant schema (a shared migration, or TypeORM's CLI).
 * @example
 * ```ts
 * export class ClientEmailIndex1700000000000 implements MigrationInterface {
 *   transaction = false as const;
 *   async up(queryRunner: QueryRunner) {
 *     const schema = tenantSchemaOf(queryRunner);
 *     await queryRunner.query(`CREATE INDEX CONCURRENTLY IF NOT EXISTS "IDX_client_email" ON "${schema}".client (email)`);
 *   }
 *   async down(queryRunner: QueryRunner) {
 *     await queryRunner.query(`DROP INDEX CONCURRENTLY IF EXISTS "${tenantSchemaOf(queryRunner)}"."IDX_client_email"`);
 *   }
 * }
 * ```
 */
export function tenantSchemaOf(queryRunner: QueryRunner): string {
  const schema = queryRunner?.connection === undefined ? undefined : schemaOfDataSource.get(queryRunner.connection);
  if (schema === undefined) {
    throw new InvalidArgumentError(
      'tenantSchemaOf() was given a query runner that does not belong to a tenant DataSource of typeorm-tenants: ' +
        'call it from a tenant migration run by the manager (createTenant, migrateTenants, the CLI), with the queryRunner its up() or down() receives.',
    );
  }
  return schema;
}
