import diagnosticsChannel from 'node:diagnostics_channel';
import { Counter, Gauge, Histogram, register as globalRegistry, type Registry } from 'prom-client';
import { InvalidArgumentError } from '../errors';
import type { TenantDataSourceManager } from '../manager/tenant-data-source-manager';
import {
  TENANT_CHANNELS,
  TENANT_EVENT_NAMES,
  TENANT_RUN_END,
  tenantEventChannel,
  type TenantEventMessage,
  type TenantMigrationMessage,
  type TenantOperationMessage,
  type TenantRunMessage,
} from './channels';

/** Options of `tenantMetrics()`. */
export interface TenantMetricsOptions {
  /** Where the metrics are registered. Default: prom-client's global `register`. */
  readonly registry?: Registry;
  /** Prefix of every metric name. Default `DEFAULT_METRICS_PREFIX` (`'typeorm_tenants_'`). */
  readonly prefix?: string;
  /**
   * Per-tenant run metrics (`<prefix>tenant_runs_total`,
   * `<prefix>tenant_run_duration_seconds`). `false` (default): none, as
   * every tenant would be a series. `{ top: N }`: at most N tenants keep
   * their own label, every other run counts under `tenant="(other)"`; see the
   * README for the exact rule (the N busiest since the previous scrape, and
   * at most 2N + 1 tenant series per metric at any time).
   */
  readonly tenantLabels?: false | { readonly top: number };
  /** Histogram buckets, in seconds. Default `DEFAULT_DURATION_BUCKETS`. */
  readonly buckets?: readonly number[];
}

/** What `tenantMetrics()` returns. */
export interface TenantMetrics {
  readonly registry: Registry;
  /** Stops listening and removes the metrics from the registry. Safe to call twice. */
  close(): void;
  [Symbol.dispose](): void;
}

export const DEFAULT_METRICS_PREFIX = 'typeorm_tenants_';
/** Seconds: 1 ms to 1 min, for runs (milliseconds) and migrations (seconds or more) alike. */
export const DEFAULT_DURATION_BUCKETS: readonly number[] = Object.freeze([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]);
/** The tenant label of every run of a tenant outside the top N. */
/** No slug can take this value (slugs have no parentheses), so no tenant shares the overflow series. */
export const OTHER_TENANT_LABEL = '(other)';

const METRIC_PREFIX_RULE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

/**
 * Prometheus metrics of one manager, over prom-client (an optional peer
 * dependency: install it to use this subpath).
 *
 * - The manager's `stats()` as gauges and counters, read at each scrape:
 *   `data_sources_cached`, `data_source_cache_hits_total`,
 *   `data_source_cache_misses_total`, `data_source_evictions_total`,
 *   `data_sources_pending_disposal`, `active_runs`, `pool_connections`,
 *   `pool_idle_connections`, `pool_waiting_clients`, `pool_max_connections`.
 * - From the library's diagnostics_channel events, for this manager only:
 *   `runs_total{outcome}` and `run_duration_seconds{outcome}`;
 *   `operations_total{operation,outcome}` and
 *   `operation_duration_seconds{operation,outcome}` for `createTenant` and
 *   `dropTenant`; `tenant_migrations_total{direction,status}`,
 *   `tenant_migration_duration_seconds{direction,status}` and
 *   `migrations_applied_total{direction}` per tenant of a fleet run;
 *   `tenant_events_total{event}` for every manager event.
 * - With `tenantLabels: { top: N }`: `tenant_runs_total{tenant,outcome}`
 *   and `tenant_run_duration_seconds{tenant}`.
 *
 * `outcome` is `ok` or `error`. Names start with `prefix`.
 *
 * @throws InvalidArgumentError for a bad prefix or `top`; prom-client's error when a metric of that name is already registered.
 * @example
 * ```ts
 * import { Registry } from 'prom-client';
 * import { tenantMetrics } from 'typeorm-tenants/metrics';
 * const registry = new Registry();
 * tenantMetrics(tenants, { registry, tenantLabels: { top: 20 } });
 * app.get('/metrics', async (_req, res) => res.type(registry.contentType).send(await registry.metrics()));
 * ```
 */
