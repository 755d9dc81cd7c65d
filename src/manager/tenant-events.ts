import type { FleetTenantError } from '../migration/fleet-run';
import { schemaNameForSlug } from '../naming/tenant-slug';
import type { TenantDomain } from '../registry/tenant-domains';
import type { TenantRecord } from '../registry/tenant-record';
import type { LibraryLog, LibraryLogEntry } from './tenancy-logger';
import { publishTenantEvent } from '../observability/channels';

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
  /** A tenant moved to another server (`moveTenant`): the registry names its new server. */
  readonly moved: { readonly tenant: TenantRecord; readonly from: string };
  /** A tenant was dropped: schema, tables and registry row are gone. */
  readonly dropped: { readonly slug: string; readonly schemaName: string };
  /** A hostname was added to a tenant (`addTenantDomain`). */
  readonly 'domain-added': { readonly slug: string; readonly domain: TenantDomain };
  /** A hostname's flags changed (`updateTenantDomain`, or a primary that another hostname replaced). */
  readonly 'domain-updated': { readonly slug: string; readonly domain: TenantDomain };
  /** A hostname was removed from its tenant (`removeTenantDomain`, or freed by `dropTenant`). */
  readonly 'domain-removed': { readonly slug: string; readonly domain: TenantDomain };
}

/** Names of the manager's events. */
export type TenantEventName = keyof TenantEventMap;

type Listener<E extends TenantEventName> = (payload: TenantEventMap[E]) => void;

/**
 * A small typed event hub. Each event is logged (`info`, `error` for
 * `migration-failed`; kind `lifecycle`), then listeners run synchronously
 * after the change has committed; one that throws does not undo the change
 * or stop the other listeners: its error is logged (`listener-error`; a
 * process warning without a logger), so it is seen.
 */
export class TenantEvents {
  readonly #listeners = new Map<TenantEventName, Set<Listener<any>>>();
  readonly #log: LibraryLog;
  /** The manager emitting, named in the diagnostics_channel messages. */
  readonly #owner: object | undefined;

  constructor(log: LibraryLog, owner?: object) {
    this.#log = log;
    this.#owner = owner;
  }

  /** The manager emitting (for the diagnostics_channel messages of fleet runs). */
  get owner(): object | undefined {
    return this.#owner;
  }

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
    const entry = lifecycleEntry(event, payload);
    this.#log(entry);
    publishTenantEvent(this.#owner, event, payload);
    for (const listener of this.#listeners.get(event) ?? []) {
      try {
        listener(payload);
      } catch (error) {
        this.#log({
          level: 'error',
          kind: 'listener-error',
          message: `a "${event}" listener threw: ${error instanceof Error ? error.message : String(error)}`,
          schema: entry.schema,
          tenant: entry.tenant,
          error,
        });
      }
    }
  }
}

/** The log entry of an event: a sentence naming the tenant. */
function lifecycleEntry(event: TenantEventName, payload: TenantEventMap[TenantEventName]): LibraryLogEntry {
  const entry = (level: LibraryLogEntry['level'], slug: string, schema: string, message: string): LibraryLogEntry => ({
    level,
    kind: 'lifecycle',
    message,
    schema,
    tenant: slug,
  });
  switch (event) {
    case 'created': {
      const { tenant } = payload as TenantEventMap['created'];
      return entry('info', tenant.slug, tenant.schemaName, `Tenant "${tenant.slug}" created (schema "${tenant.schemaName}").`);
    }
    case 'suspended':
    case 'resumed':
    case 'archived':
    case 'restored': {
      const { tenant } = payload as TenantEventMap['suspended'];
      return entry('info', tenant.slug, tenant.schemaName, `Tenant "${tenant.slug}" ${event}.`);
    }
    case 'migrated': {
      const { slug, applied } = payload as TenantEventMap['migrated'];
      return entry('info', slug, schemaNameForSlug(slug), `Tenant "${slug}" migrated: ${applied.join(', ')}.`);
    }
    case 'migration-failed': {
      const { slug, error } = payload as TenantEventMap['migration-failed'];
      const at = error.migration === undefined ? '' : ` at ${error.migration}`;
      return entry('error', slug, schemaNameForSlug(slug), `Tenant "${slug}" failed to migrate${at} (rolled back): ${error.message}`);
    }
    case 'moved': {
      const { tenant, from } = payload as TenantEventMap['moved'];
      return entry('info', tenant.slug, tenant.schemaName, `Tenant "${tenant.slug}" moved from server "${from}" to "${tenant.server}".`);
    }
    case 'dropped': {
      const { slug, schemaName } = payload as TenantEventMap['dropped'];
      return entry('info', slug, schemaName, `Tenant "${slug}" dropped (schema "${schemaName}").`);
    }
    case 'domain-added':
    case 'domain-updated':
    case 'domain-removed': {
      const { domain } = payload as TenantEventMap['domain-added'];
      const flags = `${domain.primary ? 'primary' : 'not primary'}, ${domain.verified ? 'verified' : 'not verified'}`;
      const message =
        event === 'domain-added'
          ? `Domain "${domain.hostname}" added to tenant "${domain.slug}" (${flags}).`
          : event === 'domain-updated'
            ? `Domain "${domain.hostname}" of tenant "${domain.slug}" is now ${flags}.`
            : `Domain "${domain.hostname}" removed from tenant "${domain.slug}".`;
      return entry('info', domain.slug, schemaNameForSlug(domain.slug), message);
    }
    default:
      throw new Error(`Unexpected event "${event satisfies never}"`);
  }
}
