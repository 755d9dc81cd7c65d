/**
 * Quotes a PostgreSQL identifier: wraps it in double quotes and doubles any
 * double quote inside. Every identifier the library writes into SQL goes
 * through here, after validation by the slug rule or the options checks.
 *
 * @example
 * ```ts
 * quoteIdent('acme');   // '"acme"'
 * quoteIdent('a"b');    // '"a""b"'
 * ```
 */
export function quoteIdent(name: string): string {
  if (name.includes('\0')) {
    throw new TypeError('A PostgreSQL identifier cannot contain a NUL character.');
  }
  return `"${name.replace(/"/g, '""')}"`;
}

/** Quotes each identifier and joins them with ", " (for search_path lists). */
export function quoteIdentList(names: readonly string[]): string {
  return names.map(quoteIdent).join(', ');
}
