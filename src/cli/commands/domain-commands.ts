import type { Command } from 'commander';
import type { CliSession } from '../cli-session';
import { renderDomain, renderDomains } from '../text-format';

/** Registers `domain add|update|remove|list`: the tenants' custom domains. */
export function registerDomainCommands(program: Command, session: () => CliSession): void {
  const domain = program
    .command('domain')
    .description("manage the tenants' custom domains (hostnames fromDomain() resolves)");

  domain
    .command('add')
    .description('give a tenant a hostname (normalised: lower case, no port, no trailing dot, punycode)')
    .argument('<slug>', 'the tenant slug')
    .argument('<hostname>', 'the hostname, such as portal.acme.com')
    .option('--primary', "make it the tenant's primary hostname (default: when the tenant has none yet)")
    .option('--no-primary', 'do not make it primary, even as the first')
    .option('--verified', 'mark it verified (fromDomain() serves only verified hostnames by default)')
    .action(async (slug: string, hostname: string, options: { primary?: boolean; verified?: boolean }) => {
      const cli = session();
      const added = await cli.withManager((m) => m.addTenantDomain(slug, hostname, { primary: options.primary, verified: options.verified === true }));
      cli.output.result(added, (d) => `Added "${d.hostname}" to tenant "${d.slug}".\n${renderDomain(d)}`);
    });

  domain
    .command('update')
    .description("change a hostname's flags")
    .argument('<hostname>', 'the hostname')
    .option('--primary', "make it the tenant's primary hostname (the previous one stops being primary)")
    .option('--no-primary', 'leave the tenant without a primary hostname')
    .option('--verified', 'mark it verified')
    .option('--no-verified', 'mark it not verified (fromDomain() stops serving it by default)')
    .action(async (hostname: string, options: { primary?: boolean; verified?: boolean }) => {
      const cli = session();
      const updated = await cli.withManager((m) => m.updateTenantDomain(hostname, { primary: options.primary, verified: options.verified }));
      cli.output.result(updated, (d) => `Updated "${d.hostname}" of tenant "${d.slug}".\n${renderDomain(d)}`);
    });

  domain
    .command('remove')
    .description('take a hostname from its tenant (free for any tenant afterwards)')
    .argument('<hostname>', 'the hostname')
    .action(async (hostname: string) => {
      const cli = session();
      const removed = await cli.withManager((m) => m.removeTenantDomain(hostname));
      cli.output.result(removed, (d) => `Removed "${d.hostname}" from tenant "${d.slug}".\n`);
    });

  domain
    .command('list')
    .description("list a tenant's hostnames (primary first), or every tenant's")
    .argument('[slug]', 'the tenant slug (default: every tenant)')
    .action(async (slug: string | undefined) => {
      const cli = session();
      const domains = await cli.withManager((m) => m.listTenantDomains(slug));
      cli.output.result(domains, renderDomains);
    });

  // As the program's own commands: usage errors reported the same way.
  for (const command of domain.commands) {
    command.exitOverride().showSuggestionAfterError(true).configureOutput(program.configureOutput());
  }
}
