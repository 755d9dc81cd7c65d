import type * as OpenTelemetry from '@opentelemetry/api';

/** The span attribute naming the tenant's slug (set on the active span by `run()`, and on fleet spans). */
export const TENANT_SLUG_ATTRIBUTE = 'tenant.slug';
/** The span attribute naming the tenant's schema. */
export const TENANT_SCHEMA_ATTRIBUTE = 'tenant.schema';

/** `@opentelemetry/api`, when the application has it installed; `null` when not (looked up once). */
let api: typeof OpenTelemetry | null | undefined;

function openTelemetry(): typeof OpenTelemetry | null {
  if (api === undefined) {
    try {
      // Optional peer: without it the library traces nothing and says nothing.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      api = require('@opentelemetry/api') as typeof OpenTelemetry;
    } catch {
      api = null;
    }
  }
  return api;
}

/** Spans that carry a tenant already. */
const taggedSpans = new WeakSet<object>();

/**
 * Sets `tenant.slug` and `tenant.schema` on the active span, if there is one
 * (internal; called by every `run()`). Without `@opentelemetry/api`, or
 * without a registered tracer provider, there is no active span and this
 * does nothing.
 */
export function tagActiveSpan(slug: string, schema: string): void {
  const otel = api === undefined ? openTelemetry() : api;
  if (otel === null) return;
  const span = otel.trace.getActiveSpan();
  if (span === undefined || taggedSpans.has(span)) return;
  // The first run's tenant stays: a run of another tenant nested in it (or
  // a loop over tenants under one span) does not rename the span's tenant.
  taggedSpans.add(span);
  span.setAttribute(TENANT_SLUG_ATTRIBUTE, slug);
  span.setAttribute(TENANT_SCHEMA_ATTRIBUTE, schema);
}

/** What a fleet span records when the tenant's work is done. */
export interface TenantSpanOutcome {
  readonly status: string;
  readonly applied: readonly string[];
  readonly error?: { readonly message: string; readonly migration?: string };
}

/**
 * Runs one tenant's part of a fleet operation in a span of its own
 * (`typeorm-tenants.<operation>`, a child of the active span), active while
 * `work` runs; without `@opentelemetry/api`, just `work()` (internal).
 * `work` reports failures as results (fleet lines), which set the span's
 * status to ERROR.
 */
export function inTenantSpan<R extends TenantSpanOutcome>(operation: 'migrate' | 'revert', slug: string, schema: string, work: () => Promise<R>): Promise<R> {
  const otel = openTelemetry();
  if (otel === null) return work();
  const tracer = otel.trace.getTracer('typeorm-tenants');
  return tracer.startActiveSpan(
    `typeorm-tenants.${operation}`,
    { kind: otel.SpanKind.INTERNAL, attributes: { [TENANT_SLUG_ATTRIBUTE]: slug, [TENANT_SCHEMA_ATTRIBUTE]: schema } },
    async (span) => {
      try {
        const outcome = await work();
        span.setAttribute('typeorm_tenants.migration.status', outcome.status);
        span.setAttribute('typeorm_tenants.migration.applied', [...outcome.applied]);
        if (outcome.status === 'failed') {
          span.setStatus({ code: otel.SpanStatusCode.ERROR, message: outcome.error?.message ?? 'failed' });
          if (outcome.error?.migration !== undefined) span.setAttribute('typeorm_tenants.migration.failed', outcome.error.migration);
        }
        return outcome;
      } catch (error) {
        span.recordException(error instanceof Error ? error : String(error));
        span.setStatus({ code: otel.SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
        throw error;
      } finally {
        span.end();
      }
    },
  );
}
