import { expect } from 'chai';
import { renderDomains } from '../../src/cli/text-format';
import { adminQuery, createTenants, openManager } from '../support/fixtures';
import { runCli, runCliJson, uniqueRegistry, type CliEnv } from './cli-support';

/** A domain as the CLI prints it in JSON. */
interface DomainJson {
  readonly hostname: string;
  readonly slug: string;
  readonly primary: boolean;
  readonly verified: boolean;
  readonly createdAt: string;
}

const flags = (d: DomainJson): [string, string, boolean, boolean] => [d.hostname, d.slug, d.primary, d.verified];

function expectOneLine(stderr: string): void {
  expect(stderr.endsWith('\n'), stderr).to.equal(true);
  expect(stderr.trimEnd().split('\n'), stderr).to.have.length(1);
}

describe('CLI: typeorm-tenants domain add|update|remove|list', () => {
  async function fleet(): Promise<{ env: CliEnv; a: string; b: string }> {
    const registry = uniqueRegistry();
    const manager = await openManager({ registryTable: registry });
    const [a, b] = (await createTenants(manager, 2, 'cli-dom')).sort() as [string, string];
    await manager.destroy();
    return { env: { registry }, a, b };
  }

  it('add normalises the hostname and prints the domain as JSON; the registry holds it; another tenant is refused with 409\'s code on one line', async () => {
    const { env, a, b } = await fleet();
    const added = await runCliJson<DomainJson>(['domain', 'add', a, 'Portal.Example.COM.:8443', '--verified'], env);
    expect(flags(added)).to.deep.equal(['portal.example.com', a, true, true]);
    expect(Number.isNaN(Date.parse(added.createdAt))).to.equal(false);
    expect(await adminQuery(`SELECT hostname, slug, is_primary, verified FROM public."${env.registry}_domains"`)).to.deep.equal([
      { hostname: 'portal.example.com', slug: a, is_primary: true, verified: true },
    ]);

    const taken = await runCli(['domain', 'add', b, 'PORTAL.example.com'], env);
    expect(taken.code).to.equal(1);
    expect(taken.stderr).to.match(/^error \[TENANT_DOMAIN_TAKEN\]: Hostname "portal\.example\.com" cannot be added to tenant/);
    expect(taken.stderr).to.contain('typeorm-tenants domain remove');
    expectOneLine(taken.stderr);

    for (const bad of ['127.0.0.1', '[::1]', 'https://portal.example.com/']) {
      const refused = await runCli(['domain', 'add', a, bad], env);
      expect(refused.code, bad).to.equal(1);
      expect(refused.stderr).to.match(/^error \[INVALID_HOSTNAME\]: Invalid hostname/);
      expectOneLine(refused.stderr);
    }
    const ghost = await runCli(['domain', 'add', 'ghost-tenant', 'ghost.example.com'], env);
    expect(ghost.code).to.equal(1);
    expect(ghost.stderr).to.contain('typeorm-tenants create ghost-tenant');
  });

  it('--primary moves the primary; update sets the flags; list prints a tenant\'s (primary first) or every tenant\'s; remove frees the hostname', async () => {
    const { env, a, b } = await fleet();
    await runCliJson(['domain', 'add', a, 'one.example.com'], env);
    const second = await runCliJson<DomainJson>(['domain', 'add', a, 'two.example.com', '--primary'], env);
    expect(second.primary).to.equal(true);
    const third = await runCliJson<DomainJson>(['domain', 'add', b, 'three.example.com', '--no-primary'], env);
    expect(third.primary, '--no-primary, even as the first').to.equal(false);
    expect((await runCliJson<DomainJson[]>(['domain', 'list', a], env)).map(flags)).to.deep.equal([
      ['two.example.com', a, true, false],
      ['one.example.com', a, false, false],
    ]);

    const verified = await runCliJson<DomainJson>(['domain', 'update', 'ONE.example.com', '--verified', '--primary'], env);
    expect(flags(verified)).to.deep.equal(['one.example.com', a, true, true]);
    const unverified = await runCliJson<DomainJson>(['domain', 'update', 'one.example.com', '--no-verified'], env);
    expect(flags(unverified), 'primary left as it was').to.deep.equal(['one.example.com', a, true, false]);

    const removed = await runCliJson<DomainJson>(['domain', 'remove', 'two.example.com'], env);
    expect(flags(removed)).to.deep.equal(['two.example.com', a, false, false]);
    const again = await runCli(['domain', 'remove', 'two.example.com'], env);
    expect(again.code).to.equal(1);
    expect(again.stderr).to.match(/^error \[TENANT_DOMAIN_NOT_FOUND\]: No tenant has the hostname "two\.example\.com"/);
    expectOneLine(again.stderr);
    // b has no primary (three was added with --no-primary): its next hostname becomes it.
    expect(flags(await runCliJson<DomainJson>(['domain', 'add', b, 'two.example.com'], env))).to.deep.equal(['two.example.com', b, true, false]);

    expect((await runCliJson<DomainJson[]>(['domain', 'list'], env)).map(flags)).to.deep.equal([
      ['one.example.com', a, true, false],
      ['two.example.com', b, true, false],
      ['three.example.com', b, false, false],
    ]);
    const unknown = await runCli(['domain', 'list', 'ghost-tenant'], env);
    expect(unknown.code).to.equal(1);
    expect(unknown.stderr).to.match(/^error \[TENANT_NOT_FOUND\]/);
  });

  it('usage errors exit 2; the text rendering is a table with a count, or a sentence', async () => {
    const { env } = await fleet();
    const missing = await runCli(['domain', 'add', 'only-a-slug'], env);
    expect(missing.code).to.equal(2);
    expect(missing.stderr).to.contain("missing required argument 'hostname'");
    const unknown = await runCli(['domain', 'rename', 'x'], env);
    expect(unknown.code).to.equal(2);

    expect(renderDomains([])).to.equal('No domains.\n');
    const text = renderDomains([
      { hostname: 'portal.example.com', slug: 'acme', primary: true, verified: true, createdAt: new Date('2026-01-02T03:04:05Z') },
      { hostname: 'x.example.com', slug: 'acme', primary: false, verified: false, createdAt: new Date('2026-01-02T03:04:06Z') },
    ]);
    expect(text).to.equal(
      'HOSTNAME            TENANT  PRIMARY  VERIFIED  CREATED\n' +
        'portal.example.com  acme    yes      yes       2026-01-02 03:04:05Z\n' +
        'x.example.com       acme    no       no        2026-01-02 03:04:06Z\n' +
        '2 domains\n',
    );
  });
});
