import { expect } from 'chai';
import {
  InvalidTenantNameError,
  LIBRARY_SCHEMA_PREFIX,
  SLUG_RULE,
  TenancyError,
  quoteIdent,
  schemaNameForSlug,
  validateTenantSlug,
} from '../../src';
import { adminQuery } from '../support/fixtures';

const DEFAULTS = { sharedSchema: 'public' } as const;

/** The error `fn` throws, or a failure if it throws nothing. */
function thrownBy(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  expect.fail('expected a throw, got none');
}

/** Printable label for a test title, whatever the value. */
function label(value: unknown): string {
  if (typeof value === 'symbol') return value.toString();
  if (typeof value === 'string') {
    const shown = value.length > 40 ? `${value.slice(0, 20)}...(${value.length} chars)` : value;
    return JSON.stringify(shown);
  }
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'number') return String(value);
  if (typeof value === 'function') return 'a function';
  if (value instanceof String) return 'new String("acme")';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

function expectInvalid(value: unknown, kind: 'rule' | 'reserved', reserved: { sharedSchema: string; connectingRoles?: readonly string[] } = DEFAULTS): void {
  const error = thrownBy(() => validateTenantSlug(value, reserved));
  expect(error).to.be.instanceOf(InvalidTenantNameError);
  expect(error).to.be.instanceOf(TenancyError);
  const e = error as InvalidTenantNameError;
  expect(e.code).to.equal('INVALID_TENANT_NAME');
  expect(e.name).to.equal('InvalidTenantNameError');
  expect(e.statusCode).to.equal(400);
  expect(Object.is(e.value, value), 'the error keeps the value it refused').to.equal(true);
  if (kind === 'rule') {
    expect(e.message, 'the message names the rule').to.include(SLUG_RULE);
  } else {
    expect(e.message, 'the message says the name is reserved').to.include('reserved');
  }
}

