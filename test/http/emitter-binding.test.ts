import { expect } from 'chai';
import express from 'express';
import { AsyncLocalStorage } from 'node:async_hooks';
import { EventEmitter } from 'node:events';
import { createServer, type Server } from 'node:http';
import { tenantContext } from '../../src';
import { bindEmittersToContext, bindRequestToContext } from '../../src/http/emitter-binding';
import { tenantMiddleware } from '../../src/http/express';
import { fromHeader } from '../../src/http/tenant-resolvers';
import { openManager, uniqueSlug } from '../support/fixtures';
import { closeServer, deferred, getJson, listen } from './http-support';

const storage = new AsyncLocalStorage<string>();

/** An emitter whose prototype is a plain object put between it and its class, as Express does to every request. */
function swappedPrototypeEmitter(prototype: object): EventEmitter {
  const emitter = new EventEmitter();
  Object.setPrototypeOf(emitter, prototype);
  return emitter;
}

/** Emits `event` from a context of its own, as a socket does. */
function emitElsewhere(emitter: EventEmitter, event: string): void {
  storage.run('socket', () => emitter.emit(event));
}

describe('emitter binding (request and response events in the tenant context)', () => {
  it('an emitter with a prototype of its own (Express) is bound without a property written to it; its unbound siblings emit as before', () => {
    const prototype = Object.create(EventEmitter.prototype) as object;
    const bound = swappedPrototypeEmitter(prototype);
    const sibling = swappedPrototypeEmitter(prototype);
    const seen: Array<[string, string | undefined]> = [];
    bound.on('end', () => seen.push(['bound', storage.getStore()]));
    sibling.on('end', () => seen.push(['sibling', storage.getStore()]));
    const ownKeys = Reflect.ownKeys(bound);
    storage.run('tenant', () => bindEmittersToContext(bound));
    expect(Reflect.ownKeys(bound)).to.deep.equal(ownKeys);
    emitElsewhere(bound, 'end');
    emitElsewhere(sibling, 'end');
    expect(seen).to.deep.equal([
      ['bound', 'tenant'],
      ['sibling', 'socket'],
    ]);
  });

  it("an instance of a class (Node's own request, Fastify's raw one) gets its emit wrapped, and its listeners run in the bound context", () => {
    const emitter = new EventEmitter();
    const seen: Array<string | undefined> = [];
    emitter.on('data', () => seen.push(storage.getStore()));
    storage.run('tenant', () => bindEmittersToContext(emitter));
    expect(Object.hasOwn(emitter, 'emit')).to.equal(true);
    emitElsewhere(emitter, 'data');
    expect(seen).to.deep.equal(['tenant']);
  });

  for (const [kind, make] of [
    ['a prototype of its own', () => swappedPrototypeEmitter(Object.create(EventEmitter.prototype) as object)],
    ['a class instance', () => new EventEmitter()],
  ] as const) {
    it(`release (${kind}): once, after the close listeners, which still run in the context, even when one of them throws`, () => {
      const request = make();
      const response = make();
      const events: string[] = [];
      response.on('close', () => {
        events.push(`listener in ${storage.getStore()}`);
        throw new Error('a close listener failed');
      });
      storage.run('tenant', () => bindRequestToContext(request, response, () => events.push('released')));
      expect(() => emitElsewhere(response, 'close')).to.throw('a close listener failed');
      expect(events).to.deep.equal(['listener in tenant', 'released']);
      response.removeAllListeners('close');
      emitElsewhere(response, 'close');
      emitElsewhere(request, 'close'); // the request's close is not the response's
      expect(events).to.deep.equal(['listener in tenant', 'released']);
    });
  }

  it('a response that has already closed is released at once and bound to nothing', () => {
    const released: string[] = [];
    const destroyed = Object.assign(new EventEmitter(), { destroyed: true });
    bindRequestToContext(new EventEmitter(), destroyed, () => released.push('destroyed'));
    const closed = Object.assign(new EventEmitter(), { closed: true });
    bindRequestToContext(new EventEmitter(), closed, () => released.push('closed'));
    expect(released).to.deep.equal(['destroyed', 'closed']);
    expect(Object.hasOwn(destroyed, 'emit')).to.equal(false);
  });

  it('bound twice (two tenant middlewares): the listeners run in the later context, and both releases happen', () => {
    const prototype = Object.create(EventEmitter.prototype) as object;
    const request = swappedPrototypeEmitter(prototype);
    const response = swappedPrototypeEmitter(prototype);
    const events: string[] = [];
    response.on('finish', () => events.push(`finish in ${storage.getStore()}`));
    storage.run('outer', () => bindRequestToContext(request, response, () => events.push('outer released')));
    storage.run('inner', () => bindRequestToContext(request, response, () => events.push('inner released')));
    emitElsewhere(response, 'finish');
    emitElsewhere(response, 'close');
    expect(events).to.deep.equal(['finish in inner', 'outer released', 'inner released']);
  });

  it('a frozen prototype with an emit of its own: its instances are bound one by one', () => {
    const prototype = Object.freeze(Object.create(EventEmitter.prototype, { emit: { value: EventEmitter.prototype.emit, writable: false } })) as object;
    const emitter = swappedPrototypeEmitter(prototype);
    const seen: Array<string | undefined> = [];
    emitter.on('end', () => seen.push(storage.getStore()));
    storage.run('tenant', () => bindEmittersToContext(emitter));
    emitElsewhere(emitter, 'end');
    expect(seen).to.deep.equal(['tenant']);
  });

  describe('through the Express middleware', () => {
    const servers: Server[] = [];
    afterEach(async () => {
      await Promise.all(servers.splice(0).map(closeServer));
    });

    it("writes no emit onto Express's request and response, and a res 'close' listener runs in the tenant with its DataSource still held", async () => {
      const manager = await openManager();
      const slug = uniqueSlug('bind');
      await manager.createTenant(slug);
      const closed = deferred<{ slug: string | null; activeRuns: number; rows: number }>();
      const app = express();
      const middleware = tenantMiddleware(manager, { resolve: fromHeader() });
      app.use(middleware);
      app.get('/whoami', (req, res) => {
        res.on('close', () => {
          const activeRuns = manager.stats().activeRuns;
          tenantContext.query<Array<{ n: number }>>('SELECT 1 AS n').then(
            (rows) => closed.resolve({ slug: tenantContext.current()?.slug ?? null, activeRuns, rows: rows.length }),
            (error: unknown) => closed.resolve({ slug: String(error), activeRuns, rows: 0 }),
          );
        });
        res.json({ ownEmit: Object.hasOwn(req, 'emit') || Object.hasOwn(res, 'emit'), slug: tenantContext.current()?.slug ?? null });
      });
      const server = createServer(app);
      servers.push(server);
      const base = await listen(server);
      const answer = await getJson(`${base}/whoami`, { 'x-tenant-slug': slug });
      expect(answer.body).to.deep.equal({ ownEmit: false, slug });
      expect(await closed.promise).to.deep.equal({ slug, activeRuns: 1, rows: 1 });
      middleware.close();
    });
  });
});
