import type { Command } from 'commander';
import { resolve } from 'node:path';
import { InvalidTenantStateError, TenantNotFoundError } from '../../errors';
import type { CitusTransfer } from '../../citus/schema-move';
import type { TenantDataSourceManager } from '../../manager/tenant-data-source-manager';
import type { TenantRecord } from '../../registry/tenant-record';
import { CliError } from '../cli-error';
import type { CliSession } from '../cli-session';
import { renderRecord, renderRecords } from '../text-format';

type Transition = 'suspend' | 'resume' | 'archive' | 'restore';

const TRANSITIONS: Readonly<Record<Transition, { readonly summary: string; readonly run: (m: TenantDataSourceManager, slug: string) => Promise<TenantRecord> }>> = {
  suspend: { summary: 'stop serving a tenant, keeping its data', run: (m, slug) => m.suspendTenant(slug) },
  resume: { summary: 'serve a suspended tenant again', run: (m, slug) => m.resumeTenant(slug) },
  archive: { summary: 'stop serving a tenant and put its schema aside (reversible with restore)', run: (m, slug) => m.archiveTenant(slug) },
  restore: { summary: 'bring an archived tenant back, migrated to the current schema', run: (m, slug) => m.restoreTenant(slug) },
};

/** Registers the commands on single tenants: create, list, show, the lifecycle transitions, drop, export and import. */
export function registerTenantCommands(program: Command, session: () => CliSession): void {
  program
    .command('create')
    .description('create a tenant: its schema, its tables (tenant migrations) and its registry row, in one transaction')
    .argument('<slug>', 'the tenant slug (lowercase letters, digits, - and _, starting with a letter)')
    .option('-n, --name <name>', 'display name (default: the slug)')
    .option('-s, --server <name>', "the server to put it on (default: the config's placement, else the server with the fewest tenants)")
    .action(async (slug: string, options: { name?: string; server?: string }) => {
      const cli = session();
      const record = await cli.withManager((m) =>
        m.createTenant(slug, { ...(options.name === undefined ? {} : { name: options.name }), ...(options.server === undefined ? {} : { server: options.server }) }),
      );
      cli.output.result(record, (r) => `Created tenant "${r.slug}".\n${renderRecord(r)}`);
    });

  program
    .command('list')
    .description('list the tenants of the registry, with the server each lives on')
    .option('-s, --server <name>', 'only the tenants on this server; repeat for several', (name: string, previous: string[] = []) => [...previous, name])
    .action(async (options: { server?: string[] }) => {
      const cli = session();
      const records = await cli.withManager((m) => m.listTenants(options.server === undefined ? {} : { where: { server: options.server } }));
      cli.output.result(records, renderRecords);
    });

  program
    .command('show')
    .description("show a tenant's registry record")
    .argument('<slug>', 'the tenant slug')
    .action(async (slug: string) => {
      const cli = session();
      const record = await cli.withManager((m) => m.getTenant(slug));
      if (record === undefined) throw new TenantNotFoundError(slug);
      cli.output.result(record, renderRecord);
    });

  for (const [name, transition] of Object.entries(TRANSITIONS)) {
    program
      .command(name)
      .description(transition.summary)
      .argument('<slug>', 'the tenant slug')
      .action(async (slug: string) => {
        const cli = session();
        const record = await cli.withManager((m) => transition.run(m, slug));
        cli.output.result(record, (r) => `Tenant "${r.slug}" is ${r.status}.\n`);
      });
  }

  program
    .command('export')
    .description("write a tenant (its migration head and every table's rows, gzip-compressed, with counts and checksums) to an archive file, while it keeps being served")
    .argument('<slug>', 'the tenant slug')
    .argument('<file>', 'the archive file to create (never overwritten)')
    .action(async (slug: string, file: string) => {
      const cli = session();
      const path = resolve(cli.cwd, file);
      const manifest = await cli.withManager((m) => m.exportTenant(slug, path));
      const rows = manifest.tables.reduce((sum, t) => sum + BigInt(t.rows), 0n);
      cli.output.result(
        { slug, file: path, migrationHead: manifest.migrations.at(-1) ?? null, tables: manifest.tables.map((t) => ({ name: t.name, rows: t.rows })) },
        () => `Exported tenant "${slug}" to ${path}: ${manifest.tables.length} tables, ${rows} rows, at migration ${manifest.migrations.at(-1) ?? '(none)'}.\n`,
      );
    });

  program
    .command('import')
    .description('create a tenant from an archive of export: its rows checked against the archive, then migrated to the current head, in one transaction')
    .argument('<slug>', 'the slug of the new tenant (may differ from the exported one)')
    .argument('<file>', 'the archive file')
    .option('-n, --name <name>', "display name (default: the exported tenant's)")
    .option('-s, --server <name>', 'the server to put it on (default: as create)')
    .action(async (slug: string, file: string, options: { name?: string; server?: string }) => {
      const cli = session();
      const record = await cli.withManager((m) =>
        m.importTenant(slug, resolve(cli.cwd, file), { ...(options.name === undefined ? {} : { name: options.name }), ...(options.server === undefined ? {} : { server: options.server }) }),
      );
      cli.output.result(record, (r) => `Imported tenant "${r.slug}".\n${renderRecord(r)}`);
    });

  program
    .command('move')
    .description(
      'move a tenant to another server (its schema copied, every row checked, while its writes are held; then the registry switched and the old schema dropped), ' +
        "or in Citus mode to another node of the cluster (Citus's citus_schema_move)",
    )
    .argument('<slug>', 'the tenant slug')
    .option('-s, --server <name>', 'the server to move it to')
    .option('--node <host:port>', 'in Citus mode: the node to move it to')
    .option('--transfer <mode>', "with --node: 'online' (default: writes go on; every table needs a primary key) or 'block-writes'")
    .option('--keep-source', 'with --server: keep the old schema on the former server, under a reserved name, instead of dropping it')
    .action(async (slug: string, options: { server?: string; node?: string; transfer?: string; keepSource?: boolean }) => {
      const cli = session();
      if ((options.server === undefined) === (options.node === undefined)) {
        throw new CliError('move needs one of --server <name> (several servers) or --node <host:port> (a Citus cluster).');
      }
      if (options.node !== undefined) {
        if (options.keepSource === true) throw new CliError('--keep-source is for --server moves; Citus drops the old placement itself.');
        const node = options.node;
        const moved = await cli.withManager((m) =>
          m.moveTenant(slug, {
            node,
            ...(options.transfer === undefined ? {} : { transfer: options.transfer as CitusTransfer }),
            onProgress: (p) => {
              if (p.step === 'moving') cli.output.note(`move ${slug}: from node ${p.from} to ${p.to} (Citus copies the schema)`);
            },
          }),
        );
        cli.output.result(moved, (r) =>
          r.moved ? `Moved tenant "${r.slug}" from node ${r.from} to ${r.to} (${r.transfer}) in ${Math.round(r.ms)} ms.\n` : `Tenant "${r.slug}" is on node ${r.to} already; nothing to move.\n`,
        );
        return;
      }
      if (options.transfer !== undefined) throw new CliError('--transfer is for --node moves (Citus).');
      const server = options.server!;
      const result = await cli.withManager((m) =>
        m.moveTenant(slug, {
          server,
          ...(options.keepSource === true ? { keepSource: true } : {}),
          onProgress: (p) => {
            if (p.step === 'copying') cli.output.note(`move ${slug}: table ${p.table} copied (${p.tablesDone}/${p.tables}, ${p.rowsCopied} rows so far)`);
          },
        }),
      );
      cli.output.result(result, (r) =>
        r.moved
          ? `Moved tenant "${r.slug}" from server "${r.from}" to "${r.to}": ${r.tables} tables, ${r.rows} rows in ${r.ms} ms; writes held ${r.freezeMs} ms.` +
            `${r.keptSchema === undefined ? '' : ` The old schema is kept on "${r.from}" as "${r.keptSchema}".`}\n`
          : `Tenant "${r.slug}" is on server "${r.to}" already; nothing to move.\n`,
      );
    });

  program
    .command('rebalance')
    .description("in Citus mode: run Citus's rebalancer, which moves tenant schemas between nodes until they are spread evenly, and wait for it")
    .option('--transfer <mode>', "'online' (default) or 'block-writes'")
    .action(async (options: { transfer?: string }) => {
      const cli = session();
      const result = await cli.withManager((m) =>
        m.rebalanceTenants({
          ...(options.transfer === undefined ? {} : { transfer: options.transfer as CitusTransfer }),
          onProgress: (p) => cli.output.note(`rebalance job ${p.job}: ${p.state} (${Object.entries(p.tasks).map(([state, n]) => `${n} ${state}`).join(', ') || 'no tasks yet'})`),
        }),
      );
      cli.output.result(result, (r) =>
        r.job === undefined
          ? 'Citus found nothing to move: the tenants are spread evenly.\n'
          : `Rebalanced (Citus job ${r.job}) in ${Math.round(r.ms)} ms: ${r.moved.length === 0 ? 'no tenant changed node' : r.moved.map((move) => `${move.slug} ${move.from} -> ${move.to}`).join(', ')}.\n`,
      );
    });

  program
    .command('drop')
    .description('drop a tenant: its tables (in batches), its schema and its registry row; it must be suspended or archived first, or --force')
    .argument('<slug>', 'the tenant slug')
    .option('-f, --force', 'drop even an active tenant')
    .action(async (slug: string, options: { force?: boolean }) => {
      const cli = session();
      await cli.withManager(async (m) => {
        try {
          await m.dropTenant(slug, { force: options.force === true });
        } catch (error) {
          // The library's hint names the API call; on the command line the fix is a flag.
          if (error instanceof InvalidTenantStateError && error.status === 'active') {
            throw new CliError(
              `Tenant "${slug}" is active, so it is not dropped: suspend or archive it first ("suspend ${slug}"), or drop it with --force.`,
              { cause: error, code: error.code },
            );
          }
          throw error;
        }
      });
      cli.output.result({ slug, dropped: true }, () => `Dropped tenant "${slug}".\n`);
    });
}
