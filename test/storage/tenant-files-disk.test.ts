import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import {
  InvalidArgumentError,
  TenancyConfigurationError,
  TenantContextMissingError,
  TenantLifecycleHookError,
  tenantIncarnation,
  type TenantDataSourceManager,
  type TenantRecord,
} from '../../src';
import {
  InvalidFileKeyError,
  TenantFileNotFoundError,
  localDiskDriver,
  tenantFiles,
  type StorageDriver,
  type TenantFiles,
} from '../../src/storage';
import { openManager, uniqueSlug } from '../support/fixtures';
import { filesUnder, makeTemp, removeTemp } from './storage-support';

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection');
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of iterable) items.push(item);
  return items;
}

describe('tenantFiles on local disk', function () {
  this.timeout(60_000);
  let parent: string | undefined;
  let root: string;
  let outside: string;
  let manager: TenantDataSourceManager;
  let files: TenantFiles;
  let a: TenantRecord;
  let b: TenantRecord;
  const folderOf = (tenant: TenantRecord): string => join(root, tenant.schemaName, tenantIncarnation(tenant));

  beforeEach(async () => {
    parent = makeTemp('disk');
    root = join(parent, 'root');
    outside = join(parent, 'outside');
    await fsp.mkdir(outside);
    await fsp.writeFile(join(outside, 'secret.txt'), 'outside secret');
    manager = await openManager({ slugReuseDelayMs: 0 });
    files = tenantFiles(manager, { driver: localDiskDriver({ root }) });
    a = await manager.createTenant(uniqueSlug('fa'));
    b = await manager.createTenant(uniqueSlug('fb'));
  });

  afterEach(() => removeTemp(parent));

  it('outside a run every operation throws TenantContextMissingError, and nothing is written', async () => {
    for (const call of [
      () => files.put('x.txt', 'x'),
      () => files.get('x.txt'),
      () => files.stream('x.txt'),
      () => files.delete('x.txt'),
      () => files.exists('x.txt'),
      () => files.url('x.txt'),
    ]) {
      const error = await rejection(call());
      expect(error).to.be.instanceOf(TenantContextMissingError);
      expect((error as TenantContextMissingError).code).to.equal('TENANT_CONTEXT_MISSING');
    }
    expect(() => files.list()).to.throw(TenantContextMissingError);
    expect(await filesUnder(parent!)).to.deep.equal(['outside/secret.txt']);
  });

  it("two tenants' files with the same key sit physically in their own folders, <root>/<schema>/<incarnation>/<key>", async () => {
    await manager.run(a.slug, () => files.put('docs/report.txt', 'from a'));
    await manager.run(b.slug, () => files.put('docs/report.txt', 'from b'));
    expect(await filesUnder(root)).to.deep.equal(
      [`${a.schemaName}/${tenantIncarnation(a)}/docs/report.txt`, `${b.schemaName}/${tenantIncarnation(b)}/docs/report.txt`].sort(),
    );
    expect(await fsp.readFile(join(folderOf(a), 'docs', 'report.txt'), 'utf8')).to.equal('from a');
    expect(await fsp.readFile(join(folderOf(b), 'docs', 'report.txt'), 'utf8')).to.equal('from b');
    expect((await manager.run(a.slug, () => files.get('docs/report.txt'))).toString()).to.equal('from a');
    expect((await manager.run(b.slug, () => files.get('docs/report.txt'))).toString()).to.equal('from b');
    expect(await manager.run(a.slug, () => collect(files.list()))).to.have.length(1);
  });

  it("a key naming the other tenant's schema or path stays inside the caller's folder; climbing out is refused", async () => {
    await manager.run(b.slug, () => files.put('secret.txt', 'b secret'));
    const bPath = `${b.schemaName}/${tenantIncarnation(b)}/secret.txt`;
    await manager.run(a.slug, async () => {
      expect(await files.exists(bPath)).to.equal(false);
      expect(await rejection(files.get(bPath))).to.be.instanceOf(TenantFileNotFoundError);
      await files.put(bPath, 'written by a');
      for (const key of [`../../${bPath}`, `../${tenantIncarnation(b)}/secret.txt`, `/${bPath}`, `${root}/${bPath}`, `..%2f..%2f${bPath}`]) {
        const error = await rejection(files.get(key));
        expect(error, key).to.be.instanceOf(InvalidFileKeyError);
        expect((error as InvalidFileKeyError).code).to.equal('INVALID_FILE_KEY');
        expect((error as InvalidFileKeyError).statusCode).to.equal(400);
        expect(await rejection(files.put(key, 'overwrite'))).to.be.instanceOf(InvalidFileKeyError);
      }
    });
    // a's file went under a's own folder; b's file is untouched.
    expect(await fsp.readFile(join(folderOf(a), b.schemaName, tenantIncarnation(b), 'secret.txt'), 'utf8')).to.equal('written by a');
    expect(await fsp.readFile(join(folderOf(b), 'secret.txt'), 'utf8')).to.equal('b secret');
    expect(await filesUnder(join(root, b.schemaName))).to.deep.equal([`${tenantIncarnation(b)}/secret.txt`]);
  });

  it('a missing file is TenantFileNotFoundError (404), not ENOENT; delete of a missing key is no error', async () => {
    await manager.run(a.slug, async () => {
      for (const error of [await rejection(files.get('nope.txt')), await rejection(files.stream('nope/deeper.txt'))]) {
        expect(error).to.be.instanceOf(TenantFileNotFoundError);
        expect((error as TenantFileNotFoundError).code).to.equal('TENANT_FILE_NOT_FOUND');
        expect((error as TenantFileNotFoundError).statusCode).to.equal(404);
      }
      expect(await files.exists('nope.txt')).to.equal(false);
      await files.delete('nope.txt');
      await files.put('folder/file.txt', 'x');
      // A folder is not a file.
      expect(await rejection(files.get('folder'))).to.be.instanceOf(TenantFileNotFoundError);
      expect(await files.exists('folder')).to.equal(false);
      // On disk a key cannot be both a file and a folder of other keys.
      expect(await rejection(files.put('folder', 'y'))).to.be.instanceOf(InvalidFileKeyError);
      expect(await rejection(files.put('folder/file.txt/inner', 'y'))).to.be.instanceOf(InvalidFileKeyError);
      await files.delete('folder/file.txt');
      expect(await files.exists('folder/file.txt')).to.equal(false);
    });
    expect(await filesUnder(folderOf(a))).to.deep.equal([]);
  });

  it('put takes Buffers, strings, Uint8Arrays and streams; stream() streams; put replaces; list is in key order with prefixes', async () => {
    await manager.run(a.slug, async () => {
      await files.put('b/one.bin', Buffer.from([1, 2, 3]));
      await files.put('b/two.txt', 'two');
      await files.put('a-b', new Uint8Array([9]));
      await files.put('b/streamed.txt', Readable.from([Buffer.from('str'), 'eamed']));
      await files.put('b/two.txt', 'two, replaced');
      await files.put('é', 'precomposed');
      expect((await files.get('e\u0301')).toString()).to.equal('precomposed'); // NFC: one key
      const chunks: Buffer[] = [];
      for await (const chunk of await files.stream('b/streamed.txt')) chunks.push(chunk as Buffer);
      expect(Buffer.concat(chunks).toString()).to.equal('streamed');
      const listed = await collect(files.list());
      expect(listed.map((f) => f.key)).to.deep.equal(['a-b', 'b/one.bin', 'b/streamed.txt', 'b/two.txt', 'é']);
      expect(listed.find((f) => f.key === 'b/two.txt')!.size).to.equal('two, replaced'.length);
      expect(listed[0]!.lastModified).to.be.instanceOf(Date);
      expect((await collect(files.list('b/'))).map((f) => f.key)).to.deep.equal(['b/one.bin', 'b/streamed.txt', 'b/two.txt']);
      expect((await collect(files.list('b/t'))).map((f) => f.key)).to.deep.equal(['b/two.txt']);
      expect((await collect(files.list('a'))).map((f) => f.key)).to.deep.equal(['a-b']);
      expect(await collect(files.list('zzz/'))).to.deep.equal([]);
      expect(() => files.list('../')).to.throw(InvalidFileKeyError);
      expect(() => files.list('/')).to.throw(InvalidFileKeyError);
    });
    // No temporary file is left behind next to the targets.
    expect((await filesUnder(folderOf(a))).filter((name) => name.includes('.tenant-files-'))).to.deep.equal([]);
  });

  it('put replaces atomically: concurrent puts leave one whole body, a failing stream leaves the old file, no temporary file stays', async () => {
    const bodies = Array.from({ length: 20 }, (_, i) => `body ${i} `.repeat(1_000));
    await manager.run(a.slug, async () => {
      await Promise.all(bodies.map((body) => files.put('shared/doc.txt', body)));
      expect(bodies).to.include((await files.get('shared/doc.txt')).toString());
      const failing = new Readable({
        read() {
          this.push(Buffer.from('partial '));
          this.destroy(new Error('upload aborted'));
        },
      });
      expect((await rejection(files.put('shared/doc.txt', failing))).message).to.equal('upload aborted');
      expect(bodies).to.include((await files.get('shared/doc.txt')).toString());
    });
    expect(await filesUnder(folderOf(a))).to.deep.equal(['shared/doc.txt']);
  });

  it('a symlink planted in a tenant folder, pointing outside the root or into the other tenant, is refused for every operation', async () => {
    await manager.run(a.slug, () => files.put('real.txt', 'a real'));
    await manager.run(b.slug, () => files.put('secret.txt', 'b secret'));
    await fsp.symlink(outside, join(folderOf(a), 'to-outside'));
    await fsp.symlink(folderOf(b), join(folderOf(a), 'to-b'));
    await fsp.symlink(join(folderOf(b), 'secret.txt'), join(folderOf(a), 'b-secret.txt'));
    await manager.run(a.slug, async () => {
      for (const key of ['to-outside/secret.txt', 'to-b/secret.txt', 'b-secret.txt']) {
        for (const call of [() => files.get(key), () => files.stream(key), () => files.exists(key), () => files.delete(key), () => files.put(key, 'pwned')]) {
          const error = await rejection(call());
          expect(error, key).to.be.instanceOf(InvalidFileKeyError);
          expect(error.message).to.include('symbolic link');
        }
      }
      expect(await rejection(files.put('to-outside/new.txt', 'pwned'))).to.be.instanceOf(InvalidFileKeyError);
      expect(await rejection(files.put('to-b/deeper/new.txt', 'pwned'))).to.be.instanceOf(InvalidFileKeyError);
      expect(await rejection(collect(files.list()))).to.be.instanceOf(InvalidFileKeyError);
      expect((await files.get('real.txt')).toString()).to.equal('a real');
    });
    expect(await filesUnder(outside)).to.deep.equal(['secret.txt']);
    expect(await fsp.readFile(join(outside, 'secret.txt'), 'utf8')).to.equal('outside secret');
    expect(await filesUnder(folderOf(b))).to.deep.equal(['secret.txt']);
    expect(await fsp.readFile(join(folderOf(b), 'secret.txt'), 'utf8')).to.equal('b secret');
  });

  it("a tenant folder that is itself a symlink (to another tenant's folder) is refused", async () => {
    await manager.run(b.slug, () => files.put('secret.txt', 'b secret'));
    const c = await manager.createTenant(uniqueSlug('fc'));
    await fsp.mkdir(join(root, c.schemaName));
    await fsp.symlink(folderOf(b), folderOf(c));
    await manager.run(c.slug, async () => {
      expect(await rejection(files.get('secret.txt'))).to.be.instanceOf(InvalidFileKeyError);
      expect(await rejection(files.put('new.txt', 'x'))).to.be.instanceOf(InvalidFileKeyError);
      expect(() => files.list()).not.to.throw();
      expect(await rejection(collect(files.list()))).to.be.instanceOf(InvalidFileKeyError);
    });
    expect(await filesUnder(folderOf(b))).to.deep.equal(['secret.txt']);
    // Dropping c removes the link, never what it points at.
    await manager.dropTenant(c.slug, { force: true });
    expect(await fsp.lstat(folderOf(c)).catch(() => undefined)).to.equal(undefined);
    expect(await fsp.readFile(join(folderOf(b), 'secret.txt'), 'utf8')).to.equal('b secret');
  });

  it('url() needs baseUrl (a clear configuration error otherwise) and names the tenant folder; unsigned URLs refuse an expiry', async () => {
    const error = await manager.run(a.slug, () => rejection(files.url('logo.png')));
    expect(error).to.be.instanceOf(TenancyConfigurationError);
    expect(error.message).to.include('baseUrl');
    files.close();
    const served = tenantFiles(manager, { driver: localDiskDriver({ root, baseUrl: 'https://files.example.test/t/' }) });
    await manager.run(a.slug, async () => {
      expect(await served.url('logos/big logo.png')).to.equal(`https://files.example.test/t/${a.schemaName}/${tenantIncarnation(a)}/logos/big%20logo.png`);
      expect(await rejection(served.url('logo.png', { expiresInSeconds: 60 }))).to.be.instanceOf(InvalidArgumentError);
      expect(await rejection(served.url('../x'))).to.be.instanceOf(InvalidFileKeyError);
    });
    expect(() => localDiskDriver({ root, baseUrl: 'ftp://x' })).to.throw(TenancyConfigurationError);
  });

  it("dropTenant deletes exactly that tenant's files (nested folders too), and the other tenant's stay", async () => {
    await manager.run(a.slug, async () => {
      for (let i = 0; i < 250; i += 1) await files.put(`f/${i % 7}/${i}.txt`, `a${i}`);
    });
    await manager.run(b.slug, () => files.put('keep.txt', 'b keeps'));
    await manager.dropTenant(a.slug, { force: true });
    expect(await fsp.lstat(join(root, a.schemaName)).catch(() => undefined), 'the schema folder goes when empty').to.equal(undefined);
    expect(await filesUnder(root)).to.deep.equal([`${b.schemaName}/${tenantIncarnation(b)}/keep.txt`]);
    expect(await manager.getTenant(a.slug)).to.equal(undefined);
  });

  it('archive and restore keep the files: on disk while archived, readable after restore', async () => {
    await manager.run(a.slug, () => files.put('contract.pdf', 'signed'));
    await manager.archiveTenant(a.slug);
    expect(await fsp.readFile(join(folderOf(a), 'contract.pdf'), 'utf8')).to.equal('signed');
    const restored = await manager.restoreTenant(a.slug);
    expect(tenantIncarnation(restored)).to.equal(tenantIncarnation(a));
    expect((await manager.run(a.slug, () => files.get('contract.pdf'))).toString()).to.equal('signed');
  });

  it('a drop whose file deletion fails leaves the tenant dropping with its files; dropTenant again finishes', async () => {
    files.close();
    const disk = localDiskDriver({ root, deleteBatchSize: 3 });
    let failures = 1;
    const flaky: StorageDriver = {
      ...bind(disk),
      kind: disk.kind,
      async deleteScope(scope) {
        // Remove part of the tree for real, then fail: what a crash half-way leaves.
        const folder = join(root, scope.schemaName, scope.incarnation, 'f', '0');
        await fsp.rm(folder, { recursive: true, force: true });
        if (failures-- > 0) throw new Error('disk went away');
        return disk.deleteScope(scope);
      },
    };
    const resumable = tenantFiles(manager, { driver: flaky });
    await manager.run(a.slug, async () => {
      for (let i = 0; i < 40; i += 1) await resumable.put(`f/${i % 4}/${i}.txt`, 'x');
    });
    const error = await rejection(manager.dropTenant(a.slug, { force: true }));
    expect(error).to.be.instanceOf(TenantLifecycleHookError);
    expect(error.message).to.include('disk went away');
    expect((await manager.getTenant(a.slug))?.status).to.equal('dropping');
    expect(await filesUnder(folderOf(a))).to.have.length(30);
    await manager.dropTenant(a.slug, { force: true });
    expect(await manager.getTenant(a.slug)).to.equal(undefined);
    expect(await filesUnder(root)).to.deep.equal([]);
  });

  it('a tenant created again under a dropped slug gets a new incarnation and never sees files left under the old one', async () => {
    await manager.run(a.slug, () => files.put('old.txt', 'old life'));
    const oldFolder = folderOf(a);
    await manager.dropTenant(a.slug, { force: true });
    // A process that still held the old tenant writes after the drop.
    await fsp.mkdir(oldFolder, { recursive: true });
    await fsp.writeFile(join(oldFolder, 'old.txt'), 'late write of the old life');
    const again = await manager.createTenant(a.slug);
    expect(tenantIncarnation(again)).not.to.equal(tenantIncarnation(a));
    await manager.run(again.slug, async () => {
      expect(await files.exists('old.txt')).to.equal(false);
      expect(await collect(files.list())).to.deep.equal([]);
    });
  });

  it('refuses a run of another manager, and bad put arguments', async () => {
    const other = await openManager({ slugReuseDelayMs: 0 });
    const c = await other.createTenant(uniqueSlug('fo'));
    const error = await other.run(c.slug, () => rejection(files.put('x', 'y')));
    expect(error).to.be.instanceOf(TenancyConfigurationError);
    await manager.run(a.slug, async () => {
      expect(await rejection(files.put('x', 42 as unknown as string))).to.be.instanceOf(InvalidArgumentError);
      expect(await rejection(files.put('x', 'y', { contentType: 'text/plain\r\nX-Evil: 1' }))).to.be.instanceOf(InvalidArgumentError);
    });
    await other.dropTenant(c.slug, { force: true });
  });
});