export function tenantMetrics(manager: TenantDataSourceManager, options: TenantMetricsOptions = {}): TenantMetrics {
  const registry = options.registry ?? globalRegistry;
  const prefix = options.prefix ?? DEFAULT_METRICS_PREFIX;
  if (typeof prefix !== 'string' || (prefix !== '' && !METRIC_PREFIX_RULE.test(prefix))) {
    throw new InvalidArgumentError(`Option "prefix" must be a Prometheus metric name prefix (letters, digits, "_" and ":", not starting with a digit); got ${JSON.stringify(prefix)}.`);
  }
  const labels = options.tenantLabels ?? false;
  if (labels !== false && (labels === null || typeof labels !== 'object' || !Number.isInteger(labels.top) || labels.top < 1)) {
    throw new InvalidArgumentError(`Option "tenantLabels" must be false or { top: N } with N a positive integer; got ${JSON.stringify(labels)}.`);
  }
  const buckets = [...(options.buckets ?? DEFAULT_DURATION_BUCKETS)];
  const registers = [registry];
  const names: string[] = [];
  const named = <M>(name: string, make: (name: string) => M): M => {
    const full = `${prefix}${name}`;
    const metric = make(full);
    names.push(full);
    return metric;
  };

  let stats = manager.stats();
  const statGauge = (name: string, help: string, read: () => number, refresh = false): void => {
    named(name, (full) =>
      new Gauge({
        name: full,
        help,
        registers,
        collect() {
          if (refresh) stats = manager.stats();
          this.set(read());
        },
      }),
    );
  };
  const statCounter = (name: string, help: string, read: () => number): void => {
    named(name, (full) =>
      new Counter({
        name: full,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(read());
        },
      }),
    );
  };
  // The first gauge reads stats() once per scrape; the others use that reading.
  statGauge('data_sources_cached', 'Tenant DataSources cached now.', () => stats.cachedDataSources, true);
  statCounter('data_source_cache_hits_total', 'Tenant lookups served from the DataSource cache.', () => stats.hits);
  statCounter('data_source_cache_misses_total', 'Tenant lookups that built a DataSource.', () => stats.misses);
  statCounter('data_source_evictions_total', 'Tenant DataSources evicted to keep the cache bound.', () => stats.evictions);
  statGauge('data_sources_pending_disposal', 'Evicted DataSources still held by a run.', () => stats.pendingDisposal);
  statGauge('active_runs', 'Runs in progress.', () => stats.activeRuns);
  statGauge('pool_connections', 'Connections open in the shared pool(s).', () => stats.pool.total);
  statGauge('pool_idle_connections', 'Idle connections in the shared pool(s).', () => stats.pool.idle);
  statGauge('pool_waiting_clients', 'Callers waiting for a connection of the shared pool(s).', () => stats.pool.waiting);
  statGauge('pool_max_connections', 'Size of the shared pool.', () => stats.pool.max);

  const runs = named('runs_total', (name) => new Counter({ name, help: 'Runs (manager.run) finished.', labelNames: ['outcome'] as const, registers }));
  const runSeconds = named(
    'run_duration_seconds',
    (name) => new Histogram({ name, help: 'How long the function of a run took.', labelNames: ['outcome'] as const, buckets, registers }),
  );
  const operations = named(
    'operations_total',
    (name) => new Counter({ name, help: 'createTenant and dropTenant calls finished.', labelNames: ['operation', 'outcome'] as const, registers }),
  );
  const operationSeconds = named(
    'operation_duration_seconds',
    (name) =>
      new Histogram({ name, help: 'How long createTenant and dropTenant calls took.', labelNames: ['operation', 'outcome'] as const, buckets, registers }),
  );
  const tenantMigrations = named(
    'tenant_migrations_total',
    (name) => new Counter({ name, help: 'Tenants a fleet run (migrate or revert) worked on, by result.', labelNames: ['direction', 'status'] as const, registers }),
  );
  const tenantMigrationSeconds = named(
    'tenant_migration_duration_seconds',
    (name) =>
      new Histogram({ name, help: "How long one tenant's part of a fleet run took.", labelNames: ['direction', 'status'] as const, buckets, registers }),
  );
  const migrationsApplied = named(
    'migrations_applied_total',
    (name) => new Counter({ name, help: 'Tenant migrations applied (migrate) or undone (revert) by fleet runs.', labelNames: ['direction'] as const, registers }),
  );
  const events = named('tenant_events_total', (name) => new Counter({ name, help: 'Manager events (created, dropped, ...).', labelNames: ['event'] as const, registers }));

  let onTenantRun: ((message: TenantRunMessage, outcome: 'ok' | 'error') => void) | undefined;
  if (labels !== false) {
    const top = new TopTenants(labels.top);
    // Registered before the histogram, so each scrape re-ranks before any tenant series is read.
    const tenantRuns: Counter<'tenant' | 'outcome'> = named(
      'tenant_runs_total',
      (name) =>
        new Counter({
          name,
          help: `Runs finished, by tenant: the busiest ${labels.top} keep their label, the others count as tenant="${OTHER_TENANT_LABEL}".`,
          labelNames: ['tenant', 'outcome'] as const,
          registers,
          collect() {
            for (const slug of top.rerank()) {
              for (const outcome of ['ok', 'error']) tenantRuns.remove({ tenant: slug, outcome });
              tenantRunSeconds.remove({ tenant: slug });
            }
          },
        }),
    );
    const tenantRunSeconds: Histogram<'tenant'> = named(
      'tenant_run_duration_seconds',
      (name) => new Histogram({ name, help: 'How long the function of a run took, by tenant (as tenant_runs_total).', labelNames: ['tenant'] as const, buckets, registers }),
    );
    onTenantRun = (message, outcome) => {
      const tenant = top.label(message.slug);
      tenantRuns.inc({ tenant, outcome });
      tenantRunSeconds.observe({ tenant }, seconds(message.durationMs));
    };
  }

  const onRun = (raw: unknown): void => {
    const message = raw as TenantRunMessage;
    if (message.manager !== manager) return;
    const outcome = 'error' in message ? 'error' : 'ok';
    runs.inc({ outcome });
    runSeconds.observe({ outcome }, seconds(message.durationMs));
    onTenantRun?.(message, outcome);
  };
  const onOperation = (raw: unknown): void => {
    const message = raw as TenantOperationMessage;
    if (message.manager !== manager) return;
    const labelValues = { operation: message.operation, outcome: 'error' in message ? 'error' : 'ok' };
    operations.inc(labelValues);
    operationSeconds.observe(labelValues, seconds(message.durationMs));
  };
  const onMigration = (raw: unknown): void => {
    const message = raw as TenantMigrationMessage;
    if (message.manager !== manager) return;
    const labelValues = { direction: message.direction, status: message.status };
    tenantMigrations.inc(labelValues);
    tenantMigrationSeconds.observe(labelValues, seconds(message.durationMs));
    if (message.applied.length > 0) migrationsApplied.inc({ direction: message.direction }, message.applied.length);
  };
  const onEvent = (raw: unknown): void => {
    const message = raw as TenantEventMessage;
    if (message.manager === manager) events.inc({ event: message.event });
  };

  // By the full names of the tracing channels' asyncEnd events: diagnostics_channel.subscribe holds its subscribers strongly.
  const ends = [TENANT_RUN_END, asyncEndOf(TENANT_CHANNELS.createTenant), asyncEndOf(TENANT_CHANNELS.dropTenant)] as const;
  diagnosticsChannel.subscribe(ends[0], onRun);
  diagnosticsChannel.subscribe(ends[1], onOperation);
  diagnosticsChannel.subscribe(ends[2], onOperation);
  diagnosticsChannel.subscribe(TENANT_CHANNELS.tenantMigration, onMigration);
  for (const event of TENANT_EVENT_NAMES) diagnosticsChannel.subscribe(tenantEventChannel(event), onEvent);

  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    diagnosticsChannel.unsubscribe(ends[0], onRun);
    diagnosticsChannel.unsubscribe(ends[1], onOperation);
    diagnosticsChannel.unsubscribe(ends[2], onOperation);
    diagnosticsChannel.unsubscribe(TENANT_CHANNELS.tenantMigration, onMigration);
    for (const event of TENANT_EVENT_NAMES) diagnosticsChannel.unsubscribe(tenantEventChannel(event), onEvent);
    for (const name of names) registry.removeSingleMetric(name);
  };
  return { registry, close, [Symbol.dispose]: close };
}

