import { InvalidArgumentError, TenantLifecycleHookError } from '../errors';
import type { TenantRecord } from '../registry/tenant-record';

/** The tenant a lifecycle hook is called for. */
export interface LifecycleTenant {
  readonly slug: string;
  readonly schemaName: string;
  /**
   * Which life of the slug this is (`tenantIncarnation(record)`): a tenant
   * dropped and created again under the same slug has another one, so data
   * kept outside the database under it never reaches the new tenant.
   */
  readonly incarnation: string;
}

/** The steps a plugin can take part in. */
export type LifecycleHookStep = 'onDropping' | 'onArchived' | 'onRestored';

/**
 * What a plugin of `manager.use()` does when a tenant's life changes, for
 * the tenant's data kept outside PostgreSQL (files, cache keys). Hooks are
 * awaited one plugin after another, in the order they were added.
 */
export interface TenantLifecyclePlugin {
  /** Named in errors and logs. */
  readonly name: string;
  /**
   * While the tenant is `dropping`, before its tables and schema go. A hook
   * that fails leaves the tenant `dropping`; `dropTenant()` called again
   * calls it again, so it must be idempotent and resumable.
   */
  onDropping?(tenant: LifecycleTenant): Promise<void>;
  /**
   * After `archiveTenant()` committed. `archiveTenant()` on an archived
   * tenant calls it again (the way to retry a hook that failed).
   */
  onArchived?(tenant: LifecycleTenant): Promise<void>;
  /** After `restoreTenant()` committed. */
  onRestored?(tenant: LifecycleTenant): Promise<void>;
}

/**
 * The incarnation of a tenant: its creation time in milliseconds, base 36.
 * The query result cache, `tenantCache` and tenant files key their data with
 * it.
 */
export function tenantIncarnation(record: Pick<TenantRecord, 'createdAt'>): string {
  return record.createdAt.getTime().toString(36);
}

/** The lifecycle tenant of a registry record. */
export function lifecycleTenant(record: TenantRecord): LifecycleTenant {
  return Object.freeze({ slug: record.slug, schemaName: record.schemaName, incarnation: tenantIncarnation(record) });
}

/** The plugins of one manager, in the order they were added. */
export class LifecyclePlugins {
  readonly #plugins: TenantLifecyclePlugin[] = [];

  /** Adds a plugin; the returned function removes it. A name is used once. */
  add(plugin: TenantLifecyclePlugin): () => void {
    if (plugin === null || typeof plugin !== 'object') {
      throw new InvalidArgumentError(`use() takes a plugin object with a name and onDropping/onArchived/onRestored hooks; got ${plugin === null ? 'null' : typeof plugin}.`);
    }
    if (typeof plugin.name !== 'string' || plugin.name.length === 0) {
      throw new InvalidArgumentError('use() takes a plugin with a non-empty "name" (it is named in errors and logs).');
    }
    for (const step of ['onDropping', 'onArchived', 'onRestored'] as const) {
      if (plugin[step] !== undefined && typeof plugin[step] !== 'function') {
        throw new InvalidArgumentError(`Plugin "${plugin.name}": ${step} must be a function; got ${typeof plugin[step]}.`);
      }
    }
    if (this.#plugins.some((added) => added.name === plugin.name)) {
      throw new InvalidArgumentError(`A plugin named "${plugin.name}" is already in use on this manager; remove it first (use() returns the function that does).`);
    }
    this.#plugins.push(plugin);
    return () => {
      const index = this.#plugins.indexOf(plugin);
      if (index >= 0) this.#plugins.splice(index, 1);
    };
  }

  /**
   * Calls `step` of every plugin that has it, one after another. The first
   * that fails stops the others and rejects with `TenantLifecycleHookError`.
   */
  async call(step: LifecycleHookStep, tenant: LifecycleTenant): Promise<void> {
    for (const plugin of [...this.#plugins]) {
      const hook = plugin[step];
      if (hook === undefined) continue;
      try {
        await hook.call(plugin, tenant);
      } catch (error) {
        throw new TenantLifecycleHookError(plugin.name, step, tenant.slug, error);
      }
    }
  }
}
