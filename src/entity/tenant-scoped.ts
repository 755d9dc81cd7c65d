// A registered symbol, so that the mark survives two copies of the library
// being loaded (for instance a service and a plugin each bundling one).
const TENANT_SCOPED = Symbol.for('typeorm-tenants:tenant-scoped');

/**
 * Marks an entity class as tenant-scoped: its table lives in every tenant's
 * schema, and repositories for it are only handed out for an active tenant.
 * Entities without it are shared and live once, in the shared schema.
 *
 * Subclasses of a tenant-scoped class (single-table inheritance children) are
 * tenant-scoped too. A tenant-scoped entity must not declare a `schema`, and
 * must not extend TypeORM's `BaseEntity`; `manager.initialize()` refuses both.
 *
 * @example
 * ```ts
 * @TenantScoped()
 * @Entity()
 * export class Client {
 *   @PrimaryGeneratedColumn() id!: number;
 *   @Column() name!: string;
 * }
 * ```
 */
export function TenantScoped(): ClassDecorator {
  return (target) => {
    Object.defineProperty(target, TENANT_SCOPED, { value: true, enumerable: false });
  };
}

/**
 * Tells whether `target` (an entity class) is marked with `@TenantScoped()`,
 * directly or through a parent class.
 *
 * @example
 * ```ts
 * isTenantScoped(Client); // true
 * isTenantScoped(Plan);   // false
 * ```
 */
export function isTenantScoped(target: unknown): boolean {
  return typeof target === 'function' && (target as unknown as Record<symbol, unknown>)[TENANT_SCOPED] === true;
}
