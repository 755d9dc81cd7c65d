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
 * Refuses with `TenancyConfigurationError`: a path or glob none of whose
 * files yields an entity class (TypeORM would skip it silently: a forgotten
 * decorator, or a glob that misses the entity files), naming the files;
 * and an exported EntitySchema (not supported here; it is refused when
 * given directly too). A file with no entity class among others that have
 * one (a base class, enums) is skipped, as TypeORM skips it.
 */
export async function loadEntities(list: readonly ClassOrPath[]): Promise<Function[]> {
  const loaded = await loadClassList(list, 'entities');
  const tables = getMetadataArgsStorage().tables;
  const entities = new Set<Function>(loaded.classes);
  /** Per path or glob: the files that yielded no entity class, described; absent once one did. */
  const empty = new Map<string, string[] | undefined>();
  for (const file of loaded.files) {
    const classes = file.exports.filter((exported): exported is Function => typeof exported === 'function');
    if (classes.length < file.exports.length) {
      throw new TenancyConfigurationError(
        `${file.file} (matched by "${file.pattern}" in "entities") exports an EntitySchema, which this library does not support. ` +
          'Declare the entity as a class decorated with @Entity().',
      );
    }
    const found = classes.filter((candidate) => tables.some((table) => table.target === candidate));
    for (const entity of found) entities.add(entity);
    if (found.length > 0) {
      empty.set(file.pattern, undefined);
    } else if (!empty.has(file.pattern) || empty.get(file.pattern) !== undefined) {
      const why = classes.length === 0 ? 'no class at all' : `${classes.map((c) => c.name || 'an anonymous function').join(', ')}: none decorated with @Entity()`;
      empty.set(file.pattern, [...(empty.get(file.pattern) ?? []), `${file.file} exports no entity class (${why})`]);
    }
  }
  for (const [pattern, files] of empty) {
    if (files === undefined) continue;
    throw new TenancyConfigurationError(
      `"${pattern}" in "entities" matches no entity class: ${files.join('; ')}. ` +
        'Decorate the classes with @Entity(), or point the path or glob at the entity files (for example "dist/entities/*.entity.js").',
    );
  }
  return [...entities];
}
