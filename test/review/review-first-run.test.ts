import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { expect } from 'chai';
import { QueryFailedError } from 'typeorm';
import { Client, Plan } from '../../entities';
import { DatabaseUnreachableError, tenantContext, type TenancyLogEntry } from '../../src';
import { freePort } from '../../support/free-port';
import { databaseUrl, newManager, openManager, uniqueSlug } from '../support/fixtures';
import { createServer, Socket, type AddressInfo, type Server } from 'node:net';

/**
 * Review probes of the first-run work (issue 12, parts 4 and 5): no
 * password in any error text, only connection failures become
 * DatabaseUnreachableError, and the missing-table hint fires only when it
 * is true.
 */

async function failure(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('it succeeded');
    },
    (error: unknown) => error,
  );
}

/** Everything a logger could print of an error: message, stack, own fields and the cause chain. */
function everythingOf(error: unknown): string {
  return `${inspect(error, { depth: 8, showHidden: true })}\n${JSON.stringify(error, Object.getOwnPropertyNames(error as object))}`;
}

describe('review: first run, the password never reaches an error', function () {
  this.timeout(60_000);

  const secret = `Pw${randomBytes(4).toString('hex')}`;
  const cases = async (): Promise<Array<{ name: string; dataSource: Record<string, unknown>; secrets: string[] }>> => {
    const port = await freePort();
    return [
      { name: 'password in the URL', dataSource: { url: `postgres://app:${secret}@127.0.0.1:${port}/appdb` }, secrets: [secret] },
      {
        name: 'percent-encoded password with @, / and : in it',
        dataSource: { url: `postgres://app:${encodeURIComponent(`${secret}@/:x`)}@127.0.0.1:${port}/appdb` },
        secrets: [secret, encodeURIComponent(`${secret}@/:x`)],
      },
      { name: 'the password option', dataSource: { host: '127.0.0.1', port, username: 'app', password: secret, database: 'appdb' }, secrets: [secret] },
      { name: 'a unix socket directory that has no server', dataSource: { url: `postgres://app:${secret}@/appdb?host=/tmp/no-server-${secret.toLowerCase()}x` }, secrets: [secret] },
      { name: 'a password with an unencoded # (pg cuts the URL there)', dataSource: { url: `postgres://app:${secret}#x@127.0.0.1:${port}/appdb` }, secrets: [secret] },
    ];
  };

  it('each way of giving a password: the error of initialize() (message, stack, fields and causes) never holds it', async () => {
    const leaks: string[] = [];
    for (const probe of await cases()) {
      const manager = newManager({ dataSource: { type: 'postgres', poolSize: 1, ...probe.dataSource } as never, pool: { connectionTimeoutMillis: 3_000 } });
      const error = await failure(manager.initialize());
      const text = everythingOf(error);
      for (const value of probe.secrets) if (text.includes(value)) leaks.push(`${probe.name}: ${(error as Error).name}: ${(error as Error).message}`);
      if (!(error instanceof DatabaseUnreachableError) && probe.name !== 'a password with an unencoded # (pg cuts the URL there)') {
        leaks.push(`${probe.name}: not DatabaseUnreachableError but ${(error as Error).name}: ${(error as Error).message}`);
      }
    }
    expect(leaks).to.deep.equal([]);
  });
});

