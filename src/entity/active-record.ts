import { BaseEntity, type DataSource } from 'typeorm';

/** The shared DataSource each shared Active Record entity is pinned to. */
const pinnedTo = new Map<Function, DataSource>();

/**
 * Pins every shared entity that extends `BaseEntity` (Active Record) to the
 * shared DataSource. TypeORM rebinds `BaseEntity` to whichever DataSource
 * started last, which with one DataSource per tenant (and short-lived
 * provisioning DataSources) would leave `Plan.find()` on a tenant's, or on a
 * destroyed, DataSource. The entity's `dataSource` becomes an accessor whose
 * later assignments are ignored. Such calls go to the shared DataSource
 * directly: they do not join `tenantContext.transaction()`.
 */
export function pinSharedActiveRecord(sharedEntities: readonly Function[], shared: DataSource): void {
  for (const entity of sharedEntities) {
    if (!(entity.prototype instanceof BaseEntity)) continue;
    pinnedTo.set(entity, shared);
    Object.defineProperty(entity, 'dataSource', {
      configurable: true,
      get: () => pinnedTo.get(entity),
      set: () => undefined, // TypeORM's useDataSource() from any other DataSource start: ignored
    });
  }
}

/** Releases the pins of `shared` (when its manager is destroyed). */
export function unpinSharedActiveRecord(shared: DataSource): void {
  for (const [entity, dataSource] of pinnedTo) {
    if (dataSource === shared) pinnedTo.delete(entity);
  }
}
