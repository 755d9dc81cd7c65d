import { UnrecoverableError, Worker, type BulkJobOptions, type Job, type JobSchedulerJson, type JobSchedulerTemplateOptions, type JobsOptions, type Queue, type RepeatOptions, type WorkerOptions } from 'bullmq';
import { runStorage, tenantContext } from '../context/tenant-context';
import {
  InvalidArgumentError,
  InvalidTenantNameError,
  JobTenantChangedError,
  JobTenantMissingError,
  TenancyError,
  TenantDroppedError,
  TenantNotActiveError,
  TenantNotFoundError,
  type TenancyErrorCode,
} from '../errors';
import { tenantIncarnation, type LifecycleTenant, type TenantLifecyclePlugin } from '../lifecycle/lifecycle-plugins';
import type { TenantDataSourceManager } from '../manager/tenant-data-source-manager';
import { activeJobTenant, describeJob, jobTenantOf, withJobTenant, type JobTenant, type JobTenantRecord, type TenantJobData } from './job-tenant';

export { TENANT_JOB_FIELD, jobTenantOf, tenantFreeJobData, tenantJobData } from './job-tenant';
export type { JobLike, JobTenant, JobTenantRecord, TenantFreeJobRecord, TenantJobData } from './job-tenant';

/** `tenantFree: true` enqueues the job with no tenant: a tenant worker runs it outside any tenant. */
export interface TenantFreeOption {
  readonly tenantFree?: boolean;
}

/** BullMQ's job options, plus `tenantFree`. */
export type TenantJobsOptions = JobsOptions & TenantFreeOption;

/** A job scheduler's template for `TenantQueue.upsertJobScheduler()`: BullMQ's, with `tenantFree` in its options. */
export interface TenantJobSchedulerTemplate<D extends object> {
  readonly name?: string;
  readonly data?: D;
  readonly opts?: JobSchedulerTemplateOptions & TenantFreeOption;
}

/** A job's processor as BullMQ calls it, on jobs whose data carries `__tenant`. */
export type TenantJobProcessor<D extends object = Record<string, unknown>, R = unknown> = (
  job: Job<TenantJobData<D>, R>,
  token?: string,
  signal?: AbortSignal,
) => Promise<R> | R;

/**
 * How a tenant worker fails a job that can never succeed: BullMQ's
 * `UnrecoverableError` (no retry, whatever `attempts` says), its message
 * `<code>: <the TenancyError's message>`, the TenancyError as `cause` and its
 * code as `code`.
 */
export type TenantJobRefusal = UnrecoverableError & { readonly code: TenancyErrorCode; readonly cause: TenancyError };

/**
 * A queue whose `add`, `addBulk` and `upsertJobScheduler` record the active
 * tenant in each job's data (`__tenant: { slug, incarnation }`), so that a
 * tenant worker runs the job in that tenant. Outside `manager.run()` they
 * throw `TenantContextMissingError`, unless the job is marked
 * `{ tenantFree: true }`. Custom job ids, deduplication ids and job scheduler
 * ids are the tenant's own: they are stored as `<slug>.<incarnation>.<id>`,
 * so two tenants using one id do not meet (nor a tenant and the tenant that
 * had its slug before it). `queue` is the wrapped BullMQ queue, for
 * everything else (events, counts, `close()`).
 *
 * @example
 * ```ts
 * const invoices = tenantQueue<{ invoiceId: number }>(new Queue('invoices', { connection }));
 * await tenants.run('acme', () => invoices.add('send', { invoiceId: 42 }, { attempts: 5, backoff: { type: 'exponential', delay: 1_000 } }));
 * await invoices.add('fleet-report', {}, { tenantFree: true }); // runs in no tenant
 * ```
 */
export class TenantQueue<D extends object = Record<string, unknown>, R = unknown> {
  readonly #queue: Queue;

  constructor(queue: Queue) {
    if (queue === null || typeof queue !== 'object' || typeof (queue as { add?: unknown }).add !== 'function') {
      throw new InvalidArgumentError('tenantQueue() takes a BullMQ Queue.');
    }
    this.#queue = queue;
  }

  /** The BullMQ queue it enqueues into. */
  get queue(): Queue {
    return this.#queue;
  }

