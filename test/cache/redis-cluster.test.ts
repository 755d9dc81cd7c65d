import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { Cluster } from 'ioredis';
import { tenantIncarnation } from '../../src';
import { redisCacheStore, tenantCache } from '../../src/cache';
import { freePort } from '../../support/free-port';
import { createTenants, openManager, sleep } from '../support/fixtures';
import { runProcess, expectExit } from '../installed/installed-project';

/** A port whose cluster bus port (port + 10000) is a valid port too. */
async function clusterPort(): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (port + 10_000 <= 65_535) return port;
  }
}

/** Scans every master of the cluster for keys under `prefix`. */
async function clusterKeys(cluster: Cluster, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for (const node of cluster.nodes('master')) {
    let cursor = '0';
    do {
      const [next, found] = await node.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      keys.push(...found);
    } while (cursor !== '0');
  }
  return keys.sort();
}

describe('redisCacheStore on a Redis Cluster (three masters started by the test on loopback)', function () {
  this.timeout(120_000);
  const servers: ChildProcess[] = [];
  let dir: string;
  let cluster: Cluster;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'typeorm-tenants-redis-cluster-'));
    const ports = [await clusterPort(), await clusterPort(), await clusterPort()];
    for (const port of ports) {
      const server = spawn(
        'redis-server',
        ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${port}.conf`),
          '--dir', dir, '--save', '', '--appendonly', 'no', '--protected-mode', 'no'],
        { stdio: 'ignore' },
      );
      servers.push(server);
    }
    await sleep(300);
    expectExit(
      await runProcess('redis-cli', ['--cluster', 'create', ...ports.map((port) => `127.0.0.1:${port}`), '--cluster-replicas', '0', '--cluster-yes'], {
        cwd: dir,
        timeoutMs: 30_000,
      }),
    );
    cluster = new Cluster(ports.map((port) => ({ host: '127.0.0.1', port })));
    for (let i = 0; ; i += 1) {
      const info = await cluster.cluster('INFO').catch(() => '');
      if (String(info).includes('cluster_state:ok')) break;
      if (i > 100) throw new Error(`The test cluster did not come up: ${String(info)}`);
      await sleep(100);
    }
  });

  after(async () => {
    cluster?.disconnect();
    for (const server of servers) server.kill('SIGTERM');
    await Promise.all(servers.map((server) => (server.exitCode !== null ? undefined : new Promise((resolve) => server.once('exit', resolve)))));
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps tenants apart across hash slots, and dropTenant clears the tenant on every master', async () => {
    const manager = await openManager();
    const cache = tenantCache(manager, { store: redisCacheStore(cluster, { scanCount: 50 }), keyPrefix: 'tc:' });
    try {
      const [dropped, kept] = await createTenants(manager, 2, 'tcc');
      for (const slug of [dropped, kept]) {
        await manager.run(slug, () => Promise.all(Array.from({ length: 300 }, (_, i) => cache.set(`k${i}`, `${slug}/${i}`))));
      }
      const masters = cluster.nodes('master');
      expect(masters).to.have.length(3);
      const perNode = await Promise.all(masters.map((node) => node.dbsize()));
      expect(perNode.every((count) => count > 0), `keys spread over the masters: ${perNode.join(', ')}`).to.equal(true);
      expect(await manager.run(kept, () => cache.get('k7'))).to.equal(`${kept}/7`);

      const record = (await manager.getTenant(kept))!;
      await manager.dropTenant(dropped, { force: true });
      const keys = await clusterKeys(cluster, 'tc:');
      expect(keys).to.have.length(300);
      expect(keys.every((key) => key.startsWith(`tc:tenant:${record.schemaName}:${tenantIncarnation(record)}:`))).to.equal(true);
    } finally {
      cache.close();
    }
  });
});
