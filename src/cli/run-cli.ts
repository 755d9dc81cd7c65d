import { CommanderError } from 'commander';
import { formatErrorLine } from './text-format';
import type { CliStreams } from './output';
import { buildProgram } from './program';

/** Exit code of a command line commander refuses (unknown command or flag, missing or bad argument). */
export const EXIT_USAGE = 2;

/**
 * Runs the `typeorm-tenants` command line `args` (without `node` and the
 * script) and resolves to the exit code: 0 on success, 1 when the command
 * failed or a tenant failed in a fleet command, 2 for a usage error, 130
 * when a fleet run was interrupted. Errors are printed as one line on
 * stderr. The manager is destroyed before this resolves, so the caller only
 * sets `process.exitCode` and the process ends by itself.
 */
export async function runCli(args: readonly string[], streams: CliStreams = process, cwd: string = process.cwd()): Promise<number> {
  const { program, session } = buildProgram(streams, cwd);
  let exitCode: number;
  try {
    await program.parseAsync(args, { from: 'user' });
    exitCode = session()?.exitCode ?? 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // commander has printed its message; --help and --version are successes.
      exitCode = error.exitCode === 0 ? 0 : EXIT_USAGE;
    } else {
      const output = session()?.output;
      if (output !== undefined) output.error(error);
      else streams.stderr.write(formatErrorLine(error, args.includes('--verbose')));
      exitCode = 1;
    }
  }
  try {
    await session()?.close();
  } catch (error) {
    streams.stderr.write(formatErrorLine(error, args.includes('--verbose')));
    exitCode = exitCode === 0 ? 1 : exitCode;
  }
  return exitCode;
}