  /**
   * `queue.add(name, data, opts)` with the active tenant recorded in the
   * data; `opts.jobId` and `opts.deduplication.id` scoped to the tenant.
   *
   * @throws TenantContextMissingError outside a run (unless `opts.tenantFree`).
   * @throws InvalidArgumentError when `data` is not a plain object.
   */
  async add(name: string, data?: D, opts?: TenantJobsOptions): Promise<Job<TenantJobData<D>, R>> {
    const { tenantFree, ...options } = opts ?? {};
    const tenant = jobTenantFor(tenantFree, 'tenantQueue().add()');
    return (await this.#queue.add(name, withJobTenant(data, tenant, 'tenantQueue().add()'), scopeOptions(options, tenant))) as Job<TenantJobData<D>, R>;
  }

  /** `queue.addBulk(jobs)`, each job as `add()` records it (one tenant for all: the active one). */
  async addBulk(jobs: readonly { readonly name: string; readonly data?: D; readonly opts?: BulkJobOptions & TenantFreeOption }[]): Promise<Job<TenantJobData<D>, R>[]> {
    const entries = jobs.map(({ name, data, opts }) => {
      const { tenantFree, ...options } = opts ?? {};
      const tenant = jobTenantFor(tenantFree, 'tenantQueue().addBulk()');
      return { name, data: withJobTenant(data, tenant, 'tenantQueue().addBulk()'), opts: scopeOptions(options, tenant) };
    });
    return (await this.#queue.addBulk(entries)) as Job<TenantJobData<D>, R>[];
  }

  /**
   * `queue.upsertJobScheduler()`: every job the scheduler produces carries
   * the active tenant (the template's data records it), and the scheduler's
   * id is the tenant's own (`<slug>.<incarnation>.<id>` in Redis). The
   * template's name defaults to `id`, as in BullMQ.
   */
  async upsertJobScheduler(id: string, repeat: Omit<RepeatOptions, 'key'>, template: TenantJobSchedulerTemplate<D> = {}): Promise<Job<TenantJobData<D>, R>> {
    const { tenantFree, ...options } = template.opts ?? {};
    const tenant = jobTenantFor(tenantFree, 'tenantQueue().upsertJobScheduler()');
    const job = await this.#queue.upsertJobScheduler(schedulerId(id, tenant), repeat, {
      name: template.name ?? id,
      data: withJobTenant(template.data, tenant, 'tenantQueue().upsertJobScheduler()'),
      opts: options,
    });
    return job as Job<TenantJobData<D>, R>;
  }

  /** Removes the active tenant's job scheduler `id` (a tenant-free one with `{ tenantFree: true }`); `false` if there was none. */
  removeJobScheduler(id: string, options: TenantFreeOption = {}): Promise<boolean> {
    return this.#queue.removeJobScheduler(schedulerId(id, jobTenantFor(options.tenantFree, 'tenantQueue().removeJobScheduler()')));
  }

  /** The active tenant's job scheduler `id` (a tenant-free one with `{ tenantFree: true }`). */
  getJobScheduler(id: string, options: TenantFreeOption = {}): Promise<JobSchedulerJson<TenantJobData<D>> | undefined> {
    return this.#queue.getJobScheduler(schedulerId(id, jobTenantFor(options.tenantFree, 'tenantQueue().getJobScheduler()')));
  }

