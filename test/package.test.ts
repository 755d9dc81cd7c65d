import { expect } from 'chai';
import { join } from 'node:path';
import { Client, Plan } from '../entities';
import * as source from '../src';

describe('the built package', () => {
  // What a service gets from require('typeorm-tenants') after npm run build.
  const root = join(__dirname, '..', '..');

  it('the package root resolves to the built library and exports the same names as src/index.ts', () => {
    const packageJson = require(join(root, 'package.json')) as { main: string; types: string };
    const resolved = require.resolve(root);
    expect(resolved).to.equal(join(root, packageJson.main));
    const built = require(root) as Record<string, unknown>;
    expect(Object.keys(built).sort()).to.deep.equal(Object.keys(source).sort());
    expect(typeof built.TenantDataSourceManager).to.equal('function');
  });

  it('an entity marked by one copy of the library is recognised by another', () => {
    const built = require(root) as typeof source;
    expect(built.isTenantScoped(Client)).to.equal(true);
    expect(built.isTenantScoped(Plan)).to.equal(false);
  });
});
