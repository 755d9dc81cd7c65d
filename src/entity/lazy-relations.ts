import type { DataSource, ObjectLiteral } from 'typeorm';
import type { RelationMetadata } from 'typeorm/metadata/RelationMetadata';
import { runStorage } from '../context/tenant-context';
import { CrossTenantAccessError, TenantContextMissingError } from '../errors';
import { isTenantScoped } from './tenant-scoped';

/** The tenant schema an entity instance was loaded in. */
const loadedIn = new WeakMap<object, string>();

/**
 * Replaces how a tenant DataSource installs lazy-relation accessors. TypeORM
 * puts them on the entity class prototype, bound to the DataSource being
 * built, so with one DataSource per tenant `await new Shelf().items` would
 * read whichever tenant started last. Here the accessor resolves the active
 * run's DataSource when it is read:
 *
 * - an entity made with `new` loads in the active run's tenant;
 * - an entity loaded by `find` remembers its tenant, and reading its lazy
 *   relation in another tenant's run throws `CrossTenantAccessError`;
 * - outside a run, a tenant entity's lazy relation throws
 *   `TenantContextMissingError`; a shared entity's loads through the shared
 *   DataSource.
 *
 * Loaded data and pending loads are kept in the same entity fields TypeORM
 * uses, so assigning the relation (a value or a promise) works as before.
 */
export function installTenantLazyLoader(dataSource: DataSource, sharedDataSource: () => DataSource | undefined): void {
  const schema = (dataSource.options as { schema?: string }).schema!;
  dataSource.relationLoader.enableLazyLoad = (relation: RelationMetadata, entity: ObjectLiteral) => {
    const target = relation.entityMetadata.target;
    const onPrototype = typeof target === 'function' && entity === target.prototype;
    if (!onPrototype) loadedIn.set(entity, schema);
    defineLazyAccessor(relation, entity, sharedDataSource);
  };
}

function defineLazyAccessor(relation: RelationMetadata, entity: ObjectLiteral, sharedDataSource: () => DataSource | undefined): void {
  const property = relation.propertyName;
  const dataIndex = `__${property}__`;
  const promiseIndex = `__promise_${property}__`;
  const resolveIndex = `__has_${property}__`;
  const target = relation.entityMetadata.target;
  const tenantScoped = typeof target === 'function' && isTenantScoped(target);
  const label = `${typeof target === 'function' ? target.name : String(target)}.${property}`;

  const setData = (instance: ObjectLiteral, value: unknown): unknown => {
    instance[dataIndex] = value;
    instance[resolveIndex] = true;
    delete instance[promiseIndex];
    return value;
  };
  const setPromise = (instance: ObjectLiteral, value: Promise<unknown>): Promise<unknown> => {
    delete instance[resolveIndex];
    delete instance[dataIndex];
    instance[promiseIndex] = value;
    value.then(
      (result) => (instance[promiseIndex] === value ? setData(instance, result) : result),
      () => undefined, // the caller of the getter gets the rejection
    );
    return value;
  };
  const dataSourceFor = (instance: ObjectLiteral): DataSource => {
    const state = runStorage.getStore();
    const origin = loadedIn.get(instance);
    if (state === undefined) {
      const shared = tenantScoped ? undefined : sharedDataSource();
      if (shared === undefined) throw new TenantContextMissingError(`Reading the lazy relation ${label}`);
      return shared;
    }
    if (tenantScoped && origin !== undefined && origin !== state.tenant.schemaName) {
      throw new CrossTenantAccessError(
        `The lazy relation ${label} was read inside a run of tenant "${state.tenant.slug}", but the entity was loaded in schema "${origin}". ` +
          'Load the entity again inside the run that uses it.',
      );
    }
    return state.dataSource;
  };

  Object.defineProperty(entity, property, {
    get(this: ObjectLiteral) {
      if (this[resolveIndex] === true || this[dataIndex] !== undefined) return Promise.resolve(this[dataIndex]);
      if (this[promiseIndex]) return this[promiseIndex];
      let loading: Promise<unknown>;
      try {
        const dataSource = dataSourceFor(this);
        const live = dataSource.getMetadata(target).findRelationWithPropertyPath(relation.propertyPath)!;
        const queryRunner = runStorage.getStore()?.transactionManager?.queryRunner;
        loading = dataSource.relationLoader
          .load(live, this, queryRunner)
          .then((result) => (live.isOneToOne || live.isManyToOne ? (result.length === 0 ? null : result[0]) : result));
      } catch (error) {
        return Promise.reject(error);
      }
      return setPromise(this, loading);
    },
    set(this: ObjectLiteral, value: unknown) {
      if (value instanceof Promise) setPromise(this, value);
      else setData(this, value);
    },
    configurable: true,
    enumerable: false,
  });
}
