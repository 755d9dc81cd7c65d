import { expect } from 'chai';
import { isOnlyGeneratedSql } from '../../src/data-source/generated-sql';

// Statements TypeORM 1.1.1 wrote for the example model in a tenant "aa"
// (save, findOneBy, find with relations and paging, update, count, upsert,
// pessimistic lock, delete): these pass unfenced, so they cost nothing.
const GENERATED = [
  'INSERT INTO "aa"."client"("name", "email", "internal_note", "plan_id") VALUES ($1, $2, DEFAULT, DEFAULT) RETURNING "id", "internal_note"',
  'SELECT "Client"."id" AS "Client_id", "Client"."name" AS "Client_name" FROM "aa"."client" "Client" WHERE (("Client"."id" = $1)) LIMIT 1',
  'SELECT DISTINCT "distinctAlias"."Client_id" AS "ids_Client_id", "distinctAlias"."Client_id" FROM (SELECT "Client"."id" AS "Client_id", ' +
    '"Client__Client_plan"."id" AS "Client__Client_plan_id" FROM "aa"."client" "Client" LEFT JOIN "public"."plan" "Client__Client_plan" ' +
    'ON "Client__Client_plan"."id"="Client"."plan_id"  LEFT JOIN "aa"."project" "Client__Client_projects" ON "Client__Client_projects"."client_id"="Client"."id" ' +
    'WHERE (("Client"."name" = $1))) "distinctAlias" ORDER BY "distinctAlias"."Client_id" DESC, "Client_id" ASC LIMIT 5 OFFSET 1',
  'UPDATE "aa"."client" SET "name" = $1 WHERE "id" = $2',
  'SELECT COUNT(1) AS "cnt" FROM "aa"."client" "Client" WHERE (("Client"."email" = $1))',
  'INSERT INTO "aa"."client"("name", "email", "internal_note", "plan_id") VALUES ($1, $2, DEFAULT, DEFAULT) ON CONFLICT ( "id" ) DO UPDATE SET ' +
    '"id" = EXCLUDED."id", "name" = EXCLUDED."name" RETURNING "id", "internal_note"',
  'SELECT "Client"."id" AS "Client_id" FROM "aa"."client" "Client" WHERE (("Client"."id" = $1)) LIMIT 1 FOR UPDATE',
  'DELETE FROM "aa"."client" WHERE "id" = $1',
  'SELECT "c"."id" FROM "aa"."client" "c", "aa"."project" "p" WHERE "p"."client_id" = "c"."id"',
  'SELECT "Client"."id" AS "Client_id" FROM "aa"."client" "Client" WHERE (("Client"."id" = $1)) LIMIT 1 FOR NO KEY UPDATE',
  'SELECT "Client"."id" AS "Client_id" FROM "aa"."client" "Client" FOR UPDATE OF "Client" NOWAIT',
  'SELECT "d"."id" FROM (SELECT "c"."id" AS "id" FROM "aa"."client" "c") "d"',
];

// SQL written by hand inside a QueryBuilder: each must be fenced.
const HAND_WRITTEN: Array<[string, string]> = [
  ['an unquoted table in a subquery', 'SELECT "c"."id" FROM "aa"."client" "c" WHERE "c"."id" IN (SELECT id FROM client)'],
  ['a function call', `SELECT set_config('role', 'none', false) AS "x"`],
  ['a schema-qualified function called by a quoted name', `SELECT "pg_catalog"."set_config"('role', 'none', false) AS "x"`],
  ['a function called by an unqualified quoted name', `SELECT "set_config"('role', 'none', false) AS "x"`],
  ['a quoted unqualified table after FROM', 'SELECT EXISTS (SELECT 1 FROM "client") AS "x"'],
  ['a quoted unqualified table after JOIN', 'SELECT "c"."id" FROM "aa"."client" "c" INNER JOIN "client" "d" ON "d"."id" = "c"."id"'],
  ['a quoted unqualified table in a FROM list', 'SELECT "c"."id" FROM "aa"."client" "c", "client" WHERE "c"."id" = $1'],
  ['a quoted unqualified table after INTO', 'INSERT INTO "client"("name") VALUES ($1)'],
  ['a quoted unqualified table after UPDATE', 'UPDATE "client" SET "name" = $1'],
  ['a CTE name (fenced: it is written like a table)', 'WITH "c" AS (SELECT 1) SELECT * FROM "c"'],
  ['two statements', 'SELECT "c"."id" FROM "aa"."client" "c" WHERE true; SELECT 1'],
  ['a line comment hiding a quote', `SELECT 1 AS "a" -- "\n, set_config('role', 'none', false) --"`],
  ['a block comment hiding a quote', `SELECT 1 AS "a" /* " */ , set_config('role', 'none', false) /* " */`],
  ['dollar quoting', 'SELECT $$x$$ AS "a"'],
  ['an identifier starting with a non-ASCII letter', 'SELECT éfunction() AS "a"'],
  ['an escape string', `SELECT E'\\'' AS "a"`],
  // Found by trying to break the fence:
  ['a parenthesised join tree hiding an unqualified relation', 'SELECT (SELECT "x"."email" FROM ("client" "x" LEFT JOIN "aa"."project" "p" ON false) LIMIT 1) AS "leak"'],
  ['a comma after a join condition', 'SELECT "z"."email" AS "email" FROM "aa"."client" "c" LEFT JOIN "aa"."project" "p" ON false, "client" "z"'],
  ['a whitelisted word used as a relation name', 'SELECT "c"."id" FROM "aa"."client" "c" WHERE "c"."email" IN (SELECT "s"."email" FROM share "s")'],
  ['a schema-qualified function in FROM', 'SELECT (SELECT "q"::"text" FROM "pg_catalog"."query_to_xml"($1, true, false, $2) "q") AS "xml"'],
  ['set_config called in FROM', 'SELECT "c"."id" FROM "aa"."client" "c" WHERE EXISTS (SELECT 1 FROM "pg_catalog"."set_config"($1, $2, false))'],
];

describe('isOnlyGeneratedSql: which QueryBuilder statements pass unfenced', () => {
  it('the statements TypeORM writes for repositories and QueryBuilders over entities pass', () => {
    for (const sql of GENERATED) expect(isOnlyGeneratedSql(sql), sql).to.equal(true);
  });

  for (const [what, sql] of HAND_WRITTEN) {
    it(`hand-written SQL is fenced: ${what}`, () => {
      expect(isOnlyGeneratedSql(sql), sql).to.equal(false);
      expect(isOnlyGeneratedSql(sql), 'the cached verdict').to.equal(false);
    });
  }
});
