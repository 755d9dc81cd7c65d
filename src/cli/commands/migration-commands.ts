import { mkdir, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { InvalidArgumentError as UsageError, type Command } from 'commander';
import { migrationFile, type MigrationFile } from '../../migration/migration-source';
import { CliError } from '../cli-error';
import type { CliSession } from '../cli-session';

interface MigrationFileFlags {
  readonly shared?: boolean;
  readonly outputJs?: boolean;
  readonly esm?: boolean;
  readonly timestamp?: number;
}

interface GenerateFlags extends MigrationFileFlags {
  readonly dryrun?: boolean;
  readonly check?: boolean;
}

/** What the migration commands print: where the file went (or would go) and what it holds. */
interface MigrationFileResult {
  readonly kind: 'tenant' | 'shared';
  readonly file: string;
  readonly className: string;
  readonly written: boolean;
  readonly statements?: { readonly up: number; readonly down: number };
  readonly source?: string;
}

/** Registers migration:generate and migration:create, named and used as TypeORM's. */
export function registerMigrationCommands(program: Command, session: () => CliSession): void {
  withFileFlags(
    program
      .command('migration:generate')
      .description(
        'generate a migration from the entities that is right for every tenant: tenant objects unqualified, shared objects qualified ' +
          '(a throwaway schema at the head of the tenant migrations is diffed in a transaction that is rolled back); --shared: the shared entities',
      )
      .argument('<path>', 'directory and name, e.g. src/migrations/tenant/AddInvoiceStatus (the file is <timestamp>-<Name>.ts)')
      .option('--dryrun', 'print the migration instead of writing it')
      .option('--check', 'exit 1 when the entities differ from the migrations (nothing is written), 0 when they do not'),
  ).action(async (path: string, flags: GenerateFlags) => {
    const cli = session();
    const kind = flags.shared === true ? 'shared' : 'tenant';
    // Starts the manager as every command does (pending shared migrations are applied), but creates no warm spares.
    const generated = await cli.withManager(
      (m) => m.generateMigration(basename(path), { shared: flags.shared, outputJs: flags.outputJs, esm: flags.esm, timestamp: flags.timestamp }),
      { withoutWarmPool: true },
    );
    if (generated === undefined) {
      if (flags.check === true) {
        cli.output.result({ kind, changes: false }, () => `No changes: the ${kind} entities match the ${kind} migrations.\n`);
        return;
      }
      throw new CliError(
        `No changes: the ${kind} entities match the ${kind} migrations, so there is nothing to generate. ` +
          `To write a migration by hand: typeorm-tenants migration:create ${path}${flags.shared === true ? ' --shared' : ''}`,
      );
    }
    const statements = { up: generated.up.length, down: generated.down.length };
    if (flags.check === true || flags.dryrun === true) {
      if (flags.check === true) cli.exitCode = 1;
      const result: MigrationFileResult = { kind, ...located(cli, path, generated), written: false, statements, source: generated.source };
      cli.output.result(result, (r) =>
        `${flags.check === true ? `The ${kind} entities differ from the ${kind} migrations; a migration would be` : 'Migration'} ${r.file}:\n\n${generated.source}`,
      );
      return;
    }
    const result = await write(cli, path, generated, kind);
    cli.output.result({ ...result, statements }, (r) => `Generated ${kind} migration ${r.file} (${statements.up} statements up, ${statements.down} down). Review it before you migrate.\n`);
  });

  withFileFlags(
    program
      .command('migration:create')
      .description('write an empty migration, to fill in by hand (--shared: a shared migration)')
      .argument('<path>', 'directory and name, e.g. src/migrations/tenant/BackfillTotals'),
  ).action(async (path: string, flags: MigrationFileFlags) => {
    const cli = session();
    const kind = flags.shared === true ? 'shared' : 'tenant';
    const file = migrationFile(basename(path), flags.timestamp ?? Date.now(), [], [], { outputJs: flags.outputJs, esm: flags.esm });
    const result = await write(cli, path, file, kind);
    cli.output.result(result, (r) => `Created ${kind} migration ${r.file}.\n`);
  });
}

function withFileFlags(command: Command): Command {
  return command
    .option('--shared', 'a shared migration (runs once, in the shared schema) rather than a tenant migration')
    .option('-o, --outputJs', 'write JavaScript instead of TypeScript')
    .option('--esm', 'with --outputJs: an ES module (export class) instead of CommonJS')
    .option('-t, --timestamp <ms>', 'timestamp of the class and file name (default: now)', parseTimestamp);
}

function parseTimestamp(value: string): number {
  const timestamp = Number(value);
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) throw new UsageError('the timestamp must be a non-negative integer of milliseconds.');
  return timestamp;
}

/** The file path a migration goes to: the directory of the given path, the file name of the migration. */
function located(cli: CliSession, path: string, file: MigrationFile): { file: string; className: string } {
  return { file: join(dirname(resolve(cli.cwd, path)), file.fileName), className: file.className };
}

async function write(cli: CliSession, path: string, file: MigrationFile, kind: 'tenant' | 'shared'): Promise<MigrationFileResult> {
  const target = located(cli, path, file);
  await mkdir(dirname(target.file), { recursive: true });
  // wx: never overwrite a migration that exists (same timestamp and name).
  await writeFile(target.file, file.source, { flag: 'wx' }).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'EEXIST') throw new CliError(`${target.file} exists already; nothing was written. Pick another name or timestamp.`);
    throw error;
  });
  return { kind, ...target, written: true };
}
