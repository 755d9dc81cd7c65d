import { camelCase } from 'typeorm/util/StringUtils';
import { InvalidArgumentError } from '../errors';

/** One statement of a migration, with the parameters TypeORM gave it. */
export interface MigrationStatement {
  readonly sql: string;
  /**
   * Its parameters. `TENANT_SCHEMA_PARAMETER` stands for the schema the
   * migration runs in (TypeORM's `typeorm_metadata` rows name it), written
   * into the source as `queryRunner.connection.driver.schema`.
   */
  readonly parameters?: readonly unknown[];
}

/** Stands, in a statement's parameters, for the schema of the tenant the migration runs in. */
export const TENANT_SCHEMA_PARAMETER: unique symbol = Symbol('the tenant schema at run time');

/** How a migration file is written: TypeScript (default) or JavaScript, CommonJS (default) or ES module. */
export interface MigrationSourceOptions {
  readonly outputJs?: boolean;
  readonly esm?: boolean;
}

/** A migration class: its name and timestamp, its statements, and the file that declares it. */
export interface MigrationFile {
  /** `<PascalCaseName><timestamp>`, as TypeORM names generated migrations. */
  readonly className: string;
  /** `<timestamp>-<Name>.ts` (or `.js`). */
  readonly fileName: string;
  readonly source: string;
}

/**
 * Writes a migration file the way TypeORM's CLI does (same class naming, same
 * templates), from statements in the order `up()` and `down()` run them.
 * `name` is the last segment of the path given to the command.
 */
export function migrationFile(
  name: string,
  timestamp: number,
  up: readonly MigrationStatement[],
  down: readonly MigrationStatement[],
  options: MigrationSourceOptions = {},
): MigrationFile {
  if (!/^[A-Za-z][A-Za-z0-9_-]*$/.test(name)) {
    throw new InvalidArgumentError(
      `A migration name must start with a letter and hold only letters, digits, "-" and "_" (it becomes a class name); got ${JSON.stringify(name)}.`,
    );
  }
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) {
    throw new InvalidArgumentError(`A migration timestamp must be a non-negative integer (milliseconds); got ${String(timestamp)}.`);
  }
  const className = `${camelCase(name, true)}${timestamp}`;
  const body = (statements: readonly MigrationStatement[]): string => statements.map((statement) => `        ${callOf(statement)}`).join('\n');
  const extension = options.outputJs === true ? 'js' : 'ts';
  const source =
    options.outputJs === true
      ? `/**
 * @typedef {import('typeorm').MigrationInterface} MigrationInterface
 * @typedef {import('typeorm').QueryRunner} QueryRunner
 */

/**
 * @class
 * @implements {MigrationInterface}
 */
${options.esm === true ? 'export' : 'module.exports ='} class ${className} {
    name = '${className}'

    /**
     * @param {QueryRunner} queryRunner
     */
    async up(queryRunner) {
${body(up)}
    }

    /**
     * @param {QueryRunner} queryRunner
     */
    async down(queryRunner) {
${body(down)}
    }
}
`
      : `import { MigrationInterface, QueryRunner } from "typeorm";

export class ${className} implements MigrationInterface {
    name = '${className}'

    public async up(queryRunner: QueryRunner): Promise<void> {
${body(up)}
    }

    public async down(queryRunner: QueryRunner): Promise<void> {
${body(down)}
    }

}
`;
  return { className, fileName: `${timestamp}-${name}.${extension}`, source };
}

function callOf(statement: MigrationStatement): string {
  const sql = statement.sql.replaceAll('\\', '\\\\').replaceAll('`', '\\`').replaceAll('${', '\\${');
  const parameters = statement.parameters ?? [];
  if (parameters.length === 0) return `await queryRunner.query(\`${sql}\`);`;
  const values = parameters.map((value) => (value === TENANT_SCHEMA_PARAMETER ? 'queryRunner.connection.driver.schema' : JSON.stringify(value)));
  return `await queryRunner.query(\`${sql}\`, [${values.join(', ')}]);`;
}
