import { getMetadataArgsStorage } from 'typeorm';
import { loadClassList, type ClassOrPath } from '../data-source/load-classes';
import { TenancyConfigurationError } from '../errors';

/**
 * Loads the `entities` option (classes, file paths and globs: see
 * `loadClassList`) into entity classes, in TypeORM's order (the classes
 * given, then each glob's files), each class once. From files it keeps, as
 * TypeORM does, the exported classes decorated with `@Entity()` (or
 * `@ViewEntity()`, `@ChildEntity()`), ignoring other exports (enums, helper
 * functions, abstract base classes); the classes given are kept as they are,
 * for `partitionEntities` to check.
 *
 * Refuses with `TenancyConfigurationError`, naming the file: a file that
 * yields no entity class (TypeORM would skip it silently: a forgotten
 * decorator, or a glob wider than the entity files), and an exported
 * EntitySchema (not supported here; it is refused when given directly too).
 */
export async function loadEntities(list: readonly ClassOrPath[]): Promise<Function[]> {
  const loaded = await loadClassList(list, 'entities');
  const tables = getMetadataArgsStorage().tables;
  const entities = new Set<Function>(loaded.classes);
  for (const file of loaded.files) {
    const classes = file.exports.filter((exported): exported is Function => typeof exported === 'function');
    if (classes.length < file.exports.length) {
      throw new TenancyConfigurationError(
        `${file.file} (matched by "${file.pattern}" in "entities") exports an EntitySchema, which this library does not support. ` +
          'Declare the entity as a class decorated with @Entity().',
      );
    }
    const found = classes.filter((candidate) => tables.some((table) => table.target === candidate));
    if (found.length === 0) {
      throw new TenancyConfigurationError(
        `${file.file} (matched by "${file.pattern}" in "entities") exports no entity class ` +
          (classes.length === 0 ? '(no class at all)' : `(${classes.map((c) => c.name || 'an anonymous function').join(', ')}: none decorated with @Entity())`) +
          '. Decorate the class with @Entity(), or narrow the glob to the entity files (for example "dist/entities/*.entity.js").',
      );
    }
    for (const entity of found) entities.add(entity);
  }
  return [...entities];
}
