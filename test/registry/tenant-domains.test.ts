import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'typeorm';
import {
  InvalidArgumentError,
  InvalidHostnameError,
  InvalidTenantNameError,
  InvalidTenantStateError,
  TenantDomainNotFoundError,
  TenantDomainTakenError,
  TenantNotFoundError,
  type TenantDataSourceManager,
  type TenantDomain,
} from '../../src';
import { adminQuery, databaseUrl, openManager, uniqueSlug } from '../support/fixtures';

/** A hostname no other test uses. */
function host(prefix = 'portal'): string {
  return `${prefix}-${randomBytes(4).toString('hex')}.example.com`;
}

/** Counts the statements every DataSource of the manager sends. */
class CountingLogger implements Logger {
  queries: string[] = [];
  logQuery(query: string): void {
    this.queries.push(query);
  }
  logQueryError(): void {}
  logQuerySlow(): void {}
  logSchemaBuild(): void {}
  logMigration(): void {}
  log(): void {}
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

const summary = (domains: readonly TenantDomain[]): Array<[string, string, boolean, boolean]> =>
  domains.map((d) => [d.hostname, d.slug, d.primary, d.verified]);

describe('tenant domains: the registry of custom hostnames', () => {
  let manager: TenantDataSourceManager;
  let registry: string;

  beforeEach(async () => {
    registry = `dom_${randomBytes(4).toString('hex')}`;
    manager = await openManager({ registryTable: registry, slugReuseDelayMs: 0 });
  });

  it('initialize() creates the domains table beside the registry: hostname key, foreign key to the tenant, one primary per tenant enforced by PostgreSQL; a second initialize() is harmless', async () => {
    const constraints = await adminQuery<{ contype: string; definition: string }>(
      `SELECT contype, pg_get_constraintdef(oid) AS definition FROM pg_constraint WHERE conrelid = $1::regclass ORDER BY contype, conname`,
      [`public."${registry}_domains"`],
    );
    const types = constraints.map((c) => c.contype);
    expect(types).to.include.members(['p', 'f', 'x', 'u']);
    expect(constraints.find((c) => c.contype === 'f')!.definition).to.contain(`REFERENCES ${registry}(slug) ON UPDATE CASCADE ON DELETE CASCADE`);
    expect(constraints.find((c) => c.contype === 'x')!.definition).to.match(/EXCLUDE USING btree \(slug WITH =\) WHERE \(is_primary\)/);

    const second = await openManager({ registryTable: registry });
    const slug = uniqueSlug('dom');
    await manager.createTenant(slug);
    await second.addTenantDomain(slug, 'one.example.com');
    await second.addTenantDomain(slug, 'two.example.com');
    // Written past the library: the database itself refuses a second primary for a tenant.
    const refused = await rejection(adminQuery(`UPDATE public."${registry}_domains" SET is_primary = true WHERE hostname = 'two.example.com'`));
    expect((refused as { code?: string }).code).to.equal('23P01');
    const [{ count }] = await adminQuery<{ count: string }>(`SELECT count(*) FROM public."${registry}_domain_gen"`);
    expect(count).to.equal('1');
  });

  it('addTenantDomain normalises the hostname (case, port, trailing dot, punycode); the first becomes primary; primary: true moves it, in one transaction', async () => {
    const slug = uniqueSlug('dom');
    await manager.createTenant(slug);
    const events: string[] = [];
    for (const event of ['domain-added', 'domain-updated', 'domain-removed'] as const) {
      manager.on(event, ({ slug: owner, domain }) => events.push(`${event} ${domain.hostname} ${owner} ${domain.primary ? 'primary' : '-'}`));
    }

    const first = await manager.addTenantDomain(slug, 'Portal.ACME.example.com.:8443');
    expect(first).to.include({ hostname: 'portal.acme.example.com', slug, primary: true, verified: false });
    expect(first.createdAt).to.be.instanceOf(Date);
    const idn = await manager.addTenantDomain(slug, 'Bücher.example.com', { verified: true });
    expect(idn).to.include({ hostname: 'xn--bcher-kva.example.com', primary: false, verified: true });
    const moved = await manager.addTenantDomain(slug, 'www.acme.example.com', { primary: true });
    expect(moved.primary).to.equal(true);
    expect(summary(await manager.listTenantDomains(slug))).to.deep.equal([
      ['www.acme.example.com', slug, true, false],
      ['portal.acme.example.com', slug, false, false],
      ['xn--bcher-kva.example.com', slug, false, true],
    ]);
    expect(events).to.deep.equal([
      `domain-added portal.acme.example.com ${slug} primary`,
      `domain-added xn--bcher-kva.example.com ${slug} -`,
      `domain-added www.acme.example.com ${slug} primary`,
      `domain-updated portal.acme.example.com ${slug} -`,
    ]);
    expect(await manager.getTenantDomain('WWW.acme.example.com:80')).to.deep.include({ hostname: 'www.acme.example.com', slug, primary: true });
    expect(await manager.getTenantDomain('nobody.example.com')).to.equal(undefined);
  });

  it('a hostname has one tenant: another tenant gets TenantDomainTakenError (409) in any spelling; the same tenant adding it again gets it back, flags set where asked', async () => {
    const [a, b] = [uniqueSlug('dom-a'), uniqueSlug('dom-b')];
    await manager.createTenant(a);
    await manager.createTenant(b);
    const hostname = host();
    await manager.addTenantDomain(a, hostname);
    for (const spelling of [hostname, hostname.toUpperCase(), `${hostname}.`, `${hostname}:443`]) {
      const error = await rejection(manager.addTenantDomain(b, spelling));
      expect(error, spelling).to.be.instanceOf(TenantDomainTakenError);
      expect(error).to.include({ hostname, slug: b, heldBy: a, statusCode: 409, code: 'TENANT_DOMAIN_TAKEN' });
      expect((error as Error).message).not.to.contain(a); // the other tenant is not named to the one that asked
    }
    const again = await manager.addTenantDomain(a, hostname.toUpperCase(), { verified: true });
    expect(again).to.include({ hostname, slug: a, primary: true, verified: true });
    // Adding again never takes a flag away.
    expect(await manager.addTenantDomain(a, hostname, { verified: false, primary: false })).to.include({ primary: true, verified: true });
    expect(summary(await manager.listTenantDomains())).to.deep.equal([[hostname, a, true, true]]);
  });

  it('two tenants racing for one hostname: exactly one wins, every other call gets TenantDomainTakenError', async () => {
    const slugs = [uniqueSlug('race-a'), uniqueSlug('race-b'), uniqueSlug('race-c')];
    for (const slug of slugs) await manager.createTenant(slug);
    const hostname = host('race');
    const other = await openManager({ registryTable: registry });
    const outcomes = await Promise.allSettled(
      Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? manager : other).addTenantDomain(slugs[i % 3]!, i % 4 === 0 ? hostname.toUpperCase() : hostname)),
    );
    const won = outcomes.filter((o): o is PromiseFulfilledResult<TenantDomain> => o.status === 'fulfilled').map((o) => o.value);
    const winner = won[0]!.slug;
    // The winning tenant's own repeated calls return the domain; every other tenant's is refused.
    expect(won.every((d) => d.slug === winner && d.hostname === hostname)).to.equal(true);
    const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected').map((o) => o.reason as unknown);
    expect(refused.length + won.length).to.equal(12);
    expect(refused.length).to.equal(8);
    for (const error of refused) expect(error).to.be.instanceOf(TenantDomainTakenError).and.to.include({ heldBy: winner });
    const rows = await adminQuery(`SELECT hostname, slug FROM public."${registry}_domains"`);
    expect(rows).to.deep.equal([{ hostname, slug: winner }]);
  });

