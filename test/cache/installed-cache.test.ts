import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { expect } from 'chai';
import type Redis from 'ioredis';
import { adminQuery, databaseUrl } from '../support/fixtures';
import { redisHost, redisPort } from '../support/redis';
import { createInstalledProject, expectExit, type InstalledProject } from '../installed/installed-project';
import { deleteKeys, redisClient, scanKeys, uniquePrefix } from './cache-fixtures';

// The user's script: typeorm-tenants and typeorm-tenants/cache from the
// installed tarball; ioredis is not installed in the project (the cache needs
// no package of its own), so the script takes the repository's, as a user
// takes the one they already have.
const CACHE_APP_JS = `'use strict';
require('reflect-metadata');
const Redis = require(process.env.IOREDIS_DIR);
const { TenantDataSourceManager } = require('typeorm-tenants');
const { tenantCache, redisCacheStore } = require('typeorm-tenants/cache');
const options = require('./tenancy.config.js');

async function main([first, second]) {
  let ioredisInProject = true;
  try { require.resolve('ioredis'); } catch { ioredisInProject = false; }
  const redis = new Redis({ host: process.env.REDIS_HOST, port: Number(process.env.REDIS_PORT) });
  const tenants = new TenantDataSourceManager(options);
  const cache = tenantCache(tenants, { store: redisCacheStore(redis), keyPrefix: process.env.KEY_PREFIX });
  await tenants.initialize();
  try {
    for (const slug of [first, second]) await tenants.createTenant(slug);
    for (const slug of [first, second]) await tenants.run(slug, () => cache.set('greeting', 'hello ' + slug));
    const seen = {};
    for (const slug of [first, second]) seen[slug] = await tenants.run(slug, () => cache.wrap('greeting', 1000, () => 'not called'));
    let outside;
    try { await cache.get('greeting'); } catch (error) { outside = error.code; }
    await tenants.dropTenant(first, { force: true });
    const afterDrop = await tenants.run(second, () => cache.get('greeting'));
    await tenants.dropTenant(second, { force: true });
    console.log(JSON.stringify({ ioredisInProject, seen, outside, afterDrop }));
  } finally {
    cache.close();
    redis.disconnect();
    await tenants.destroy();
  }
}

main(process.argv.slice(2)).catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
`;

describe('typeorm-tenants/cache from the installed package (npm pack, npm install)', function () {
  this.timeout(240_000);
  let project: InstalledProject | undefined;
  let redis: Redis;
  const keyPrefix = uniquePrefix('tt-cache-installed');
  const sharedSchema = `installed_cache_${randomBytes(4).toString('hex')}`;

  before(async function () {
    this.timeout(240_000);
    project = await createInstalledProject();
    redis = redisClient();
  });

  after(async () => {
    project?.remove();
    if (redis !== undefined) {
      await deleteKeys(redis, keyPrefix);
      redis.disconnect();
    }
    await adminQuery(`DROP SCHEMA IF EXISTS "${sharedSchema}" CASCADE`);
  });

  it('scopes keys to the tenant, refuses outside a run and clears on drop, with no ioredis in the project', async () => {
    writeFileSync(join(project!.dir, 'cache-app.js'), CACHE_APP_JS);
    const first = `ic-${randomBytes(4).toString('hex')}`;
    const second = `ic-${randomBytes(4).toString('hex')}`;
    const result = expectExit(
      await project!.node(['cache-app.js', first, second], {
        DATABASE_URL: databaseUrl(),
        TENANCY_SHARED_SCHEMA: sharedSchema,
        IOREDIS_DIR: dirname(require.resolve('ioredis/package.json')),
        REDIS_HOST: redisHost,
        REDIS_PORT: String(redisPort),
        KEY_PREFIX: keyPrefix,
      }),
    );
    const report = JSON.parse(result.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
    expect(report).to.deep.equal({
      ioredisInProject: false,
      seen: { [first]: `hello ${first}`, [second]: `hello ${second}` },
      outside: 'TENANT_CONTEXT_MISSING',
      afterDrop: `hello ${second}`,
    });
    expect(await scanKeys(redis, keyPrefix), 'both drops cleared their keys').to.deep.equal([]);
  });
});