  /**
   * The job with BullMQ id `id` (`job.id`), if it belongs to the active tenant
   * (a tenant-free job with `{ tenantFree: true }`); `undefined` otherwise,
   * also for another tenant's job.
   */
  async getJob(id: string, options: TenantFreeOption = {}): Promise<Job<TenantJobData<D>, R> | undefined> {
    const tenant = jobTenantFor(options.tenantFree, 'tenantQueue().getJob()');
    const job = (await this.#queue.getJob(id)) as Job<TenantJobData<D>, R> | undefined;
    if (job === undefined) return undefined;
    let recorded: JobTenant;
    try {
      recorded = jobTenantOf(job);
    } catch (error) {
      if (error instanceof JobTenantMissingError) return undefined;
      throw error;
    }
    return sameTenant(recorded, tenant) ? job : undefined;
  }

  /** The id BullMQ stores for the active tenant's custom job id `id` (what `add(..., { jobId: id })` gives `job.id`). */
  jobId(id: string): string {
    return scopedId(activeJobTenant('tenantQueue().jobId()'), id);
  }
}

/**
 * Wraps a BullMQ queue so that what it enqueues records the active tenant.
 * See `TenantQueue`.
 */
export function tenantQueue<D extends object = Record<string, unknown>, R = unknown>(queue: Queue): TenantQueue<D, R> {
  return new TenantQueue<D, R>(queue);
}

/**
 * A BullMQ processor that runs each job inside `manager.run(<its tenant>)`,
 * so job code uses `tenantContext` as HTTP handlers do. Each job gets its own
 * run (AsyncLocalStorage), so at any concurrency no job sees another's
 * tenant, nor the tenant of the code that created the worker.
 *
 * - A job whose data records no tenant fails closed: `JobTenantMissingError`,
 *   not retried. A tenant-free job (`{ tenantFree: true }`) runs outside any
 *   tenant: `tenantContext` throws `TenantContextMissingError` inside it.
 * - A job whose tenant cannot be served fails with the library's error, and
 *   BullMQ's retry rules (`attempts`, `backoff`) apply: `TenantSuspendedError`
 *   (suspended), `TenantNotActiveError` (archived), `TenantMigrationPendingError`,
 *   `DatabaseUnreachableError`, ...
 * - A job that can never succeed fails at once, whatever `attempts` says, with
 *   BullMQ's `UnrecoverableError` (message `<CODE>: ...`, the TenancyError as
 *   `cause`): tenant not found (dropped), `dropping`, dropped while the job
 *   ran (`TENANT_DROPPED`), dropped and created again under the slug
 *   (`JOB_TENANT_CHANGED`), a recorded slug that is not valid, no tenant.
 *
 * Errors of the job's own code reach BullMQ as they are.
 *
 * @example
 * ```ts
 * const worker = new Worker('invoices', tenantProcessor(tenants, async (job) => {
 *   await tenantContext.getRepository(Invoice).update(job.data.invoiceId, { sentAt: new Date() });
 * }), { connection, concurrency: 8 });
 * ```
 */
export function tenantProcessor<D extends object = Record<string, unknown>, R = unknown>(
  manager: TenantDataSourceManager,
  processor: TenantJobProcessor<D, R>,
): (job: Job<TenantJobData<D>, R>, token?: string, signal?: AbortSignal) => Promise<R> {
  if (manager === null || typeof manager !== 'object' || typeof (manager as { run?: unknown }).run !== 'function') {
    throw new InvalidArgumentError('tenantProcessor() takes the TenantDataSourceManager whose tenants the jobs run in, then the processor.');
  }
  if (typeof processor !== 'function') throw new InvalidArgumentError(`tenantProcessor() takes a processor function; got ${typeof processor}.`);
  const runJob = async (job: Job<TenantJobData<D>, R>, token: string | undefined, signal: AbortSignal | undefined): Promise<R> => {
    let tenant: JobTenant;
    try {
      tenant = jobTenantOf(job);
    } catch (error) {
      throw refusal(error, undefined, false);
    }
    // Out of whatever run created the worker: a tenant-free job sees no tenant.
    if (!('slug' in tenant)) return runStorage.exit(() => processor(job, token, signal));
    let started = false;
    try {
      return await manager.run(tenant.slug, () => {
        const current = tenantContext.current()!;
        const incarnation = tenantIncarnation(current);
        if (incarnation !== tenant.incarnation) throw new JobTenantChangedError(describeJob(job), tenant.slug, tenant.incarnation, incarnation);
        started = true;
        return processor(job, token, signal);
      });
    } catch (error) {
      throw refusal(error, tenant.slug, started);
    }
  };
  // BullMQ makes an AbortSignal per job only for processors that take a third parameter.
  return processor.length >= 3 ? (job, token, signal) => runJob(job, token, signal) : (job, token) => runJob(job, token, undefined);
}

/**
 * `new Worker(queueName, tenantProcessor(manager, processor), options)`: a
 * BullMQ worker whose jobs run in their tenants. See `tenantProcessor`.
 *
 * @example
 * ```ts
 * const worker = tenantWorker(tenants, 'invoices', async (job) => sendInvoice(job.data.invoiceId), { connection, concurrency: 8 });
 * ```
 */
export function tenantWorker<D extends object = Record<string, unknown>, R = unknown>(
  manager: TenantDataSourceManager,
  queueName: string,
  processor: TenantJobProcessor<D, R>,
  options: WorkerOptions,
): Worker<TenantJobData<D>, R> {
  return new Worker<TenantJobData<D>, R>(queueName, tenantProcessor(manager, processor), options);
}

/**
 * A lifecycle plugin (`manager.use()`) that removes a tenant's job
 * schedulers from the given queues when the tenant is dropped (in its
 * `dropping` step; idempotent, so a resumed drop removes what is left). Jobs
 * already waiting or delayed stay, and fail with `TENANT_NOT_FOUND` without
 * retry when they are picked up.
 *
 * @example
 * ```ts
 * tenants.use(tenantJobSchedulersPlugin([invoices]));
 * ```
 */
export function tenantJobSchedulersPlugin(queues: readonly (Queue | TenantQueue<any, any>)[]): TenantLifecyclePlugin {
  const targets = queues.map((queue) => (queue instanceof TenantQueue ? queue.queue : queue));
  return {
    name: 'typeorm-tenants/bullmq job schedulers',
    async onDropping(tenant: LifecycleTenant): Promise<void> {
      const prefix = scopedId(tenant, '');
      for (const queue of targets) {
        const schedulers = await queue.getJobSchedulers(0, -1);
        for (const scheduler of schedulers) {
          if (scheduler.key.startsWith(prefix)) await queue.removeJobScheduler(scheduler.key);
        }
      }
    },
  };
}

function jobTenantFor(tenantFree: boolean | undefined, operation: string): JobTenant {
  if (tenantFree !== undefined && typeof tenantFree !== 'boolean') {
    throw new InvalidArgumentError(`${operation}: tenantFree must be true or false; got ${typeof tenantFree}.`);
  }
  return tenantFree === true ? { tenantFree: true } : activeJobTenant(operation);
}

function sameTenant(a: JobTenant, b: JobTenant): boolean {
  if (!('slug' in a) || !('slug' in b)) return !('slug' in a) && !('slug' in b);
  return a.slug === b.slug && a.incarnation === b.incarnation;
}

/** `<slug>.<incarnation>.<id>`: a slug has no `.` and an incarnation is base 36, so the prefix names one tenant. */
function scopedId(tenant: Pick<JobTenantRecord, 'slug' | 'incarnation'>, id: string): string {
  return `${tenant.slug}.${tenant.incarnation}.${id}`;
}

function schedulerId(id: string, tenant: JobTenant): string {
  if (typeof id !== 'string' || id.length === 0) throw new InvalidArgumentError('A job scheduler id must be a non-empty string.');
  return 'slug' in tenant ? scopedId(tenant, id) : id;
}

function scopeOptions(options: JobsOptions, tenant: JobTenant): JobsOptions {
  if (!('slug' in tenant)) return options;
  let scoped = options;
  if (options.jobId !== undefined) scoped = { ...scoped, jobId: scopedId(tenant, String(options.jobId)) };
  if (options.deduplication !== undefined) scoped = { ...scoped, deduplication: { ...options.deduplication, id: scopedId(tenant, options.deduplication.id) } };
  return scoped;
}

/**
 * What the worker throws for an error of starting a job in its tenant:
 * refusals that can never succeed as `UnrecoverableError`, the rest as they
 * are (so `attempts`/`backoff` apply).
 */
function refusal(error: unknown, slug: string | undefined, started: boolean): unknown {
  if (!(error instanceof TenancyError) || !isPermanent(error, slug, started)) return error;
  const wrapped = new UnrecoverableError(`${error.code}: ${error.message}`);
  Object.defineProperty(wrapped, 'cause', { value: error, writable: true, configurable: true });
  Object.defineProperty(wrapped, 'code', { value: error.code, enumerable: true });
  return wrapped as TenantJobRefusal;
}

function isPermanent(error: TenancyError, slug: string | undefined, started: boolean): boolean {
  if (error instanceof JobTenantMissingError || error instanceof JobTenantChangedError) return true;
  // The job's own tenant went while it ran: a retry would find it gone (or another tenant).
  if (error instanceof TenantDroppedError) return error.slug === slug;
  // Errors of the job's code (it may run other tenants itself) are the job's to judge.
  if (started) return false;
  if (error instanceof InvalidTenantNameError || error instanceof TenantNotFoundError) return true;
  if (error instanceof TenantNotActiveError) return error.status === 'dropping';
  return false;
}
