import { InvalidArgumentError as UsageError, type Command } from 'commander';
import type { FleetMigrationOptions } from '../../migration/fleet-migrator';
import type { FleetReport, FleetRunOptions, WaveSize } from '../../migration/fleet-run';
import type { TenantDataSourceManager } from '../../manager/tenant-data-source-manager';
import type { CliSession } from '../cli-session';
import { renderFleetReport, renderMigrationStatus } from '../text-format';
import { runWithProgress, withLogs } from '../interruptible-run';

/** Exit code of a fleet run stopped by Ctrl-C (128 + SIGINT), as shells report it. */
export const EXIT_INTERRUPTED = 130;

interface FleetFlags {
  readonly concurrency?: number;
  readonly tenant?: string[];
  readonly server?: string[];
  readonly waves?: WaveSize[];
  readonly stopOnError?: boolean;
}

/** Registers the fleet commands: migrate, status, revert, reconcile and migrate:shared. */
export function registerFleetCommands(program: Command, session: () => CliSession): void {
  withFleetFlags(
    program
      .command('migrate')
      .description('apply pending tenant migrations to every active and suspended tenant (or to --tenant ones), in parallel'),
    { waves: true },
  ).action(async (flags: FleetFlags) => {
    await runFleetCommand(session(), 'migrate', (m, options) => m.migrateTenants({ ...options, ...tenantsOf(flags) }), flags);
  });

  program
    .command('status')
    .description('applied and pending tenant migrations of every tenant, from the ledger')
    .action(async () => {
      const cli = session();
      const statuses = await cli.withManager((m) => m.migrationStatus());
      cli.output.result(statuses, renderMigrationStatus);
    });

  withFleetFlags(
    program.command('revert').description('undo the last applied migration of every active and suspended tenant (or of --tenant ones)'),
    { waves: true },
  ).action(async (flags: FleetFlags) => {
    await runFleetCommand(session(), 'revert', (m, options) => m.revertTenants({ ...options, ...tenantsOf(flags) }), flags);
  });

  program
    .command('reconcile')
    .description("rebuild the migration ledger from every tenant's own migrations table")
    .option('--concurrency <n>', 'tenants processed at once (default: half the pool size)', positiveInteger)
    .action(async (flags: FleetFlags) => {
      await runFleetCommand(session(), 'reconcile', (m, options) => m.reconcileMigrationLedger(options), flags);
    });

  program
    .command('migrate:shared')
    .description("run the shared schema's pending migrations")
    .action(async () => {
      const cli = session();
      const applied = await cli.withManager((m) => m.migrateShared());
      cli.output.result({ applied }, (r) =>
        r.applied.length === 0 ? 'The shared schema is up to date.\n' : `Applied to the shared schema: ${r.applied.join(', ')}\n`,
      );
    });
}

function withFleetFlags(command: Command, features: { readonly waves: boolean }): Command {
  command
    .option('--concurrency <n>', 'tenants processed at once on each server (default: half the pool size)', positiveInteger)
    .option('-t, --tenant <slug>', 'only this tenant; repeat for several', (slug: string, previous: string[] = []) => [...previous, slug])
    .option('-s, --server <name>', 'only the tenants on this server; repeat for several', (name: string, previous: string[] = []) => [...previous, name])
    .option('--stop-on-error', 'start no more tenants after the first failure (the rest are reported skipped)');
  if (features.waves) {
    command.option('-w, --waves <sizes>', 'process in waves, e.g. "1,10%": 1 tenant, then 10%, then the rest; a failing wave stops the run', waveList);
  }
  return command;
}

function tenantsOf(flags: FleetFlags): Pick<FleetMigrationOptions, 'tenants' | 'where'> {
  return {
    ...(flags.tenant === undefined ? {} : { tenants: flags.tenant }),
    ...(flags.server === undefined ? {} : { where: { server: flags.server } }),
  };
}

/**
 * Runs a fleet operation with a progress bar (on a terminal), Ctrl-C wired
 * to the run's AbortSignal (the tenants in progress finish, no new one
 * starts), then prints the report; failed tenants make the exit code 1.
 * In JSON mode, what TypeORM and the library logged meanwhile is the
 * report's `logs` (on a terminal, it is printed above the bar as it comes).
 */
async function runFleetCommand(
  cli: CliSession,
  action: 'migrate' | 'revert' | 'reconcile',
  run: (manager: TenantDataSourceManager, options: FleetRunOptions) => Promise<FleetReport>,
  flags: FleetFlags,
): Promise<void> {
  const { value: report, aborted } = await runWithProgress(cli, action, (manager, hooks) =>
    run(manager, {
      ...(flags.concurrency === undefined ? {} : { concurrency: flags.concurrency }),
      ...(flags.waves === undefined ? {} : { waves: flags.waves }),
      ...(flags.stopOnError === true ? { stopOnError: true } : {}),
      signal: hooks.signal,
      onProgress: hooks.onProgress,
    }),
  );
  cli.output.result(withLogs(cli, report), (r) => renderFleetReport(r, action, cli.output.verbose));
  if (aborted) cli.exitCode = EXIT_INTERRUPTED;
  else if (report.totals.failed > 0) cli.exitCode = 1;
}

/** commander parser of `--concurrency`: a whole number from 1 up; anything else is a usage error (exit 2). */
export function positiveInteger(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new UsageError('Expected a whole number of at least 1.');
  return Number(value);
}

/** commander parser of `--waves`: comma-separated tenant counts or percentages, such as `1,10%`. */
export function waveList(value: string): WaveSize[] {
  const parts = value.split(',').map((part) => part.trim());
  return parts.map((part) => {
    if (/^\d+$/.test(part) && Number(part) >= 1) return Number(part);
    if (/^\d+(\.\d+)?%$/.test(part) && Number(part.slice(0, -1)) > 0 && Number(part.slice(0, -1)) <= 100) return part as `${number}%`;
    throw new UsageError(`"${part}" is not a wave size: use whole numbers of tenants or percentages, comma-separated, such as "1,10%".`);
  });
}
