import { Command } from 'commander';
import { CliSession } from './cli-session';
import { registerDomainCommands } from './commands/domain-commands';
import { registerFanOutCommands } from './commands/fan-out-commands';
import { registerFleetCommands } from './commands/fleet-commands';
import { registerMigrationCommands } from './commands/migration-commands';
import { registerTenantCommands } from './commands/tenant-commands';
import { DEFAULT_CONFIG_PATH } from './load-config';
import { Output, type CliStreams } from './output';

/** The global flags, available before or after the command name. */
export interface GlobalFlags {
  readonly config: string;
  readonly json?: boolean;
  readonly verbose?: boolean;
}

/** What `buildProgram` hands back: the commander program and the session its command started (if any). */
export interface CliProgram {
  readonly program: Command;
  /** The session of the command that ran, once its action has started. */
  session(): CliSession | undefined;
}

/**
 * Builds the `typeorm-tenants` commander program. It never exits the
 * process: usage errors are thrown as commander's `CommanderError`
 * (`exitOverride`), and commander's own messages go to `streams`.
 */
export function buildProgram(streams: CliStreams, cwd: string): CliProgram {
  let current: CliSession | undefined;
  const program = new Command('typeorm-tenants')
    .description('Schema-per-tenant multi-tenancy for PostgreSQL on TypeORM: manage the tenants and migrate the fleet.')
    .option('--config <path>', 'config module exporting the TenantDataSourceManager options', DEFAULT_CONFIG_PATH)
    .option('--json', 'print JSON on stdout (the default when stdout is not a terminal)')
    .option('--verbose', 'print stacks with errors; list every tenant in reports')
    .exitOverride()
    .showSuggestionAfterError(true)
    .configureOutput({
      writeOut: (text) => streams.stdout.write(text),
      writeErr: (text) => streams.stderr.write(text),
    });

  const session = (): CliSession => {
    if (current === undefined) {
      const flags = program.opts<GlobalFlags>();
      current = new CliSession(flags.config, new Output(streams, { json: flags.json, verbose: flags.verbose }), cwd);
    }
    return current;
  };
  registerTenantCommands(program, session);
  registerFleetCommands(program, session);
  registerMigrationCommands(program, session);
  registerDomainCommands(program, session);
  registerFanOutCommands(program, session);
  // Every subcommand reports usage errors the same way as the program.
  for (const command of program.commands) {
    command.exitOverride().showSuggestionAfterError(true).configureOutput(program.configureOutput());
  }
  return { program, session: () => current };
}
