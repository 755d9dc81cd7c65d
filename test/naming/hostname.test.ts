import { expect } from 'chai';
import { HOSTNAME_RULE, InvalidHostnameError, normaliseHostname } from '../../src';
import { hostnameOfHeader } from '../../src/naming/hostname';

function refusal(value: unknown): InvalidHostnameError {
  try {
    normaliseHostname(value);
  } catch (error) {
    expect(error).to.be.instanceOf(InvalidHostnameError);
    return error as InvalidHostnameError;
  }
  throw new Error(`${JSON.stringify(value)} was accepted`);
}

describe('hostname rule (normaliseHostname)', () => {
  it('maps every spelling of a host to one name: lower case, no port, one trailing dot dropped, punycode', () => {
    const cases: Array<[string, string]> = [
      ['portal.acme.com', 'portal.acme.com'],
      ['Portal.ACME.com', 'portal.acme.com'],
      ['portal.acme.com:8443', 'portal.acme.com'],
      ['portal.acme.com:65535', 'portal.acme.com'],
      ['portal.acme.com.', 'portal.acme.com'],
      ['PORTAL.acme.com.:80', 'portal.acme.com'],
      ['bücher.example', 'xn--bcher-kva.example'],
      ['BÜCHER.example', 'xn--bcher-kva.example'],
      ['xn--bcher-kva.example', 'xn--bcher-kva.example'],
      ['例え.テスト', 'xn--r8jz45g.xn--zckzah'],
      // Full-width letters and the ideographic full stop, as a browser maps them.
      ['ｐｏｒｔａｌ。acme.com', 'portal.acme.com'],
      ['r3---sn-abc.googlevideo.com', 'r3---sn-abc.googlevideo.com'],
      ['1password.com', '1password.com'],
      [`${'a'.repeat(63)}.com`, `${'a'.repeat(63)}.com`],
    ];
    for (const [input, expected] of cases) {
      expect(normaliseHostname(input), input).to.equal(expected);
      // A Host header is ASCII: an internationalised name arrives in punycode, never as raw bytes.
      expect(hostnameOfHeader(input), input).to.equal(/[^\x00-\x7f]/.test(input) ? undefined : expected);
    }
  });

  it('a Host header with bytes beyond ASCII names no host, even where the IDNA mapping would make one (soft hyphen, ª, ², full-width letters)', () => {
    for (const host of ['ac\u00adme.com', '\u00aacme.com', 'acme\u00b2.com', 'ｐｏｒｔａｌ.acme.com', 'bücher.example']) {
      expect(hostnameOfHeader(host), JSON.stringify(host)).to.equal(undefined);
    }
    expect(normaliseHostname('ac\u00adme.com')).to.equal('acme.com');
  });

  it('refuses IP addresses in every spelling, URLs, bad labels and over-long names, naming the reason and the rule', () => {
    const cases: Array<[unknown, RegExp]> = [
      ['[::1]', /IP addresses are refused/],
      ['[::1]:3000', /IP addresses are refused/],
      ['::1', /IP addresses are refused/],
      ['fe80::1', /IP addresses are refused/],
      ['127.0.0.1', /IP addresses are refused/],
      ['127.0.0.1:8080', /IP addresses are refused/],
      ['0x7f.1', /IP addresses are refused/],
      ['127.1', /IP addresses are refused/],
      ['2130706433', /IP addresses are refused/],
      ['portal.0x10', /IP addresses are refused/],
      ['portal.1', /IP addresses are refused/],
      ['https://acme.com', /without scheme/],
      ['acme.com/path', /without scheme/],
      ['user@acme.com', /without scheme/],
      ['acme.com:http', /port number/],
      ['acme.com:', /port number/],
      ['acme.com:123456', /port number/],
      ['acme.com:65536', /port number/],
      ['a_b.acme.com', /contains "_"/],
      ['ac%6de.com', /contains "%"/],
      ['acme .com', /contains " "/],
      ['acme.com\t', /contains "\\t"/],
      ['a..b.com', /empty label/],
      ['.acme.com', /empty label/],
      ['acme.com..', /empty label/],
      ['-acme.com', /starts or ends with "-"/],
      ['acme-.com', /starts or ends with "-"/],
      [`${'a'.repeat(64)}.com`, /longer than 63/],
      [`${'abcdefghi.'.repeat(26)}com`, /longer than 253/],
      ['xn--abc.com', /punycode/],
      ['a.123', /IP addresses are refused/],
      ['localhost', /at least two labels/],
      ['com', /at least two labels/],
      ['', /empty/],
      ['.', /empty/],
      [42, /must be a string/],
      [undefined, /must be a string/],
    ];
    for (const [input, reason] of cases) {
      const error = refusal(input);
      expect(error.message, String(input)).to.match(reason);
      expect(error.message).to.contain(HOSTNAME_RULE);
      expect(error).to.include({ code: 'INVALID_HOSTNAME', statusCode: 400 });
      expect(hostnameOfHeader(input), String(input)).to.equal(undefined);
    }
  });
});