describe('review: first run, what is and is not DatabaseUnreachableError', function () {
  this.timeout(60_000);

  it('a full pool (timeout exceeded when trying to connect), a statement_timeout and a missing table on an open connection stay what they are', async () => {
    const manager = await openManager({ dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 2 }, pool: { connectionTimeoutMillis: 500 } });
    const slug = uniqueSlug('rc');
    await manager.createTenant(slug);

    const missing = await failure(manager.run(slug, () => tenantContext.query('SELECT * FROM review_no_such_table')));
    expect(missing).to.be.instanceOf(QueryFailedError);
    expect((missing as { code?: string }).code).to.equal('42P01');

    const cancelled = await failure(
      manager.run(slug, () =>
        tenantContext.transaction(async () => {
          await tenantContext.query('SET LOCAL statement_timeout = 50');
          await tenantContext.query('SELECT pg_sleep(2)');
        }),
      ),
    );
    expect(cancelled).not.to.be.instanceOf(DatabaseUnreachableError);
    expect((cancelled as { code?: string }).code).to.equal('57014');

    // Both connections held by open transactions: a third checkout waits and times out.
    const release: Array<() => void> = [];
    const held = [1, 2].map(() =>
      manager.run(slug, () =>
        tenantContext.transaction(async () => {
          await tenantContext.getRepository(Client).count();
          await new Promise<void>((resolve) => release.push(resolve));
        }),
      ),
    );
    while (release.length < 2) await new Promise((resolve) => setTimeout(resolve, 10));
    const full = await failure(manager.run(slug, () => tenantContext.getRepository(Client).count()));
    release.forEach((resolve) => resolve());
    await Promise.all(held);
    expect(full).not.to.be.instanceOf(DatabaseUnreachableError);
    expect((full as Error).message).to.include('timeout exceeded when trying to connect');
  });

  it('the server goes away after initialize(): the next connection of a run, a registry lookup and a shared query each fail with DatabaseUnreachableError naming the target', async () => {
    const proxy = await tcpProxy(databaseUrl());
    try {
      const manager = await openManager({ dataSource: { type: 'postgres', url: proxy.url, poolSize: 2 }, pool: { connectionTimeoutMillis: 3_000 } });
      const slug = uniqueSlug('rg');
      await manager.createTenant(slug);
      await manager.run(slug, () => tenantContext.getRepository(Client).count());
      await proxy.stop();
      await new Promise((resolve) => setTimeout(resolve, 100)); // the pool drops its dead idle connections
      const u = new URL(proxy.url);
      const target = `postgres://${u.username}@${u.hostname}:${u.port}${u.pathname}`;
      const seen = {
        run: await failure(manager.run(slug, () => tenantContext.getRepository(Client).count())),
        lookup: await failure(manager.getTenant(uniqueSlug('nobody'))),
        shared: await failure(manager.sharedDataSource.getRepository(Plan).count()),
      };
      const summary = Object.fromEntries(Object.entries(seen).map(([k, e]) => [k, `${(e as Error).name}: ${(e as Error).message.split(': ')[0]}`]));
      expect(summary).to.deep.equal({
        run: `DatabaseUnreachableError: could not connect to ${target}`,
        lookup: `DatabaseUnreachableError: could not connect to ${target}`,
        shared: `DatabaseUnreachableError: could not connect to ${target}`,
      });
    } finally {
      await proxy.stop();
    }
  });
});

describe('review: isolation schema, the connection dies during a query (control)', function () {
  this.timeout(60_000);

  it('the query fails, the process does not crash, the next run is served', async () => {
    const proxy = await tcpProxy(databaseUrl());
    try {
      const manager = await openManager({ dataSource: { type: 'postgres', url: proxy.url, poolSize: 2 }, pool: { connectionTimeoutMillis: 3_000 } });
      const slug = uniqueSlug('rk');
      await manager.createTenant(slug);
      proxy.resetOn('SELECT COUNT');
      const error = await failure(manager.run(slug, () => tenantContext.getRepository(Client).count()));
      expect((error as Error).message).to.match(/ECONNRESET|terminated/);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(proxy.resets()).to.equal(1);
      expect(await manager.run(slug, () => tenantContext.getRepository(Client).count())).to.equal(0);
    } finally {
      await proxy.stop();
    }
  });
});

