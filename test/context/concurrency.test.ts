import { expect } from 'chai';
import { Client } from '../../entities';
import { tenantContext } from '../../src';
import { adminQuery, openManager, sleep, uniqueSlug } from '../support/fixtures';

const TENANTS = 50;
const WORKERS_PER_TENANT = 4; // concurrent runs per tenant
const OPS_PER_WORKER = 50; // 4 x 50 = 200 operations per tenant

const jitter = (): Promise<void> => sleep(Math.random() * 3);

describe('tenantContext under concurrency', () => {
  it(`${TENANTS} tenants x ${WORKERS_PER_TENANT * OPS_PER_WORKER} interleaved operations: every row read belongs to the tenant that asked`, async function () {
    this.timeout(120_000);
    const manager = await openManager();
    const slugs = Array.from({ length: TENANTS }, () => uniqueSlug('conc'));
    // Created a few at a time: creation is not what this test is about.
    for (let i = 0; i < slugs.length; i += 10) await Promise.all(slugs.slice(i, i + 10).map((slug) => manager.createTenant(slug)));

    const suffixOf = (slug: string): string => `@${slug}.test`;
    const violations: string[] = [];
    const inserted = new Map<string, string[]>(slugs.map((s) => [s, []]));
    let rowsChecked = 0;

    const checkRows = (slug: string, where: string, rows: Array<Pick<Client, 'email'> | null | undefined>): void => {
      const active = tenantContext.current()?.slug;
      if (active !== slug) violations.push(`${slug} ${where}: current() is ${String(active)}`);
      for (const row of rows) {
        if (row === null || row === undefined) continue;
        rowsChecked += 1;
        if (!row.email.endsWith(suffixOf(slug))) violations.push(`${slug} ${where}: read ${row.email}`);
      }
    };

    const worker = (slug: string, w: number): Promise<void> =>
      manager.run(slug, async () => {
        const repo = () => tenantContext.getRepository(Client);
        const mine: Array<{ id: number; email: string }> = [];
        await jitter();
        for (let i = 0; i < OPS_PER_WORKER; i += 1) {
          const roll = Math.random();
          if (roll < 0.4 || mine.length === 0) {
            const email = `w${w}-op${i}${suffixOf(slug)}`;
            await jitter();
            const saved = await repo().save({ name: slug, email });
            inserted.get(slug)!.push(email);
            mine.push({ id: saved.id, email });
            checkRows(slug, 'after save', [saved]);
          } else if (roll < 0.65) {
            // Ids are serial per schema, so the same id exists in other tenants: a leak returns their row.
            const target = mine[Math.floor(Math.random() * mine.length)]!;
            await jitter();
            const found = await repo().findOneBy({ id: target.id });
            if (found?.email !== target.email) violations.push(`${slug} findOneBy(${target.id}): ${found?.email} instead of ${target.email}`);
            checkRows(slug, 'findOneBy own', [found]);
          } else if (roll < 0.8) {
            const id = 1 + Math.floor(Math.random() * 60);
            const found = await repo().findOneBy({ id });
            checkRows(slug, `findOneBy(${id})`, [found]);
          } else {
            const rows = await repo().find({ order: { id: 'DESC' }, take: 25 });
            await jitter();
            checkRows(slug, 'find', rows);
            const ids = new Set(rows.map((r) => r.id));
            const newestOwn = mine[mine.length - 1]!;
            if (rows.length < 25 && !ids.has(newestOwn.id)) violations.push(`${slug} find: own row ${newestOwn.email} missing`);
          }
          if (i % 10 === 0) await jitter();
        }
      });

    // Every run of every tenant at once.
    await Promise.all(slugs.flatMap((slug) => Array.from({ length: WORKERS_PER_TENANT }, (_, w) => worker(slug, w))));

    expect(violations.slice(0, 20), `${violations.length} isolation violations`).to.deep.equal([]);
    expect(rowsChecked).to.be.greaterThan(TENANTS * WORKERS_PER_TENANT * OPS_PER_WORKER * 0.5);

    // Each tenant's physical table holds exactly its own rows.
    for (const slug of slugs) {
      const schema = slug.replace(/-/g, '_');
      const rows = await adminQuery<{ email: string; name: string }>(`SELECT email, name FROM "${schema}".client`);
      const expected = inserted.get(slug)!;
      expect(expected.length, `${slug} inserted something`).to.be.greaterThan(0);
      expect(rows, `${slug} row count`).to.have.length(expected.length);
      expect(rows.map((r) => r.email).sort()).to.deep.equal([...expected].sort());
      expect(rows.every((r) => r.name === slug), `${slug} names`).to.equal(true);
    }
    // Nothing landed in the shared schema.
    expect(await adminQuery("SELECT 1 FROM information_schema.tables WHERE table_schema = 'public' AND table_name = 'client'")).to.have.length(0);
    // One shared pool, bounded whatever the tenant count.
    expect(manager.stats().pool.total).to.be.at.most(10);
  });
});
