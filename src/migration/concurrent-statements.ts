/**
 * The statements a tenant migration may run outside a transaction: the
 * concurrent forms of index builds, drops and rebuilds (`CREATE [UNIQUE]
 * INDEX CONCURRENTLY`, `DROP INDEX CONCURRENTLY`, `REINDEX ... CONCURRENTLY`),
 * recognised from their first tokens, with the schema they name.
 *
 * A migration with `transaction = false` sends them bare (PostgreSQL refuses
 * them in a transaction block), with no `search_path` set (only `SET LOCAL`
 * is safe on a pooled or PgBouncer connection), and the migration guard's
 * event triggers cannot stop them in time (`ddl_command_end` of a concurrent
 * build fires after its first commit): so the name they act on must be
 * qualified with the tenant schema, and is checked before the statement is
 * sent. Inside a transaction (`createTenant`, the warm pool, restore) the
 * same statements run with `CONCURRENTLY` removed.
 */
export interface ConcurrentStatement {
  /** `CREATE INDEX CONCURRENTLY`, `DROP INDEX CONCURRENTLY`, `REINDEX INDEX CONCURRENTLY`, ... */
  readonly action: string;
  /** The schema the statement's target names; `undefined` when the name is unqualified. */
  readonly schema: string | undefined;
  /** The target as written, for messages. */
  readonly target: string;
  /** The statement with `CONCURRENTLY` removed, for a transaction. */
  readonly inTransaction: string;
}

interface Token {
  /** Keyword or identifier, folded as PostgreSQL folds it (unquoted: lower case). */
  readonly value: string;
  readonly quoted: boolean;
  readonly start: number;
  readonly end: number;
}

/**
 * The concurrent statement `sql` is, or `undefined` when it is another
 * statement (which then runs in a transaction; one that PostgreSQL refuses
 * there fails with its own error).
 */
export function concurrentStatementOf(sql: string): ConcurrentStatement | undefined {
  const tokens = tokenize(sql, 24);
  let i = 0;
  const keyword = (...words: string[]): boolean => {
    const token = tokens[i];
    if (token === undefined || token.quoted || !words.includes(token.value)) return false;
    i += 1;
    return true;
  };
  const skipParenthesized = (): void => {
    if (tokens[i]?.value !== '(' || tokens[i]?.quoted) return;
    let depth = 0;
    for (; i < tokens.length; i += 1) {
      if (tokens[i]!.value === '(') depth += 1;
      if (tokens[i]!.value === ')' && --depth === 0) {
        i += 1;
        return;
      }
    }
  };
  let action: string;
  let concurrently: Token;
  let schemaOnly = false;
  if (keyword('create')) {
    const unique = keyword('unique');
    if (!keyword('index')) return undefined;
    concurrently = tokens[i]!;
    if (!keyword('concurrently')) return undefined;
    action = `CREATE ${unique ? 'UNIQUE ' : ''}INDEX CONCURRENTLY`;
    if (keyword('if')) {
      if (!keyword('not') || !keyword('exists')) return undefined;
    }
    // An optional index name (never qualified: the index goes to its table's schema), then ON [ONLY].
    if (!keyword('on')) {
      i += 1;
      if (!keyword('on')) return undefined;
    }
    keyword('only');
  } else if (keyword('drop')) {
    if (!keyword('index')) return undefined;
    concurrently = tokens[i]!;
    if (!keyword('concurrently')) return undefined;
    action = 'DROP INDEX CONCURRENTLY';
    if (keyword('if')) {
      if (!keyword('exists')) return undefined;
    }
  } else if (keyword('reindex')) {
    skipParenthesized();
    const kind = tokens[i]?.value;
    if (!keyword('index', 'table', 'schema')) return undefined;
    concurrently = tokens[i]!;
    if (!keyword('concurrently')) return undefined;
    action = `REINDEX ${kind!.toUpperCase()} CONCURRENTLY`;
    schemaOnly = kind === 'schema';
  } else {
    return undefined;
  }
  const name: Token[] = [];
  while (tokens[i] !== undefined && tokens[i]!.value !== '(' && !isPunctuation(tokens[i]!)) {
    name.push(tokens[i]!);
    i += 1;
    if (tokens[i]?.value !== '.' || tokens[i]!.quoted) break;
    i += 1;
  }
  if (name.length === 0) return undefined;
  const target = name.map((t) => (t.quoted ? `"${t.value.replace(/"/g, '""')}"` : t.value)).join('.');
  // schema.name, or database.schema.name; a REINDEX SCHEMA names the schema itself.
  const schema = schemaOnly ? name[0]!.value : name.length >= 2 ? name[name.length - 2]!.value : undefined;
  const inTransaction = sql.slice(0, concurrently.start) + sql.slice(concurrently.end);
  return { action, schema, target, inTransaction };
}

function isPunctuation(token: Token): boolean {
  return !token.quoted && /^[^a-z0-9_$\u0080-\uffff]$/.test(token.value);
}

/**
 * The first `limit` tokens of `sql`: identifiers and keywords (unquoted ones
 * in lower case), quoted identifiers (unescaped), and single punctuation
 * characters; comments and white space are skipped, and a string literal
 * ends the scan (no recognised statement has one before its target).
 */
function tokenize(sql: string, limit: number): Token[] {
  const tokens: Token[] = [];
  let at = 0;
  while (at < sql.length && tokens.length < limit) {
    const rest = sql.slice(at);
    const space = /^(\s+|--[^\n]*|\/\*[\s\S]*?\*\/)/.exec(rest);
    if (space !== null) {
      at += space[0].length;
      continue;
    }
    if (rest.startsWith('/*')) break; // an unterminated comment
    if (rest[0] === '"') {
      const quoted = /^"((?:[^"]|"")*)"/.exec(rest);
      if (quoted === null) break;
      tokens.push({ value: quoted[1]!.replace(/""/g, '"'), quoted: true, start: at, end: at + quoted[0].length });
      at += quoted[0].length;
      continue;
    }
    const word = /^[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*/.exec(rest);
    if (word !== null) {
      tokens.push({ value: word[0].replace(/[A-Z]+/g, (upper) => upper.toLowerCase()), quoted: false, start: at, end: at + word[0].length });
      at += word[0].length;
      continue;
    }
    if (rest[0] === "'" || rest[0] === '$') break;
    tokens.push({ value: rest[0]!, quoted: false, start: at, end: at + 1 });
    at += 1;
  }
  return tokens;
}
