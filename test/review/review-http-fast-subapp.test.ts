/**
 * Review of the cheaper HTTP path: the prototype-level `emit` dispatch of
 * src/http/emitter-binding.ts. Express swaps a request's and response's
 * prototypes for a mounted sub-app's own (`app.use('/api', subApp)`), so a
 * binding made while they had the parent app's prototypes must still apply.
 * A failing probe is a finding.
 */
import { expect } from 'chai';
import express from 'express';
import { createServer, type Server } from 'node:http';
import { tenantContext, type TenantDataSourceManager } from '../../src';
import { fromHeader, tenantMiddleware } from '../../src/http/express';
import { openManager, uniqueSlug } from '../support/fixtures';
import { closeServer, listen } from '../http/http-support';

describe('review http fast path: Express sub-apps (prototype swap)', () => {
  let manager: TenantDataSourceManager;
  let server: Server | undefined;
  let slug: string;

  before(async () => {
    manager = await openManager();
    slug = uniqueSlug('rvsub');
    await manager.createTenant(slug);
  });
  afterEach(async () => {
    if (server !== undefined) await closeServer(server);
    server = undefined;
  });

  it('a sub-app mounted after the tenant middleware: express.json() continues in the tenant, finish listeners see it, and the lease is released', async () => {
    const seen: Record<string, string | undefined> = {};
    const finished = new Promise<void>((resolve) => {
      seen.finish = 'pending';
      const sub = express();
      sub.use(express.json());
      sub.post('/echo', (req, res) => {
        seen.handler = tenantContext.current()?.slug;
        res.on('finish', () => {
          seen.finish = tenantContext.current()?.slug;
          resolve();
        });
        res.json({ tenant: seen.handler ?? null });
      });
      const app = express();
      app.use(tenantMiddleware(manager, { resolve: fromHeader() }));
      app.use('/api', sub);
      server = createServer(app);
    });
    const base = await listen(server!);
    // The body arrives in a second packet, so express.json() calls next() from the request's 'end' event.
    const answer = await fetch(`${base}/api/echo`, {
      method: 'POST',
      headers: { 'x-tenant-slug': slug, 'content-type': 'application/json' },
      body: JSON.stringify({ a: 'x'.repeat(90_000) }),
    });
    const body = (await answer.json()) as { tenant: string | null; error?: unknown };
    await finished;
    for (let i = 0; i < 100 && manager.stats().activeRuns > 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 10));
    expect({ status: answer.status, handler: body.tenant, finish: seen.finish, activeRuns: manager.stats().activeRuns }).to.deep.equal({
      status: 200,
      handler: slug,
      finish: slug,
      activeRuns: 0,
    });
  });
});
