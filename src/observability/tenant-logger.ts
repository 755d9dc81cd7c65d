import { runStorage } from '../context/tenant-context';
import { TenantContextMissingError } from '../errors';

/** The fields `tenantLogger()` binds: the active tenant's slug and schema. */
export interface TenantLogBindings {
  readonly tenant: string;
  readonly schema: string;
}

/** A logger with pino's (and bunyan's, winston's) `child(bindings)`. */
export interface ChildLogger<Child = unknown> {
  child(bindings: Record<string, unknown>): Child;
}

/** A function logger: called as pino's methods are, `(mergingObject?, message?, ...args)`. */
export type FunctionLogger = (...args: any[]) => unknown;

/**
 * A logger with the active tenant bound, for the run it is called in:
 *
 * - a logger with `child(bindings)` (pino, bunyan, winston):
 *   `base.child({ tenant: slug, schema })`, so each line carries both fields;
 * - a function: a function calling it with the fields merged into its first
 *   argument when that is a plain object, else passed as a new first argument
 *   (`log('hi')` calls `base({ tenant, schema }, 'hi')`);
 * - an object of logging methods without `child` (`console`): an object with
 *   the same methods, each wrapped as a function is.
 *
 * Call it inside the run (a child logger made in one tenant's run keeps that
 * tenant; it does not follow later runs). The library imports no logging
 * package. Children of a `child` logger are cached per tenant record, so
 * calling it on every request costs one lookup.
 *
 * @throws TenantContextMissingError outside `manager.run()`.
 * @example
 * ```ts
 * import pino from 'pino';
 * const base = pino();
 * await tenants.run('acme', async () => {
 *   tenantLogger(base).info('invoice sent'); // {"tenant":"acme","schema":"acme","msg":"invoice sent",...}
 * });
 * ```
 */
export function tenantLogger<Child>(base: ChildLogger<Child>): Child;
export function tenantLogger<L extends FunctionLogger>(base: L): L;
export function tenantLogger<L extends object>(base: L): L;
export function tenantLogger(base: unknown): unknown {
  const state = runStorage.getStore();
  if (state === undefined) throw new TenantContextMissingError('tenantLogger()');
  const { tenant } = state;
  if (base !== null && typeof base === 'object' && typeof (base as ChildLogger).child === 'function') {
    let children = childCache.get(base);
    if (children === undefined) childCache.set(base, (children = new WeakMap()));
    let child = children.get(tenant);
    if (child === undefined) {
      child = (base as ChildLogger).child({ tenant: tenant.slug, schema: tenant.schemaName });
      children.set(tenant, child);
    }
    return child;
  }
  const bindings: TenantLogBindings = { tenant: tenant.slug, schema: tenant.schemaName };
  if (typeof base === 'function') return bound(base as FunctionLogger, base, bindings);
  if (base !== null && typeof base === 'object') {
    const wrapped: Record<string, unknown> = {};
    for (const key of methodNames(base)) {
      const method = (base as Record<string, unknown>)[key];
      if (typeof method === 'function') wrapped[key] = bound(method as FunctionLogger, base, bindings);
    }
    return wrapped;
  }
  throw new TypeError(`tenantLogger() needs a logger: an object with child(), a function, or an object of logging methods; got ${base === null ? 'null' : typeof base}.`);
}

/** Children by base logger, then by tenant record (a refreshed record gets a new child; old ones go with their record). */
const childCache = new WeakMap<object, WeakMap<object, unknown>>();

function bound(method: FunctionLogger, self: unknown, bindings: TenantLogBindings): FunctionLogger {
  return (...args: unknown[]) => {
    const [first, ...rest] = args;
    // The bound fields last: a logged object cannot name another tenant.
    if (isPlainObject(first)) return method.call(self, { ...first, ...bindings }, ...rest);
    return method.call(self, { ...bindings }, ...args);
  };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object') return false;
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/** Own and inherited method names of a logger object (console's are own; a class logger's are on its prototype). */
function methodNames(object: object): string[] {
  const names = new Set<string>();
  for (let o: object | null = object; o !== null && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const name of Object.getOwnPropertyNames(o)) if (name !== 'constructor') names.add(name);
  }
  return [...names];
}
