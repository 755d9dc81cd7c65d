import { expect } from 'chai';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'typeorm';
import { InvalidHostnameError, normaliseHostname, type TenantDataSourceManager } from '../../src';
import { hostnameOfHeader } from '../../src/naming/hostname';
import { adminQuery, databaseUrl, openManager, uniqueSlug } from '../support/fixtures';
import { hostileInput } from './slug-arbitraries';

/**
 * Hostile hostnames, property-based. What a normalised hostname may look
 * like is decided by an oracle written here from the rule (character codes,
 * not the library's regular expressions): whatever the input, the library
 * either refuses it with InvalidHostnameError or returns a name the oracle
 * accepts, which normalises to itself and is the hostname WHATWG's URL
 * parser (Node's URL, as browsers) makes of the input; the Host-header path
 * agrees with it.
 * Then generated names go through the manager: a refused one runs no SQL, an
 * accepted one is found by each of its spellings and only by those.
 */

const RUNS = 10_000;
const THROUGH_MANAGER = 400;
const SEED = Number(process.env.FUZZ_SEED ?? 20_261_202);

/** The normalised form, re-implemented from the rule: LDH labels of 1-63, 253 in all, lower case, not an IPv4 address, last label not numeric. */
function oracleAccepts(name: string): boolean {
  if (name.length < 1 || name.length > 253) return false;
  const labels = name.split('.');
  for (const label of labels) {
    if (label.length < 1 || label.length > 63) return false;
    for (let i = 0; i < label.length; i += 1) {
      const c = label.charCodeAt(i);
      const ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d;
      if (!ok) return false;
      if (c === 0x2d && (i === 0 || i === label.length - 1)) return false;
    }
  }
  if (labels.length < 2) return false;
  const last = labels[labels.length - 1]!;
  return ![...last].every((ch) => ch >= '0' && ch <= '9');
}

const label = fc.stringMatching(/^[a-z0-9](?:[a-z0-9-]{0,14}[a-z0-9])?$/);
const asciiDomain = fc
  .tuple(fc.array(label, { minLength: 1, maxLength: 4 }), fc.stringMatching(/^[a-z][a-z0-9]{1,8}$/))
  .map(([labels, tld]) => [...labels, tld].join('.'));
const unicodeLabel = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 });
const hostileFragment = fc.constantFrom(
  ':', '::', ':80', ':99999', ':x', '.', '..', '[', ']', '[::1]', '/', '@', '?', '#', '%', '%2e', '_', ' ', '\t', '\n', '\0', '\\',
  '\u3002', '\uff0e', '\u00ad', '\u200b', '\u200d', '\u202e', '\u00a0', '\u0301', '\u212a', '\u017f', 'xn--', 'xn--zz', '-', '0x', '0x7f',
  '\ud800', 'ß', 'İ', 'ǅ', '\u{1f600}',
);
const withFragment = fc.tuple(asciiDomain, hostileFragment, fc.nat()).map(([base, fragment, at]) => {
  const i = at % (base.length + 1);
  return base.slice(0, i) + fragment + base.slice(i);
});
const ipLike = fc.oneof(
  fc.tuple(fc.nat(300), fc.nat(300), fc.nat(300), fc.nat(300)).map((parts) => parts.join('.')),
  fc.tuple(fc.nat(0xffff), fc.nat(0xffff)).map(([a, b]) => `0x${a.toString(16)}.${b}`),
  fc.nat().map(String),
  fc.ipV6().map((ip) => (ip.length % 2 === 0 ? `[${ip}]` : ip)),
);
const hostileHostname: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: asciiDomain, weight: 3 },
  { arbitrary: fc.mixedCase(asciiDomain), weight: 2 },
  { arbitrary: withFragment, weight: 4 },
  { arbitrary: fc.array(fc.oneof(label, unicodeLabel), { minLength: 1, maxLength: 4 }).map((labels) => labels.join('.')), weight: 3 },
  { arbitrary: ipLike, weight: 2 },
  { arbitrary: fc.integer({ min: 50, max: 300 }).map((n) => `${'a'.repeat(n)}.com`), weight: 1 },
  { arbitrary: fc.array(label, { minLength: 20, maxLength: 40 }).map((labels) => `${labels.join('.')}.com`), weight: 1 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 80 }), weight: 2 },
  { arbitrary: hostileInput, weight: 2 },
);