function asyncEndOf(name: string): string {
  return `tracing:${name}:asyncEnd`;
}

function seconds(ms: number | undefined): number {
  return (ms ?? 0) / 1000;
}

/**
 * Which tenants keep their own label (internal; exported for its unit test).
 *
 * - A tenant in the label set L (at most `top`) is labelled with its slug;
 *   any other run counts as `other`.
 * - Between scrapes, a tenant not in L joins it on its first run while L
 *   has room (first come, first served).
 * - At each scrape (`rerank()`), L becomes the `top` tenants with the most
 *   runs since the previous scrape (ties: members of L first, then by slug).
 *   A tenant that leaves L keeps its series, unchanged, for one more scrape
 *   (so its last increments are exported), and is removed at the next one,
 *   unless it is back in L.
 *
 * So at any time a tenant-labelled metric holds at most `top` live tenant
 * series, `top` frozen ones and `other`; memory is one counter per tenant
 * that ran since the previous scrape.
 */
export class TopTenants {
  readonly #top: number;
  #labelled = new Set<string>();
  #frozen = new Set<string>();
  readonly #counts = new Map<string, number>();

  constructor(top: number) {
    this.#top = top;
  }

  /** Counts one run of `slug` and returns its label. */
  label(slug: string): string {
    this.#counts.set(slug, (this.#counts.get(slug) ?? 0) + 1);
    if (this.#labelled.has(slug)) return slug;
    if (this.#labelled.size < this.#top && !this.#frozen.has(slug)) {
      this.#labelled.add(slug);
      return slug;
    }
    return OTHER_TENANT_LABEL;
  }

  /** Re-ranks (at a scrape) and returns the tenants whose series must go now. */
  rerank(): string[] {
    const count = (slug: string): number => this.#counts.get(slug) ?? 0;
    const member = (slug: string): number => (this.#labelled.has(slug) ? 1 : 0);
    const ranked = [...new Set([...this.#labelled, ...this.#counts.keys()])].sort(
      (a, b) => count(b) - count(a) || member(b) - member(a) || (a < b ? -1 : a > b ? 1 : 0),
    );
    const next = new Set(ranked.slice(0, this.#top));
    const removed = [...this.#frozen].filter((slug) => !next.has(slug));
    this.#frozen = new Set([...this.#labelled].filter((slug) => !next.has(slug)));
    this.#labelled = next;
    this.#counts.clear();
    return removed;
  }

  /** The tenants labelled now. */
  get labelled(): readonly string[] {
    return [...this.#labelled];
  }
}
