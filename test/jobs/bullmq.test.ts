import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { Queue, type Job, type Worker } from 'bullmq';
import Redis from 'ioredis';
import { expect } from 'chai';
import {
  InvalidArgumentError,
  JobTenantChangedError,
  JobTenantMissingError,
  TenantContextMissingError,
  TenantDataSourceManager,
  TenantNotFoundError,
  tenantContext,
  tenantIncarnation,
} from '../../src';
import { Client } from '../../entities';
import {
  TENANT_JOB_FIELD,
  tenantFreeJobData,
  tenantJobData,
  tenantJobSchedulersPlugin,
  tenantQueue,
  tenantWorker,
  type TenantJobProcessor,
} from '../../src/jobs/bullmq';
import { adminQuery, databaseUrl, managerOptions, uniqueSlug } from '../support/fixtures';
import { connection, redisKeys, rowName, uniquePrefix, waitForState, waitUntil, writeRowOnce } from './bullmq-support';

const schemaOf = (slug: string): string => slug.replace(/-/g, '_');


interface Failure {
  readonly id: string | undefined;
  readonly name: string;
  readonly code: unknown;
  readonly cause: unknown;
  readonly attemptsMade: number;
}

describe('typeorm-tenants/bullmq: jobs run in the tenant that enqueued them (BullMQ on the machine\'s Redis)', function () {
  this.timeout(60_000);

  let tenants: TenantDataSourceManager;
  const slugs: string[] = [];
  const created = new Set<string>();
  let prefix = '';
  let closers: (() => Promise<unknown>)[] = [];

  async function createTenant(label: string): Promise<string> {
    const slug = uniqueSlug(label);
    await tenants.createTenant(slug);
    created.add(slug);
    return slug;
  }

  before(async () => {
    tenants = new TenantDataSourceManager(managerOptions({ slugReuseDelayMs: 0 }));
    await tenants.initialize();
    for (let i = 0; i < 10; i += 1) slugs.push(await createTenant(`job${i}`));
  });

  after(async () => {
    for (const slug of created) if ((await tenants.getTenant(slug)) !== undefined) await tenants.dropTenant(slug, { force: true });
    await tenants.destroy();
  });

  beforeEach(() => {
    prefix = uniquePrefix();
  });

  afterEach(async () => {
    // Workers first (closers run in reverse), then each queue is obliterated and closed.
    for (const close of closers.reverse()) await close();
    closers = [];
    expect(await redisKeys(prefix), `keys left under ${prefix}`).to.deep.equal([]);
  });

  /** The rows this test's jobs wrote in a tenant's schema, read with the admin connection (not through the library). */
  async function jobRows(slug: string): Promise<string[]> {
    const rows = await adminQuery<{ name: string }>(`SELECT name FROM "${schemaOf(slug)}".client WHERE name LIKE $1 ORDER BY name`, [`job:${prefix}:%`]);
    return rows.map((row) => row.name);
  }

  function newQueue(name = 'jobs'): Queue {
    const queue = new Queue(name, { connection, prefix });
    closers.push(async () => {
      await queue.obliterate({ force: true });
      await queue.close();
    });
    return queue;
  }

  function newWorker<D extends object>(queue: Queue, processor: TenantJobProcessor<D, unknown>, options: { concurrency?: number; stalledInterval?: number; lockDuration?: number } = {}): { worker: Worker; failures: Failure[] } {
    const worker = tenantWorker<D>(tenants, queue.name, processor, { connection, prefix, ...options });
    const failures: Failure[] = [];
    worker.on('failed', (job, error) => {
      failures.push({ id: job?.id, name: error.name, code: (error as { code?: unknown }).code, cause: error.cause, attemptsMade: job?.attemptsMade ?? -1 });
    });
    worker.on('error', (error) => console.error('worker error:', error));
    closers.push(() => worker.close());
    return { worker, failures };
  }

  /**
   * Waits until the job is completed or failed and, when failed, until the
   * worker has emitted its 'failed' events (BullMQ marks the job failed in
   * Redis before it emits them).
   */
  async function settled(queue: Queue, failures: readonly Failure[], id: string): Promise<string> {
    const state = await waitForState(queue, id, ['failed', 'completed']);
    if (state === 'failed') {
      const attempts = (await queue.getJob(id))!.attemptsMade;
      await waitUntil(`the failed events of job ${id}`, () => failures.filter((failure) => failure.id === id).length >= attempts);
    }
    return state;
  }

  it('300 jobs of 10 tenants, enqueued interleaved and run at concurrency 8, each write their row in their own tenant\'s schema and in no other', async () => {
    const queue = tenantQueue<{ n: number; expected: string }>(newQueue());
    const enqueued = await Promise.all(
      Array.from({ length: 300 }, (_, n) => {
        const slug = slugs[n % slugs.length]!;
        return tenants.run(slug, () => queue.add('write', { n, expected: slug }));
      }),
    );

    // Where the tenant lives: a field of the job's data, as stored in Redis.
    const [first] = enqueued;
    const redis = new Redis(connection);
    const stored = JSON.parse((await redis.hget(`${prefix}:jobs:${first!.id}`, 'data'))!) as Record<string, unknown>;
    redis.disconnect();
    const record = (await tenants.getTenant(slugs[0]!))!;
    expect(stored).to.deep.equal({ n: 0, expected: slugs[0], [TENANT_JOB_FIELD]: { slug: slugs[0], incarnation: tenantIncarnation(record) } });

    let active = 0;
    let maxActive = 0;
    const wrong: string[] = [];
    const { failures } = newWorker<{ n: number; expected: string }>(
      queue.queue,
      async (job) => {
        active += 1;
        maxActive = Math.max(maxActive, active);
        try {
          const before = tenantContext.current()?.slug;
          await writeRowOnce(rowName(job));
          const count = await tenantContext.getRepository(Client).count();
          const after = tenantContext.current()?.slug;
          if (before !== job.data.expected || after !== job.data.expected) wrong.push(`job ${job.id} of ${job.data.expected} ran in ${before}/${after}`);
          return { slug: after, count };
        } finally {
          active -= 1;
        }
      },
      { concurrency: 8 },
    );
    await waitUntil('300 completed jobs', async () => (await queue.queue.getCompletedCount()) + (await queue.queue.getFailedCount()) === 300, 40_000);

    expect(failures).to.deep.equal([]);
    expect(wrong).to.deep.equal([]);
    expect(maxActive, 'jobs ran concurrently').to.be.greaterThan(1);
    for (const slug of slugs) {
      const expected = enqueued.filter((job) => job.data.expected === slug).map((job) => rowName(job)).sort();
      expect(expected).to.have.length(30);
      expect(await jobRows(slug), `rows in ${slug}`).to.deep.equal(expected);
    }
  });

  it('a job with no tenant record fails closed and is not retried (JOB_TENANT_MISSING, UnrecoverableError), a forged bad slug too; enqueueing outside a run throws', async () => {
    const raw = newQueue();
    const queue = tenantQueue(raw);
    await expect(queue.add('outside', { n: 1 })).to.be.rejectedWith(TenantContextMissingError);
    expect(() => tenantJobData({ n: 1 })).to.throw(TenantContextMissingError);
    await expect(tenants.run(slugs[0]!, () => queue.add('bad-data', [1, 2] as never))).to.be.rejectedWith(InvalidArgumentError);
    expect(await raw.count()).to.equal(0);

    const plain = await raw.add('plain', { n: 1 }, { attempts: 3 });
    const forged = await raw.add('forged', { [TENANT_JOB_FIELD]: { slug: 'Not A Slug', incarnation: 'abc' } }, { attempts: 3 });
    const stripped = await raw.add('stripped', { [TENANT_JOB_FIELD]: { slug: slugs[0] } }, { attempts: 3 });
    let called = 0;
    const { failures } = newWorker(raw, async () => {
      called += 1;
    });
    for (const job of [plain, forged, stripped]) expect(await settled(raw, failures, job.id!)).to.equal('failed');

    expect(called, 'the processor never ran').to.equal(0);
    const byId = new Map(failures.map((failure) => [failure.id, failure]));
    expect(byId.get(plain.id)).to.include({ name: 'UnrecoverableError', code: 'JOB_TENANT_MISSING', attemptsMade: 1 });
    expect(byId.get(plain.id)!.cause).to.be.instanceOf(JobTenantMissingError);
    expect(byId.get(forged.id)).to.include({ name: 'UnrecoverableError', code: 'INVALID_TENANT_NAME', attemptsMade: 1 });
    expect(byId.get(stripped.id)).to.include({ name: 'UnrecoverableError', code: 'JOB_TENANT_MISSING', attemptsMade: 1 });
    const stored = (await raw.getJob(plain.id!))!;
    expect(stored.attemptsMade).to.equal(1);
    expect(stored.failedReason).to.match(/^JOB_TENANT_MISSING: The job "\d+" \(plain\) of queue "jobs" has no tenant to run in: its data has no __tenant field\./);
  });

  it('a worker created inside a run lends that tenant to no job: a tenant-free job runs with no context, another tenant\'s job in its own, an unmarked job fails closed', async () => {
    const raw = newQueue();
    const queue = tenantQueue<{ expected?: string }>(raw);
    const [home, other] = [slugs[0]!, slugs[1]!];
    const free = await queue.add('free', {}, { tenantFree: true });
    const freeInRun = await tenants.run(other, () => raw.add('free-in-run', tenantFreeJobData({})));
    const tenantJob = await tenants.run(other, () => queue.add('tenant', { expected: other }));
    const unmarked = await raw.add('unmarked', {});

    const seen = new Map<string, { slug: string | undefined; repository: unknown }>();
    const processor: TenantJobProcessor<{ expected?: string }> = async (job) => {
      let repository: unknown = 'served';
      try {
        await tenantContext.getRepository(Client).count();
      } catch (error) {
        repository = (error as { code?: unknown }).code;
      }
      seen.set(job.name, { slug: tenantContext.current()?.slug, repository });
    };
    // The worker's loop starts in the constructor, inside home's run: its async context is home's.
    const { failures } = await tenants.run(home, () => newWorker(raw, processor, { concurrency: 4 }));
    for (const job of [free, freeInRun, tenantJob, unmarked]) await settled(raw, failures, job.id!);

    expect(seen.get('free')).to.deep.equal({ slug: undefined, repository: 'TENANT_CONTEXT_MISSING' });
    expect(seen.get('free-in-run')).to.deep.equal({ slug: undefined, repository: 'TENANT_CONTEXT_MISSING' });
    expect(seen.get('tenant')).to.deep.equal({ slug: other, repository: 'served' });
    expect(seen.has('unmarked')).to.equal(false);
    expect(failures.map((failure) => [failure.id, failure.code])).to.deep.equal([[unmarked.id, 'JOB_TENANT_MISSING']]);
  });

  it('a suspended tenant\'s job fails with TENANT_SUSPENDED and is retried per attempts, then succeeds after resumeTenant; with too few attempts it ends failed', async () => {
    const slug = await createTenant('jsusp');
    const raw = newQueue();
    const queue = tenantQueue(raw);
    const retried = await tenants.run(slug, () => queue.add('retried', {}, { attempts: 50, backoff: { type: 'fixed', delay: 100 } }));
    const exhausted = await tenants.run(slug, () => queue.add('exhausted', {}, { attempts: 2, backoff: { type: 'fixed', delay: 50 } }));
    await tenants.suspendTenant(slug);

    let ran: string | undefined;
    const { worker, failures } = newWorker(raw, async (job) => {
      if (job.name === 'retried') ran = tenantContext.current()?.slug;
      await writeRowOnce(rowName(job));
    });
    expect(await settled(raw, failures, exhausted.id!)).to.equal('failed');
    const exhaustedFailures = failures.filter((failure) => failure.id === exhausted.id);
    expect(exhaustedFailures.map((failure) => failure.code)).to.deep.equal(['TENANT_SUSPENDED', 'TENANT_SUSPENDED']);
    expect(exhaustedFailures.map((failure) => failure.name)).to.deep.equal(['TenantSuspendedError', 'TenantSuspendedError']);
    expect((await raw.getJob(exhausted.id!))!.attemptsMade).to.equal(2);

    // The other job is still being retried: resume the tenant after it failed twice.
    await waitUntil('two failed attempts', () => failures.filter((failure) => failure.id === retried.id).length >= 2);
    await tenants.resumeTenant(slug);
    expect(await settled(raw, failures, retried.id!)).to.equal('completed');
    const retriedFailures = failures.filter((failure) => failure.id === retried.id);
    expect(new Set(retriedFailures.map((failure) => failure.code))).to.deep.equal(new Set(['TENANT_SUSPENDED']));
    expect((await raw.getJob(retried.id!))!.attemptsMade).to.equal(retriedFailures.length + 1);
    expect(ran).to.equal(slug);
    expect(await jobRows(slug)).to.deep.equal([rowName(retried)]);
    await worker.close();
  });

  it('an archived tenant\'s job fails with TENANT_NOT_ACTIVE and is retried per attempts (archive can be undone)', async () => {
    const slug = await createTenant('jarch');
    const raw = newQueue();
    const job = await tenants.run(slug, () => tenantQueue(raw).add('archived', {}, { attempts: 2 }));
    await tenants.archiveTenant(slug);
    const { failures } = newWorker(raw, async () => undefined);
    expect(await settled(raw, failures, job.id!)).to.equal('failed');
    expect(failures.map((failure) => [failure.name, failure.code])).to.deep.equal([
      ['TenantNotActiveError', 'TENANT_NOT_ACTIVE'],
      ['TenantNotActiveError', 'TENANT_NOT_ACTIVE'],
    ]);
    await tenants.restoreTenant(slug);
  });

  it('a dropped tenant\'s job fails at once with TENANT_NOT_FOUND (UnrecoverableError, whatever attempts says); the schedulers plugin removes its job schedulers and no other tenant\'s', async () => {
    const [slug, other] = [await createTenant('jdrop'), slugs[2]!];
    const raw = newQueue();
    const queue = tenantQueue(raw);
    const remove = tenants.use(tenantJobSchedulersPlugin([queue]));
    try {
      const job = await tenants.run(slug, () => queue.add('orphan', {}, { attempts: 5, delay: 0 }));
      await tenants.run(slug, () => queue.upsertJobScheduler('nightly', { every: 3_600_000 }, { data: {} }));
      await tenants.run(other, () => queue.upsertJobScheduler('nightly', { every: 3_600_000 }, { data: {} }));
      expect((await raw.getJobSchedulers()).map((scheduler) => scheduler.key.split('.')[0]).sort()).to.deep.equal([slug, other].sort());

      await tenants.dropTenant(slug, { force: true });
      expect((await raw.getJobSchedulers()).map((scheduler) => scheduler.key.split('.')[0])).to.deep.equal([other]);

      const { failures } = newWorker(raw, async () => undefined);
      expect(await settled(raw, failures, job.id!)).to.equal('failed');
      const failure = failures.find((f) => f.id === job.id)!;
      expect(failure).to.include({ name: 'UnrecoverableError', code: 'TENANT_NOT_FOUND', attemptsMade: 1 });
      expect(failure.cause).to.be.instanceOf(TenantNotFoundError);
      expect((await raw.getJob(job.id!))!.failedReason).to.match(/^TENANT_NOT_FOUND: Tenant "jdrop-[0-9a-f]+" does not exist/);
      await tenants.run(other, () => queue.removeJobScheduler('nightly'));
    } finally {
      remove();
    }
  });

  it('a tenant dropped while its job runs: the job\'s next statement is refused (TENANT_DROPPED) and the job is not retried', async () => {
    const slug = await createTenant('jmid');
    const raw = newQueue();
    const job = await tenants.run(slug, () => tenantQueue(raw).add('mid', {}, { attempts: 5 }));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let started = false;
    const { failures } = newWorker(raw, async () => {
      await tenantContext.getRepository(Client).count();
      started = true;
      await gate;
      await tenantContext.getRepository(Client).count();
    });
    await waitUntil('the job to start', () => started);
    await tenants.dropTenant(slug, { force: true });
    release();
    expect(await settled(raw, failures, job.id!)).to.equal('failed');
    expect(failures).to.have.length(1);
    expect(failures[0]).to.include({ name: 'UnrecoverableError', code: 'TENANT_DROPPED', attemptsMade: 1 });
  });

  it('a job of a tenant dropped and created again under its slug is refused (JOB_TENANT_CHANGED), not run in the new tenant', async () => {
    const slug = await createTenant('jreborn');
    const raw = newQueue();
    const job = await tenants.run(slug, () => tenantQueue(raw).add('old-life', {}, { attempts: 5 }));
    const oldIncarnation = (job.data[TENANT_JOB_FIELD] as { incarnation: string }).incarnation;
    await tenants.dropTenant(slug, { force: true });
    await tenants.createTenant(slug);
    const reborn = (await tenants.getTenant(slug))!;
    expect(tenantIncarnation(reborn)).to.not.equal(oldIncarnation);

    let called = 0;
    const { failures } = newWorker(raw, async (running) => {
      called += 1;
      await writeRowOnce(rowName(running));
    });
    expect(await settled(raw, failures, job.id!)).to.equal('failed');
    expect(called).to.equal(0);
    expect(failures).to.have.length(1);
    expect(failures[0]).to.include({ name: 'UnrecoverableError', code: 'JOB_TENANT_CHANGED', attemptsMade: 1 });
    expect(failures[0]!.cause).to.be.instanceOf(JobTenantChangedError);
    expect(await jobRows(slug)).to.deep.equal([]);
  });

  it('a delayed job and job schedulers keep their tenant; scheduler ids and custom job ids are each tenant\'s own', async () => {
    const [a, b] = [slugs[3]!, slugs[4]!];
    const raw = newQueue();
    const queue = tenantQueue<{ expected: string }>(raw);
    const delayed = await tenants.run(a, () => queue.add('delayed', { expected: a }, { delay: 300 }));
    expect(await raw.getJobState(delayed.id!)).to.equal('delayed');
    for (const slug of [a, b]) await tenants.run(slug, () => queue.upsertJobScheduler('report', { every: 150, limit: 3 }, { data: { expected: slug } }));
    const invoices = await Promise.all([a, b].map((slug) => tenants.run(slug, () => queue.add('invoice', { expected: slug }, { jobId: 'invoice-1' }))));
    const again = await tenants.run(a, () => queue.add('invoice', { expected: a }, { jobId: 'invoice-1' }));
    expect(invoices[0]!.id).to.equal(await tenants.run(a, () => queue.jobId('invoice-1')));
    expect(invoices[0]!.id).to.not.equal(invoices[1]!.id);
    expect(again.id, 'same custom id in one tenant: one job').to.equal(invoices[0]!.id);
    expect(await tenants.run(b, () => queue.getJob(invoices[0]!.id!)), "another tenant's job is not found").to.equal(undefined);
    expect((await tenants.run(a, () => queue.getJob(invoices[0]!.id!)))?.id).to.equal(invoices[0]!.id);

    const ran: { name: string; expected: string; slug: string | undefined; scheduler: string | undefined }[] = [];
    const { failures } = newWorker<{ expected: string }>(
      raw,
      async (job: Job<{ expected: string }>) => {
        const slug = tenantContext.current()?.slug;
        await writeRowOnce(rowName(job));
        ran.push({ name: job.name, expected: job.data.expected, slug, scheduler: job.repeatJobKey ?? undefined });
      },
      { concurrency: 4 },
    );
    await waitUntil('3 scheduled jobs per tenant, the delayed job and both invoices', () => {
      const reports = (slug: string): number => ran.filter((r) => r.name === 'report' && r.expected === slug).length;
      return reports(a) >= 3 && reports(b) >= 3 && ran.some((r) => r.name === 'delayed') && ran.filter((r) => r.name === 'invoice').length === 2;
    });
    expect(failures).to.deep.equal([]);
    expect(ran.filter((r) => r.slug !== r.expected)).to.deep.equal([]);
    for (const r of ran.filter((entry) => entry.name === 'report')) expect(r.scheduler!.startsWith(`${r.expected}.`), r.scheduler).to.equal(true);
    for (const slug of [a, b]) {
      const rows = await jobRows(slug);
      expect(rows.filter((row) => row.includes('repeat:'))).to.have.length(ran.filter((r) => r.name === 'report' && r.expected === slug).length);
      expect(rows.some((row) => row.endsWith('.invoice-1'))).to.equal(true);
    }
    expect(await jobRows(a)).to.include(rowName(delayed));
    expect(await jobRows(b)).to.not.include(rowName(delayed));
    for (const slug of [a, b]) expect(await tenants.run(slug, () => queue.removeJobScheduler('report'))).to.be.a('boolean');
    expect(await raw.getJobSchedulers()).to.deep.equal([]);
  });

  it('a worker process killed with SIGKILL mid-job: a new worker re-runs the stalled job in its tenant, and its row exists once (at-least-once, idempotent job)', async () => {
    const [slug, other] = [slugs[5]!, slugs[6]!];
    const raw = newQueue('kill');
    let child: ChildProcess | undefined;
    try {
      child = spawn(process.execPath, [join(__dirname, 'bullmq-worker-process.js')], {
        env: { ...process.env, DATABASE_URL: databaseUrl(), QUEUE: 'kill', PREFIX: prefix },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const lines: Record<string, unknown>[] = [];
      let stderr = '';
      let buffer = '';
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        buffer += chunk;
        for (let end = buffer.indexOf('\n'); end >= 0; end = buffer.indexOf('\n')) {
          lines.push(JSON.parse(buffer.slice(0, end)) as Record<string, unknown>);
          buffer = buffer.slice(end + 1);
        }
      });
      child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      const exited = new Promise<NodeJS.Signals | null>((resolve) => child!.on('close', (_code, signal) => resolve(signal)));
      await waitUntil(`the worker process to be ready (stderr: ${stderr})`, () => lines.some((line) => line.ready === true) || child!.exitCode !== null);
      expect(stderr).to.equal('');

      const job = await tenants.run(slug, () => tenantQueue(raw).add('once', {}));
      await waitUntil('the job to start in the worker process', () => lines.some((line) => line.started === job.id));
      expect(lines.find((line) => line.started === job.id)).to.deep.equal({ started: job.id, slug });
      // The first run committed its row, then the process died before finishing the job.
      expect(await jobRows(slug)).to.deep.equal([rowName(job)]);
      child.kill('SIGKILL');
      expect(await exited).to.equal('SIGKILL');
      expect(await raw.getJobState(job.id!)).to.equal('active');

      let reran: string | undefined;
      newWorker(
        raw,
        async (stalled) => {
          reran = tenantContext.current()?.slug;
          await writeRowOnce(rowName(stalled));
          return reran;
        },
        { lockDuration: 1_000, stalledInterval: 500 },
      );
      expect(await waitForState(raw, job.id!, ['completed', 'failed'], 30_000)).to.equal('completed');
      const finished = (await raw.getJob(job.id!))!;
      expect(finished.returnvalue).to.equal(slug);
      expect(finished.stalledCounter).to.equal(1);
      expect(reran).to.equal(slug);
      expect(await jobRows(slug)).to.deep.equal([rowName(job)]);
      expect(await jobRows(other)).to.deep.equal([]);
    } finally {
      if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
});
