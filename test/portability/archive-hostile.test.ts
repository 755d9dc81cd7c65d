import { expect } from 'chai';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { Client, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { TenantArchiveError, tenantContext } from '../../src';
import { withFreshDatabase } from '../support/fresh-database';

const MODEL = { entities: [Client, Project, Plan], tenantMigrations, sharedMigrations };

describe('importTenant against a hostile archive and a pooled connection', () => {
  let directory: string;
  beforeEach(async () => {
    directory = await mkdtemp(join(tmpdir(), 'archive-hostile-'));
  });
  afterEach(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  it("a manifest's sequence names are never SQL: another tenant's sequence is not moved, and the import is refused", async () => {
    await withFreshDatabase(MODEL, async (db) => {
      const tenants = db.manager({ dataSource: { type: 'postgres', url: db.url, poolSize: 2 } });
      await tenants.initialize();
      await tenants.createTenant('victim');
      await tenants.createTenant('src');
      await tenants.run('victim', () => tenantContext.getRepository(Client).insert({ name: 'V', email: 'v@victim.test' }));
      const file = join(directory, 'src.gz');
      await tenants.exportTenant('src', file);
      const text = gunzipSync(await readFile(file)).toString('utf8');
      for (const name of ['victim.client_id_seq', '"victim"."client_id_seq"', 'client_id_seq", "victim"."client_id_seq']) {
        const forged = text.replace('"name":"client_id_seq"', `"name":${JSON.stringify(name)}`).replace(/"lastValue":"\d+"/, '"lastValue":"999999"');
        expect(forged, name).to.not.equal(text);
        const path = join(directory, 'forged.gz');
        await writeFile(path, gzipSync(Buffer.from(forged)));
        const error = await tenants.importTenant('forged', path).catch((e: unknown) => e);
        expect(error, name).to.be.instanceOf(TenantArchiveError);
        expect(await tenants.getTenant('forged')).to.equal(undefined);
      }
      expect(await db.query('SELECT last_value::int AS v FROM victim.client_id_seq')).to.deep.equal([{ v: 1 }]);
    });
  });

  it("after imports that succeed and fail, every pooled connection has the database's TimeZone and DateStyle again", async () => {
    await withFreshDatabase(MODEL, async (db) => {
      await db.query("ALTER DATABASE \"" + db.name + "\" SET TimeZone TO 'Asia/Tokyo'");
      const tenants = db.manager({ dataSource: { type: 'postgres', url: db.url, poolSize: 2 } });
      await tenants.initialize();
      await tenants.createTenant('a');
      await tenants.run('a', () => tenantContext.getRepository(Client).insert({ name: 'A', email: 'a@a.test' }));
      const file = join(directory, 'a.gz');
      await tenants.exportTenant('a', file);
      await tenants.importTenant('b', file);
      const bad = join(directory, 'bad.gz');
      await writeFile(bad, gzipSync(Buffer.from(gunzipSync(await readFile(file)).toString('utf8').replace('a@a.test', 'x@a.test'))));
      await expect(tenants.importTenant('c', bad)).to.be.rejectedWith(TenantArchiveError);
      const seen = new Set<string>();
      await Promise.all(
        Array.from({ length: 6 }, () =>
          tenants.run('b', async () => {
            const [row] = await tenantContext.query<Array<{ tz: string; ds: string; pid: number }>>(
              "SELECT current_setting('TimeZone') AS tz, current_setting('DateStyle') AS ds, pg_backend_pid() AS pid",
            );
            seen.add(`${row!.tz}|${row!.ds}`);
          }),
        ),
      );
      const [defaults] = await db.query<{ ds: string }>("SELECT current_setting('DateStyle') AS ds");
      expect([...seen]).to.deep.equal([`Asia/Tokyo|${defaults!.ds}`]);
      // Generated SQL of the copy reads the rows under the tenant's own name.
      const rows = await tenants.run('b', () => tenantContext.getRepository(Client).find());
      expect(rows.map((r) => r.email)).to.deep.equal(['a@a.test']);
    });
  });

  it("under isolation: 'role' the imported tenant's role is granted its tables and reads them, and not another tenant's", async () => {
    await withFreshDatabase(MODEL, async (db) => {
      const tenants = db.manager({ isolation: 'role' });
      await tenants.initialize();
      await tenants.createTenant('origin');
      await tenants.run('origin', () => tenantContext.getRepository(Client).insert({ name: 'O', email: 'o@origin.test' }));
      const file = join(directory, 'origin.gz');
      await tenants.exportTenant('origin', file);
      await tenants.importTenant('copy', file);
      const emails = await tenants.run('copy', async () => (await tenantContext.query<Array<{ email: string }>>('SELECT email FROM client')).map((r) => r.email));
      expect(emails).to.deep.equal(['o@origin.test']);
      const error = await tenants.run('copy', () => tenantContext.query('SELECT * FROM origin.client')).catch((e: unknown) => e);
      expect((error as { driverError?: { code?: string } }).driverError?.code ?? (error as { code?: string }).code).to.equal('42501');
    });
  });
});
