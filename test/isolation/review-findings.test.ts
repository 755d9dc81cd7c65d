import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { expect } from 'chai';
import Redis from 'ioredis';
import { Client as PgClient } from 'pg';
import { Column, Entity, PrimaryGeneratedColumn, type MigrationInterface, type QueryRunner } from 'typeorm';
import { Client, Plan } from '../../entities';
import {
  TenancyConfigurationError,
  type TenantDataSourceManager,
  TenantRecentlyDroppedError,
  TenantScoped,
  tenantContext,
} from '../../src';
import { adminQuery, databaseUrl, openManager, sleep, uniqueSlug } from '../support/fixtures';
import { setRoleDefault, withFreshDatabase } from '../support/fresh-database';
import { schemaOf, tenantWithClient } from '../support/legacy-public-client';
import { redisCache, withRedis } from '../support/redis';

/**
 * Findings of an adversarial review of the extensions, query result cache
 * and drop fencing work. Every test here failed before the fix of the
 * problem it names.
 */

// --- a fresh database (as in extensions.test.ts) ---------------------------

@Entity('rf_badge')
@TenantScoped()
class RfBadge {
  @PrimaryGeneratedColumn() id!: number;
  @Column('citext') email!: string;
}

class CreateRfBadge1792000000001 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE TABLE rf_badge (id serial PRIMARY KEY, email citext NOT NULL)');
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE rf_badge');
  }
}

@Entity('rf_note')
@TenantScoped()
class RfNote {
  @PrimaryGeneratedColumn() id!: number;
  @Column() body!: string;
}

class CreateRfNote1792000000002 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE TABLE rf_note (id serial PRIMARY KEY, body varchar NOT NULL)');
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE rf_note');
  }
}

/** The model of the extension findings' fresh databases. */
const MODEL = { entities: [RfBadge], tenantMigrations: [CreateRfBadge1792000000001], sharedMigrations: [] };

const findsCaseInsensitively = (): Promise<boolean> =>
  tenantContext
    .getRepository(RfBadge)
    .findOneBy({ email: 'ann@example.test' })
    .then((badge) => badge !== null);

// --- a throwaway Redis Cluster (one node holding every slot) ---------------

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

