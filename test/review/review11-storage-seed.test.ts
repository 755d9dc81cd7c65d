/**
 * Review of issue 11, typeorm-tenants/storage: files written by a seed hook
 * of a createTenant() that then fails. A failing probe is a finding.
 */
import { expect } from 'chai';
import type { TenantDataSourceManager } from '../../src';
import { localDiskDriver, tenantFiles } from '../../src/storage';
import { openManager, uniqueSlug } from '../support/fixtures';
import { filesUnder, makeTemp, removeTemp } from '../storage/storage-support';

describe('review11 storage: a failed createTenant() whose seed wrote files', () => {
  let manager: TenantDataSourceManager;
  let root: string | undefined;
  beforeEach(async () => {
    manager = await openManager();
    root = makeTemp('rv11-files');
  });
  afterEach(() => removeTemp(root));

  it('nothing half-made: the files of a creation that rolled back do not stay on disk (nor after the slug is created again and dropped)', async () => {
    const files = tenantFiles(manager, { driver: localDiskDriver({ root: root! }) });
    const slug = uniqueSlug('rv11f');
    await expect(
      manager.createTenant(slug, {
        seed: async () => {
          await files.put('welcome/readme.txt', 'private to the tenant that was never created');
          throw new Error('seed failed after writing a file');
        },
      }),
    ).to.be.rejected;
    const afterFailure = await filesUnder(root!);
    await manager.createTenant(slug);
    await manager.dropTenant(slug, { force: true });
    const afterDrop = await filesUnder(root!);
    files.close();
    expect({ afterFailure, afterDrop }).to.deep.equal({ afterFailure: [], afterDrop: [] });
  });
});
