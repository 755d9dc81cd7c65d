import { Writable } from 'node:stream';
import { expect } from 'chai';
import pino from 'pino';
import { Client } from '../../entities';
import { TenantContextMissingError, tenantContext, tenantLogger } from '../../src';
import { openManager, uniqueSlug } from '../support/fixtures';

/** A pino destination that keeps every line it is given. */
function capture(): { stream: Writable; lines: () => Array<Record<string, unknown>> } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk.toString('utf8'));
      callback();
    },
  });
  return {
    stream,
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter((line) => line.length > 0)
        .map((line) => JSON.parse(line) as Record<string, unknown>),
  };
}

describe('Observability: tenantLogger', () => {
  it('pino: every line of 3 tenants running concurrently carries its own tenant and schema', async () => {
    const manager = await openManager();
    const slugs = [uniqueSlug('lg-a'), uniqueSlug('lg-b'), uniqueSlug('lg-c')];
    for (const slug of slugs) await manager.createTenant(slug);
    const { stream, lines } = capture();
    const base = pino({ base: undefined, timestamp: false }, stream);

    await Promise.all(
      slugs.flatMap((slug) =>
        Array.from({ length: 10 }, (_, i) =>
          manager.run(slug, async () => {
            tenantLogger(base).info({ step: i, phase: 'before' }, 'working');
            await tenantContext.getRepository(Client).count(); // an await on the database between the two lines
            await new Promise((resolve) => setImmediate(resolve));
            tenantLogger(base).warn('done %d', i);
          }),
        ),
      ),
    );

    const written = lines();
    expect(written).to.have.length(60);
    for (const slug of slugs) {
      const mine = written.filter((line) => line.tenant === slug);
      expect(mine, slug).to.have.length(20);
      for (const line of mine) expect(line.schema).to.equal(slug.replace(/-/g, '_'));
      expect(mine.filter((l) => l.msg === 'working').map((l) => l.step).sort()).to.deep.equal([0, 1, 2, 3, 4, 5, 6, 7, 8, 9].sort());
      expect(mine.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('done ')).map((l) => l.msg)).to.have.length(10);
    }
    for (const slug of slugs) await manager.dropTenant(slug, { force: true });
  });

  it('the same child per tenant record; a nested run gets the inner tenant', async () => {
    const manager = await openManager();
    const [outer, inner] = [uniqueSlug('lg-o'), uniqueSlug('lg-i')];
    await manager.createTenant(outer);
    await manager.createTenant(inner);
    const { stream, lines } = capture();
    const base = pino({ base: undefined, timestamp: false }, stream);
    await manager.run(outer, async () => {
      expect(tenantLogger(base)).to.equal(tenantLogger(base));
      await manager.run(inner, () => tenantLogger(base).info('inner'));
      tenantLogger(base).info('outer');
    });
    expect(lines().map((l) => [l.msg, l.tenant])).to.deep.equal([
      ['inner', inner],
      ['outer', outer],
    ]);
    await manager.dropTenant(outer, { force: true });
    await manager.dropTenant(inner, { force: true });
  });

  it('a logger without child(): a function gets the fields merged in its first argument; an object of methods (console-like) is wrapped method by method', async () => {
    const manager = await openManager();
    const slug = uniqueSlug('lg-f');
    await manager.createTenant(slug);
    const calls: unknown[][] = [];
    const fn = (...args: unknown[]): void => {
      calls.push(args);
    };
    const consoleLike = {
      info: (...args: unknown[]) => calls.push(['info', ...args]),
      error: (...args: unknown[]) => calls.push(['error', ...args]),
    };
    await manager.run(slug, () => {
      const log = tenantLogger(fn);
      log('plain', 1);
      log({ requestId: 'r1' }, 'with fields');
      const object = tenantLogger(consoleLike);
      object.info('hello');
      object.error({ code: 'E' }, 'bad');
    });
    const fields = { tenant: slug, schema: slug.replace(/-/g, '_') };
    expect(calls).to.deep.equal([
      [fields, 'plain', 1],
      [{ ...fields, requestId: 'r1' }, 'with fields'],
      ['info', fields, 'hello'],
      ['error', { ...fields, code: 'E' }, 'bad'],
    ]);
    await manager.dropTenant(slug, { force: true });
  });

  it('outside a run: TenantContextMissingError, for every kind of logger', () => {
    expect(() => tenantLogger(pino({ enabled: false }))).to.throw(TenantContextMissingError, 'tenantLogger()');
    expect(() => tenantLogger(() => undefined)).to.throw(TenantContextMissingError);
    expect(() => tenantLogger(console)).to.throw(TenantContextMissingError);
  });
});
