import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { expect } from 'chai';
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
import { InvalidFileKeyError, TenantFileNotFoundError, s3Driver, tenantFiles, type TenantFiles } from '../../src/storage';
import { openManager, uniqueSlug } from '../support/fixtures';
import { startLoopbackS3, type LoopbackS3 } from './storage-support';

const BUCKET = 'tenant-files-test';

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

/** Every object key in the bucket, read with ListObjectsV2 page by page, sorted. */
async function bucketKeys(client: S3Client, prefix = ''): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix, ContinuationToken: token }));
    for (const object of page.Contents ?? []) keys.push(object.Key!);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  return keys.sort();
}

/** Counts (and optionally fails) the client's requests of one command, through the SDK's middleware stack. */
function watchCommand(client: S3Client, command: string, failAt?: number): { count: number; remove(): void } {
  const watch = { count: 0, remove: () => client.middlewareStack.remove(`watch-${command}`) };
  client.middlewareStack.add(
    (next, context) => async (args) => {
      if (context.commandName === command) {
        watch.count += 1;
        if (watch.count === failAt) throw new Error(`injected failure of ${command} #${failAt}`);
      }
      return next(args);
    },
    { step: 'initialize', name: `watch-${command}` },
  );
  return watch;
}

/**
 * The S3 driver against s3rver 3.7 on loopback: a stand-in for S3 started by
 * the test (in a child process; see s3rver-process.ts), not AWS itself.
 */
