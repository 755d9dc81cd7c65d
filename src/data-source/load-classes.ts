import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { InstanceChecker } from 'typeorm/util/InstanceChecker';
import { importOrRequireFile } from 'typeorm/util/ImportUtils';
import { PlatformTools } from 'typeorm/platform/PlatformTools';
import { TenancyConfigurationError } from '../errors';

/**
 * An entry of the `entities`, `tenantMigrations` or `sharedMigrations`
 * option, as in TypeORM's DataSource options: a class, or a path or glob of
 * files whose exports are loaded (`'dist/migrations/tenant/*.js'`).
 */
export type ClassOrPath = Function | string;

/** One file a path or glob matched, with what it exports by TypeORM's rule. */
export interface LoadedFile {
  /** The list entry that matched the file, as given. */
  readonly pattern: string;
  /** The file, absolute. */
  readonly file: string;
  /** Every function and EntitySchema among the file's exports (nested in arrays and objects too), in export order. */
  readonly exports: readonly unknown[];
}

/** A class list with its paths and globs loaded, in the order TypeORM builds it: the classes given, then each entry's files. */
export interface LoadedClassList {
  readonly classes: readonly Function[];
  readonly files: readonly LoadedFile[];
}

/** The file extensions TypeORM 1.1.1's `importClassesFromDirectories` loads by default (it skips `.d.ts`). */
const TYPEORM_FORMATS: readonly string[] = ['.js', '.mjs', '.cjs', '.ts', '.mts', '.cts'];

/**
 * Checks the shape of a class list option synchronously (the manager's
 * constructor): an array of classes and non-empty strings. Returns a frozen
 * copy. Throws `TenancyConfigurationError` naming the entry.
 */
export function classListOption(value: unknown, option: string): readonly ClassOrPath[] {
  if (!Array.isArray(value)) {
    throw new TenancyConfigurationError(
      `Option "${option}" must be an array of classes and file paths or globs (as in TypeORM's DataSource options); got ${describe(value)}.`,
    );
  }
  value.forEach((entry: unknown, index) => {
    if (typeof entry === 'function' || (typeof entry === 'string' && entry.trim() !== '')) return;
    const why = InstanceChecker.isEntitySchema(entry)
      ? 'an EntitySchema, which this library does not support: declare the entity as a class decorated with @Entity()'
      : entry === undefined
        ? 'undefined (an import that is not there yet, as in a circular import?)'
        : describe(entry);
    throw new TenancyConfigurationError(`Option "${option}" accepts classes and file paths or globs (strings); ${option}[${index}] is ${why}.`);
  });
  return Object.freeze([...(value as ClassOrPath[])]);
}

/**
 * Loads a class list the way TypeORM 1.1.1 loads `DataSourceOptions.entities`
 * and `.migrations` (`ConnectionMetadataBuilder`, then
 * `importClassesFromDirectories`): classes stay as given; each string is
 * expanded with TypeORM's own glob library (tinyglobby, resolved from
 * TypeORM's install) after TypeORM's `pathNormalize`, so a relative path is
 * relative to the working directory (`process.cwd()`) and a directory
 * stands for every file under it; the files with TypeORM's extensions
 * (`.js .mjs .cjs .ts .mts .cts`, not `.d.ts`) are loaded with TypeORM's
 * `importOrRequireFile` (ES modules where the nearest package.json says
 * `"type": "module"`), and every exported function or EntitySchema is kept.
 * The order is TypeORM's: the classes, then each string's files in glob order.
 *
 * It is done file by file (rather than with one `importClassesFromDirectories`
 * call) so that a failure can name the file. Where TypeORM is silent it
 * refuses, with `TenancyConfigurationError`: an entry that matches no file,
 * or no file TypeORM would load, and a file that cannot be loaded.
 */
export async function loadClassList(list: readonly ClassOrPath[], option: string): Promise<LoadedClassList> {
  const classes = list.filter((entry): entry is Function => typeof entry !== 'string');
  const files: LoadedFile[] = [];
  for (const pattern of list.filter((entry): entry is string => typeof entry === 'string')) {
    files.push(...(await loadPattern(pattern, option)));
  }
  return { classes, files };
}

/** How a message names where a class came from. */
export function originOf(file: LoadedFile | undefined, option: string): string {
  return file === undefined ? `given in "${option}"` : `exported by ${file.file} (matched by "${file.pattern}" in "${option}")`;
}

async function loadPattern(pattern: string, option: string): Promise<LoadedFile[]> {
  const matched = typeormGlob().globSync(PlatformTools.pathNormalize(pattern));
  if (matched.length === 0) {
    throw new TenancyConfigurationError(
      `Option "${option}" has "${pattern}", which matches no file (a relative path is resolved against the working directory, ` +
        `${process.cwd()}, as TypeORM does). Check the path, build the project if it names compiled files, or give an absolute path ` +
        `(for example path.join(__dirname, 'migrations/*.js')).`,
    );
  }
  const loadable = matched.filter((file) => TYPEORM_FORMATS.includes(PlatformTools.pathExtname(file)) && !file.endsWith('.d.ts'));
  if (loadable.length === 0) {
    throw new TenancyConfigurationError(
      `Option "${option}" has "${pattern}", which matches no file TypeORM loads (it matched ${listed(matched)}). ` +
        `TypeORM loads ${TYPEORM_FORMATS.join(' ')} files, never .d.ts: point it at the compiled .js files, for example "dist/migrations/*.js".`,
    );
  }
  return Promise.all(
    loadable.map(async (match) => {
      const file = PlatformTools.pathResolve(match);
      let exported: unknown;
      try {
        [exported] = await importOrRequireFile(file);
      } catch (error) {
        const hint = /\.[cm]?ts$/.test(file)
          ? ' A .ts file needs a TypeScript loader (for example --require ts-node/register); or point the glob at the compiled .js files.'
          : '';
        throw new TenancyConfigurationError(
          `Cannot load ${file} (matched by "${pattern}" in "${option}"): ${firstLine(error)}.${hint}`,
          { cause: error },
        );
      }
      return { pattern, file, exports: Object.freeze(exportedClasses(exported, [])) };
    }),
  );
}

/** TypeORM's `loadFileClasses`: functions and EntitySchemas, searched through arrays and the values of objects. */
function exportedClasses(exported: unknown, found: unknown[]): unknown[] {
  if (typeof exported === 'function' || InstanceChecker.isEntitySchema(exported)) found.push(exported);
  else if (Array.isArray(exported)) exported.forEach((value) => exportedClasses(value, found));
  else if (exported !== null && typeof exported === 'object') Object.values(exported).forEach((value) => exportedClasses(value, found));
  return found;
}

interface GlobLibrary {
  globSync(pattern: string): string[];
}

let glob: GlobLibrary | undefined;

/**
 * TypeORM's glob library, from TypeORM's own dependencies, so its version
 * and its rules are the ones TypeORM's loader uses (and it resolves under
 * package managers that do not hoist it).
 */
function typeormGlob(): GlobLibrary {
  glob ??= createRequire(require.resolve('typeorm'))('tinyglobby') as GlobLibrary;
  return glob;
}

function listed(files: readonly string[]): string {
  const shown = files.slice(0, 3).map((file) => resolve(file));
  return files.length > 3 ? `${shown.join(', ')} and ${files.length - 3} more` : shown.join(', ');
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`;
  if (typeof value === 'object') return 'an object';
  return `a ${typeof value}`;
}

function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n')[0]!.trim().replace(/\.$/, '');
}

