/**
 * Review probes: Citus mode with one worker down (w2, port 9702, stopped
 * and started again by the probe). A failing probe is a finding.
 */
import { expect } from 'chai';
import { execSync } from 'node:child_process';
import { tenantContext, type TenantDataSourceManager } from '../../src';
import { Client } from '../../entities';
import { describeOnCitus, startCitusDatabase, type CitusDatabase } from '../support/citus';

/**
 * How to stop and start one worker of the cluster, from the environment
 * (the cluster's layout is the machine's, not the repository's):
 * CITUS_WORKER_DOWN is `host:port` of the worker, CITUS_STOP_WORKER and
 * CITUS_START_WORKER shell commands that stop it and start it again (the
 * start must succeed when it already runs). Unset, this suite does not run
 * and says so in one line.
 */
const control = {
  down: process.env.CITUS_WORKER_DOWN,
  stop: process.env.CITUS_STOP_WORKER,
  start: process.env.CITUS_START_WORKER,
};
const stopW2 = (): void => {
  execSync(control.stop!, { stdio: 'ignore' });
};
const startW2 = (): void => {
  execSync(control.start!, { stdio: 'ignore' });
};
const describeWorkerDown = (title: string, body: (this: Mocha.Suite) => void): void => {
  if (control.down !== undefined && control.stop !== undefined && control.start !== undefined) {
    describeOnCitus(title, body);
  } else if (process.env.CITUS_URL !== undefined) {
    console.log('  (the Citus worker-down probe did not run: set CITUS_WORKER_DOWN, CITUS_STOP_WORKER and CITUS_START_WORKER to run it)');
  }
};

describeWorkerDown('review: Citus with a worker down', function () {
  this.timeout(300_000);
  let db: CitusDatabase;
  let manager: TenantDataSourceManager;
  const down = control.down!;
  let up: string;

  before(async () => {
    startW2();
    db = await startCitusDatabase();
    up = (await db.workers()).find((node) => node !== down)!;
    manager = db.manager({ lockTimeoutMs: 5000 });
    await manager.initialize();
    await manager.createTenant('wd-up');
    await manager.createTenant('wd-down');
    if ((await manager.getTenant('wd-up'))!.node !== up) await manager.moveTenant('wd-up', { node: up, transfer: 'block-writes' });
    if ((await manager.getTenant('wd-down'))!.node !== down) await manager.moveTenant('wd-down', { node: down, transfer: 'block-writes' });
  });
  after(async () => {
    startW2();
    await db?.stop();
  });

  it('with one worker down: a new process can initialize() and serve the tenants of the worker that is up; listTenants() names every node', async () => {
    stopW2();
    try {
      const second = db.manager({ lockTimeoutMs: 5000 });
      const initialized = await second.initialize().then(
        () => 'ok',
        (error: Error & { query?: string }) => `initialize() failed: ${error.message.slice(0, 400)} [statement: ${String(error.query ?? (error.cause as { query?: string } | undefined)?.query).slice(0, 300)}]`,
      );
      expect(initialized).to.equal('ok');
      const saved = await second.run('wd-up', () => tenantContext.getRepository(Client).save({ name: 'while-down', email: 'w@x' }));
      expect(saved.id).to.be.a('number');
      const nodesOf = new Map((await second.listTenants()).map((t) => [t.slug, t.node]));
      expect(nodesOf.get('wd-down')).to.equal(down);
    } finally {
      startW2();
    }
  });

});
