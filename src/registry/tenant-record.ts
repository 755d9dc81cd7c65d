/** Where a tenant is in its life. Only `active` tenants are served. */
export type TenantStatus = 'provisioning' | 'active' | 'suspended' | 'archived' | 'dropping';

/** All statuses, in lifecycle order. */
export const TENANT_STATUSES: readonly TenantStatus[] = Object.freeze([
  'provisioning',
  'active',
  'suspended',
  'archived',
  'dropping',
]);

/** One row of the tenant registry. */
export interface TenantRecord {
  /** The tenant's public identifier, as used in URLs and `run(slug, fn)`. */
  readonly slug: string;
  /** The PostgreSQL schema holding the tenant's tables (the slug with `-` turned into `_`). */
  readonly schemaName: string;
  /** Display name; the slug when none was given. */
  readonly name: string;
  readonly status: TenantStatus;
  /** The name of the server its schema lives on (`'default'` for a manager given `dataSource`). */
  readonly server: string;
  /**
   * In Citus mode, from `getTenant()` and `listTenants()`: the node
   * (`'host:port'`) holding the tenant's schema, read from Citus's metadata
   * (absent while the schema has no table). Not set outside Citus mode, nor
   * on records other methods return.
   */
  readonly node?: string;
  readonly createdAt: Date;
}
