import { tenantContext, refuseInSeed } from '../context/tenant-context';
import { InvalidArgumentError, JobTenantMissingError, TenantContextMissingError } from '../errors';
import { tenantIncarnation } from '../lifecycle/lifecycle-plugins';

/**
 * The reserved field of a job's data that records its tenant. The rest of
 * the data is the application's; a value of this name in it is replaced
 * when the job is enqueued through `tenantQueue()` or `tenantJobData()`.
 */
export const TENANT_JOB_FIELD = '__tenant';

/** The tenant a job runs in: the slug and incarnation of the run that enqueued it. */
export interface JobTenantRecord {
  readonly slug: string;
  /** `tenantIncarnation(record)` of the tenant when the job was enqueued. */
  readonly incarnation: string;
}

/** A job marked to run outside any tenant (`tenantContext` throws inside it). */
export interface TenantFreeJobRecord {
  readonly tenantFree: true;
}

/** What `data.__tenant` holds. */
export type JobTenant = JobTenantRecord | TenantFreeJobRecord;

/** A job's data with its tenant recorded: the application's fields plus `__tenant`. */
export type TenantJobData<D extends object = Record<string, unknown>> = D & { readonly [TENANT_JOB_FIELD]: JobTenant };

/** What the worker reads of a job to find its tenant (a BullMQ `Job` is one). */
export interface JobLike {
  readonly id?: string;
  readonly name: string;
  readonly queueName: string;
  readonly data: unknown;
}

const INCARNATION = /^[0-9a-z]{1,16}$/;
const TENANT_FREE: TenantFreeJobRecord = Object.freeze({ tenantFree: true });

/**
 * The job's data with the active tenant recorded in `__tenant`: its slug and
 * incarnation. `tenantQueue(queue).add()` calls it for you; use it directly
 * with `queue.add()`, a FlowProducer or anything else that enqueues jobs.
 *
 * @throws TenantContextMissingError outside `manager.run()`.
 * @throws InvalidArgumentError when `data` is not a plain object.
 * @example
 * ```ts
 * await tenants.run('acme', () => queue.add('send-invoice', tenantJobData({ invoiceId: 42 })));
 * ```
 */
export function tenantJobData<D extends object = Record<string, never>>(data?: D): TenantJobData<D> {
  return withJobTenant(data, activeJobTenant('tenantJobData()'), 'tenantJobData()');
}

/** The active run's tenant as a job records it. @throws TenantContextMissingError outside a run. */
export function activeJobTenant(operation: string): JobTenantRecord {
  const tenant = tenantContext.current();
  if (tenant === undefined) throw new TenantContextMissingError(`${operation} (enqueueing a tenant job)`);
  refuseInSeed(operation);
  return Object.freeze({ slug: tenant.slug, incarnation: tenantIncarnation(tenant) });
}

/** `data` with `record` in its `__tenant` field (replacing any value there). */
export function withJobTenant<D extends object>(data: D | undefined, record: JobTenant, operation: string): TenantJobData<D> {
  // The data as BullMQ will store it (JSON), so that nothing in it (an own
  // toJSON(), say) can put back a __tenant of its own after ours.
  const stored = plainData(data === undefined ? undefined : JSON.parse(JSON.stringify(plainData(data, operation))), operation);
  return { ...stored, [TENANT_JOB_FIELD]: record } as TenantJobData<D>;
}

/**
 * The job's data marked tenant-free: a tenant worker runs it outside any
 * tenant, where `tenantContext` throws `TenantContextMissingError`. For work
 * of no tenant (a nightly fleet report, a cleanup over the shared schema);
 * it may be enqueued inside a run or outside one.
 *
 * @throws InvalidArgumentError when `data` is not a plain object.
 */
export function tenantFreeJobData<D extends object = Record<string, never>>(data?: D): TenantJobData<D> {
  return withJobTenant(data, TENANT_FREE, 'tenantFreeJobData()');
}

/**
 * The tenant a job records, checked: `{ slug, incarnation }` or
 * `{ tenantFree: true }`.
 *
 * @throws JobTenantMissingError when the data has no valid `__tenant` field.
 */
export function jobTenantOf(job: JobLike): JobTenant {
  const data = job.data;
  const missing = (reason: string): JobTenantMissingError => new JobTenantMissingError(describeJob(job), reason);
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw missing(`its data is ${data === null ? 'null' : Array.isArray(data) ? 'an array' : typeof data}, not an object with a ${TENANT_JOB_FIELD} field`);
  }
  if (!Object.prototype.hasOwnProperty.call(data, TENANT_JOB_FIELD)) throw missing(`its data has no ${TENANT_JOB_FIELD} field`);
  const value = (data as Record<string, unknown>)[TENANT_JOB_FIELD];
  if (value === null || typeof value !== 'object') throw missing(`its ${TENANT_JOB_FIELD} field is ${value === null ? 'null' : typeof value}`);
  const record = value as Record<string, unknown>;
  if (record.tenantFree === true) {
    if (record.slug !== undefined) throw missing(`its ${TENANT_JOB_FIELD} field is both tenant-free and names a tenant`);
    return TENANT_FREE;
  }
  if (typeof record.slug !== 'string' || record.slug.length === 0) throw missing(`its ${TENANT_JOB_FIELD} field names no slug`);
  if (typeof record.incarnation !== 'string' || !INCARNATION.test(record.incarnation)) {
    throw missing(`its ${TENANT_JOB_FIELD} field for tenant "${record.slug.slice(0, 80)}" has no valid incarnation`);
  }
  return Object.freeze({ slug: record.slug, incarnation: record.incarnation });
}

/** `job "<id>" (<name>) of queue "<queue>"`, for messages. */
export function describeJob(job: JobLike): string {
  return `job "${job.id ?? '(no id)'}" (${job.name}) of queue "${job.queueName}"`;
}

function plainData(data: unknown, operation: string): Record<string, unknown> {
  if (data === undefined) return {};
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new InvalidArgumentError(
      `${operation} takes the job's data as a plain object (its tenant is recorded in a field of it, ${TENANT_JOB_FIELD}); ` +
        `got ${data === null ? 'null' : Array.isArray(data) ? 'an array' : typeof data}. Wrap other values: { value }.`,
    );
  }
  return data as Record<string, unknown>;
}