describe('tenantFiles on S3 (s3rver on loopback)', function () {
  this.timeout(120_000);
  let s3: LoopbackS3;
  let client: S3Client;
  let manager: TenantDataSourceManager;
  let files: TenantFiles;
  let a: TenantRecord;
  let b: TenantRecord;
  const prefixOf = (tenant: TenantRecord): string => `app/${tenant.schemaName}/${tenantIncarnation(tenant)}/`;

  before(async () => {
    s3 = await startLoopbackS3([BUCKET]);
  });

  after(async () => {
    await s3?.stop();
  });

  beforeEach(async () => {
    client = s3.client();
    manager = await openManager();
    files = tenantFiles(manager, { driver: s3Driver({ client, bucket: BUCKET, prefix: 'app' }) });
    a = await manager.createTenant(uniqueSlug('sa'));
    b = await manager.createTenant(uniqueSlug('sb'));
  });

  afterEach(async () => {
    // Leave the bucket empty for the next test whatever happened.
    for (const tenant of [a, b]) {
      if ((await manager.getTenant(tenant.slug)) !== undefined) await manager.dropTenant(tenant.slug, { force: true });
    }
    expect(await bucketKeys(client)).to.deep.equal([]);
  });

  it('outside a run every operation throws TenantContextMissingError and sends nothing', async () => {
    const puts = watchCommand(client, 'PutObjectCommand');
    for (const call of [() => files.put('x', 'x'), () => files.get('x'), () => files.stream('x'), () => files.delete('x'), () => files.exists('x'), () => files.url('x')]) {
      expect(await rejection(call())).to.be.instanceOf(TenantContextMissingError);
    }
    expect(() => files.list()).to.throw(TenantContextMissingError);
    expect(puts.count).to.equal(0);
    puts.remove();
  });

  it("two tenants' objects with one key sit under their own prefix <prefix>/<schema>/<incarnation>/, as ListObjectsV2 on the bucket shows", async () => {
    await manager.run(a.slug, () => files.put('docs/report.txt', 'from a', { contentType: 'text/plain' }));
    await manager.run(b.slug, () => files.put('docs/report.txt', 'from b'));
    // A key naming the other tenant's prefix stays under the caller's.
    await manager.run(a.slug, () => files.put(`app/${b.schemaName}/${tenantIncarnation(b)}/docs/report.txt`, 'a again'));
    expect(await bucketKeys(client)).to.deep.equal(
      [
        `${prefixOf(a)}docs/report.txt`,
        `${prefixOf(a)}app/${b.schemaName}/${tenantIncarnation(b)}/docs/report.txt`,
        `${prefixOf(b)}docs/report.txt`,
      ].sort(),
    );
    const head = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: `${prefixOf(a)}docs/report.txt` }));
    expect(head.ContentType).to.equal('text/plain');
    const raw = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: `${prefixOf(b)}docs/report.txt` }));
    expect(await raw.Body!.transformToString()).to.equal('from b');
    expect((await manager.run(a.slug, () => files.get('docs/report.txt'))).toString()).to.equal('from a');
    expect((await manager.run(b.slug, () => files.get('docs/report.txt'))).toString()).to.equal('from b');
    expect((await manager.run(b.slug, () => collect(files.list()))).map((f) => f.key)).to.deep.equal(['docs/report.txt']);
    await manager.run(a.slug, async () => {
      expect(await rejection(files.get(`../../${b.schemaName}/${tenantIncarnation(b)}/docs/report.txt`))).to.be.instanceOf(InvalidFileKeyError);
      expect(await rejection(files.put('..%2f..%2fx', 'x'))).to.be.instanceOf(InvalidFileKeyError);
    });
  });

  it('a missing object is TenantFileNotFoundError (not NoSuchKey); exists, delete, streams both ways', async () => {
    await manager.run(a.slug, async () => {
      for (const error of [await rejection(files.get('nope')), await rejection(files.stream('nope'))]) {
        expect(error).to.be.instanceOf(TenantFileNotFoundError);
        expect((error as TenantFileNotFoundError).statusCode).to.equal(404);
        expect((error.cause as Error).name).to.equal('NoSuchKey');
      }
      expect(await files.exists('nope')).to.equal(false);
      await files.delete('nope');
      await files.put('streamed-known.txt', Readable.from([Buffer.from('known ')]), { contentLength: 6 });
      await files.put('streamed-unknown.txt', Readable.from([Buffer.from('unknown '), Buffer.from('length')]));
      expect((await files.get('streamed-known.txt')).toString()).to.equal('known ');
      const chunks: Buffer[] = [];
      for await (const chunk of await files.stream('streamed-unknown.txt')) chunks.push(Buffer.from(chunk as Uint8Array));
      expect(Buffer.concat(chunks).toString()).to.equal('unknown length');
      expect(await files.exists('streamed-known.txt')).to.equal(true);
      await files.delete('streamed-known.txt');
      expect(await files.exists('streamed-known.txt')).to.equal(false);
    });
    expect(await bucketKeys(client)).to.deep.equal([`${prefixOf(a)}streamed-unknown.txt`]);
  });

  it('list() pages through more than 1,000 objects in key order; dropTenant deletes them with DeleteObjects of at most 1,000 keys', async () => {
    const keys = Array.from({ length: 1_050 }, (_, i) => `n/${String(i).padStart(4, '0')}.txt`);
    await manager.run(a.slug, async () => {
      for (let i = 0; i < keys.length; i += 25) await Promise.all(keys.slice(i, i + 25).map((key) => files.put(key, key)));
    });
    await manager.run(b.slug, () => files.put('n/0000.txt', 'b keeps'));
    const listed = await manager.run(a.slug, () => collect(files.list('n/')));
    expect(listed.map((f) => f.key)).to.deep.equal(keys);
    expect(listed[5]!.size).to.equal(keys[5]!.length);
    const lists = watchCommand(client, 'ListObjectsV2Command');
    const deletes = watchCommand(client, 'DeleteObjectsCommand');
    await manager.dropTenant(a.slug, { force: true });
    expect(deletes.count).to.equal(2); // 1,000 + 50
    expect(lists.count).to.equal(3); // two batches, then an empty listing
    lists.remove();
    deletes.remove();
    expect(await bucketKeys(client)).to.deep.equal([`${prefixOf(b)}n/0000.txt`]);
  });

  it('a drop whose DeleteObjects fails part-way leaves the tenant dropping with the rest of its objects; dropTenant again finishes', async () => {
    files.close();
    const batched = tenantFiles(manager, { driver: s3Driver({ client, bucket: BUCKET, prefix: 'app', deleteBatchSize: 10 }) });
    await manager.run(a.slug, () => Promise.all(Array.from({ length: 35 }, (_, i) => batched.put(`k${i}`, 'x'))));
    await manager.run(b.slug, () => batched.put('k0', 'b keeps'));
    const deletes = watchCommand(client, 'DeleteObjectsCommand', 2);
    const error = await rejection(manager.dropTenant(a.slug, { force: true }));
    deletes.remove();
    expect(error).to.be.instanceOf(TenantLifecycleHookError);
    expect(error.message).to.include('injected failure');
    expect((await manager.getTenant(a.slug))?.status).to.equal('dropping');
    expect(await bucketKeys(client, prefixOf(a))).to.have.length(25);
    await manager.dropTenant(a.slug, { force: true });
    expect(await manager.getTenant(a.slug)).to.equal(undefined);
    expect(await bucketKeys(client)).to.deep.equal([`${prefixOf(b)}k0`]);
  });

  it('archive and restore keep the objects, readable after restore', async () => {
    await manager.run(a.slug, () => files.put('contract.pdf', 'signed'));
    await manager.archiveTenant(a.slug);
    expect(await bucketKeys(client)).to.deep.equal([`${prefixOf(a)}contract.pdf`]);
    await manager.restoreTenant(a.slug);
    expect((await manager.run(a.slug, () => files.get('contract.pdf'))).toString()).to.equal('signed');
  });

  it('an object planted outside the tenant prefix is never listed or read', async () => {
    await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `app/${a.schemaName}/other-incarnation/leak.txt`, Body: 'old life' }));
    await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `app/${a.schemaName}/${tenantIncarnation(a)}x/leak.txt`, Body: 'neighbour' }));
    await manager.run(a.slug, async () => {
      expect(await collect(files.list())).to.deep.equal([]);
      expect(await files.exists('leak.txt')).to.equal(false);
    });
    await manager.dropTenant(a.slug, { force: true });
    // The drop deletes its own incarnation's prefix only: clean up the planted objects by hand.
    const left = await bucketKeys(client);
    expect(left).to.deep.equal([`app/${a.schemaName}/${tenantIncarnation(a)}x/leak.txt`, `app/${a.schemaName}/other-incarnation/leak.txt`].sort());
    const { DeleteObjectsCommand } = await import('@aws-sdk/client-s3');
    await client.send(new DeleteObjectsCommand({ Bucket: BUCKET, Delete: { Objects: left.map((Key) => ({ Key })) } }));
  });

  it('url(): presigned through the presign option, or under publicBaseUrl, or a clear configuration error', async () => {
    const error = await manager.run(a.slug, () => rejection(files.url('logo.png')));
    expect(error).to.be.instanceOf(TenancyConfigurationError);
    expect(error.message).to.include('@aws-sdk/s3-request-presigner').and.include('publicBaseUrl');
    files.close();
    const seen: { key?: string; expiresIn?: number } = {};
    const signed = tenantFiles(manager, {
      driver: s3Driver({
        client,
        bucket: BUCKET,
        prefix: 'app',
        presign: async (_client, command, options) => {
          seen.key = (command as GetObjectCommand).input.Key;
          seen.expiresIn = options.expiresIn;
          return `signed:${seen.key}`;
        },
      }),
    });
    expect(await manager.run(a.slug, () => signed.url('logo.png', { expiresInSeconds: 60 }))).to.equal(`signed:${prefixOf(a)}logo.png`);
    expect(seen.expiresIn).to.equal(60);
    expect(await manager.run(a.slug, () => rejection(signed.url('logo.png', { expiresInSeconds: 700_000 })))).to.be.instanceOf(InvalidArgumentError);
    signed.close();
    const cdn = tenantFiles(manager, { driver: s3Driver({ client, bucket: BUCKET, prefix: 'app', publicBaseUrl: 'https://cdn.example.test' }) });
    expect(await manager.run(a.slug, () => cdn.url('big logo.png'))).to.equal(`https://cdn.example.test/${prefixOf(a)}big%20logo.png`);
    expect(await manager.run(a.slug, () => rejection(cdn.url('x', { expiresInSeconds: 60 })))).to.be.instanceOf(InvalidArgumentError);
    cdn.close();
    // Re-add the plugin so afterEach's drops clean the bucket.
    files = tenantFiles(manager, { driver: s3Driver({ client, bucket: BUCKET, prefix: 'app' }) });
    expect(() => s3Driver({ client, bucket: 'Bad_Bucket' })).to.throw(TenancyConfigurationError);
    expect(() => s3Driver({ client, bucket: BUCKET, prefix: '../x' })).to.throw(TenancyConfigurationError);
    expect(() => s3Driver({ client, bucket: BUCKET, deleteBatchSize: 1001 })).to.throw(TenancyConfigurationError);
  });
});
