/**
 * Review of issue 11, typeorm-tenants/bullmq: can data added THROUGH the
 * wrapper carry a tenant other than the enqueuing run's? A failing probe is
 * a finding.
 */
import { expect } from 'chai';
import { Queue, Worker } from 'bullmq';
import { TenancyError, tenantContext, tenantIncarnation, type TenantDataSourceManager } from '../../src';
import { jobTenantOf, tenantProcessor, tenantQueue } from '../../src/jobs/bullmq';
import { connection, redisKeys, uniquePrefix, waitForState } from '../jobs/bullmq-support';
import Redis from 'ioredis';
import { openManager, uniqueSlug } from '../support/fixtures';

describe('review11 jobs: __tenant forged through tenantQueue().add()', () => {
  let manager: TenantDataSourceManager;
  let prefix: string;
  let queue: Queue;
  let worker: Worker | undefined;
  const acme = uniqueSlug('rv11a');
  const beta = uniqueSlug('rv11b');

  before(async () => {
    manager = await openManager();
    await manager.createTenant(acme);
    await manager.createTenant(beta);
  });
  beforeEach(() => {
    prefix = uniquePrefix();
    queue = new Queue('rv11', { connection, prefix });
  });
  afterEach(async () => {
    await worker?.close();
    worker = undefined;
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
    const keys = await redisKeys(prefix);
    if (keys.length > 0) {
      const redis = new Redis(connection);
      await redis.unlink(...keys);
      redis.disconnect();
    }
  });

  it('data with an own toJSON() (spread copies it): the job still records the enqueuing tenant, not the one toJSON() names', async () => {
    const betaRecord = (await manager.getTenant(beta))!;
    const forged = { slug: beta, incarnation: tenantIncarnation(betaRecord) };
    const jobs = tenantQueue(queue);
    const job = await manager.run(acme, () =>
      jobs.add('forged', {
        invoiceId: 1,
        toJSON() {
          return { invoiceId: 1, __tenant: forged };
        },
      } as Record<string, unknown>),
    );
    const ran: string[] = [];
    worker = new Worker(
      'rv11',
      tenantProcessor(manager, async () => {
        ran.push(tenantContext.current()?.slug ?? '(none)');
      }),
      { connection, prefix },
    );
    await waitForState(queue, job.id!, ['completed', 'failed']);
    const stored = (await queue.getJob(job.id!))!;
    // What the worker reads: must be acme (or the job must be refused), never beta.
    expect({ recorded: jobTenantOf(stored), ranIn: ran }).to.deep.equal({
      recorded: { slug: acme, incarnation: tenantIncarnation((await manager.getTenant(acme))!) },
      ranIn: [acme],
    });
  });
});

describe('review11 jobs: a job enqueued by the seed hook of createTenant()', () => {
  let manager: TenantDataSourceManager;
  let prefix: string;
  let queue: Queue;
  let worker: Worker | undefined;

  beforeEach(async () => {
    manager = await openManager();
    prefix = uniquePrefix();
    queue = new Queue('rv11seed', { connection, prefix });
  });
  afterEach(async () => {
    await worker?.close();
    worker = undefined;
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
    const keys = await redisKeys(prefix);
    if (keys.length > 0) {
      const redis = new Redis(connection);
      await redis.unlink(...keys);
      redis.disconnect();
    }
  });

  it('enqueueing in a seed hook is refused (the tenant does not exist for workers until its creation commits); nothing is enqueued and nothing is created', async () => {
    const slug = uniqueSlug('rv11s');
    const jobs = tenantQueue(queue);
    const error = await manager
      .createTenant(slug, {
        seed: async () => {
          await jobs.add('welcome', { n: 1 }, { attempts: 5, backoff: { type: 'fixed', delay: 300 } });
        },
      })
      .catch((e: unknown) => e);
    expect(error).to.be.instanceOf(TenancyError);
    expect(String((error as Error).message)).to.include('provisioning').and.include('after createTenant() resolves');
    expect(await queue.getJobCounts('waiting', 'delayed', 'active', 'completed', 'failed')).to.deep.equal({ waiting: 0, delayed: 0, active: 0, completed: 0, failed: 0 });
    expect(await manager.getTenant(slug)).to.equal(undefined);
  });
});

describe('review11 jobs: guard — a processor that throws synchronously lends its tenant to no later job', () => {
  let manager: TenantDataSourceManager;
  let prefix: string;
  let queue: Queue;
  let worker: Worker | undefined;
  beforeEach(async () => {
    manager = await openManager();
    prefix = uniquePrefix();
    queue = new Queue('rv11sync', { connection, prefix });
  });
  afterEach(async () => {
    await worker?.close();
    worker = undefined;
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
    const keys = await redisKeys(prefix);
    if (keys.length > 0) {
      const redis = new Redis(connection);
      await redis.unlink(...keys);
      redis.disconnect();
    }
  });

  it('40 jobs of 2 tenants and tenant-free ones at concurrency 4, every other one throwing synchronously: each sees only its own tenant', async () => {
    const slugs = [uniqueSlug('rv11y'), uniqueSlug('rv11z')];
    for (const slug of slugs) await manager.createTenant(slug);
    const jobs = tenantQueue<{ i: number; expect: string }>(queue);
    const ids: string[] = [];
    for (let i = 0; i < 40; i += 1) {
      const slug = i % 5 === 4 ? undefined : slugs[i % 2]!;
      const job = slug === undefined
        ? await jobs.add('j', { i, expect: '(none)' }, { tenantFree: true })
        : await manager.run(slug, () => jobs.add('j', { i, expect: slug }));
      ids.push(job.id!);
    }
    const wrong: string[] = [];
    worker = new Worker(
      'rv11sync',
      tenantProcessor(manager, (job) => {
        const seen = tenantContext.current()?.slug ?? '(none)';
        if (seen !== job.data.expect) wrong.push(`${job.data.i}: ${seen} != ${job.data.expect}`);
        if (job.data.i % 2 === 0) throw new Error('sync throw');
        return new Promise((resolve) => setTimeout(resolve, 5));
      }),
      { connection, prefix, concurrency: 4 },
    );
    for (const id of ids) await waitForState(queue, id, ['completed', 'failed']);
    expect(wrong).to.deep.equal([]);
    for (const slug of slugs) await manager.dropTenant(slug, { force: true });
  });
});
