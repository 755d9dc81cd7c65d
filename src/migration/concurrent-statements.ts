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
 * The length of the comment or white space at `at`, lexed as PostgreSQL does
 * (block comments nest; a `--` comment ends at a newline or a carriage
 * return), 0 when there is none, or -1 for a block comment never closed.
 */
function skippable(sql: string, at: number): number {
  const space = /^\s+/.exec(sql.slice(at, at + 4096));
  if (space !== null) return space[0].length;
  if (sql.startsWith('--', at)) {
    let end = at + 2;
    while (end < sql.length && sql[end] !== '\n' && sql[end] !== '\r') end += 1;
    return end - at;
  }
  if (!sql.startsWith('/*', at)) return 0;
  let depth = 0;
  for (let end = at; end < sql.length; end += 1) {
    if (sql.startsWith('/*', end)) {
      depth += 1;
      end += 1;
    } else if (sql.startsWith('*/', end)) {
      depth -= 1;
      end += 1;
      if (depth === 0) return end + 1 - at;
    }
  }
  return -1;
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
    const skip = skippable(sql, at);
    if (skip < 0) break; // an unterminated comment
    if (skip > 0) {
      at += skip;
      continue;
    }
    const rest = sql.slice(at, at + 4096);
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

/**
 * The statements of `sql`, split at each `;` outside string literals
 * (standard, `E'...'`, dollar-quoted), quoted identifiers and comments
 * (lexed as PostgreSQL does); empty ones (white space and comments only) are
 * left out. `unterminated` when a quote or comment never closes (PostgreSQL
 * would refuse the string).
 */
export function splitStatements(sql: string): { readonly statements: string[]; readonly unterminated: boolean } {
  const statements: string[] = [];
  let start = 0;
  let content = false;
  let at = 0;
  const end = (until: number): void => {
    if (content) statements.push(sql.slice(start, until));
    start = until + 1;
    content = false;
  };
  while (at < sql.length) {
    const skip = skippable(sql, at);
    if (skip < 0) return { statements: [...statements, sql.slice(start)], unterminated: true };
    if (skip > 0) {
      at += skip;
      continue;
    }
    const char = sql[at]!;
    if (char === ';') {
      end(at);
      at += 1;
      continue;
    }
    content = true;
    let next = at + 1;
    if (char === "'" || ((char === 'e' || char === 'E') && sql[at + 1] === "'")) {
      const escapes = char !== "'";
      next = at + (escapes ? 2 : 1);
      for (;;) {
        if (next >= sql.length) return { statements: [...statements, sql.slice(start)], unterminated: true };
        if (escapes && sql[next] === '\\') next += 2;
        else if (sql[next] === "'" && sql[next + 1] === "'") next += 2;
        else if (sql[next] === "'") break;
        else next += 1;
      }
      next += 1;
    } else if (char === '"') {
      const quoted = /^"(?:[^"]|"")*"/.exec(sql.slice(at));
      if (quoted === null) return { statements: [...statements, sql.slice(start)], unterminated: true };
      next = at + quoted[0].length;
    } else if (char === '$' && /^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/.test(sql.slice(at, at + 256))) {
      const tag = /^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/.exec(sql.slice(at, at + 256))![0];
      const close = sql.indexOf(tag, at + tag.length);
      if (close < 0) return { statements: [...statements, sql.slice(start)], unterminated: true };
      next = close + tag.length;
    } else {
      const word = /^[A-Za-z0-9_\u0080-\uffff$]+/.exec(sql.slice(at, at + 4096));
      if (word !== null) next = at + word[0].length;
    }
    at = next;
  }
  end(sql.length);
  return { statements, unterminated: false };
}

/** Whether `sql` holds more than one statement (or a quote or comment that never closes). */
export function holdsSeveralStatements(sql: string): boolean {
  const split = splitStatements(sql);
  return split.unterminated || split.statements.length > 1;
}

/**
 * The first statement of `sql` that would end (or start) the transaction it
 * runs in: `COMMIT`, `END`, `ROLLBACK` (not `ROLLBACK TO`), `ABORT`,
 * `BEGIN`, `START TRANSACTION`, `PREPARE TRANSACTION`, `COMMIT PREPARED`,
 * `ROLLBACK PREPARED`. `undefined` when there is none.
 */
export function transactionControlIn(sql: string): string | undefined {
  for (const statement of splitStatements(sql).statements) {
    const words = tokenize(statement, 3).map((token) => (token.quoted ? '"' : token.value));
    const [first, second] = words;
    const control =
      first === 'commit' ||
      first === 'end' ||
      first === 'abort' ||
      first === 'begin' ||
      (first === 'rollback' && second !== 'to' && words[2] !== 'to') ||
      (first === 'start' && second === 'transaction') ||
      (first === 'prepare' && second === 'transaction');
    if (control) return statement.trim();
  }
  return undefined;
}