  it('many concurrent primary: true additions to one tenant leave exactly one primary', async () => {
    const slug = uniqueSlug('prim');
    await manager.createTenant(slug);
    const other = await openManager({ registryTable: registry });
    const hostnames = Array.from({ length: 10 }, () => host('p'));
    await Promise.all(hostnames.map((h, i) => (i % 2 === 0 ? manager : other).addTenantDomain(slug, h, { primary: true })));
    const domains = await manager.listTenantDomains(slug);
    expect(domains).to.have.length(10);
    expect(domains.filter((d) => d.primary)).to.have.length(1);
    expect(domains[0]!.primary).to.equal(true);
  });

  it('refuses bad input before any SQL: invalid hostnames (400), invalid slugs, bad option types; an unknown tenant is 404', async () => {
    const logger = new CountingLogger();
    const counted = await openManager({ registryTable: registry, dataSource: { type: 'postgres', url: databaseUrl(), poolSize: 2, logger } });
    const slug = uniqueSlug('bad');
    await counted.createTenant(slug);
    const before = logger.queries.length;
    for (const bad of ['[::1]', '::1', '127.0.0.1', '0x7f.1', 'https://acme.example.com/', 'a_b.example.com', 'a..b.com', '', ' acme.com', 'ac%6de.com', `${'x'.repeat(64)}.com`, 42, null]) {
      const error = await rejection(counted.addTenantDomain(slug, bad as string));
      expect(error, String(bad)).to.be.instanceOf(InvalidHostnameError);
      expect(error).to.include({ statusCode: 400, code: 'INVALID_HOSTNAME' });
      expect(await rejection(counted.getTenantDomain(bad as string))).to.be.instanceOf(InvalidHostnameError);
      expect(await rejection(counted.removeTenantDomain(bad as string))).to.be.instanceOf(InvalidHostnameError);
    }
    expect(await rejection(counted.addTenantDomain('Bad Slug', 'ok.example.com'))).to.be.instanceOf(InvalidTenantNameError);
    expect(await rejection(counted.listTenantDomains('pg_catalog'))).to.be.instanceOf(InvalidTenantNameError);
    expect(await rejection(counted.addTenantDomain(slug, 'ok.example.com', { primary: 'yes' as unknown as boolean }))).to.be.instanceOf(InvalidArgumentError);
    expect(await rejection(counted.updateTenantDomain('ok.example.com', { verified: 1 as unknown as boolean }))).to.be.instanceOf(InvalidArgumentError);
    expect(logger.queries.length - before, logger.queries.slice(before).join('\n')).to.equal(0);

    const unknown = uniqueSlug('ghost');
    const error = await rejection(counted.addTenantDomain(unknown, host()));
    expect(error).to.be.instanceOf(TenantNotFoundError).and.to.include({ slug: unknown, statusCode: 404 });
    expect(await rejection(counted.listTenantDomains(unknown))).to.be.instanceOf(TenantNotFoundError);
    expect(await counted.listTenantDomains(slug)).to.deep.equal([]);
  });

