import { expect } from 'chai';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli, runCliJson, schemaOf, uniqueRegistry } from '../cli/cli-support';
import { adminQuery, uniqueSlug } from '../support/fixtures';

describe('CLI: export and import', () => {
  let directory: string;
  beforeEach(async () => {
    directory = await mkdtemp(join(tmpdir(), 'cli-archive-'));
  });
  afterEach(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  it('export writes the archive and reports its tables; import creates the copy with the same rows; errors are one line with their code', async () => {
    const env = { registry: uniqueRegistry() };
    const slug = uniqueSlug('cli-exp');
    const copy = uniqueSlug('cli-imp');
    await runCliJson(['create', slug], env);
    await adminQuery(`INSERT INTO "${schemaOf(slug)}".client (name, email) SELECT 'C' || i, 'c' || i || '@x.test' FROM generate_series(1, 25) i`);

    const file = join(directory, 'a.tenant.gz');
    const exported = await runCliJson<{ file: string; tables: Array<{ name: string; rows: string }> }>(['export', slug, file], env);
    expect(exported.file).to.equal(file);
    expect(exported.tables).to.deep.include({ name: 'client', rows: '25' });

    const imported = await runCliJson<{ slug: string; status: string }>(['import', copy, file, '--name', 'The copy'], env);
    expect(imported).to.include({ slug: copy, status: 'active' });
    const rows = async (s: string): Promise<unknown[]> => adminQuery(`SELECT id, name, email FROM "${schemaOf(s)}".client ORDER BY id`);
    expect(await rows(copy)).to.deep.equal(await rows(slug));

    const again = await runCli(['export', slug, file], env);
    expect(again.code).to.equal(1);
    expect(again.stderr).to.match(/^error \[INVALID_ARGUMENT\]: The archive file .* exists/);
    expect(again.stderr.trimEnd().split('\n')).to.have.length(1);

    const bogus = join(directory, 'bogus.gz');
    await writeFile(bogus, 'not an archive');
    const refused = await runCli(['import', uniqueSlug('cli-bad'), bogus], env);
    expect(refused.code).to.equal(1);
    expect(refused.stderr).to.match(/^error \[TENANT_ARCHIVE_INVALID\]: The tenant archive cannot be imported/);
    expect(refused.stderr.trimEnd().split('\n')).to.have.length(1);
  });
});