describe('naming: validateTenantSlug and schemaNameForSlug (no database)', () => {
  describe('valid slugs map to their schema names', () => {
    const valid: Array<[string, string]> = [
      ['a', 'a'],
      ['acme', 'acme'],
      ['acme-eu', 'acme_eu'],
      ['a1_b-2', 'a1_b_2'],
      ['a--b', 'a__b'],
      ['a-', 'a_'],
      ['z9', 'z9'],
      ['x_', 'x_'],
      ['a'.repeat(63), 'a'.repeat(63)],
      [`b${'-'.repeat(62)}`, `b${'_'.repeat(62)}`],
      // Near misses of reserved names are ordinary slugs.
      ['pg', 'pg'],
      ['pgadmin', 'pgadmin'],
      ['publicity', 'publicity'],
      ['public2', 'public2'],
      ['information', 'information'],
      ['typeorm_tenants', 'typeorm_tenants'],
      ['typeorm-tenant', 'typeorm_tenant'],
      ['shared', 'shared'],
    ];
    for (const [slug, schema] of valid) {
      it(`${label(slug)} -> ${label(schema)}`, () => {
        expect(validateTenantSlug(slug, DEFAULTS)).to.equal(schema);
        expect(schemaNameForSlug(slug)).to.equal(schema);
      });
    }

    it('a 63-character slug is accepted, a 64-character one refused', () => {
      expect(validateTenantSlug(`a${'1'.repeat(62)}`, DEFAULTS)).to.have.length(63);
      expectInvalid(`a${'1'.repeat(63)}`, 'rule');
    });

    it('the connecting role name is free when no role is given', () => {
      expect(validateTenantSlug('postgres', DEFAULTS)).to.equal('postgres');
    });

    it('schemaNameForSlug replaces every "-", not only the first', () => {
      expect(schemaNameForSlug('a-b-c-d')).to.equal('a_b_c_d');
    });
  });

  describe('invalid slugs throw InvalidTenantNameError naming the rule', () => {
    const boxed = new String('acme');
    const badByRule: unknown[] = [
      '',
      'A',
      'Acme',
      'ACME',
      'acmE',
      '1acme',
      '9',
      '-acme',
      '_acme',
      'acme corp',
      ' acme',
      'acme ',
      'acme\t',
      'acme\n',
      '\nacme',
      'acme\r\nx',
      'acme;drop schema public cascade',
      'acme"--',
      'x"; DROP SCHEMA public CASCADE; --',
      "acme'",
      "acme'); DROP TABLE tenants; --",
      'acme\\',
      'acme/*',
      'acme.eu',
      'public.acme',
      'acme@eu',
      'acme$',
      'ac%me',
      'acme\u0000',
      'acme\u0000x',
      '\u0430cme', // Cyrillic a
      'acme\u200b', // zero-width space
      '\uff41cme', // fullwidth a
      '\u212acme', // Kelvin sign, lowercases to "k"
      'acme\u0301', // combining accent
      'stra\u00dfe',
      '\u0131acme', // dotless i
      'acme\ud83d\ude00',
      'a'.repeat(64),
      'a'.repeat(10_000),
      `${'a'.repeat(63)}\n`,
      'PUBLIC',
      'Public',
      'PG_CATALOG',
      'Postgres',
      undefined,
      null,
      42,
      0,
      NaN,
      10n,
      true,
      false,
      {},
      [],
      ['acme'],
      { toString: () => 'acme' },
      boxed,
      () => 'acme',
      Symbol('acme'),
      new Date(0),
      /acme/,
    ];

    it('the table holds at least 30 inputs', () => {
      expect(badByRule.length).to.be.at.least(30);
    });

    for (const value of badByRule) {
      it(`refuses ${label(value)}`, () => {
        expectInvalid(value, 'rule');
      });
    }

    it('never converts an object to a string to validate it', () => {
      let converted = 0;
      const sneaky = {
        toString() {
          converted += 1;
          return 'acme';
        },
        valueOf() {
          converted += 1;
          return 'acme';
        },
        [Symbol.toPrimitive]() {
          converted += 1;
          return 'acme';
        },
      };
      expectInvalid(sneaky, 'rule');
      expect(converted).to.equal(0);
    });

    it('a non-string is refused with a message saying a slug must be a string', () => {
      for (const value of [undefined, null, 42, {}, []]) {
        const error = thrownBy(() => validateTenantSlug(value, DEFAULTS)) as Error;
        expect(error.message).to.include('must be a string');
      }
    });
  });

  describe('reserved names throw InvalidTenantNameError saying "reserved"', () => {
    const reservedSlugs = [
      'public',
      'information_schema',
      'information-schema',
      'pg_toast',
      'pg-catalog',
      'pg_catalog',
      'pg-temp-1',
      'pg_',
      'pg-',
      'pg_anything',
      `${LIBRARY_SCHEMA_PREFIX}x`,
      'typeorm_tenants_x',
      'typeorm-tenants-x',
      'typeorm-tenants_archive',
      LIBRARY_SCHEMA_PREFIX,
    ];
    for (const slug of reservedSlugs) {
      it(`refuses ${label(slug)}`, () => {
        expectInvalid(slug, 'reserved');
      });
    }

    it('the library prefix is "typeorm_tenants_"', () => {
      expect(LIBRARY_SCHEMA_PREFIX).to.equal('typeorm_tenants_');
    });

    it('the shared schema is reserved: "shared" is refused when sharedSchema is "shared", allowed otherwise', () => {
      expectInvalid('shared', 'reserved', { sharedSchema: 'shared' });
      expect(validateTenantSlug('shared', { sharedSchema: 'public' })).to.equal('shared');
    });

    it('the shared schema is compared by schema name: "shared-data" is refused when sharedSchema is "shared_data"', () => {
      expectInvalid('shared-data', 'reserved', { sharedSchema: 'shared_data' });
      expectInvalid('shared_data', 'reserved', { sharedSchema: 'shared_data' });
      expect(validateTenantSlug('shared-data2', { sharedSchema: 'shared_data' })).to.equal('shared_data2');
    });

    it('public stays reserved when the shared schema is another one', () => {
      expectInvalid('public', 'reserved', { sharedSchema: 'shared' });
    });

    it('the connecting role name is reserved, by schema name and whatever its case', () => {
      expectInvalid('postgres', 'reserved', { sharedSchema: 'public', connectingRoles: ['postgres'] });
      expectInvalid('app-owner', 'reserved', { sharedSchema: 'public', connectingRoles: ['app_owner'] });
      expectInvalid('app_owner', 'reserved', { sharedSchema: 'public', connectingRoles: ['App_Owner'] });
      expect(validateTenantSlug('postgres2', { sharedSchema: 'public', connectingRoles: ['postgres'] })).to.equal('postgres2');
    });

    it('the reserved message names the schema name the slug maps to', () => {
      const error = thrownBy(() => validateTenantSlug('pg-catalog', DEFAULTS)) as Error;
      expect(error.message).to.include('"pg_catalog"');
    });
  });

  describe('error messages stay short whatever the input', () => {
    it('a 10,000-character input is echoed to at most ~80 characters', () => {
      const huge = `${'a'.repeat(100)}SECRET${'b'.repeat(9_894)}`;
      const error = thrownBy(() => validateTenantSlug(huge, DEFAULTS)) as Error;
      expect(error.message).to.include(SLUG_RULE);
      expect(error.message).not.to.include('SECRET');
      expect(error.message).not.to.include('a'.repeat(81));
      expect(error.message.length).to.be.below(SLUG_RULE.length + 200);
    });

    it('a huge input of multi-unit characters stays short too', () => {
      const huge = '\ud83d\ude00'.repeat(5_000);
      const error = thrownBy(() => validateTenantSlug(huge, DEFAULTS)) as Error;
      expect(error.message.length).to.be.below(SLUG_RULE.length + 400);
    });

    it('a huge array or object is described by type, not dumped', () => {
      for (const value of [new Array(10_000).fill('x'.repeat(10)), { payload: 'y'.repeat(10_000) }]) {
        const error = thrownBy(() => validateTenantSlug(value, DEFAULTS)) as Error;
        expect(error.message.length).to.be.below(SLUG_RULE.length + 200);
        expect(error.message).not.to.include('xxxxxxxxxx');
        expect(error.message).not.to.include('yyyyyyyyyy');
      }
    });

    it('a short bad input is quoted in the message', () => {
      const error = thrownBy(() => validateTenantSlug('Acme Corp', DEFAULTS)) as Error;
      expect(error.message).to.include('"Acme Corp"');
    });
  });
});

