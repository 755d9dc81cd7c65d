import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { expect } from 'chai';
import { context, SpanStatusCode, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { Client } from '../../entities';
import { tenantMigrations } from '../../migrations';
import { TENANT_SCHEMA_ATTRIBUTE, TENANT_SLUG_ATTRIBUTE, tenantContext } from '../../src';
import { AddClientPhone1700000000003 } from '../support/extra-migrations';
import { databaseUrl, openManager, uniqueSlug } from '../support/fixtures';

describe('Observability: OpenTelemetry traces', () => {
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

  const spansNamed = (name: string): ReadableSpan[] => exporter.getFinishedSpans().filter((s) => s.name === name);

  it('run() sets tenant.slug and tenant.schema on the active span; concurrent requests of two tenants each get their own; no active span: nothing, no error', async () => {
    const manager = await openManager();
    const [a, b] = [uniqueSlug('ot-a'), uniqueSlug('ot-b')];
    await manager.createTenant(a);
    await manager.createTenant(b);
    const tracer = trace.getTracer('test');
    const request = (slug: string): Promise<number> =>
      tracer.startActiveSpan(`request ${slug}`, async (span) => {
        try {
          await new Promise((resolve) => setImmediate(resolve));
          return await manager.run(slug, () => tenantContext.getRepository(Client).count());
        } finally {
          span.end();
        }
      });
    expect(await Promise.all([request(a), request(b), request(a)])).to.deep.equal([0, 0, 0]);
    expect(await manager.run(a, () => 'no span')).to.equal('no span');

    for (const slug of [a, b]) {
      const spans = spansNamed(`request ${slug}`);
      expect(spans).to.have.length(slug === a ? 2 : 1);
      for (const span of spans) {
        expect(span.attributes[TENANT_SLUG_ATTRIBUTE]).to.equal(slug);
        expect(span.attributes[TENANT_SCHEMA_ATTRIBUTE]).to.equal(slug.replace(/-/g, '_'));
      }
    }
    expect(exporter.getFinishedSpans()).to.have.length(3);
    await manager.dropTenant(a, { force: true });
    await manager.dropTenant(b, { force: true });
  });

  it('migrateTenants/revertTenants: one span per tenant worked on, child of the caller\'s span, ERROR for the failing tenant', async function () {
    this.timeout(120_000);
    const registryTable = `obs_ot_${randomBytes(4).toString('hex')}`;
    const base = await openManager({ registryTable });
    const slugs = [uniqueSlug('ot-fa'), uniqueSlug('ot-fb'), uniqueSlug('ot-fc')];
    for (const slug of slugs) await base.createTenant(slug);
    await base.run(slugs[2]!, () => tenantContext.getRepository(Client).insert({ name: 'Upper', email: 'UPPER@X.TEST' }));
    const next = await openManager({ registryTable, tenantMigrations: [...tenantMigrations, AddClientPhone1700000000003] });
    const tracer = trace.getTracer('test');
    const parentId = await tracer.startActiveSpan('deploy', async (span) => {
      await next.migrateTenants({ concurrency: 3 });
      await next.revertTenants({ tenants: [slugs[1]!] });
      span.end();
      return span.spanContext().spanId;
    });

    const migrate = spansNamed('typeorm-tenants.migrate');
    expect(migrate.map((s) => s.attributes[TENANT_SLUG_ATTRIBUTE]).sort()).to.deep.equal([...slugs].sort());
    for (const span of migrate) {
      const slug = span.attributes[TENANT_SLUG_ATTRIBUTE] as string;
      expect(span.parentSpanContext?.spanId, 'child of the caller').to.equal(parentId);
      expect(span.attributes[TENANT_SCHEMA_ATTRIBUTE]).to.equal(slug.replace(/-/g, '_'));
      if (slug === slugs[2]) {
        expect(span.status.code).to.equal(SpanStatusCode.ERROR);
        expect(span.status.message).to.include('client_email_lower');
        expect(span.attributes['typeorm_tenants.migration.status']).to.equal('failed');
        expect(span.attributes['typeorm_tenants.migration.failed']).to.equal('AddClientPhone1700000000003');
      } else {
        expect(span.status.code).to.not.equal(SpanStatusCode.ERROR);
        expect(span.attributes['typeorm_tenants.migration.status']).to.equal('migrated');
        expect(span.attributes['typeorm_tenants.migration.applied']).to.deep.equal(['AddClientPhone1700000000003']);
      }
    }
    const revert = spansNamed('typeorm-tenants.revert');
    expect(revert.map((s) => [s.attributes[TENANT_SLUG_ATTRIBUTE], s.attributes['typeorm_tenants.migration.status']])).to.deep.equal([[slugs[1], 'reverted']]);
    for (const slug of slugs) await next.dropTenant(slug, { force: true });
  });

  it('without @opentelemetry/api installed, run() and migrateTenants() work and trace nothing (a process where the package cannot be resolved)', function () {
    this.timeout(60_000);
    const root = join(__dirname, '..', '..');
    const script = `
      const Module = require('node:module');
      const resolve = Module._resolveFilename;
      Module._resolveFilename = function (request, ...rest) {
        if (request === '@opentelemetry/api' || request.startsWith('@opentelemetry/')) { const e = new Error("Cannot find module '" + request + "'"); e.code = 'MODULE_NOT_FOUND'; throw e; }
        return resolve.call(this, request, ...rest);
      };
      require('reflect-metadata');
      const { TenantDataSourceManager, tenantContext } = require(${JSON.stringify(join(root, 'src'))});
      const { Client, Plan, Project } = require(${JSON.stringify(join(root, 'entities'))});
      const { sharedMigrations, tenantMigrations } = require(${JSON.stringify(join(root, 'migrations'))});
      (async () => {
        const m = new TenantDataSourceManager({ dataSource: { type: 'postgres', url: process.env.URL, poolSize: 2 }, entities: [Client, Project, Plan], tenantMigrations, sharedMigrations });
        await m.initialize();
        const slug = process.env.SLUG;
        await m.createTenant(slug);
        const count = await m.run(slug, () => tenantContext.getRepository(Client).count());
        const report = await m.migrateTenants({ tenants: [slug] });
        await m.dropTenant(slug, { force: true });
        await m.destroy();
        let otel = 'absent';
        try { require('@opentelemetry/api'); otel = 'present'; } catch {}
        console.log(JSON.stringify({ count, status: report.results[0].status, otel }));
      })().catch((e) => { console.error(e); process.exit(1); });
    `;
    const child = spawnSync(process.execPath, ['-e', script], {
      env: { ...process.env, URL: databaseUrl(), SLUG: uniqueSlug('ot-none') },
      encoding: 'utf8',
      timeout: 50_000,
    });
    expect(child.status, child.stderr).to.equal(0);
    expect(JSON.parse(child.stdout.trim().split('\n').pop()!)).to.deep.equal({ count: 0, status: 'up-to-date', otel: 'absent' });
  });
});
