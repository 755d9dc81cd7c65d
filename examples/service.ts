import 'reflect-metadata';
import { instanceToPlain } from 'class-transformer';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client, Plan, Project } from '../entities';
import { sharedMigrations, tenantMigrations } from '../migrations';
import { TenantDataSourceManager, fromHeader, tenantContext } from '../src';
import { tenancyErrorHandler, tenantMiddleware } from '../src/http/express';
import { startScratchDatabase, type ScratchDatabase } from '../support/database';
import { mountCache, type ServiceCache } from './service-cache';
import { mountFiles, type ServiceFiles } from './service-files';
import { mountJobs, type ServiceJobs } from './service-jobs';
import { Registry } from 'prom-client';
import { tenantMetrics } from '../src/observability/metrics';

/** Where `startService()` serves, and how to stop it. */
export interface StartServiceOptions {
  /** PostgreSQL to use; default: a scratch database (embedded PostgreSQL, or a fresh database on DATABASE_URL's server). */
  readonly databaseUrl?: string;
  /** Port on 127.0.0.1; default 0 (any free port). */
  readonly port?: number;
  /** Interface to listen on; default 127.0.0.1. */
  readonly host?: string;
  /** Redis for background jobs (`POST /jobs/client-count`, `GET /jobs/:id`); default REDIS_URL. Without it the service has no jobs and needs no Redis. */
  readonly redisUrl?: string;
  /** BullMQ key prefix of the jobs; default `typeorm-tenants-example`. */
  readonly jobsPrefix?: string;
  /** Key prefix of the tenant cache (`GET /clients/count`, with REDIS_URL); default the cache's own. */
  readonly cachePrefix?: string;
  /** Folder of the tenants' files (`PUT/GET /files/<key>`, `GET /files`); default FILES_ROOT, else a new temp folder removed on close. */
  readonly filesRoot?: string;
  /**
   * Only the tenancy core: no jobs, cache, files or metrics. The HTTP
   * benchmark measures the service this way, so that its route stays free
   * of them. Default false.
   */
  readonly coreOnly?: boolean;
}

export interface RunningService {
  readonly url: string;
  readonly port: number;
  readonly tenants: TenantDataSourceManager;
  /** Stops accepting requests, waits for those in flight, closes the manager and the scratch database. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * The seed's service on Express: a shared `POST /tenants` signup route, and
 * tenant-scoped Client CRUD (`GET/POST /clients`, `GET /clients/:id`) behind
 * the tenant middleware (tenant from the `X-Tenant-Slug` header). Handlers
 * never mention tenants: `tenantContext.getRepository(Client)` serves the
 * request's tenant. class-transformer turns entities into JSON, which hides
 * `Client.internalNote`.
 */
export async function startService(options: StartServiceOptions = {}): Promise<RunningService> {
  let database: ScratchDatabase | undefined;
  const url = options.databaseUrl ?? (database = await startScratchDatabase()).url;
  const tenants = new TenantDataSourceManager({
    dataSource: { type: 'postgres', url, poolSize: 10 },
    entities: [Client, Project, Plan],
    tenantMigrations,
    sharedMigrations,
  });
  try {
    await tenants.initialize();
  } catch (error) {
    await database?.stop();
    throw error;
  }

  const extras = options.coreOnly !== true;
  // Prometheus metrics of the manager (stats gauges, run/createTenant/dropTenant counters and latencies), tenant-free.
  const metrics = extras ? tenantMetrics(tenants, { registry: new Registry() }) : undefined;

  const app = express();
  app.disable('x-powered-by');
  app.use(express.json());

  // Tenant-free: declared before the tenant middleware.
  app.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });
  if (metrics !== undefined) {
    app.get('/metrics', async (_req, res) => {
      res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
    });
  }
  app.post('/tenants', async (req, res) => {
    const { slug, name } = (req.body ?? {}) as { slug?: unknown; name?: unknown };
    const tenant = await tenants.createTenant(slug as string, { name: typeof name === 'string' ? name : undefined });
    res.status(201).json({ slug: tenant.slug, name: tenant.name, status: tenant.status, createdAt: tenant.createdAt });
  });

  const tenancy = tenantMiddleware(tenants, { resolve: fromHeader() });
  app.use(tenancy);

  // Jobs and the cache need Redis: only with REDIS_URL (or redisUrl), so the service stays zero-setup.
  const redisUrl = options.redisUrl ?? process.env.REDIS_URL;
  const withRedis = extras && redisUrl !== undefined && redisUrl !== '';
  const jobs: ServiceJobs | undefined = withRedis ? mountJobs(app, tenants, redisUrl, options.jobsPrefix) : undefined;
  const cache: ServiceCache | undefined = withRedis ? mountCache(app, tenants, redisUrl, options.cachePrefix) : undefined;
  const filesRoot = options.filesRoot ?? (process.env.FILES_ROOT || undefined);
  const files: ServiceFiles | undefined = extras ? mountFiles(app, tenants, filesRoot) : undefined;

  app.get('/clients', async (_req, res) => {
    const clients = await tenantContext.getRepository(Client).find({ order: { id: 'ASC' } });
    res.json(instanceToPlain(clients));
  });
  app.post('/clients', async (req, res) => {
    const { name, email, internalNote } = (req.body ?? {}) as Record<string, unknown>;
    if (typeof name !== 'string' || name === '' || typeof email !== 'string' || email === '') {
      res.status(400).json({ error: { code: 'INVALID_CLIENT', message: 'A client needs a non-empty "name" and "email".' } });
      return;
    }
    const repository = tenantContext.getRepository(Client);
    const client = await repository.save(
      repository.create({ name, email, internalNote: typeof internalNote === 'string' ? internalNote : '' }),
    );
    res.status(201).json(instanceToPlain(client));
  });
  app.get('/clients/:id', async (req, res) => {
    const id = Number(req.params.id);
    const client = Number.isSafeInteger(id) && id > 0 ? await tenantContext.getRepository(Client).findOneBy({ id }) : null;
    if (client === null) {
      res.status(404).json({ error: { code: 'CLIENT_NOT_FOUND', message: `No client ${JSON.stringify(req.params.id)} in this tenant.` } });
      return;
    }
    res.json(instanceToPlain(client));
  });

  // A TenancyError thrown in a handler answers as the middleware's refusals do (409 for a taken slug, ...).
  app.use(tenancyErrorHandler());
  app.use((error: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) {
      next(error);
      return;
    }
    const status = (error as { status?: unknown }).status;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      res.status(status).json({ error: { code: 'BAD_REQUEST', message: (error as Error).message } });
      return;
    }
    console.error(error);
    res.status(500).json({ error: { code: 'INTERNAL', message: 'Internal server error.' } });
  });

  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(options.port ?? 0, options.host ?? '127.0.0.1', (error?: Error) => (error ? reject(error) : resolve(s)));
  });
  const { port } = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${options.host ?? '127.0.0.1'}:${port}`,
    port,
    tenants,
    close() {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeIdleConnections();
        });
        tenancy.close();
        await jobs?.close();
        await cache?.close();
        files?.close();
        metrics?.close();
        await tenants.destroy();
        await database?.stop();
      })();
      return closing;
    },
  };
}

async function main(): Promise<void> {
  const port = process.env.PORT === undefined || process.env.PORT === '' ? 3000 : Number(process.env.PORT);
  const service = await startService({ port, host: process.env.HOST ?? '127.0.0.1' });
  console.log(`typeorm-tenants example service on ${service.url} (Ctrl-C to stop)`);
  const stop = (signal: string): void => {
    console.log(`${signal}: shutting down`);
    service.close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(error);
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