for (const [statement, pattern] of [
  ['RESET ROLE (the checkout going back to the pool)', 'RESET ROLE'],
  ['SET ROLE (the checkout starting)', 'SET ROLE "'],
] as const) {
  describe(`review: isolation 'role', the connection dies during ${statement}`, function () {
    this.timeout(60_000);

    it('the process does not crash (no uncaught error event of a pg client with no listener); the next run is served', async () => {
      const proxy = await tcpProxy(databaseUrl());
      try {
        const roles = await openManager({
          dataSource: { type: 'postgres', url: proxy.url, poolSize: 2 },
          pool: { connectionTimeoutMillis: 3_000 },
          isolation: 'role',
          registryTable: `rv_role_${randomBytes(3).toString('hex')}`,
        });
        const slug = uniqueSlug('rr');
        await roles.createTenant(slug);
        await roles.run(slug, () => tenantContext.getRepository(Client).count());
        proxy.resetOn(pattern);
        await roles.run(slug, () => tenantContext.getRepository(Client).count()).catch(() => undefined);
        await new Promise((resolve) => setTimeout(resolve, 300));
        expect(proxy.resets()).to.equal(1);
        expect(await roles.run(slug, () => tenantContext.getRepository(Client).count())).to.equal(0);
      } finally {
        await proxy.stop();
      }
    });
  });
}

describe('review: the missing-table hint', function () {
  this.timeout(60_000);

  it('raw SQL in a run naming a shared table without its schema (SELECT ... FROM plan): no hint that Plan lacks @TenantScoped(), its table exists', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('rq');
    await manager.createTenant(slug);
    // The shared table is there.
    expect(await manager.sharedDataSource.getRepository(Plan).count()).to.be.a('number');
    const error = await failure(manager.run(slug, () => tenantContext.query('SELECT count(*) FROM plan')));
    expect((error as { code?: string }).code).to.equal('42P01');
    expect((error as Error).message).to.equal('relation "plan" does not exist');
    expect((error as { hint?: string }).hint ?? '').not.to.include('@TenantScoped()');
  });

  it('the same failed statement logged twice (a retry with the same driver error) carries the hint once', async () => {
    const manager = await openManager({ logger: (_entry: TenancyLogEntry) => undefined });
    const slug = uniqueSlug('rl');
    await manager.createTenant(slug);
    const dataSource = await manager.getDataSource(slug);
    const driverError = Object.assign(new Error('relation "public.plan" does not exist'), { code: '42P01' });
    dataSource.logger.logQueryError(driverError, 'SELECT 1', []);
    dataSource.logger.logQueryError(driverError, 'SELECT 1', []);
    expect(driverError.message.split('Entity Plan has no @TenantScoped()').length - 1, driverError.message).to.equal(1);
  });
});

/** A TCP proxy to the PostgreSQL server of `target`; `stop()` closes it and every connection through it (the server "goes away"). */
async function tcpProxy(target: string): Promise<{ url: string; stop(): Promise<void>; resetOn(pattern: string): void; resets(): number }> {
  const to = new URL(target);
  const sockets = new Set<Socket>();
  let armed: string | undefined;
  let resets = 0;
  const server: Server = createServer((inbound) => {
    const outbound = new Socket();
    sockets.add(inbound).add(outbound);
    outbound.connect(Number(to.port || 5432), to.hostname);
    inbound.on('data', (chunk: Buffer) => {
      if (armed !== undefined && chunk.includes(armed)) {
        // The server "dies" as this statement arrives: a TCP reset to the client, nothing forwarded.
        armed = undefined;
        resets += 1;
        outbound.destroy();
        inbound.resetAndDestroy();
        return;
      }
      if (!outbound.destroyed) outbound.write(chunk);
    });
    outbound.pipe(inbound);
    const drop = (): void => {
      inbound.destroy();
      outbound.destroy();
    };
    inbound.on('error', drop).on('close', drop);
    outbound.on('error', drop).on('close', drop);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(target);
  url.hostname = '127.0.0.1';
  url.port = String((server.address() as AddressInfo).port);
  let stopped: Promise<void> | undefined;
  return {
    url: url.toString(),
    resetOn(pattern) {
      armed = pattern;
    },
    resets: () => resets,
    stop() {
      stopped ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      });
      return stopped;
    },
  };
}
