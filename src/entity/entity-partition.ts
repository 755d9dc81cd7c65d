import { BaseEntity, getMetadataArgsStorage } from 'typeorm';
import { TenancyConfigurationError } from '../errors';
import { isTenantScoped } from './tenant-scoped';

/** Entity classes split into those living in each tenant schema and those living once, shared. */
export interface EntityPartition {
  readonly tenantEntities: readonly Function[];
  readonly sharedEntities: readonly Function[];
}

/**
 * Splits the manager's entities into tenant-scoped and shared ones and checks
 * the rules isolation depends on (DESIGN.md "Decisions"): a tenant entity
 * declares no schema and is not Active Record; a shared entity holds no
 * relation to a tenant entity. Throws `TenancyConfigurationError` naming the
 * entity and the fix.
 */
export function partitionEntities(entities: readonly unknown[]): EntityPartition {
  const storage = getMetadataArgsStorage();
  const tenantEntities: Function[] = [];
  const sharedEntities: Function[] = [];
  for (const entity of entities) {
    if (typeof entity !== 'function') {
      throw new TenancyConfigurationError(
        `The "entities" option accepts entity classes only, got ${typeof entity === 'string' ? `the string "${entity}"` : typeof entity}. ` +
          'Import the classes and list them.',
      );
    }
    const table = storage.tables.find((t) => t.target === entity);
    if (table === undefined) {
      throw new TenancyConfigurationError(`${entity.name} is listed in "entities" but is not an entity. Decorate it with @Entity().`);
    }
    if (isTenantScoped(entity)) {
      if (table.schema !== undefined) {
        throw new TenancyConfigurationError(
          `Tenant-scoped entity ${entity.name} declares schema "${table.schema}". ` +
            'Its table lives in every tenant schema; remove the schema option from @Entity().',
        );
      }
      if (entity.prototype instanceof BaseEntity) {
        throw new TenancyConfigurationError(
          `Tenant-scoped entity ${entity.name} extends BaseEntity (Active Record). Every DataSource start rebinds ` +
            'BaseEntity to itself, so Client.find() would serve whichever tenant started last. ' +
            'Use tenantContext.getRepository(Entity) instead, and drop "extends BaseEntity".',
        );
      }
      tenantEntities.push(entity);
    } else {
      sharedEntities.push(entity);
    }
  }
  assertNoSharedToTenantRelation(sharedEntities, tenantEntities);
  return { tenantEntities, sharedEntities };
}

function assertNoSharedToTenantRelation(sharedEntities: readonly Function[], tenantEntities: readonly Function[]): void {
  const byName = new Map<string, Function>(tenantEntities.map((e) => [e.name, e]));
  for (const relation of getMetadataArgsStorage().relations) {
    const owner = relation.target;
    if (typeof owner !== 'function') continue;
    const shared = sharedEntities.find((e) => e === owner || e.prototype instanceof owner);
    if (shared === undefined) continue;
    const related = typeof relation.type === 'string' ? byName.get(relation.type) : resolveRelationType(relation.type);
    if (related !== undefined && isTenantScoped(related)) {
      throw new TenancyConfigurationError(
        `Shared entity ${shared.name} has a relation "${relation.propertyName}" to tenant-scoped entity ${related.name}. ` +
          'The shared schema cannot point into one tenant; keep the relation on the tenant side only ' +
          `(${related.name} -> ${shared.name}).`,
      );
    }
  }
}

function resolveRelationType(type: unknown): Function | undefined {
  if (typeof type !== 'function') return undefined;
  // TypeORM's relation type is a thunk `() => Entity`; a class is a function too,
  // but calling a class throws, so only call what is not a class.
  if (/^class[\s{]/.test(Function.prototype.toString.call(type))) return type as Function;
  const resolved = (type as () => unknown)();
  return typeof resolved === 'function' ? resolved : undefined;
}

interface PinState {
  schema: string;
  users: number;
  readonly original: Map<Function, string | undefined>;
}

let pinState: PinState | undefined;

/**
 * Pins every shared entity to `sharedSchema` in TypeORM's process-wide
 * metadata, so that inside a tenant DataSource it still resolves to the shared
 * schema (TypeORM would otherwise give it the tenant's). The shared schema is
 * therefore one per process: a second live manager with another shared schema
 * is refused. Pair each call with `releaseSharedSchema()`.
 */
export function pinSharedEntities(sharedEntities: readonly Function[], sharedSchema: string): void {
  if (pinState !== undefined && pinState.users > 0 && pinState.schema !== sharedSchema) {
    throw new TenancyConfigurationError(
      `Another live TenantDataSourceManager uses shared schema "${pinState.schema}", and this one asks for "${sharedSchema}". ` +
        'TypeORM entity metadata is process-wide, so one process has one shared schema: use the same sharedSchema, or destroy the other manager first.',
    );
  }
  if (pinState === undefined || pinState.users === 0) {
    const previous = pinState;
    pinState = { schema: sharedSchema, users: 0, original: previous?.original ?? new Map() };
  }
  const tables = getMetadataArgsStorage().tables;
  for (const entity of sharedEntities) {
    const table = tables.find((t) => t.target === entity);
    if (table === undefined) continue;
    const state = pinState;
    if (!state.original.has(entity)) {
      if (table.schema !== undefined) continue; // declared its own schema: already pinned by the user
      state.original.set(entity, table.schema);
    }
    (table as { schema?: string }).schema = sharedSchema;
  }
  pinState.users += 1;
}

/** Releases one manager's hold on the process-wide shared schema. */
export function releaseSharedSchema(): void {
  if (pinState !== undefined && pinState.users > 0) pinState.users -= 1;
}
