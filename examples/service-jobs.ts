import type { Express } from 'express';
import { Client } from '../entities';
import { tenantContext, type TenantDataSourceManager } from '../src';

/** The jobs part of the example service: what `startService()` closes. */
export interface ServiceJobs {
  close(): Promise<void>;
}

/** A BullMQ connection from a `redis://[:password@]host[:port][/db]` URL. */
function connectionOf(redisUrl: string): { host: string; port: number; password?: string; db: number } {
  const url = new URL(redisUrl);
  return {
    host: url.hostname,
    port: Number(url.port || 6379),
    ...(url.password === '' ? {} : { password: decodeURIComponent(url.password) }),
    db: Number(url.pathname.slice(1) || 0),
  };
}

/**
 * Background jobs for the example service, on BullMQ (loaded only here, so
 * the service needs no Redis without REDIS_URL). Mounted behind the tenant
 * middleware: `POST /jobs/client-count` enqueues a job in the request's
 * tenant; a tenant worker counts that tenant's clients; `GET /jobs/:id`
 * answers the job's state and result, for the tenant's own jobs only.
 */
export function mountJobs(app: Express, tenants: TenantDataSourceManager, redisUrl: string, prefix = 'typeorm-tenants-example'): ServiceJobs {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Queue } = require('bullmq') as typeof import('bullmq');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { tenantQueue, tenantWorker } = require('../src/jobs/bullmq') as typeof import('../src/jobs/bullmq');
  const connection = connectionOf(redisUrl);
  const reports = tenantQueue(new Queue('reports', { connection, prefix }));
  const worker = tenantWorker(tenants, 'reports', async () => ({ clients: await tenantContext.getRepository(Client).count() }), {
    connection,
    prefix,
    concurrency: 4,
  });
  worker.on('error', (error) => console.error('reports worker:', error));

  app.post('/jobs/client-count', async (_req, res) => {
    const job = await reports.add('client-count', {}, { attempts: 3, backoff: { type: 'exponential', delay: 500 }, removeOnComplete: 100, removeOnFail: 100 });
    res.status(202).json({ id: job.id });
  });
  app.get('/jobs/:id', async (req, res) => {
    let job = await reports.getJob(req.params.id);
    if (job === undefined) {
      res.status(404).json({ error: { code: 'JOB_NOT_FOUND', message: `No job ${JSON.stringify(req.params.id)} in this tenant.` } });
      return;
    }
    const state = await job.getState();
    // Read before the state: a job that has finished since is read again, with its result.
    if (state === 'completed' || state === 'failed') job = (await reports.getJob(req.params.id)) ?? job;
    res.json({ id: job.id, state, result: job.returnvalue ?? null, failedReason: job.failedReason ?? null });
  });

  return {
    async close() {
      await worker.close();
      await reports.queue.close();
    },
  };
}