/** The result of the library: the normalised name, or the refusal. */
function outcome(value: unknown): { name: string } | { refused: InvalidHostnameError } {
  try {
    return { name: normaliseHostname(value) };
  } catch (error) {
    if (!(error instanceof InvalidHostnameError)) {
      throw new Error(`${show(value)}: expected InvalidHostnameError, got ${error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error)}`);
    }
    return { refused: error };
  }
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…(${value.length})` : value);
  return `${typeof value}`;
}

/** Spellings of one host a client may send: mixed case, a port, a trailing dot. */
const spelling = fc.record({ upper: fc.array(fc.boolean(), { minLength: 260, maxLength: 260 }), port: fc.option(fc.integer({ min: 1, max: 65535 })), dot: fc.boolean() });
function spell(name: string, how: { upper: boolean[]; port: number | null; dot: boolean }): string {
  const cased = [...name].map((ch, i) => (how.upper[i] ? ch.toUpperCase() : ch)).join('');
  return `${cased}${how.dot ? '.' : ''}${how.port === null ? '' : `:${how.port}`}`;
}

class CountingLogger implements Logger {
  queries = 0;
  logQuery(): void {
    this.queries += 1;
  }
  logQueryError(): void {}
  logQuerySlow(): void {}
  logSchemaBuild(): void {}
  logMigration(): void {}
  log(): void {}
}

describe('hostile hostnames (fast-check)', function () {
  this.timeout(120_000);

  it(`${RUNS.toLocaleString('en')} generated inputs: InvalidHostnameError, or a name the oracle accepts that normalises to itself; the Host-header path agrees`, () => {
    let accepted = 0;
    fc.assert(
      fc.property(hostileHostname, (value) => {
        const result = outcome(value);
        // The Host-header path agrees, except that it takes ASCII only (a browser sends punycode).
        const ascii = typeof value === 'string' && !/[^\x00-\x7f]/.test(value);
        expect(hostnameOfHeader(value), show(value)).to.equal('name' in result && ascii ? result.name : undefined);
        if ('refused' in result) {
          expect(result.refused.statusCode).to.equal(400);
          return;
        }
        accepted += 1;
        expect(oracleAccepts(result.name), `${show(value)} → ${result.name}`).to.equal(true);
        // What a browser's URL parser makes of the same host (one trailing dot aside): the name it sends.
        const parsed = new URL(`http://${value as string}/`).hostname;
        expect(parsed.endsWith('.') ? parsed.slice(0, -1) : parsed, show(value)).to.equal(result.name);
        expect(normaliseHostname(result.name), result.name).to.equal(result.name);
      }),
      { numRuns: RUNS, seed: SEED },
    );
    // The generators reach both sides of the rule.
    expect(accepted).to.be.greaterThan(RUNS / 10);
    expect(accepted).to.be.lessThan(RUNS - RUNS / 10);
  });

  it('every spelling of a valid name (case, port, trailing dot) normalises to its lower-case form', () => {
    fc.assert(
      fc.property(asciiDomain, spelling, (name, how) => {
        expect(normaliseHostname(spell(name, how))).to.equal(name);
      }),
      { numRuns: RUNS, seed: SEED },
    );
  });

  it(`${THROUGH_MANAGER} generated inputs through addTenantDomain, getTenantDomain and removeTenantDomain: a refused one runs no SQL; an accepted one is stored once, normalised, found by its spellings`, async () => {
    const logger = new CountingLogger();
    const registry = `fzd_${randomBytes(4).toString('hex')}`;
    const manager: TenantDataSourceManager = await openManager({ registryTable: registry, dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 4, logger } });
    const slug = uniqueSlug('fzd');
    await manager.createTenant(slug);
    const stored = new Set<string>();
    await fc.assert(
      fc.asyncProperty(hostileHostname, spelling, async (value, how) => {
        const expected = outcome(value);
        const before = logger.queries;
        if ('refused' in expected) {
          for (const call of [() => manager.addTenantDomain(slug, value as string), () => manager.getTenantDomain(value as string), () => manager.removeTenantDomain(value as string)]) {
            const error = await call().then(
              () => undefined,
              (e: unknown) => e,
            );
            expect(error, show(value)).to.be.instanceOf(InvalidHostnameError);
          }
          expect(logger.queries - before, `${show(value)} ran SQL`).to.equal(0);
          return;
        }
        const domain = await manager.addTenantDomain(slug, value as string);
        expect(domain.hostname).to.equal(expected.name);
        stored.add(expected.name);
        const variant = spell(expected.name, how);
        if (variant.length <= 1024) expect((await manager.getTenantDomain(variant))?.hostname, variant).to.equal(expected.name);
        if (how.dot && how.port !== null) {
          await manager.removeTenantDomain(variant);
          stored.delete(expected.name);
        }
      }),
      { numRuns: THROUGH_MANAGER, seed: SEED },
    );
    const rows = await adminQuery<{ hostname: string }>(`SELECT hostname FROM public."${registry}_domains" ORDER BY hostname COLLATE "C"`);
    expect(rows.map((r) => r.hostname)).to.deep.equal([...stored].sort());
  });
});
