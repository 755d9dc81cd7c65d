import 'reflect-metadata';
import { instanceToPlain } from 'class-transformer';
import express from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import { AsyncLocalStorage } from 'node:async_hooks';
import { writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { Session } from 'node:inspector';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { DataSource } from 'typeorm';
import { Client, Plan, Project } from '../../entities';
import { startService } from '../../examples/service';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { TenantDataSourceManager, fromHeader, tenantContext } from '../../src';
import { tenancyPlugin } from '../../src/http/fastify';

/**
 * One server of the HTTP benchmark, in a process of its own (the load
 * generator runs in the parent, bench/http/run.ts), chosen by `SERVER`:
 *
 * - `setup`: creates `TENANTS` tenants (`http-0`...) plus `http-plain`, each
 *   with `ROWS` clients, then exits;
 * - `express-plain`, `fastify-plain`: GET /clients/:id on plain Express or
 *   Fastify + TypeORM, one DataSource bound to the `http_plain` schema;
 * - `express-als`, `fastify-als`: the same, plus one `AsyncLocalStorage` run
 *   per request whose store the handler reads its DataSource from (no
 *   tenancy): what Node's async context costs by itself;
 * - `express-tenancy`: the example service (examples/service.ts);
 * - `fastify-tenancy`: the same route on Fastify behind `tenancyPlugin`.
 *
 * Each server is alone in its process because enabling any
 * `AsyncLocalStorage` turns on promise hooks for the whole process: a plain
 * control sharing a process with the tenancy server would pay them too
 * (loading the library enables nothing; its first `run()` does).
 * Nothing else sits on the route (no jobs, cache or metrics middleware).
 *
 * Talks to the parent over IPC: sends `{ port }` when listening, answers
 * `'stats'` with the statements sent to PostgreSQL (every `pg` Client
 * `query` call, i.e. round trips) and the process's CPU time so far;
 * `'profile-start'` and `{ profileTo }` start V8's CPU profiler and write
 * its profile to that file.
 */

const databaseUrl = process.env.DATABASE_URL!;
const server = process.env.SERVER ?? '';

// Round trips: every message a pg Client sends goes through Client#query.
let queries = 0;
const clientQuery = pg.Client.prototype.query as (...args: unknown[]) => unknown;
(pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown }).query = function countedQuery(this: unknown, ...args: unknown[]) {
  queries += 1;
  return clientQuery.apply(this, args);
};

function managerOptions(url: string) {
  return { dataSource: { type: 'postgres' as const, url, poolSize: 10 }, entities: [Client, Project, Plan], tenantMigrations, sharedMigrations };
}

function notFound(id: string): { error: { code: string; message: string } } {
  return { error: { code: 'CLIENT_NOT_FOUND', message: `No client ${JSON.stringify(id)} in this tenant.` } };
}

async function plainDataSource(): Promise<DataSource> {
  const dataSource = new DataSource({ type: 'postgres', url: databaseUrl, schema: 'http_plain', entities: [Client, Project, Plan], poolSize: 10 });
  return dataSource.initialize();
}

async function setup(): Promise<void> {
  const tenantCount = Number(process.env.TENANTS ?? 100);
  const rows = Number(process.env.ROWS ?? 100);
  const manager = new TenantDataSourceManager(managerOptions(databaseUrl));
  await manager.initialize();
  try {
    for (const slug of ['http-plain', ...Array.from({ length: tenantCount }, (_, i) => `http-${i}`)]) {
      await manager.createTenant(slug);
      await manager.run(slug, () =>
        tenantContext.getRepository(Client).insert(Array.from({ length: rows }, (_, i) => ({ name: `Client ${i}`, email: `c${i}@${slug}.test` }))),
      );
    }
  } finally {
    await manager.destroy();
  }
}

/** Serves until SIGTERM; `close` undoes what `start` opened. */
async function serve(start: () => Promise<{ port: number; close: () => Promise<void> }>): Promise<void> {
  const running = await start();
  const profiler = new Session();
  let profilerConnected = false;
  process.on('message', (message: unknown) => {
    if (message === 'stats') {
      const cpu = process.cpuUsage();
      process.send!({ queries, cpuMicros: cpu.user + cpu.system });
    } else if (message === 'profile-start') {
      if (!profilerConnected) {
        profiler.connect();
        profilerConnected = true;
      }
      profiler.post('Profiler.enable', () => profiler.post('Profiler.start', () => process.send!({ profiling: true })));
    } else if (typeof message === 'object' && message !== null && 'profileTo' in message) {
      profiler.post('Profiler.stop', (error, result) => {
        if (error === null) writeFileSync((message as { profileTo: string }).profileTo, JSON.stringify(result.profile));
        process.send!({ profiled: error === null ? 'ok' : String(error) });
      });
    }
  });
  process.send!({ port: running.port });
  process.once('SIGTERM', () => {
    running.close().then(
      () => process.disconnect(),
      (error: unknown) => {
        console.error(error);
        process.exit(1);
      },
    );
  });
}