  it('updateTenantDomain sets verified and primary; removeTenantDomain frees the hostname (the primary too, leaving none until the next)', async () => {
    const [a, b] = [uniqueSlug('upd-a'), uniqueSlug('upd-b')];
    await manager.createTenant(a);
    await manager.createTenant(b);
    const [h1, h2, h3] = [host('one'), host('two'), host('three')];
    await manager.addTenantDomain(a, h1);
    await manager.addTenantDomain(a, h2);
    expect(await manager.updateTenantDomain(h2.toUpperCase(), { verified: true })).to.include({ hostname: h2, verified: true, primary: false });
    expect(await manager.updateTenantDomain(h2, { primary: true })).to.include({ primary: true, verified: true });
    expect(summary(await manager.listTenantDomains(a))).to.deep.equal([
      [h2, a, true, true],
      [h1, a, false, false],
    ]);
    expect(await manager.updateTenantDomain(h2, { primary: false, verified: false })).to.include({ primary: false, verified: false });
    expect((await manager.listTenantDomains(a)).filter((d) => d.primary)).to.deep.equal([]);
    expect(await rejection(manager.updateTenantDomain(h3, { verified: true }))).to.be.instanceOf(TenantDomainNotFoundError).and.to.include({ statusCode: 404 });

    await manager.updateTenantDomain(h1, { primary: true });
    const removed = await manager.removeTenantDomain(`${h1}.`);
    expect(removed).to.include({ hostname: h1, slug: a, primary: true });
    expect(await rejection(manager.removeTenantDomain(h1))).to.be.instanceOf(TenantDomainNotFoundError);
    expect(summary(await manager.listTenantDomains(a))).to.deep.equal([[h2, a, false, false]]);
    // Free for another tenant at once; a tenant without a primary gets its next hostname as primary.
    expect(await manager.addTenantDomain(b, h1)).to.include({ slug: b, primary: true });
    expect(await manager.addTenantDomain(a, h3)).to.include({ slug: a, primary: true });
    // Every tenant's, by slug ("upd-a-..." before "upd-b-..."), primary first.
    expect(summary(await manager.listTenantDomains())).to.deep.equal([
      [h3, a, true, false],
      [h2, a, false, false],
      [h1, b, true, false],
    ]);
  });

  it('archive and restore keep the domains; drop frees them in its last transaction (a failing drop keeps them), announcing each', async () => {
    const [slug, next] = [uniqueSlug('life'), uniqueSlug('life-next')];
    await manager.createTenant(slug);
    await manager.createTenant(next);
    const [h1, h2] = [host('l1'), host('l2')];
    await manager.addTenantDomain(slug, h1, { verified: true });
    await manager.addTenantDomain(slug, h2);

    await manager.archiveTenant(slug);
    expect(summary(await manager.listTenantDomains(slug))).to.deep.equal([
      [h1, slug, true, true],
      [h2, slug, false, false],
    ]);
    await manager.restoreTenant(slug);
    expect(await manager.listTenantDomains(slug)).to.have.length(2);
    await manager.suspendTenant(slug);

    // The drop's last transaction fails after freeing the domains: they must still be there.
    await adminQuery(`CREATE FUNCTION public."${registry}_refuse"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$`);
    await adminQuery(
      `CREATE TRIGGER refuse BEFORE DELETE ON public."${registry}" FOR EACH ROW WHEN (OLD.slug = '${slug}') EXECUTE FUNCTION public."${registry}_refuse"()`,
    );
    const failed = await rejection(manager.dropTenant(slug));
    expect((failed as Error).message).to.contain('refused by the test');
    expect(await manager.listTenantDomains(slug)).to.have.length(2);
    expect((await manager.getTenant(slug))!.status).to.equal('dropping');
    const refused = await rejection(manager.addTenantDomain(slug, host('late')));
    expect(refused).to.be.instanceOf(InvalidTenantStateError).and.to.include({ status: 'dropping' });
    await adminQuery(`DROP TRIGGER refuse ON public."${registry}"`);

    const removed: string[] = [];
    manager.on('domain-removed', ({ domain }) => removed.push(domain.hostname));
    await manager.dropTenant(slug);
    expect(removed.sort()).to.deep.equal([h1, h2].sort());
    expect(await adminQuery(`SELECT hostname FROM public."${registry}_domains" WHERE hostname = ANY($1)`, [[h1, h2]])).to.deep.equal([]);
    expect(await manager.getTenantDomain(h1)).to.equal(undefined);
    expect(await manager.addTenantDomain(next, h1)).to.include({ slug: next, primary: true });
  });
});
