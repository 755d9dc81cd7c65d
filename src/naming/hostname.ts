import { domainToASCII } from 'node:url';
import { InvalidHostnameError } from '../errors';

/** The hostname rule, in words; error messages quote it. */
export const HOSTNAME_RULE =
  'a hostname is a domain name such as "portal.acme.com": labels of 1 to 63 letters, digits and "-" (not first or last), ' +
  'separated by dots, 253 characters at most; internationalised names are taken in their punycode form; ' +
  'at least two labels; no scheme, path, user or IP address; a port and one trailing dot are ignored';

/** Longest hostname, in its normalised (punycode) form, without the trailing dot (RFC 1035's 255 octets on the wire). */
export const MAX_HOSTNAME_LENGTH = 253;

/** Longer input is refused before any other work. */
const MAX_INPUT_LENGTH = 1024;

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const IPV4 = /^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/;
const PORT = /^[0-9]{1,5}$/;
const IP_ADDRESS_REFUSED = "IP addresses are refused (a tenant domain is a name; an address is the server's, shared by every tenant)";

/**
 * Normalises a hostname the way a browser's URL parser does, so that every
 * spelling of one host maps to one key: lower case, the port and one
 * trailing dot dropped, an internationalised name in punycode
 * (`Bücher.example:443` → `xn--bcher-kva.example`, with `node:url`'s
 * `domainToASCII`, WHATWG's "domain to ASCII"). Refuses, with
 * `InvalidHostnameError` naming the reason, anything that is not a domain
 * name (see `HOSTNAME_RULE`): IPv6 literals and IPv4 addresses (in any
 * spelling the URL parser reads as one, `0x7f.1` included), URLs,
 * underscores, empty or over-long labels, names over 253 characters. It
 * never touches the database.
 *
 * @example
 * ```ts
 * normaliseHostname('Portal.ACME.com:8443'); // 'portal.acme.com'
 * normaliseHostname('portal.acme.com.');     // 'portal.acme.com'
 * normaliseHostname('[::1]');                // throws InvalidHostnameError
 * ```
 */
export function normaliseHostname(value: unknown): string {
  const parsed = parseHostname(value, false);
  if (typeof parsed !== 'string') throw new InvalidHostnameError(value, `${parsed.reason}; ${HOSTNAME_RULE}.`);
  return parsed;
}

/**
 * The normalised hostname of a `Host` header (or HTTP/2 `:authority`), or
 * `undefined` when it is missing or is no valid hostname: the rule of
 * `normaliseHostname`, without the cost of an error, and ASCII only.
 * Browsers send internationalised names in punycode; a byte beyond ASCII
 * in a Host header (which Node reads as latin-1) is no hostname, never
 * mapped to one (the IDNA mapping would drop a soft hyphen and turn `ª`
 * into `a`, so `ac\u00adme.com` would reach `acme.com`'s tenant past a
 * proxy that knows no such host).
 */
export function hostnameOfHeader(value: unknown): string | undefined {
  const parsed = parseHostname(value, true);
  return typeof parsed === 'string' ? parsed : undefined;
}

/** The normalised hostname, or why `value` is none. */
function parseHostname(value: unknown, asciiOnly: boolean): string | { readonly reason: string } {
  if (typeof value !== 'string') return { reason: 'a hostname must be a string' };
  if (value.length === 0) return { reason: 'it is empty' };
  if (value.length > MAX_INPUT_LENGTH) return { reason: `it is longer than ${MAX_INPUT_LENGTH} characters` };
  if (value.startsWith('[')) return { reason: IP_ADDRESS_REFUSED };
  if (/[/@?#\\]/.test(value)) return { reason: 'give the hostname alone, without scheme, user, path or query' };
  let host = value;
  const colon = value.indexOf(':');
  if (colon !== -1) {
    // Two colons: an IPv6 address without its brackets.
    if (value.indexOf(':', colon + 1) !== -1) return { reason: IP_ADDRESS_REFUSED };
    const port = value.slice(colon + 1);
    if (!PORT.test(port) || Number(port) > 65535) return { reason: 'what follows ":" must be a port number (0 to 65535)' };
    host = value.slice(0, colon);
  }
  let plain = true;
  for (let i = 0; i < host.length; i += 1) {
    const c = host.charCodeAt(i);
    if (c >= 0x80) {
      if (asciiOnly) return { reason: 'a Host header carries ASCII only (punycode for internationalised names)' };
      plain = false;
      continue;
    }
    // ASCII beyond letters, digits, "-" and ".": the URL parser would drop
    // some (tabs), decode others (%61 is "a"); none belongs in a hostname.
    if (!((c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e)) {
      return { reason: `it contains ${JSON.stringify(host[i])}, which no hostname has` };
    }
  }
  // Letters, digits, "-" and "." with no punycode label: domain-to-ASCII
  // would only lower-case them (the common Host header, at a third of the cost).
  let ascii = plain && !/xn--/i.test(host) ? host.toLowerCase() : domainToASCII(host);
  if (ascii === '') return { reason: 'it is not a valid domain name (its internationalised form has no punycode form)' };
  if (ascii.endsWith('.')) ascii = ascii.slice(0, -1);
  if (ascii === '') return { reason: 'it is empty' };
  // The URL parser turns a name whose last label is numeric into an IPv4 address (0x7f.1 → 127.0.0.1).
  if (IPV4.test(ascii)) return { reason: IP_ADDRESS_REFUSED };
  if (ascii.length > MAX_HOSTNAME_LENGTH) return { reason: `it is longer than ${MAX_HOSTNAME_LENGTH} characters` };
  const labels = ascii.split('.');
  for (const label of labels) {
    if (label === '') return { reason: 'it has an empty label (two dots in a row, or a leading dot)' };
    if (label.length > 63) return { reason: 'it has a label longer than 63 characters' };
    if (!LABEL.test(label)) return { reason: `its label "${label}" has a character other than letters, digits and "-", or starts or ends with "-"` };
  }
  // A last label that is a number makes the URL parser read the name as an IPv4 address (0x10 included).
  if (/^(?:[0-9]+|0x[0-9a-f]*)$/.test(labels[labels.length - 1]!)) return { reason: IP_ADDRESS_REFUSED };
  if (labels.length < 2) return { reason: 'a tenant domain has at least two labels ("acme.com", "portal.acme.com"): a single label ("localhost", "com") is no one\'s own domain' };
  return ascii;
}