function listenExpress(app: express.Express): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = app.listen(0, '127.0.0.1', (error?: Error) => (error ? reject(error) : resolve(s)));
  });
}

async function expressPlain(withAls: boolean): Promise<{ port: number; close: () => Promise<void> }> {
  const plain = await plainDataSource();
  const storage = new AsyncLocalStorage<{ readonly dataSource: DataSource }>();
  const store = { dataSource: plain };
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json());
  if (withAls) app.use((_req, _res, next) => storage.run(store, next));
  const dataSource = withAls ? () => storage.getStore()!.dataSource : () => plain;
  app.get('/clients/:id', async (req, res, next) => {
    try {
      const id = Number(req.params.id);
      const client = Number.isSafeInteger(id) && id > 0 ? await dataSource().getRepository(Client).findOneBy({ id }) : null;
      if (client === null) res.status(404).json(notFound(req.params.id));
      else res.json(instanceToPlain(client));
    } catch (error) {
      next(error);
    }
  });
  const http = await listenExpress(app);
  return {
    port: (http.address() as AddressInfo).port,
    close: async () => {
      await new Promise((resolve) => http.close(resolve));
      await plain.destroy();
    },
  };
}

async function fastifyPlain(withAls: boolean): Promise<{ port: number; close: () => Promise<void> }> {
  const plain = await plainDataSource();
  const storage = new AsyncLocalStorage<{ readonly dataSource: DataSource }>();
  const store = { dataSource: plain };
  const app = Fastify();
  if (withAls) app.addHook('onRequest', (_request, _reply, done) => storage.run(store, done));
  const dataSource = withAls ? () => storage.getStore()!.dataSource : () => plain;
  app.get<{ Params: { id: string } }>('/clients/:id', async (request, reply) => {
    const id = Number(request.params.id);
    const client = Number.isSafeInteger(id) && id > 0 ? await dataSource().getRepository(Client).findOneBy({ id }) : null;
    if (client === null) return reply.code(404).send(notFound(request.params.id));
    return instanceToPlain(client);
  });
  return listenFastify(app, () => plain.destroy());
}

async function expressTenancy(): Promise<{ port: number; close: () => Promise<void> }> {
  const service = await startService({ databaseUrl, coreOnly: true });
  return { port: service.port, close: () => service.close() };
}

async function fastifyTenancy(): Promise<{ port: number; close: () => Promise<void> }> {
  const manager = new TenantDataSourceManager(managerOptions(databaseUrl));
  await manager.initialize();
  const app = Fastify();
  await app.register(async (scope) => {
    await scope.register(tenancyPlugin, { manager, resolve: fromHeader() });
    scope.get<{ Params: { id: string } }>('/clients/:id', async (request, reply) => {
      const id = Number(request.params.id);
      const client = Number.isSafeInteger(id) && id > 0 ? await tenantContext.getRepository(Client).findOneBy({ id }) : null;
      if (client === null) return reply.code(404).send(notFound(request.params.id));
      return instanceToPlain(client);
    });
  });
  return listenFastify(app, () => manager.destroy());
}

async function listenFastify(app: FastifyInstance, after: () => Promise<void>): Promise<{ port: number; close: () => Promise<void> }> {
  await app.listen({ port: 0, host: '127.0.0.1' });
  return {
    port: (app.server.address() as AddressInfo).port,
    close: async () => {
      await app.close();
      await after();
    },
  };
}

async function main(): Promise<void> {
  switch (server) {
    case 'setup':
      return setup();
    case 'express-plain':
      return serve(() => expressPlain(false));
    case 'express-als':
      return serve(() => expressPlain(true));
    case 'express-tenancy':
      return serve(expressTenancy);
    case 'fastify-plain':
      return serve(() => fastifyPlain(false));
    case 'fastify-als':
      return serve(() => fastifyPlain(true));
    case 'fastify-tenancy':
      return serve(fastifyTenancy);
    default:
      throw new Error(`Unknown SERVER "${server}".`);
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
