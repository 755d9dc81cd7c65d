/**
 * The bare words TypeORM's PostgreSQL query building writes. Everything else
 * it writes is a quoted identifier, a `$n` parameter, a number or an
 * operator.
 */
const GENERATED_WORDS = new Set(
  (
    'select from where and or not in is null as inner left join on order by asc desc nulls first last limit offset ' +
    'group having insert into values default returning update set delete distinct count exists like ilike between ' +
    'any all true false for share nowait skip locked of no key with current_timestamp cast array conflict do nothing excluded'
  ).split(' '),
);

/** Words that open a clause; a quoted name that starts an item of a FROM list names a relation. */
const CLAUSE_WORDS = new Set(['select', 'from', 'join', 'where', 'on', 'set', 'values', 'returning', 'order', 'group', 'having', 'limit', 'offset', 'into', 'update', 'conflict']);

/** Words after which the next name is a relation. */
const RELATION_POSITIONS = new Set(['from', 'join', 'into', 'update']);

/**
 * Quoted identifiers, string literals, comment starts, parameters, bare
 * words, any non-ASCII character (PostgreSQL takes it as an identifier
 * letter), and any other single character.
 */
const TOKENS = /"(?:[^"]|"")*"|'(?:[^']|'')*'|--|\/\*|\$\d+|[A-Za-z_][A-Za-z0-9_$]*|[^\x00-\x7f]|\S/g;

/** Verdicts by statement text: a statement shape is checked once. */
const verdicts = new Map<string, boolean>();
const MAX_VERDICTS = 10_000;

/**
 * True when `sql` can only have come from TypeORM's query building: one
 * statement whose every bare word is one TypeORM writes, whose every relation
 * is schema-qualified, and which calls no function by a quoted name. SQL
 * written by hand inside a QueryBuilder (`where('...')`, `addSelect('(SELECT
 * ...)')`, `Raw()`, a string CTE, a function call, a comment) makes it false,
 * and the statement is then fenced like raw SQL. The check errs one way
 * only: a false answer costs a fenced transaction, never isolation.
 *
 * @example
 * ```ts
 * isOnlyGeneratedSql('SELECT "c"."id" AS "c_id" FROM "acme"."client" "c" WHERE "c"."id" = $1'); // true
 * isOnlyGeneratedSql('SELECT "c"."id" FROM "acme"."client" "c" WHERE "c"."id" IN (SELECT id FROM client)'); // false
 * ```
 */
export function isOnlyGeneratedSql(sql: string): boolean {
  const known = verdicts.get(sql);
  if (known !== undefined) return known;
  const verdict = analyse(sql);
  if (verdicts.size >= MAX_VERDICTS) verdicts.clear();
  verdicts.set(sql, verdict);
  return verdict;
}

function analyse(sql: string): boolean {
  const clauses = ['']; // the clause open at each parenthesis depth
  let previous = ''; // the previous token, lower case for words, '"' for a quoted identifier
  let nameParts = 0; // parts of the dotted quoted name being read
  let nameIsItem = false; // that name stands where a relation goes
  for (const [token] of sql.matchAll(TOKENS)) {
    const quoted = token.charCodeAt(0) === 34; /* " */
    if (nameParts > 0 && !(token === '.' && previous === '"') && !(quoted && previous === '.')) {
      // The name ended before this token.
      if (token === '(' && !(nameIsItem && nameParts > 1)) return false; // a call of a function named by hand
      if (nameIsItem && nameParts === 1) return false; // an unqualified relation
      nameParts = 0;
    }
    if (quoted) {
      if (nameParts > 0) {
        nameParts += 1;
      } else {
        nameParts = 1;
        nameIsItem = RELATION_POSITIONS.has(previous) || (previous === ',' && clauses[clauses.length - 1] === 'from');
      }
      previous = '"';
      continue;
    }
    const first = token.charCodeAt(0);
    if (first === 39 /* ' */ || (first >= 48 && first <= 57) /* digit */) {
      previous = token;
      continue;
    }
    if ((first >= 65 && first <= 90) || (first >= 97 && first <= 122) || first === 95) {
      const word = token.toLowerCase();
      if (!GENERATED_WORDS.has(word)) return false;
      if (CLAUSE_WORDS.has(word)) clauses[clauses.length - 1] = word;
      previous = word;
      continue;
    }
    if (token === '--' || token === '/*' || token === ';' || token === '$' || first > 0x7f) return false;
    if (token === '(') clauses.push('');
    else if (token === ')' && clauses.length > 1) clauses.pop();
    previous = token;
  }
  return !(nameParts > 0 && nameIsItem && nameParts === 1);
}
