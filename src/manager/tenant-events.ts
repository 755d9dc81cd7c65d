import type { FleetTenantError } from '../migration/fleet-run';
import type { TenantRecord } from '../registry/tenant-record';

/** The events a manager emits, after the change they report has committed. */
export interface TenantEventMap {
  /** A tenant was created (schema, tables, registry row). */
  readonly created: { readonly tenant: TenantRecord };
  /** A tenant's pending migrations were applied by a fleet run. */
  readonly migrated: { readonly slug: string; readonly applied: readonly string[] };
  /** A fleet run failed on a tenant (rolled back). */
  readonly 'migration-failed': { readonly slug: string; readonly error: FleetTenantError };
  readonly suspended: { readonly tenant: TenantRecord };
  readonly resumed: { readonly tenant: TenantRecord };
  readonly archived: { readonly tenant: TenantRecord };
  readonly restored: { readonly tenant: TenantRecord };
  /** A tenant was dropped: schema, tables and registry row are gone. */
  readonly dropped: { readonly slug: string; readonly schemaName: string };
}

/** Names of the manager's events. */
export type TenantEventName = keyof TenantEventMap;

type Listener<E extends TenantEventName> = (payload: TenantEventMap[E]) => void;

/**
 * A small typed event hub. Listeners run synchronously after the change has
 * committed; one that throws does not undo the change or stop the other
 * listeners: its error is raised as a process warning, so it is seen.
 */
export class TenantEvents {
  readonly #listeners = new Map<TenantEventName, Set<Listener<any>>>();

  on<E extends TenantEventName>(event: E, listener: Listener<E>): () => void {
    let set = this.#listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }

  emit<E extends TenantEventName>(event: E, payload: TenantEventMap[E]): void {
    for (const listener of this.#listeners.get(event) ?? []) {
      try {
        listener(payload);
      } catch (error) {
        process.emitWarning(
          `typeorm-tenants: a "${event}" listener threw: ${error instanceof Error ? error.message : String(error)}`,
          'TenancyListenerWarning',
        );
      }
    }
  }
}
