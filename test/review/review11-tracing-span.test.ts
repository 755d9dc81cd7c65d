/**
 * Review of issue 11, traces: does a span ever name the wrong tenant? A
 * failing probe is a finding.
 */
import { expect } from 'chai';
import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { TENANT_SLUG_ATTRIBUTE } from '../../src';
import { openManager, uniqueSlug } from '../support/fixtures';

describe('review11 tracing: the request span of a tenant that runs another tenant inside', () => {
  let exporter: InMemorySpanExporter;
  let provider: BasicTracerProvider;
  let contextManager: AsyncLocalStorageContextManager;
  beforeEach(() => {
    exporter = new InMemorySpanExporter();
    provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    contextManager = new AsyncLocalStorageContextManager().enable();
    context.setGlobalContextManager(contextManager);
    trace.setGlobalTracerProvider(provider);
  });
  afterEach(async () => {
    await provider.shutdown();
    trace.disable();
    context.disable();
  });

  it("acme's request span keeps tenant.slug=acme after acme's handler runs a lookup in tenant beta", async () => {
    const manager = await openManager();
    const [acme, beta] = [uniqueSlug('rv11ta'), uniqueSlug('rv11tb')];
    await manager.createTenant(acme);
    await manager.createTenant(beta);
    const tracer = trace.getTracer('rv11');
    await tracer.startActiveSpan('GET /orders', async (span) => {
      await manager.run(acme, async () => {
        // e.g. a partner lookup in another tenant, or a fleet admin endpoint
        await manager.run(beta, () => 1);
      });
      span.end();
    });
    const request = exporter.getFinishedSpans().find((s) => s.name === 'GET /orders')!;
    expect(request.attributes[TENANT_SLUG_ATTRIBUTE]).to.equal(acme);
    for (const slug of [acme, beta]) await manager.dropTenant(slug, { force: true });
  });
});
