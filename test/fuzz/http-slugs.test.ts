import { expect } from 'chai';
import express from 'express';
import fc from 'fast-check';
import { createServer } from 'node:http';
import { InvalidTenantNameError, TenantNotFoundError, fromHeader, fromPath, tenantContext } from '../../src';
import { tenantMiddleware } from '../../src/http/express';
import { closeServer, listen } from '../http/http-support';
import { adminQuery, openManager, uniqueSlug } from '../support/fixtures';
import { hostileInput, oracleSchemaName } from './slug-arbitraries';

const RUNS = 10_000;
const OVER_HTTP = 1_500;
const SEED = Number(process.env.FUZZ_SEED ?? 20_241_126);

/**
 * Strings a client can send as a header value or a path segment over real
 * HTTP: visible ASCII, no edge spaces, and short enough for Node's 16 KB
 * header limit (past it the server answers 431 before any middleware runs).
 */
const sendable = (value: string): boolean => value.length <= 4_000 && /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(value);

async function schemaNames(): Promise<string[]> {
  return (await adminQuery<{ nspname: string }>('SELECT nspname FROM pg_namespace ORDER BY 1')).map((r) => r.nspname);
}

describe('Hostile input at the HTTP resolvers (property-based)', () => {
  it('10,000 generated slugs through the resolver core, 1,500 over real HTTP: 400 INVALID_TENANT_NAME or 404, nothing else, no schema appears', async function () {
    this.timeout(180_000);
    const manager = await openManager();
    const live = uniqueSlug('fz');
    await manager.createTenant(live);
    const [{ role }] = await adminQuery<{ role: string }>('SELECT current_user AS role');
    const before = await schemaNames();

    const middleware = tenantMiddleware(manager, { resolve: [fromHeader(), fromPath({ prefix: '/t' })] });
    const app = express();
    app.use(middleware);
    app.get('/{*rest}', (_req, res) => {
      res.json({ tenant: tenantContext.current()?.slug });
    });
    const server = createServer(app);
    const base = await listen(server);
    try {
      const inputs = fc.sample(hostileInput, { numRuns: RUNS, seed: SEED }).filter((v): v is string => typeof v === 'string');
      expect(inputs.length).to.be.greaterThan(RUNS * 0.7);
      let invalid = 0;
      let unknown = 0;
      for (const value of inputs) {
        const outcome = await middleware.resolver.resolve({ headers: { 'x-tenant-slug': value }, url: '/x' } as never);
        // HTTP trims optional whitespace (space, tab) around a header value, and only that.
        const asSent = value.replace(/^[ \t]+|[ \t]+$/g, '');
        const valid = oracleSchemaName(asSent, role) !== undefined;
        expect(outcome.kind, JSON.stringify(value)).to.equal('refused');
        const error = (outcome as { error: Error }).error;
        if (valid) {
          expect(error, JSON.stringify(value)).to.be.instanceOf(TenantNotFoundError);
          unknown += 1;
        } else if (asSent === '') {
          expect(error.name).to.equal('TenantRequiredError'); // an empty header names no tenant
        } else {
          expect(error, JSON.stringify(value)).to.be.instanceOf(InvalidTenantNameError);
          invalid += 1;
        }
      }
      expect(invalid).to.be.greaterThan(1_000);
      expect(unknown).to.be.greaterThan(100);

      const overHttp = inputs.filter(sendable).slice(0, OVER_HTTP);
      expect(overHttp.length).to.be.at.least(1_000);
      for (const [i, value] of overHttp.entries()) {
        const byHeader = i % 2 === 0;
        const response = byHeader
          ? await fetch(`${base}/x`, { headers: { 'x-tenant-slug': value } })
          : await fetch(`${base}/t/${encodeURIComponent(value)}/x`);
        const text = await response.text();
        const label = `${byHeader ? 'header' : 'path'} ${JSON.stringify(value)}`;
        expect(response.headers.get('content-type') ?? '', `${label}: ${response.status} ${text}`).to.include('application/json');
        const body = JSON.parse(text) as { error?: { code: string } };
        const valid = oracleSchemaName(value, role) !== undefined;
        const expected = valid ? [404, 'TENANT_NOT_FOUND'] : [400, 'INVALID_TENANT_NAME'];
        expect([response.status, body.error?.code], label).to.deep.equal(expected);
      }

      const ok = await fetch(`${base}/x`, { headers: { 'x-tenant-slug': live } });
      expect(await ok.json()).to.deep.equal({ tenant: live });
      expect(await schemaNames(), 'no schema appeared or vanished').to.deep.equal(before);
    } finally {
      middleware.close();
      await closeServer(server);
    }
  });
});
