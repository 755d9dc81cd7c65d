import type { MigrationInterface } from 'typeorm';
import { loadClassList, originOf, type ClassOrPath, type LoadedFile } from '../data-source/load-classes';
import { TenancyConfigurationError } from '../errors';

/** The timestamp in the examples of messages. */
const EXAMPLE_TIMESTAMP = 1700000000000;

/** A migrations option loaded and put in the order TypeORM's `MigrationExecutor` runs it. */
export interface MigrationList {
  /** The migration classes, by timestamp (ties in list order). */
  readonly classes: readonly Function[];
  /** Their names (`instance.name`, else the class name), in the same order. */
  readonly names: readonly string[];
}

/**
 * Loads `tenantMigrations` or `sharedMigrations` (classes, file paths and
 * globs: see `loadClassList`) and orders them as TypeORM's
 * `MigrationExecutor.getMigrations()` does: by the timestamp that ends each
 * name, with a stable sort (equal timestamps keep the list's order: the
 * classes given, then each glob's files). The classes handed to TypeORM are
 * this list, so the names the library records and reports (ledger, pending
 * lists, warm pool, `migrationStatus()`) are in the order TypeORM applies
 * them.
 *
 * Refuses at `initialize()`, with `TenancyConfigurationError` naming the
 * class or file and the fix, what TypeORM would refuse only when migrations
 * run (a name without a timestamp; two migrations with one name) and what
 * it would accept silently (a file that exports no class; an export that is
 * not a migration class, which TypeORM would instantiate as one).
 */
export async function loadMigrationList(list: readonly ClassOrPath[], option: string): Promise<MigrationList> {
  const loaded = await loadClassList(list, option);
  const entries: Array<{ migration: Function; name: string; timestamp: number; file: LoadedFile | undefined }> = [];
  const add = (migration: Function, file: LoadedFile | undefined): void => {
    const name = migrationName(migration, file, option);
    const timestamp = migrationTimestampOf(name);
    if (timestamp === undefined) {
      throw new TenancyConfigurationError(
        `Migration "${name}" (${originOf(file, option)}) has no timestamp at the end of its name. TypeORM orders migrations by the ` +
          `JavaScript timestamp that ends the class name (its last 13 characters) and refuses to run one without: ` +
          `rename the class ${name}${EXAMPLE_TIMESTAMP} (with the time you wrote it; migration:create does this).`,
      );
    }
    const twin = entries.find((entry) => entry.name === name);
    if (twin !== undefined) {
      const same = twin.migration === migration ? 'the same class, listed twice: ' : '';
      throw new TenancyConfigurationError(
        `Two migrations in "${option}" are named "${name}": ${same}one ${originOf(twin.file, option)}, one ${originOf(file, option)}. ` +
          'TypeORM refuses duplicate names and records applied migrations by name: remove one (check that a glob does not also match a ' +
          'file whose class is listed, or an index file re-exporting the others), or rename one with a new timestamp.',
      );
    }
    entries.push({ migration, name, timestamp, file });
  };
  for (const migration of loaded.classes) add(migration, undefined);
  for (const file of loaded.files) {
    if (file.exports.length === 0) {
      throw new TenancyConfigurationError(
        `${file.file} (matched by "${file.pattern}" in "${option}") exports no class. A migration file exports its migration class ` +
          `(export class AddInvoices${EXAMPLE_TIMESTAMP} implements MigrationInterface { ... }); ` +
          'narrow the glob if the file is not a migration.',
      );
    }
    for (const exported of file.exports) {
      if (typeof exported !== 'function') {
        throw new TenancyConfigurationError(
          `${file.file} (matched by "${file.pattern}" in "${option}") exports an EntitySchema, which is not a migration. ` +
            'Narrow the glob to the migration files.',
        );
      }
      add(exported, file);
    }
  }
  // Array.prototype.sort is stable: equal timestamps keep their order, as in TypeORM's executor.
  entries.sort((a, b) => a.timestamp - b.timestamp);
  return Object.freeze({
    classes: Object.freeze(entries.map((entry) => entry.migration)),
    names: Object.freeze(entries.map((entry) => entry.name)),
  });
}

/**
 * The timestamp TypeORM reads from a migration name: its last 13
 * characters, parsed as a base-10 integer (`parseInt`); `undefined` where
 * TypeORM finds none (NaN or 0) and refuses the migration.
 */
export function migrationTimestampOf(name: string): number | undefined {
  const timestamp = parseInt(name.slice(-13), 10);
  return !timestamp || Number.isNaN(timestamp) ? undefined : timestamp;
}

/**
 * Names of applied migrations (from the ledger, which keeps no order) in
 * the order TypeORM applies them: by timestamp; for equal timestamps, as
 * in `known` (the code's list), then by name.
 */
export function inMigrationOrder(names: readonly string[], known: readonly string[]): string[] {
  const rank = new Map(known.map((name, index) => [name, index]));
  const keyed = names.map((name) => ({ name, timestamp: migrationTimestampOf(name) ?? 0, rank: rank.get(name) ?? known.length }));
  keyed.sort((a, b) => a.timestamp - b.timestamp || a.rank - b.rank || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return keyed.map((entry) => entry.name);
}

function migrationName(migration: Function, file: LoadedFile | undefined, option: string): string {
  const label = migration.name === '' ? 'an anonymous function' : migration.name;
  let instance: Partial<MigrationInterface>;
  try {
    // TypeORM instantiates every class of the list with no arguments, and so does this.
    instance = new (migration as new () => Partial<MigrationInterface>)();
  } catch (error) {
    throw new TenancyConfigurationError(
      `${label} (${originOf(file, option)}) is not a migration class: ${String(error instanceof Error ? error.message : error)}. ` +
        'TypeORM instantiates every function of the list; a migration file exports migration classes only.',
      { cause: error },
    );
  }
  if (typeof instance.up !== 'function' || typeof instance.down !== 'function') {
    throw new TenancyConfigurationError(
      `${label} (${originOf(file, option)}) is not a migration: it has no up() and down() methods. ` +
        'TypeORM would instantiate it as one; export only classes that implement MigrationInterface from migration files.',
    );
  }
  return instance.name ?? (instance.constructor as Function).name;
}
