import fc from 'fast-check';

/** The contract (README "Concepts"), re-implemented without the library's regex. Returns the schema name, or undefined when invalid. */
export function oracleSchemaName(value: unknown, connectingRole: string): string | undefined {
  if (typeof value !== 'string' || value.length < 1 || value.length > 63) return undefined;
  for (let i = 0; i < value.length; i += 1) {
    const c = value.charCodeAt(i);
    const lower = c >= 0x61 && c <= 0x7a;
    const digit = c >= 0x30 && c <= 0x39;
    if (i === 0 ? !lower : !(lower || digit || c === 0x2d || c === 0x5f)) return undefined;
  }
  const schema = value.split('-').join('_');
  if (schema === 'public' || schema === 'information_schema' || schema.startsWith('pg_')) return undefined;
  if (schema.startsWith('typeorm_tenants_') || schema === connectingRole) return undefined;
  return schema;
}

const validSlug = fc.stringMatching(/^[a-z][a-z0-9_-]{0,62}$/);
/** Pieces that break SQL or hide in plain sight. */
const hostileFragment = fc.constantFrom(
  "'", '"', '\\', ';', '--', '/*', '*/', '\0', ' ', '\t', '\n', '\r\n', '$1', '$$', '%', '`', '.', ',', '(', ')', '=',
  "'; DROP SCHEMA public CASCADE; --", '"; SELECT pg_sleep(10); --', '" OR "1"="1', "\\'", 'E\'\\x00\'',
  // Unicode look-alikes and invisibles.
  '\u0430', // Cyrillic a
  '\u0435', // Cyrillic e
  '\u043e', // Cyrillic o
  '\u0131', // dotless i
  '\u017f', // long s (upper-cases to S)
  '\u212a', // Kelvin sign (lower-cases to k)
  '\uff41', // fullwidth a
  '\u200b', // zero-width space
  '\u200d', // zero-width joiner
  '\u202e', // right-to-left override
  '\u00a0', // no-break space
  '\u0301', // combining acute accent
  '\ufb00', // ff ligature
  '\u2010', // hyphen
  '\u2011', // non-breaking hyphen
  '\uff3f', // fullwidth low line
  '\ud800', // lone surrogate
  '\u{1f600}',
  'ß',
  'İ',
);
const reservedWord = fc.constantFrom(
  'public', 'information_schema', 'information-schema', 'pg_catalog', 'pg_toast', 'pg-temp-1', 'pg_', 'pg-', 'pgx', 'pg',
  'typeorm_tenants_', 'typeorm-tenants-archive-1', 'typeorm_tenantsx', 'postgres', 'acme', 'tenants', 'migrations', 'current_user',
);
/** Puts `fragment` at a random position in `base`. */
const withFragment = fc.tuple(validSlug, hostileFragment, fc.nat()).map(([base, fragment, at]) => {
  const i = at % (base.length + 1);
  return base.slice(0, i) + fragment + base.slice(i);
});
/** A valid slug with one character replaced by a look-alike. */
const lookAlike = fc.tuple(validSlug, fc.nat()).map(([base, at]) => {
  const swaps: Record<string, string> = { a: '\u0430', e: '\u0435', o: '\u043e', i: '\u0131', s: '\u017f', k: '\u212a', '-': '\u2010', _: '\uff3f' };
  const i = at % base.length;
  const ch = base[i]!;
  return base.slice(0, i) + (swaps[ch] ?? ch.toUpperCase()) + base.slice(i + 1);
});
const longString = fc.oneof(
  fc.integer({ min: 60, max: 70 }).map((n) => 'a'.repeat(n)), // around the 63 limit
  fc.integer({ min: 64, max: 20_000 }).map((n) => `t${'-'.repeat(n - 1)}`),
  fc.tuple(validSlug, fc.integer({ min: 1, max: 5_000 })).map(([base, n]) => base + 'x'.repeat(n)),
);
const nonString = fc.oneof(
  fc.anything(),
  fc.constantFrom<unknown>(
    undefined, null, 0, 1, -1, NaN, Infinity, true, false, 1n, Symbol('acme'), [], ['acme'], {},
    // String-like objects: must be refused, not coerced.
    // eslint-disable-next-line no-new-wrappers
    new String('acme'), { toString: () => 'acme' }, { valueOf: () => 'acme' }, () => 'acme', new Date(0), /acme/,
  ),
);
export const hostileInput: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: validSlug, weight: 2 },
  { arbitrary: withFragment, weight: 4 },
  { arbitrary: fc.mixedCase(reservedWord), weight: 2 },
  { arbitrary: reservedWord, weight: 1 },
  { arbitrary: fc.mixedCase(validSlug), weight: 1 },
  { arbitrary: lookAlike, weight: 2 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 80 }), weight: 2 },
  { arbitrary: fc.string({ unit: 'grapheme-ascii', maxLength: 70 }), weight: 2 },
  { arbitrary: longString, weight: 1 },
  { arbitrary: nonString, weight: 2 },
);
