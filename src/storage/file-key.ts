import { InvalidFileKeyError } from '../errors';

/** The longest key accepted, in UTF-8 bytes (S3 allows 1,024 for the whole object key, prefixes included). */
export const MAX_FILE_KEY_BYTES = 768;

/** The longest segment (between two `/`) accepted, in UTF-8 bytes: a file name on common filesystems. */
export const MAX_FILE_KEY_SEGMENT_BYTES = 255;

/** Segments starting with this are the local-disk driver's temporary files, so keys may not use it. */
export const RESERVED_SEGMENT_PREFIX = '.tenant-files-';

/** The key rule, in words (error messages and docs quote it). */
export const FILE_KEY_RULE =
  'a file key is a relative path of segments separated by "/", each segment non-empty and neither "." nor ".." (nor a look-alike of them); ' +
  'no backslash, no NUL or other control character, no percent-encoded sequence (%2F, %2e, ...: pass keys decoded), no slash look-alike (U+2215, U+FF0F, ...), ' +
  `at most ${MAX_FILE_KEY_BYTES} bytes of UTF-8 and ${MAX_FILE_KEY_SEGMENT_BYTES} per segment; keys are compared after Unicode NFC normalisation`;

/**
 * Characters that look like or act as a path separator somewhere (a shell, a
 * viewer, a Windows host) but that compatibility normalisation (NFKC) keeps:
 * refused anywhere in a key. NFKC itself catches the fullwidth forms.
 */
const SLASH_LOOK_ALIKES = /[\u2215\u2044\u29F8\u29F9\u2216\uFE68\uFF0F\uFF3C]/u;
/** C0 and C1 controls, DEL, the line and paragraph separators, and bidirectional overrides (names that display as another name). */
const CONTROL_CHARACTERS = /[\u0000-\u001F\u007F-\u009F\u2028\u2029\u202A-\u202E\u2066-\u2069]/u;
const LONE_SURROGATE = /\p{Cs}/u;
const PERCENT_ENCODED = /%[0-9A-Fa-f]{2}/;

/**
 * Checks a file key against `FILE_KEY_RULE` and returns its normal form (NFC).
 * Two spellings of one name (a precomposed `é` and `e` + U+0301) are one key.
 *
 * @throws InvalidFileKeyError naming the rule the key breaks.
 * @example
 * ```ts
 * normaliseFileKey('invoices/2024/0001.pdf'); // 'invoices/2024/0001.pdf'
 * normaliseFileKey('../other-tenant/secret'); // throws InvalidFileKeyError
 * ```
 */
export function normaliseFileKey(value: unknown): string {
  if (typeof value !== 'string') throw new InvalidFileKeyError(value, `a file key must be a string. The rule: ${FILE_KEY_RULE}.`);
  if (value.length === 0) throw new InvalidFileKeyError(value, 'a file key must not be empty.');
  return checkKey(value, value);
}

/**
 * Checks a `list()` prefix and returns its normal form: `''` (everything), a
 * folder ending in `/` (`'invoices/'`), or the start of a key
 * (`'invoices/2024-'`). What precedes a trailing `/` follows the key rule.
 *
 * @throws InvalidFileKeyError naming the rule the prefix breaks.
 */
export function normaliseFilePrefix(value: unknown): string {
  if (value === undefined || value === '') return '';
  if (typeof value !== 'string') throw new InvalidFileKeyError(value, 'a list() prefix must be a string (or left out for every file).');
  const folder = value.endsWith('/');
  const body = folder ? value.slice(0, -1) : value;
  if (body.length === 0) throw new InvalidFileKeyError(value, 'a list() prefix must not start with "/": keys are relative. Leave the prefix out to list every file.');
  return checkKey(body, value) + (folder ? '/' : '');
}

function checkKey(key: string, shown: string): string {
  const refuse = (reason: string): never => {
    throw new InvalidFileKeyError(shown, reason);
  };
  if (LONE_SURROGATE.test(key)) refuse('it holds a lone UTF-16 surrogate, which has no UTF-8 form (two such keys would land on one file name).');
  const normal = key.normalize('NFC');
  const control = CONTROL_CHARACTERS.exec(normal);
  if (control !== null) refuse(`it holds the control character ${codePoint(control[0])}; file keys may not contain NUL, control or bidirectional-override characters.`);
  if (normal.includes('\\')) refuse('it holds a backslash; segments are separated by "/" only, and "\\" is a separator on Windows hosts and in some tools.');
  if (normal.startsWith('/')) refuse('it is an absolute path; a file key is relative to the tenant\'s own folder (drop the leading "/").');
  if (PERCENT_ENCODED.test(normal)) {
    refuse(`it holds the percent-encoded sequence "${PERCENT_ENCODED.exec(normal)![0]}"; pass keys decoded (an encoded "/", "\\" or "." would become a separator or a dot segment where the key is decoded again).`);
  }
  const lookAlike = SLASH_LOOK_ALIKES.exec(normal);
  if (lookAlike !== null) refuse(`it holds ${codePoint(lookAlike[0])}, which looks like or acts as a path separator; use "/" between segments and another character inside names.`);
  const bytes = Buffer.byteLength(normal, 'utf8');
  if (bytes > MAX_FILE_KEY_BYTES) refuse(`it is ${bytes} bytes of UTF-8, more than the ${MAX_FILE_KEY_BYTES} allowed.`);
  const segments = normal.split('/');
  for (const segment of segments) {
    if (segment.length === 0) refuse('it has an empty segment ("//", or a trailing "/"); every segment between two "/" must be non-empty.');
    if (segment === '.' || segment === '..') refuse(`a "${segment}" segment names ${segment === '.' ? 'the folder itself' : 'the parent folder'}; file keys may not contain "." or ".." segments.`);
    if (Buffer.byteLength(segment, 'utf8') > MAX_FILE_KEY_SEGMENT_BYTES) refuse(`a segment is longer than ${MAX_FILE_KEY_SEGMENT_BYTES} bytes of UTF-8, the longest file name most filesystems take.`);
    if (segment.startsWith(RESERVED_SEGMENT_PREFIX)) refuse(`segments starting with "${RESERVED_SEGMENT_PREFIX}" are reserved for the library's temporary files.`);
  }
  // Some filesystems, proxies and tools apply compatibility normalisation:
  // "．．" (fullwidth), "‥" (two dot leader) or "℀" must not become "..", or
  // gain a "/", there either.
  const compatible = normal.normalize('NFKC');
  if (compatible.includes('\\') || PERCENT_ENCODED.test(compatible) || compatible.split('/').length !== segments.length) {
    refuse('under Unicode compatibility normalisation (NFKC) it gains a "/", "\\" or percent-encoded sequence (a fullwidth or composed look-alike); use plain characters.');
  }
  if (compatible.split('/').some((segment) => segment === '.' || segment === '..')) {
    refuse('under Unicode compatibility normalisation (NFKC) a segment becomes "." or ".." (a fullwidth or leader dot); use plain characters.');
  }
  return normal;
}

function codePoint(character: string): string {
  return `U+${character.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
}
