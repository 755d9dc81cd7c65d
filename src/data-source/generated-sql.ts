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

/** Words that open a clause. */
const CLAUSE_WORDS = new Set(['select', 'from', 'join', 'where', 'on', 'set', 'values', 'returning', 'order', 'group', 'having', 'limit', 'offset', 'into', 'update', 'conflict']);

/** Clauses in which a comma starts another relation of the FROM list. */
const FROM_LIST_CLAUSES = new Set(['from', 'join', 'on']);

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

/** Where the next token stands: where a relation goes (after INTO: a table and its column list), or not. */
type Position = 'relation' | 'into' | undefined;

function analyse(sql: string): boolean {
  const clauses = ['']; // the clause open at each parenthesis depth
  let previous = ''; // the previous token, lower case for words, '"' for a quoted identifier
  let position: Position; // what the next token stands for
  let nameParts = 0; // parts of the dotted quoted name being read
  let namePosition: Position; // where that name stands
  for (const [token] of sql.matchAll(TOKENS)) {
    const quoted = token.charCodeAt(0) === 34; /* " */
    if (nameParts > 0) {
      if (token === '.' && previous === '"') {
        previous = '.';
        continue;
      }
      if (quoted && previous === '.') {
        nameParts += 1;
        previous = '"';
        continue;
      }
      // The name ended before this token. Only a table after INTO is followed
      // by a parenthesis (its column list); any other name so followed is a
      // function called by hand. A relation TypeORM names is always qualified.
      if (token === '(' && !(namePosition === 'into' && nameParts > 1)) return false;
      if (namePosition !== undefined && nameParts === 1) return false;
      nameParts = 0;
    }
    const here = position;
    position = undefined;
    if (quoted) {
      nameParts = 1;
      namePosition = here;
      previous = '"';
      continue;
    }
    const first = token.charCodeAt(0);
    if ((first >= 65 && first <= 90) || (first >= 97 && first <= 122) || first === 95) {
      const word = token.toLowerCase();
      if (!GENERATED_WORDS.has(word)) return false;
      // Where a relation goes, TypeORM writes a quoted name or a subquery:
      // a bare word there (`FROM share`) names a relation by hand.
      if (here !== undefined && word !== 'select') return false;
      if (CLAUSE_WORDS.has(word)) clauses[clauses.length - 1] = word;
      position = relationAfter(word, previous);
      previous = word;
      continue;
    }
    if (here !== undefined && token !== '(') return false; // a literal, a number or an operator where a relation goes
    if (token === '--' || token === '/*' || token === ';' || token === '$' || first > 0x7f) return false;
    if (token === '(') {
      clauses.push('');
      position = here; // a parenthesis where a relation goes holds a subquery or a join tree
    } else if (token === ')') {
      if (clauses.length > 1) clauses.pop();
    } else if (token === ',' && FROM_LIST_CLAUSES.has(clauses[clauses.length - 1]!)) {
      position = 'relation';
    }
    previous = token;
  }
  return !(nameParts === 1 && namePosition !== undefined);
}

/** Whether the token after `word` stands where a relation goes. */
function relationAfter(word: string, previous: string): Position {
  switch (word) {
    case 'from':
    case 'join':
      return 'relation';
    case 'into':
      return 'into';
    case 'update':
      // UPDATE "s"."t", but not FOR UPDATE, FOR NO KEY UPDATE or ON CONFLICT DO UPDATE.
      return previous === 'for' || previous === 'key' || previous === 'do' ? undefined : 'relation';
    default:
      return undefined;
  }
}
