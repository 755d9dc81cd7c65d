import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { expect } from 'chai';
import ts from 'typescript';
import type { GeneratedMigration } from '../../src';

/** Where the migration tests write the generated files they load (under the repository's ignored .tmp). */
export const GENERATED_DIR = resolve(__dirname, '..', '..', '.tmp', 'generated-migrations');

/**
 * Loads a generated migration the way a user's build would: JavaScript
 * required as is, TypeScript transpiled to CommonJS first (its syntax
 * checked). Returns the migration class.
 */
export function loadGenerated(migration: GeneratedMigration): Function {
  mkdirSync(GENERATED_DIR, { recursive: true });
  let source = migration.source;
  let file = join(GENERATED_DIR, `${randomBytes(4).toString('hex')}-${migration.fileName}`);
  if (file.endsWith('.ts')) {
    const output = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 }, reportDiagnostics: true });
    expect(output.diagnostics ?? [], 'the TypeScript source is valid').to.deep.equal([]);
    source = output.outputText;
    file = file.replace(/\.ts$/, '.js');
  }
  writeFileSync(file, source);
  // CommonJS JavaScript exports the class itself (module.exports = class ...); TypeScript a named export.
  const exported = require(file) as Function | Record<string, Function>;
  const migrationClass = typeof exported === 'function' ? exported : exported[migration.className];
  expect(migrationClass, `the file exports ${migration.className}`).to.be.a('function');
  return migrationClass!;
}

/** Removes the generated files. */
export function removeGenerated(): void {
  rmSync(GENERATED_DIR, { recursive: true, force: true });
}
