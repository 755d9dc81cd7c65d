/**
 * RFC 4180 CSV of query rows, for `typeorm-tenants exec --csv`. Pure
 * functions: tested without a process.
 */

/**
 * The columns of `rows` in the order first seen (a tenant's rows may have
 * columns another's lack), then one line per row, CRLF-terminated as RFC
 * 4180 says. A cell is quoted when it holds a comma, a double quote (doubled),
 * a line break, or leading or trailing spaces; NULL is an empty cell; dates
 * are ISO 8601; objects and arrays are JSON.
 *
 * @example
 * ```ts
 * renderCsv([{ tenant: 'acme', name: 'Smith, "J"' }]);
 * // 'tenant,name\r\nacme,"Smith, ""J"""\r\n'
 * ```
 */
export function renderCsv(rows: readonly Record<string, unknown>[]): string {
  const columns: string[] = [];
  const seen = new Set<string>();
  for (const row of rows) {
    for (const column of Object.keys(row)) {
      if (!seen.has(column)) {
        seen.add(column);
        columns.push(column);
      }
    }
  }
  if (columns.length === 0) return '';
  const lines = [columns.map(csvCell).join(',')];
  for (const row of rows) lines.push(columns.map((column) => csvCell(row[column])).join(','));
  return `${lines.join('\r\n')}\r\n`;
}

/** One CSV cell of `value`, quoted when it must be. */
export function csvCell(value: unknown): string {
  const text = cellText(value);
  return /[",\r\n]|^\s|\s$/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function cellText(value: unknown): string {
  if (value === null || value === undefined) return '';
  if (value instanceof Date) return value.toISOString();
  if (Buffer.isBuffer(value)) return `\\x${value.toString('hex')}`;
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}