/** The driver's methods bound to it, so a spread copy can override some. */
function bind(driver: StorageDriver): StorageDriver {
  return {
    kind: driver.kind,
    put: driver.put.bind(driver),
    get: driver.get.bind(driver),
    stream: driver.stream.bind(driver),
    list: driver.list.bind(driver),
    delete: driver.delete.bind(driver),
    exists: driver.exists.bind(driver),
    url: driver.url.bind(driver),
    deleteScope: driver.deleteScope.bind(driver),
  };
}

describe('tenantFiles on local disk, with a folder swapped for a symlink concurrently', function () {
  this.timeout(120_000);
  let parent: string | undefined;

  afterEach(() => removeTemp(parent));

  it('never reads, lists or deletes through the link: each call sees the real folder, or refuses, or finds nothing', async () => {
    parent = makeTemp('swap');
    const root = join(parent, 'root');
    const outside = join(parent, 'outside');
    await fsp.mkdir(outside);
    await fsp.writeFile(join(outside, 'secret.txt'), 'OUTSIDE');
    await fsp.writeFile(join(outside, 'victim.txt'), 'must survive');
    const manager = await openManager();
    const files = tenantFiles(manager, { driver: localDiskDriver({ root }) });
    const tenant = await manager.createTenant(uniqueSlug('fs'));
    await manager.run(tenant.slug, () => files.put('d/secret.txt', 'inside'));
    const folder = join(root, tenant.schemaName, tenantIncarnation(tenant), 'd');
    // A separate process swaps d for a link to `outside` and back, as fast as it can.
    const swapper = spawn(process.execPath, [join(__dirname, 'swap-process.js'), folder, outside], { stdio: ['pipe', 'pipe', 'inherit'] });
    let output = '';
    const exited = new Promise<void>((resolve) => swapper.once('exit', () => resolve()));
    await new Promise<void>((resolve) => swapper.stdout.once('data', (chunk: Buffer) => ((output += chunk.toString()), resolve())));
    swapper.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const reads = { inside: 0, refused: 0, missing: 0 };
    const tolerated = (error: unknown, counter?: 'refused' | 'missing'): void => {
      if (error instanceof InvalidFileKeyError) reads.refused += counter === 'refused' ? 1 : 0;
      else if (error instanceof TenantFileNotFoundError) reads.missing += counter === 'missing' ? 1 : 0;
      else throw error;
    };
    try {
      await manager.run(tenant.slug, async () => {
        for (let i = 0; i < 2_000; i += 1) {
          try {
            expect((await files.get('d/secret.txt')).toString()).to.equal('inside');
            reads.inside += 1;
          } catch (error) {
            tolerated(error, error instanceof InvalidFileKeyError ? 'refused' : 'missing');
          }
          try {
            expect(await files.exists('d/victim.txt')).to.equal(false);
            await files.delete('d/victim.txt');
            for await (const file of files.list('d/')) expect(file.key).to.equal('d/secret.txt');
          } catch (error) {
            tolerated(error);
          }
        }
      });
    } finally {
      swapper.stdin.end();
      await exited;
    }
    const swaps = Number(output.trim().split('\n').pop());
    console.log(`      (${swaps} swaps; reads: ${reads.inside} real file, ${reads.refused} refused, ${reads.missing} not found)`);
    expect(swaps).to.be.greaterThan(0);
    expect(reads.inside).to.be.greaterThan(0);
    expect((await fsp.readdir(outside)).sort()).to.deep.equal(['secret.txt', 'victim.txt']);
    expect(await fsp.readFile(join(outside, 'victim.txt'), 'utf8')).to.equal('must survive');
  });
});
