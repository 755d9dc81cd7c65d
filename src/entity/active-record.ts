import { BaseEntity, type DataSource } from 'typeorm';

/** The shared DataSources each shared Active Record entity is pinned to; the last pinned serves. */
const pinnedTo = new Map<Function, DataSource[]>();

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
    const pins = pinnedTo.get(entity) ?? [];
    pins.push(shared);
    pinnedTo.set(entity, pins);
    Object.defineProperty(entity, 'dataSource', {
      configurable: true,
      get: () => pins[pins.length - 1],
      set: () => undefined, // TypeORM's useDataSource() from any other DataSource start: ignored
    });
  }
}

/**
 * Releases the pins of `shared` (when its manager is destroyed); an entity
 * no live manager pins is plain Active Record again.
 */
export function unpinSharedActiveRecord(shared: DataSource): void {
  for (const [entity, pins] of pinnedTo) {
    const index = pins.indexOf(shared);
    if (index !== -1) pins.splice(index, 1);
    if (pins.length > 0) continue;
    pinnedTo.delete(entity);
    delete (entity as { dataSource?: unknown }).dataSource;
  }
}
