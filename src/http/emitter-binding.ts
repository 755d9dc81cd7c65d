import { AsyncResource } from 'node:async_hooks';
import type { EventEmitter } from 'node:events';

/** What a bound emitter does with its events. */
interface Binding {
  /** The async context its listeners run in. */
  readonly resource: AsyncResource;
  /** Called once, after its listeners, when it emits `close` (a response ending its life). */
  onClose: (() => void) | undefined;
}

type Emit = EventEmitter['emit'];

/** Bindings of the emitters whose prototype dispatches (see `bindEmitter`). */
const bindings = new WeakMap<object, Binding>();

/** Prototypes checked for dispatching: true when they dispatch bound events. */
const dispatchingPrototypes = new WeakMap<object, boolean>();

/**
 * Makes every listener of the `emitters` run in the async context active now.
 * Node emits a request's `data`/`end` and a response's `finish`/`close` from
 * the socket's context, not from the context of whoever listens, so a body
 * parser that calls `next()` from `end` (Express's `express.json()`,
 * Fastify's content-type parsers) would otherwise continue the request
 * outside its tenant.
 */
export function bindEmittersToContext(...emitters: EventEmitter[]): void {
  const resource = new AsyncResource('typeorm-tenants.request');
  for (const emitter of emitters) bindEmitter(emitter, resource, undefined);
}

/**
 * Binds a request and its response to the async context active now (as
 * `bindEmittersToContext`) and calls `release` once the response has closed
 * (after its `close` listeners, so they still run with the tenant held), or
 * at once if it already has.
 */
export function bindRequestToContext(
  request: EventEmitter,
  response: EventEmitter & { readonly closed?: boolean; readonly destroyed?: boolean },
  release: () => void,
): void {
  // A Node response sets `destroyed` whenever it sets `closed` (a getter, and
  // the slower read on Express's responses): `closed` is asked only of
  // responses without `destroyed`.
  if (response.destroyed === true || (response.destroyed === undefined && response.closed === true)) {
    release();
    return;
  }
  const resource = new AsyncResource('typeorm-tenants.request');
  bindEmitter(request, resource, undefined);
  bindEmitter(response, resource, release);
}

/**
 * Two ways to bind, by what the emitter is. An instance of a class (Node's
 * own request and response, Fastify's raw ones) gets its `emit` wrapped: a
 * property write that costs about 0.1 µs. Express, though, swaps the
 * prototype of every request and response for its app's own
 * (`Object.setPrototypeOf(req, app.request)`), and V8 then gives each such
 * object a hidden class of its own: every property written to one costs
 * 2-4 µs (measured on Node 20), several per request. Those are bound
 * without touching the object: the binding goes into a WeakMap, and an
 * `emit` installed once on that prototype (a plain object, no class's)
 * dispatches through it; emitters not bound emit exactly as before.
 */
function bindEmitter(emitter: EventEmitter, resource: AsyncResource, onClose: (() => void) | undefined): void {
  const prototype = Object.getPrototypeOf(emitter) as object | null;
  if (prototype !== null && dispatches(prototype)) {
    // Bound again (a second tenant middleware): the later context wins, as
    // for the handler, and the earlier release still happens.
    const earlier = bindings.get(emitter)?.onClose;
    bindings.set(emitter, { resource, onClose: earlier === undefined ? onClose : onClose === undefined ? earlier : both(earlier, onClose) });
    return;
  }
  const emit = emitter.emit;
  const binding: Binding = { resource, onClose };
  // Defined, not assigned: an `emit` a frozen prototype holds cannot be shadowed by assignment.
  Object.defineProperty(emitter, 'emit', {
    value: function emitInContext(this: EventEmitter, event: string | symbol, ...args: unknown[]): boolean {
      return emitBound(binding, emit, this, event, args);
    },
    writable: true,
    configurable: true,
    enumerable: false,
  });
}

function both(first: () => void, second: () => void): () => void {
  return () => {
    try {
      first();
    } finally {
      second();
    }
  };
}

function emitBound(binding: Binding, emit: Emit, emitter: EventEmitter, event: string | symbol, args: unknown[]): boolean {
  if (event !== 'close' || binding.onClose === undefined) return binding.resource.runInAsyncScope(emit, emitter, event, ...args);
  const onClose = binding.onClose;
  binding.onClose = undefined;
  try {
    return binding.resource.runInAsyncScope(emit, emitter, event, ...args);
  } finally {
    onClose();
  }
}

/** Whether `prototype` dispatches bound events, installing the dispatch the first time for a prototype that is no class's. */
function dispatches(prototype: object): boolean {
  const known = dispatchingPrototypes.get(prototype);
  if (known !== undefined) return known;
  const installed = !Object.hasOwn(prototype, 'constructor') && installDispatch(prototype);
  dispatchingPrototypes.set(prototype, installed);
  return installed;
}

function installDispatch(prototype: object): boolean {
  const own = Object.getOwnPropertyDescriptor(prototype, 'emit');
  if (own !== undefined && (typeof own.value !== 'function' || own.writable !== true)) return false;
  const ownEmit = own?.value as Emit | undefined;
  const parent = Object.getPrototypeOf(prototype) as { emit?: Emit } | null;
  if (ownEmit === undefined && typeof parent?.emit !== 'function') return false;
  function emitInBoundContext(this: EventEmitter, event: string | symbol, ...args: unknown[]): boolean {
    // Looked up at each call, so a later patch of the class's emit still applies.
    const emit = ownEmit ?? parent!.emit!;
    const binding = bindings.get(this);
    if (binding === undefined) return emit.call(this, event, ...args);
    return emitBound(binding, emit, this, event, args);
  }
  try {
    Object.defineProperty(prototype, 'emit', { value: emitInBoundContext, writable: true, configurable: true, enumerable: false });
  } catch {
    return false; // a frozen prototype: bind its instances one by one
  }
  return true;
}
