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
  /** Skips a parenthesised option list and returns its tokens (without the parentheses), or `undefined` when there is none. */
  const skipParenthesized = (): Token[] | undefined => {
    if (tokens[i]?.value !== '(' || tokens[i]?.quoted) return undefined;
    const from = i;
    let depth = 0;
    for (; i < tokens.length; i += 1) {
      if (tokens[i]!.value === '(') depth += 1;
      if (tokens[i]!.value === ')' && --depth === 0) {
        i += 1;
        return tokens.slice(from, i);
      }
    }
    return undefined;
  };
  let action: string;
  let concurrently: Token | undefined;
  // REINDEX (CONCURRENTLY [true]) TABLE ...: the option form; the in-transaction form drops that option.
  let inTransactionOf: ((sql: string) => string) | undefined;
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
    const options = skipParenthesized();
    const kind = tokens[i]?.value;
    if (!keyword('index', 'table', 'schema')) return undefined;
    const optionAt = options?.findIndex((token) => !token.quoted && token.value === 'concurrently') ?? -1;
    const optionValue = options?.[optionAt + 1];
    const optionOn = optionAt >= 0 && (optionValue === undefined || !['false', 'off', '0'].includes(optionValue.value));
    if (optionOn) {
      const list = options!;
      inTransactionOf = (text) => {
        // The options without CONCURRENTLY [value]; no options left: no parentheses.
        const items: Token[][] = [[]];
        for (const token of list.slice(1, -1)) {
          if (!token.quoted && token.value === ',') items.push([]);
          else items[items.length - 1]!.push(token);
        }
        const kept = items.filter((item) => item.length > 0 && !(item[0]!.value === 'concurrently' && !item[0]!.quoted));
        const replacement = kept.length === 0 ? '' : `(${kept.map((item) => text.slice(item[0]!.start, item[item.length - 1]!.end)).join(', ')})`;
        return text.slice(0, list[0]!.start) + replacement + text.slice(list[list.length - 1]!.end);
      };
    } else {
      concurrently = tokens[i]!;
      if (!keyword('concurrently')) return undefined;
    }
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
  const inTransaction = inTransactionOf?.(sql) ?? sql.slice(0, concurrently!.start) + sql.slice(concurrently!.end);
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
 * (lexed as PostgreSQL does), parentheses (`CREATE RULE ... DO (a; b)`) and
 * SQL-standard bodies (`BEGIN ATOMIC ... END`, with the `CASE ... END` inside
 * them); empty ones (white space and comments only) are left out. `unterminated` when a quote or comment never closes (PostgreSQL
 * would refuse the string).
 */
export function splitStatements(sql: string, backslashEscapes = false): { readonly statements: string[]; readonly unterminated: boolean } {
  const statements: string[] = [];
  let start = 0;
  let content = false;
  let at = 0;
  let parentheses = 0;
  // Open BEGIN ATOMIC bodies and CASE expressions inside them; the previous word, to see BEGIN ATOMIC.
  let blocks = 0;
  let previousWord = '';
  const end = (until: number): void => {
    if (content) statements.push(sql.slice(start, until));
    start = until + 1;
    content = false;
    previousWord = '';
  };
  while (at < sql.length) {
    const skip = skippable(sql, at);
    if (skip < 0) return { statements: [...statements, sql.slice(start)], unterminated: true };
    if (skip > 0) {
      at += skip;
      continue;
    }
    const char = sql[at]!;
    if (char === ';' && parentheses === 0 && blocks === 0) {
      end(at);
      at += 1;
      continue;
    }
    if (char === '(') parentheses += 1;
    if (char === ')') parentheses = Math.max(0, parentheses - 1);
    content = true;
    let next = at + 1;
    if (char === "'" || ((char === 'e' || char === 'E') && sql[at + 1] === "'")) {
      // E'...' always takes backslash escapes; '...' too under standard_conforming_strings = off.
      const escapes = char !== "'" || backslashEscapes;
      next = at + (char === "'" ? 1 : 2);
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
      if (word !== null) {
        next = at + word[0].length;
        const lower = word[0].toLowerCase();
        if (lower === 'atomic' && previousWord === 'begin') blocks += 1;
        else if (lower === 'case' && blocks > 0) blocks += 1;
        else if (lower === 'end' && blocks > 0) blocks -= 1;
        previousWord = lower;
      }
    }
    at = next;
  }
  end(sql.length);
  return { statements, unterminated: false };
}

/**
 * Whether `sql` holds more than one statement (or a quote or comment that
 * never closes), read with standard_conforming_strings on and off: a
 * migration may change the setting, so either reading counts.
 */
export function holdsSeveralStatements(sql: string): boolean {
  return [false, true].some((backslashEscapes) => {
    const split = splitStatements(sql, backslashEscapes);
    // An unterminated quote only counts in the default reading: 'C:\' is whole there.
    return split.statements.length > 1 || (split.unterminated && !backslashEscapes);
  });
}

/**
 * The first statement of `sql` that would end (or start) the transaction it
 * runs in: `COMMIT`, `END`, `ROLLBACK` (not `ROLLBACK TO`), `ABORT`,
 * `BEGIN`, `START TRANSACTION`, `PREPARE TRANSACTION`, `COMMIT PREPARED`,
 * `ROLLBACK PREPARED`. `undefined` when there is none.
 */
export function transactionControlIn(sql: string): string | undefined {
  // Read both ways: under standard_conforming_strings = off a backslash escapes a quote in '...'.
  for (const statement of [...splitStatements(sql).statements, ...splitStatements(sql, true).statements]) {
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
