// A worker process of the kill test (bullmq.test.ts), run compiled:
// `node bullmq-worker-process.js`. It serves the queue QUEUE (under PREFIX)
// with a tenant worker whose jobs write their row once and then hang, prints
// `{"started": "<job id>", "slug": "<tenant>"}` once the row is committed,
// and waits to be killed with SIGKILL.
import 'reflect-metadata';
import { Client, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { TenantDataSourceManager, tenantContext } from '../../src';
import { tenantWorker } from '../../src/jobs/bullmq';
import { connection, rowName, writeRowOnce } from './bullmq-support';

async function main(): Promise<void> {
  const { DATABASE_URL, QUEUE, PREFIX, SHARED_SCHEMA } = process.env;
  if (DATABASE_URL === undefined || QUEUE === undefined || PREFIX === undefined) throw new Error('DATABASE_URL, QUEUE and PREFIX are required.');
  const tenants = new TenantDataSourceManager({
    dataSource: { type: 'postgres', url: DATABASE_URL, poolSize: 2 },
    entities: [Client, Project, Plan],
    tenantMigrations,
    sharedMigrations,
    ...(SHARED_SCHEMA === undefined ? {} : { sharedSchema: SHARED_SCHEMA }),
  });
  await tenants.initialize();
  const worker = tenantWorker(
    tenants,
    QUEUE,
    async (job) => {
      await writeRowOnce(rowName(job));
      process.stdout.write(`${JSON.stringify({ started: job.id, slug: tenantContext.current()?.slug })}\n`);
      await new Promise(() => undefined); // mid-job: killed here
    },
    { connection, prefix: PREFIX, lockDuration: 1_000, stalledInterval: 500 },
  );
  worker.on('error', (error) => console.error(error));
  await worker.waitUntilReady();
  process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
