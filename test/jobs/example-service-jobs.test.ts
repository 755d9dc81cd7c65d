import { Queue } from 'bullmq';
import { expect } from 'chai';
import { startService, type RunningService } from '../../examples/service';
import { expectError, getJson } from '../http/http-support';
import { databaseUrl, uniqueSlug } from '../support/fixtures';
import { redisHost, redisPort } from '../support/redis';
import { connection, redisKeys, uniquePrefix, waitUntil } from './bullmq-support';

describe('the example service\'s background jobs (REDIS_URL set: POST /jobs/client-count, GET /jobs/:id)', function () {
  this.timeout(60_000);
  let service: RunningService | undefined;
  const prefix = uniquePrefix();
  const slugs: string[] = [];

  afterEach(async () => {
    for (const slug of slugs.splice(0)) if ((await service?.tenants.getTenant(slug)) !== undefined) await service!.tenants.dropTenant(slug, { force: true });
    await service?.close();
    service = undefined;
    const queue = new Queue('reports', { connection, prefix });
    await queue.obliterate({ force: true });
    await queue.close();
    expect(await redisKeys(prefix)).to.deep.equal([]);
  });

  const post = (url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> =>
    getJson(url, { 'content-type': 'application/json', ...headers }, { method: 'POST', body: JSON.stringify(body) });

  it('counts each tenant\'s clients in a job run in that tenant, and shows a tenant only its own jobs', async () => {
    service = await startService({ databaseUrl: databaseUrl(), redisUrl: `redis://${redisHost}:${redisPort}`, jobsPrefix: prefix });
    const base = service.url;
    const [acme, globex] = [uniqueSlug('sjacme'), uniqueSlug('sjglobex')];
    slugs.push(acme, globex);
    for (const slug of [acme, globex]) expect((await post(`${base}/tenants`, { slug })).status).to.equal(201);
    for (const name of ['Ada', 'Alan']) await post(`${base}/clients`, { name, email: `${name}@acme.test` }, { 'x-tenant-slug': acme });

    const counts: Record<string, unknown> = {};
    for (const slug of [acme, globex]) {
      const queued = await post(`${base}/jobs/client-count`, {}, { 'x-tenant-slug': slug });
      expect(queued.status).to.equal(202);
      let answer: { status: number; body: any } = { status: 0, body: undefined };
      await waitUntil(`the job of ${slug}`, async () => {
        answer = await getJson(`${base}/jobs/${queued.body.id}`, { 'x-tenant-slug': slug });
        return answer.body?.state === 'completed' || answer.body?.state === 'failed';
      });
      expect(answer.body).to.include({ id: queued.body.id, state: 'completed', failedReason: null });
      counts[slug] = answer.body.result;
      const other = slug === acme ? globex : acme;
      expectError(await getJson(`${base}/jobs/${queued.body.id}`, { 'x-tenant-slug': other }), 404, 'JOB_NOT_FOUND');
    }
    expect(counts).to.deep.equal({ [acme]: { clients: 2 }, [globex]: { clients: 0 } });
    expectError(await post(`${base}/jobs/client-count`, {}), 400, 'TENANT_REQUIRED');
  });

  it('has no job routes and needs no Redis without a Redis URL', async () => {
    service = await startService({ databaseUrl: databaseUrl(), redisUrl: '' });
    const slug = uniqueSlug('sjnone');
    slugs.push(slug);
    expect((await post(`${service.url}/tenants`, { slug })).status).to.equal(201);
    expect((await post(`${service.url}/jobs/client-count`, {}, { 'x-tenant-slug': slug })).status).to.equal(404);
  });
});