describe('naming: quoteIdent', () => {
  it('wraps a plain name in double quotes', () => {
    expect(quoteIdent('acme')).to.equal('"acme"');
    expect(quoteIdent('')).to.equal('""');
  });

  it('doubles every embedded double quote', () => {
    expect(quoteIdent('a"b')).to.equal('"a""b"');
    expect(quoteIdent('"')).to.equal('""""');
    expect(quoteIdent('""x""')).to.equal('"""""x"""""');
    expect(quoteIdent('x"; DROP SCHEMA public CASCADE; --')).to.equal('"x""; DROP SCHEMA public CASCADE; --"');
  });

  it('leaves other characters as they are', () => {
    expect(quoteIdent("it's")).to.equal('"it\'s"');
    expect(quoteIdent('a\\b')).to.equal('"a\\b"');
    expect(quoteIdent('Acme Corp')).to.equal('"Acme Corp"');
  });

  it('rejects a NUL character anywhere', () => {
    expect(() => quoteIdent('\u0000')).to.throw(TypeError, /NUL/);
    expect(() => quoteIdent('acme\u0000')).to.throw(TypeError, /NUL/);
    expect(() => quoteIdent('a\u0000"; DROP SCHEMA public; --')).to.throw(TypeError, /NUL/);
  });

  it('PostgreSQL reads a quoted identifier back as exactly the original name', async () => {
    const names = ['a"b', 'x"; DROP SCHEMA public CASCADE; --', "acme'); DROP TABLE tenants; --", 'Mixed Case', '""', 'a\\b'];
    for (const name of names) {
      const result = await adminQuery<Record<string, number>>(`SELECT 1 AS ${quoteIdent(name)}`);
      expect(Object.keys(result[0]!)).to.deep.equal([name]);
    }
    const schemas = await adminQuery<{ n: number }>("SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'public'");
    expect(schemas[0]!.n, 'public survived').to.equal(1);
  });
});
