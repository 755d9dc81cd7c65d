import { expect } from 'chai';
import fc from 'fast-check';
import { promises as fsp } from 'node:fs';
import { join, sep } from 'node:path';
import { tenantIncarnation, type TenantRecord } from '../../src';
import { InvalidFileKeyError, localDiskDriver, normaliseFileKey, tenantFiles } from '../../src/storage';
import { openManager, uniqueSlug } from '../support/fixtures';
import { filesUnder, makeTemp, removeTemp } from './storage-support';

/**
 * Hostile file keys, property-based, against the real disk. Each generated
 * key is put() in tenant A's run; it must either be refused with
 * INVALID_FILE_KEY, or land as a regular file whose real path (realpath on
 * disk) is inside A's folder, at the place its NFC segments name, and read
 * back equal through get(). No other error may escape. At the end, tenant B's
 * folder and a canary folder next to the root are exactly as they were, and
 * nothing exists under the parent folder but the root and the canary.
 */

const RUNS = Number(process.env.FUZZ_RUNS ?? 5_000);
const SEED = Number(process.env.FUZZ_SEED ?? 20_261_202);

/** Pieces that path handling gets wrong: separators, dots, encodings, look-alikes, controls, long runs. */
const PIECES = [
  '.', '..', '...', '/', '//', '\\', '%2f', '%2F', '%5c', '%5C', '%2e', '%2e%2e', '%252f', '%00', '%',
  '\u2215', '\u2044', '\uFF0F', '\uFF3C', '\uFF0E', '\uFF0E\uFF0E', '\u2024', '\u2025', '\u2100', '\uFE52',
  '\u0000', '\u0001', '\n', '\u007f', '\u0085', '\u202E', '\uD800', '\uDC00',
  'a', 'b', 'é', 'e\u0301', ' ', '~', '-', '_', ':', 'C:', '$HOME', '*', '?', '"',
  'x'.repeat(120), 'y'.repeat(260), '.tenant-files-', '.hidden', 'CON', 'nul',
];

describe('hostile file keys (fast-check)', function () {
  this.timeout(300_000);
  let parent: string | undefined;

  after(() => removeTemp(parent));

  it(`${RUNS.toLocaleString('en')} generated keys are refused with INVALID_FILE_KEY or stored physically inside the tenant's folder`, async () => {
    parent = makeTemp('fuzz');
    const root = join(parent, 'root');
    const canary = join(parent, 'canary');
    await fsp.mkdir(canary);
    await fsp.writeFile(join(canary, 'untouched.txt'), 'canary');
    const manager = await openManager();
    const files = tenantFiles(manager, { driver: localDiskDriver({ root }) });
    const a: TenantRecord = await manager.createTenant(uniqueSlug('fz'));
    const b: TenantRecord = await manager.createTenant(uniqueSlug('fz'));
    const folderA = join(root, a.schemaName, tenantIncarnation(a));
    const folderB = join(root, b.schemaName, tenantIncarnation(b));
    await manager.run(b.slug, () => files.put('b-only.txt', 'b'));
    // The other tenant's schema and incarnation, and the root itself, as pieces too.
    const pieces = [...PIECES, b.schemaName, tenantIncarnation(b), root.slice(1)];
    const hostile = fc.array(fc.constantFrom(...pieces), { minLength: 1, maxLength: 12 }).map((parts) => parts.join(''));
    // Keys built segment by segment, mostly valid, with dots and the other tenant's names as whole segments.
    const segment = fc.oneof(
      { weight: 6, arbitrary: fc.array(fc.constantFrom('a', 'b', 'é', 'e\u0301', '.', '-', ' ', '~', '\uFF0E', '\u2024', b.schemaName), { minLength: 1, maxLength: 4 }).map((parts) => parts.join('')) },
      { weight: 1, arbitrary: fc.constantFrom('.', '..', '', b.schemaName, tenantIncarnation(b)) },
    );
    const segmented = fc.array(segment, { minLength: 1, maxLength: 6 }).map((segments) => segments.join('/'));
    const key = fc.oneof(hostile, segmented);
    let stored = 0;
    let refused = 0;
    let index = 0;

    await manager.run(a.slug, () =>
      fc.assert(
        fc.asyncProperty(key, async (candidate) => {
          const body = `body ${(index += 1)}`;
          try {
            await files.put(candidate, body);
          } catch (error) {
            if (!(error instanceof InvalidFileKeyError)) throw new Error(`put(${JSON.stringify(candidate)}) failed with ${String(error)}`);
            expect(error.code).to.equal('INVALID_FILE_KEY');
            refused += 1;
            return;
          }
          stored += 1;
          const normal = normaliseFileKey(candidate);
          const expected = join(folderA, ...normal.split('/'));
          const real = await fsp.realpath(expected);
          expect(real, JSON.stringify(candidate)).to.equal(expected);
          expect(real.startsWith(folderA + sep), JSON.stringify(candidate)).to.equal(true);
          expect((await fsp.lstat(real)).isFile()).to.equal(true);
          expect((await files.get(candidate)).toString()).to.equal(body);
          // Keep the tree small and free of file/folder clashes between runs.
          await files.delete(candidate);
        }),
        { numRuns: RUNS, seed: SEED },
      ),
    );

    expect(stored, 'some generated keys are valid').to.be.greaterThan(RUNS / 20);
    expect(refused, 'some generated keys are refused').to.be.greaterThan(RUNS / 20);
    expect(await filesUnder(folderA)).to.deep.equal([]);
    expect(await filesUnder(folderB)).to.deep.equal(['b-only.txt']);
    expect(await filesUnder(canary)).to.deep.equal(['untouched.txt']);
    expect((await fsp.readdir(parent)).sort()).to.deep.equal(['canary', 'root']);
    expect((await fsp.readdir(root)).sort()).to.deep.equal([a.schemaName, b.schemaName].sort());
    console.log(`      (${stored} stored inside the tenant's folder, ${refused} refused)`);
  });

  it('the key rule refuses each kind of hostile key with a reason, and normalises to NFC', () => {
    const refusals: Record<string, string> = {
      '../x': '".."',
      'a/../b': '".."',
      './a': '"."',
      '/etc/passwd': 'absolute',
      'a\\b': 'backslash',
      'a\u0000b': 'U+0000',
      'a\nb': 'U+000A',
      'a%2fb': '%2f',
      'a%2Fb': '%2F',
      '%2e%2e/x': '%2e',
      'a%5cb': '%5c',
      'a\u2215b': 'U+2215',
      'a\uFF0Fb': 'U+FF0F',
      '\uFF0E\uFF0E/x': 'NFKC',
      '\u2025/x': 'NFKC',
      'a\u2100b': 'NFKC',
      'a//b': 'empty segment',
      'a/': 'empty segment',
      '\uD800': 'surrogate',
      'a\u202Eb': 'U+202E',
      [`${'x'.repeat(256)}`]: '255',
      [`${'x/'.repeat(400)}x`]: '768',
      '.tenant-files-x': 'reserved',
    };
    for (const [key, reason] of Object.entries(refusals)) {
      expect(() => normaliseFileKey(key), JSON.stringify(key)).to.throw(InvalidFileKeyError, reason);
    }
    for (const value of [undefined, null, 42, {}, '']) expect(() => normaliseFileKey(value)).to.throw(InvalidFileKeyError);
    expect(normaliseFileKey('e\u0301/…/a..b/.env/~/C:')).to.equal('é/…/a..b/.env/~/C:');
  });
});
