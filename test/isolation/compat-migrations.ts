import { Table, TableForeignKey, type MigrationInterface, type QueryRunner } from 'typeorm';

/** Shared: the Active Record plan table, in the shared schema. Idempotent (the test database is reused). */
export class CompatSharedPlan1790000000000 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(
      'CREATE TABLE IF NOT EXISTS compat_plan (id serial PRIMARY KEY, code varchar NOT NULL UNIQUE, name varchar NOT NULL)',
    );
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE IF EXISTS compat_plan');
  }
}

/**
 * Tenant, with TypeORM's Table API: names without a schema, foreign keys to a
 * shared table (`compat_plan`, no referencedSchema) and to a tenant table
 * (`compat_author`, while a legacy `public.compat_author` exists).
 */
export class CompatTenantTableApi1790000000001 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.createTable(
      new Table({
        name: 'compat_author',
        columns: [
          { name: 'id', type: 'int', isPrimary: true, isGenerated: true, generationStrategy: 'increment' },
          { name: 'name', type: 'varchar' },
          { name: 'plan_id', type: 'int', isNullable: true },
        ],
      }),
    );
    await queryRunner.createForeignKey(
      'compat_author',
      new TableForeignKey({ columnNames: ['plan_id'], referencedTableName: 'compat_plan', referencedColumnNames: ['id'] }),
    );
    await queryRunner.createTable(
      new Table({
        name: 'compat_profile',
        columns: [
          { name: 'id', type: 'int', isPrimary: true, isGenerated: true, generationStrategy: 'increment' },
          { name: 'bio', type: 'varchar' },
          { name: 'author_id', type: 'int', isUnique: true },
        ],
        foreignKeys: [{ columnNames: ['author_id'], referencedTableName: 'compat_author', referencedColumnNames: ['id'], onDelete: 'CASCADE' }],
      }),
    );
    await queryRunner.createTable(
      new Table({
        name: 'compat_event',
        columns: [
          { name: 'id', type: 'uuid', isPrimary: true, default: 'gen_random_uuid()' },
          { name: 'name', type: 'varchar' },
          { name: 'slug', type: 'varchar' },
          { name: 'stamp', type: 'varchar', isNullable: true },
          { name: 'plan_id', type: 'int', isNullable: true },
        ],
        foreignKeys: [{ columnNames: ['plan_id'], referencedTableName: 'compat_plan', referencedColumnNames: ['id'] }],
      }),
    );
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.dropTable('compat_event');
    await queryRunner.dropTable('compat_profile');
    await queryRunner.dropTable('compat_author');
  }
}

/** Tenant, in raw SQL with unqualified names (runs under `SET LOCAL search_path TO "<tenant>", "public"`). */
export class CompatTenantRawSql1790000000002 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    const statements = [
      "CREATE TYPE compat_book_status AS ENUM ('draft', 'published', 'retired')",
      `CREATE TABLE compat_book (
        id serial PRIMARY KEY,
        title varchar NOT NULL,
        status compat_book_status NOT NULL DEFAULT 'draft',
        "dimsWidth" int NOT NULL DEFAULT 0,
        "dimsHeight" int NOT NULL DEFAULT 0,
        author_id int REFERENCES compat_author (id),
        created_at timestamptz NOT NULL DEFAULT now(),
        deleted_at timestamptz,
        version int NOT NULL
      )`,
      'CREATE TABLE compat_tag (id serial PRIMARY KEY, label varchar NOT NULL)',
      `CREATE TABLE compat_book_tag (
        book_id int NOT NULL REFERENCES compat_book (id) ON DELETE CASCADE,
        tag_id int NOT NULL REFERENCES compat_tag (id) ON DELETE CASCADE,
        PRIMARY KEY (book_id, tag_id)
      )`,
      'CREATE TABLE compat_audit (id serial PRIMARY KEY, note text NOT NULL)',
      'CREATE TABLE compat_shelf (id serial PRIMARY KEY, name varchar NOT NULL)',
      'CREATE TABLE compat_shelf_item (id serial PRIMARY KEY, label varchar NOT NULL, shelf_id int REFERENCES compat_shelf (id))',
      'CREATE TABLE compat_category (id serial PRIMARY KEY, name varchar NOT NULL, "parentId" int REFERENCES compat_category (id))',
      `CREATE TABLE compat_category_closure (
        id_ancestor int NOT NULL REFERENCES compat_category (id) ON DELETE CASCADE,
        id_descendant int NOT NULL REFERENCES compat_category (id) ON DELETE CASCADE,
        PRIMARY KEY (id_ancestor, id_descendant)
      )`,
      `CREATE TABLE compat_node (
        id serial PRIMARY KEY, name varchar NOT NULL,
        nsleft int NOT NULL DEFAULT 1, nsright int NOT NULL DEFAULT 2,
        "parentId" int REFERENCES compat_node (id)
      )`,
      `CREATE TABLE compat_folder (
        id serial PRIMARY KEY, name varchar NOT NULL, mpath varchar DEFAULT '',
        "parentId" int REFERENCES compat_folder (id)
      )`,
      `CREATE VIEW compat_author_stats AS SELECT a.id AS author_id, a.name AS name, count(b.id)::int AS books FROM compat_author a
        LEFT JOIN compat_book b ON b.author_id = a.id AND b.deleted_at IS NULL GROUP BY a.id, a.name`,
      "INSERT INTO compat_audit (note) VALUES ('migrated')",
    ];
    for (const sql of statements) await queryRunner.query(sql);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    for (const name of ['compat_author_stats']) await queryRunner.query(`DROP VIEW ${name}`);
    for (const name of [
      'compat_folder',
      'compat_node',
      'compat_category_closure',
      'compat_category',
      'compat_shelf_item',
      'compat_shelf',
      'compat_audit',
      'compat_book_tag',
      'compat_tag',
      'compat_book',
    ]) {
      await queryRunner.query(`DROP TABLE ${name}`);
    }
    await queryRunner.query('DROP TYPE compat_book_status');
  }
}

export const compatSharedMigrations = [CompatSharedPlan1790000000000];
export const compatTenantMigrations = [CompatTenantTableApi1790000000001, CompatTenantRawSql1790000000002];
