/**
 * A sqlcommenter comment (https://google.github.io/sqlcommenter/spec/):
 * `key='value'` pairs, keys sorted, comma-separated, in one `/*...*\/`, each
 * key and value URL-encoded (`encodeURIComponent`) with `'` also encoded
 * (`%27`, which sqlcommenter decoders read back as `'`). Because `/` is
 * always encoded, neither `*\/` (which would end the comment) nor `/*`
 * (PostgreSQL nests block comments, so it would swallow the statement) can
 * come out of any value.
 *
 * @example
 * ```ts
 * sqlCommentOf({ tenant: 'acme' }); // "/*tenant='acme'*\/"
 * ```
 */
export function sqlCommentOf(fields: Readonly<Record<string, string>>): string {
  const pairs = Object.keys(fields)
    .sort()
    .map((key) => `${encodeSqlCommentPart(key)}='${encodeSqlCommentPart(fields[key]!)}'`);
  return `/*${pairs.join(',')}*/`;
}

function encodeSqlCommentPart(value: string): string {
  return encodeURIComponent(value).replace(/'/g, '%27');
}

/**
 * What the `sqlComment` option puts in front of every statement of a tenant
 * DataSource (internal): the tenant's comment and a space. In front rather
 * than after, as the spec places it: PostgreSQL cuts `pg_stat_activity.query`
 * at `track_activity_query_size` (1 kB by default), which would drop a
 * trailing comment of a long statement, and raw SQL ending in a `--` comment
 * would swallow one.
 */
export function tenantSqlCommentPrefix(slug: string): string {
  return `${sqlCommentOf({ tenant: slug })} `;
}