async function withRedisCluster(fn: (port: number) => Promise<void>): Promise<void> {
  const port = await freePort();
  const dir = `/tmp/tt-review-cluster-${port}`;
  spawnSync('mkdir', ['-p', dir]);
  const child: ChildProcess = spawn(
    'redis-server',
    ['--port', String(port), '--cluster-enabled', 'yes', '--cluster-config-file', `${dir}/nodes.conf`, '--cluster-announce-ip', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: 'ignore' },
  );
  try {
    for (let i = 0; i < 100 && spawnSync('redis-cli', ['-p', String(port), 'ping']).stdout?.toString().trim() !== 'PONG'; i += 1) await sleep(50);
    const admin = new Redis({ host: '127.0.0.1', port });
    await admin.call('CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
    for (let i = 0; i < 100; i += 1) {
      const info = String(await admin.call('CLUSTER', 'INFO'));
      if (info.includes('cluster_state:ok')) break;
      await sleep(100);
    }
    admin.disconnect();
    await fn(port);
  } finally {
    child.kill('SIGTERM');
    spawnSync('rm', ['-rf', dir]);
  }
}

const hasRedisServer = spawnSync('redis-server', ['--version']).status === 0;

describe('review findings', () => {
  describe('query result cache', () => {
    it('cache.alwaysEnabled: a second process starting within the cache duration does not re-run the shared migrations', async () => {
      await withRedis(async (_redis, keyPrefix) => {
        // A shared schema of its own, so that the shared migrations really run.
        const sharedSchema = `rf_${randomBytes(3).toString('hex')}`;
        const options = {
          dataSource: { type: 'postgres' as const, url: databaseUrl(), cache: redisCache(keyPrefix, { alwaysEnabled: true }) },
          sharedSchema,
        };
        try {
          await openManager(options); // process 1: applies the shared migrations
          // Process 2, started within `duration`: TypeORM's MigrationExecutor reads the
          // migrations table through a QueryBuilder, answered from the shared cache entry.
          await openManager(options);
        } finally {
          await adminQuery(`DROP SCHEMA IF EXISTS "${sharedSchema}" CASCADE`);
        }
      });
    });

    it('two managers on two databases over one Redis do not answer each other\'s shared entries', async () => {
      await withRedis(async (_redis, keyPrefix) => {
        await withFreshDatabase(MODEL, async (db) => {
          const one = await openManager({ dataSource: { type: 'postgres', url: databaseUrl(), cache: redisCache(keyPrefix) } });
          const two = await openManager({ dataSource: { type: 'postgres', url: db.url, cache: redisCache(keyPrefix) } });
          const code = `rf-${randomBytes(3).toString('hex')}`;
          await adminQuery(`INSERT INTO public.plan (code, name, monthly_price_cents) VALUES ($1, 'db one', 1)`, [code]);
          try {
            const plans = (m: TenantDataSourceManager): Promise<string[]> =>
              m.sharedDataSource
                .getRepository(Plan)
                .find({ cache: { id: 'plans', milliseconds: 60_000 } })
                .then((rows) => rows.map((plan) => plan.code));
            expect(await plans(one)).to.include(code);
            expect(await plans(two), 'database two has no such plan').not.to.include(code);
          } finally {
            await adminQuery('DELETE FROM public.plan WHERE code = $1', [code]);
            await one.destroy();
            await two.destroy();
          }
        });
      });
    });

    describe('on an ioredis/cluster store (a throwaway one-node Redis Cluster)', () => {
      before(() => {
        // Never skipped: without redis-server (installed with the machine's Redis) these fail with the reason.
        if (!hasRedisServer) throw new Error('redis-server is not installed: the cluster tests need it (apt-get install -y redis-server).');
      });
      it('clear() deletes a tenant\'s entries (several of them, in different hash slots)', async () => {
        await withRedisCluster(async (port) => {
          const manager = await openManager({
            dataSource: {
              type: 'postgres',
              url: databaseUrl(),
              cache: { type: 'ioredis/cluster', options: { startupNodes: [{ host: '127.0.0.1', port }], options: {} }, duration: 60_000 } as never,
            },
          });
          const slug = await tenantWithClient(manager, 'rfcl');
          await manager.run(slug, async () => {
            for (const id of ['one', 'two', 'three', 'four']) await tenantContext.getRepository(Client).find({ cache: { id, milliseconds: 60_000 } });
          });
          const redis = new Redis({ host: '127.0.0.1', port });
          try {
            expect(await redis.keys('*')).to.have.length(4);
            await manager.run(slug, () => tenantContext.getManager().connection.queryResultCache!.clear()); // CROSSSLOT today
            expect(await redis.keys('*')).to.deep.equal([]);
          } finally {
            redis.disconnect();
            await manager.destroy();
          }
        });
      });

      it('clear() honours the cluster\'s keyPrefix', async () => {
        await withRedisCluster(async (port) => {
          const manager = await openManager({
            dataSource: {
              type: 'postgres',
              url: databaseUrl(),
              cache: { type: 'ioredis/cluster', options: { startupNodes: [{ host: '127.0.0.1', port }], options: { keyPrefix: 'app:' } }, duration: 60_000 } as never,
            },
          });
          const slug = await tenantWithClient(manager, 'rfkp');
          await manager.run(slug, () => tenantContext.getRepository(Client).find({ cache: { id: 'one', milliseconds: 60_000 } }));
          const redis = new Redis({ host: '127.0.0.1', port });
          try {
            expect(await redis.keys('app:*')).to.have.length(1);
            await manager.run(slug, () => tenantContext.getManager().connection.queryResultCache!.clear()); // resolves, deletes nothing today
            expect(await redis.keys('app:*')).to.deep.equal([]);
          } finally {
            redis.disconnect();
            await manager.destroy();
          }
        });
      });
    });
  });

  describe('drop fencing', () => {
    it('the drop is stamped when it commits: a last transaction that waited on a lock does not shorten slugReuseDelayMs', async () => {
      const manager = await openManager({ slugReuseDelayMs: 1_500 });
      const slug = uniqueSlug('rfdrop');
      await manager.createTenant(slug);
      // A standalone sequence is left for the final DROP SCHEMA; another process's open
      // transaction that used it makes that last transaction wait (as long as lockTimeoutMs).
      await adminQuery(`CREATE SEQUENCE "${schemaOf(slug)}".counter`);
      const other = new PgClient({ connectionString: databaseUrl() });
      await other.connect();
      try {
        await other.query('BEGIN');
        await other.query(`SELECT nextval('"${schemaOf(slug)}".counter')`);
        const released = sleep(2_500).then(() => other.query('COMMIT'));
        await manager.dropTenant(slug, { force: true });
        await released;
      } finally {
        await other.end();
      }
      // dropTenant has just returned: the name must still be held for slugReuseDelayMs.
      await expect(manager.createTenant(slug)).to.be.rejectedWith(TenantRecentlyDroppedError);
    });
  });

  describe('extensions', () => {
    it('citext already in public (where TypeORM installs it) with the role default the error asks for: refused, or find() stays case-insensitive', async () => {
      await withFreshDatabase(MODEL, async (db) => {
        await db.query('CREATE EXTENSION citext SCHEMA public'); // an existing deployment
        await setRoleDefault(db); // the statement initialize()'s refusal quotes
        const manager = db.manager();
        const started = await manager.initialize().then(
          () => true,
          (error: unknown) => {
            expect(error).to.be.instanceOf(TenancyConfigurationError);
            return false;
          },
        );
        if (!started) return;
        await manager.createTenant('alpha');
        await manager.run('alpha', () => tenantContext.getRepository(RfBadge).save({ email: 'Ann@Example.Test' }));
        expect(await manager.run('alpha', findsCaseInsensitively), 'citext "=" resolved (not text\'s)').to.equal(true);
      });
    });

    it('isolation: role: a tenant created before the extensions schema existed (no USAGE on it) still compares citext case-insensitively after the upgrade', async () => {
      await withFreshDatabase(MODEL, async (db) => {
        await setRoleDefault(db);
        const first = db.manager({ isolation: 'role' });
        await first.initialize();
        await first.createTenant('gamma');
        // What grantTenantRole did before this change: no USAGE on the extensions schema.
        const [{ role }] = await db.query<{ role: string }>(
          `SELECT r.rolname AS role FROM pg_namespace n, aclexplode(n.nspacl) a JOIN pg_roles r ON r.oid = a.grantee
            WHERE n.nspname = 'gamma' AND r.rolname LIKE 'typeorm\\_tenants\\_r\\_%' LIMIT 1`,
        );
        await db.query(`REVOKE USAGE ON SCHEMA extensions FROM "${role}"`);
        await first.destroy();

        const upgraded = db.manager({ isolation: 'role' });
        await upgraded.initialize();
        try {
          await upgraded.migrateTenants();
          await upgraded.run('gamma', () => tenantContext.getRepository(RfBadge).save({ email: 'Ann@Example.Test' }));
          expect(await upgraded.run('gamma', findsCaseInsensitively), 'citext "=" resolved for the tenant role').to.equal(true);
        } finally {
          await upgraded.dropTenant('gamma', { force: true }); // tenant roles are cluster-wide
        }
      });
    });

    it('the extensions schema is not a tenant created before the upgrade: initialize() refuses, or tenants cannot read it unqualified', async () => {
      await withFreshDatabase(MODEL, async (db) => {
        const model = { entities: [RfNote], tenantMigrations: [CreateRfNote1792000000002], sharedMigrations: [] };
        // Before the upgrade "extensions" was an ordinary slug (here: reserved names differ).
        const before = db.manager({ ...model, extensionsSchema: 'rf_other_extensions' });
        await before.initialize();
        await before.createTenant('extensions');
        await before.createTenant('beta');
        await db.query('CREATE TABLE extensions.private_notes (secret text)');
        await db.query(`INSERT INTO extensions.private_notes VALUES ('of tenant "extensions"')`);
        await before.destroy();

        const upgraded = db.manager({ ...model, dataSource: { type: 'postgres', url: db.url, poolSize: 4, extensions: ['hstore'] } }); // default extensionsSchema
        const started = await upgraded.initialize().then(
          () => true,
          (error: unknown) => {
            expect(error).to.be.instanceOf(TenancyConfigurationError);
            return false;
          },
        );
        if (!started) return;
        const outcome = await upgraded
          .run('beta', () => tenantContext.query('SELECT secret FROM private_notes'))
          .then((rows) => rows, (error: { code?: string }) => error.code);
        expect(outcome, "beta's unqualified raw SQL must not reach tenant \"extensions\"").to.equal('42P01');
      });
    });
  });
});
