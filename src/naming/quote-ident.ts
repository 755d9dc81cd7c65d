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

/**
 * Quotes a string as an SQL literal, whatever `standard_conforming_strings`
 * says (a value with a backslash is written as `E'...'`), for statements
 * that must be sent without parameters.
 */
export function quoteLiteral(value: string): string {
  const quoted = value.replace(/'/g, "''");
  return /\\/.test(value) ? `E'${quoted.replace(/\\/g, '\\\\')}'` : `'${quoted}'`;
}

/** Quotes each identifier and joins them with ", " (for search_path lists). */
export function quoteIdentList(names: readonly string[]): string {
  return names.map(quoteIdent).join(', ');
}
