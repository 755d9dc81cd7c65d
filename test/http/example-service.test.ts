import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { startService, type RunningService } from '../../examples/service';
import { databaseUrl, uniqueSlug } from '../support/fixtures';
import { expectError, getJson } from './http-support';

describe('the example service (examples/service.ts)', () => {
  let service: RunningService | undefined;
  afterEach(async () => {
    await service?.close();
    service = undefined;
  });

  function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
    return getJson(url, { 'content-type': 'application/json', ...headers }, { method: 'POST', body: JSON.stringify(body) });
  }

  it('signs up two tenants, creates clients in each, lists each tenant its own, and never shows internalNote', async () => {
    service = await startService({ databaseUrl: databaseUrl() });
    const base = service.url;
    const [acme, globex] = [uniqueSlug('acme'), uniqueSlug('globex')];
    const signup = await post(`${base}/tenants`, { slug: acme, name: 'Acme Corp' });
    expect(signup.status).to.equal(201);
    expect(signup.body).to.include({ slug: acme, name: 'Acme Corp', status: 'active' });
    expect((await post(`${base}/tenants`, { slug: globex })).status).to.equal(201);
    expectError(await post(`${base}/tenants`, { slug: acme }), 409, 'TENANT_ALREADY_EXISTS');
    expectError(await post(`${base}/tenants`, { slug: 'Bad Slug' }), 400, 'INVALID_TENANT_NAME');

    const ada = await post(`${base}/clients`, { name: 'Ada', email: 'ada@acme.test', internalNote: 'pays late' }, { 'x-tenant-slug': acme });
    expect(ada.status).to.equal(201);
    expect(ada.body).to.deep.equal({ id: 1, name: 'Ada', email: 'ada@acme.test' });
    await post(`${base}/clients`, { name: 'Alan', email: 'alan@acme.test', internalNote: 'secret' }, { 'x-tenant-slug': acme });
    await post(`${base}/clients`, { name: 'Hank', email: 'hank@globex.test', internalNote: 'volcano' }, { 'x-tenant-slug': globex });

    const acmeList = await getJson(`${base}/clients`, { 'x-tenant-slug': acme });
    expect(acmeList.body).to.deep.equal([
      { id: 1, name: 'Ada', email: 'ada@acme.test' },
      { id: 2, name: 'Alan', email: 'alan@acme.test' },
    ]);
    const globexList = await getJson(`${base}/clients`, { 'x-tenant-slug': globex });
    expect(globexList.body).to.deep.equal([{ id: 1, name: 'Hank', email: 'hank@globex.test' }]);
    expect(JSON.stringify([acmeList.body, globexList.body])).not.to.match(/internal|secret|volcano|pays late/i);

    expect((await getJson(`${base}/clients/1`, { 'x-tenant-slug': globex })).body).to.deep.equal({ id: 1, name: 'Hank', email: 'hank@globex.test' });
    const missing = await getJson(`${base}/clients/2`, { 'x-tenant-slug': globex });
    expect(missing.status).to.equal(404);
    expect(missing.body.error.code).to.equal('CLIENT_NOT_FOUND');
    expectError(await getJson(`${base}/clients`), 400, 'TENANT_REQUIRED');
    expectError(await getJson(`${base}/clients`, { 'x-tenant-slug': uniqueSlug('nobody') }), 404, 'TENANT_NOT_FOUND');
    expect((await getJson(`${base}/health`)).body).to.deep.equal({ status: 'ok' });
  });

  it('runs as a program (node build/examples/service.js, PORT=0) and exits 0 on SIGTERM', async () => {
    const child = spawn(process.execPath, [join(__dirname, '..', '..', 'examples', 'service.js')], {
      env: { ...process.env, PORT: '0', DATABASE_URL: databaseUrl() },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          const match = /on (http:\/\/\S+)/.exec(out);
          if (match !== null) resolve(match[1]!);
        });
        child.once('exit', (code) => reject(new Error(`The service exited (${code}) before listening: ${out}`)));
      });
      const slug = uniqueSlug('child');
      expect((await post(`${url}/tenants`, { slug })).status).to.equal(201);
      expect((await post(`${url}/clients`, { name: 'Zed', email: 'zed@x.test', internalNote: 'n' }, { 'x-tenant-slug': slug })).body).to.deep.equal({
        id: 1,
        name: 'Zed',
        email: 'zed@x.test',
      });
      child.kill('SIGTERM');
      expect(await exited).to.equal(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
