import { expect } from 'chai';
import { Client as PgClient } from 'pg';
import { TenantProvisioningError } from '../../src';
import { databaseUrl, openManager, schemaExists, uniqueSlug } from '../support/fixtures';

describe('lockTimeoutMs bounds the wait for a tenant\'s advisory lock', () => {
  it('createTenant gives up with SQLSTATE 55P03 while another session holds the schema lock, and succeeds once it is free', async () => {
    const manager = await openManager({ lockTimeoutMs: 300 });
    const slug = uniqueSlug('lock');
    const schema = slug.replace(/-/g, '_');
    const holder = new PgClient({ connectionString: databaseUrl() });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`typeorm-tenants:schema:${schema}`]);
      const error = await manager.createTenant(slug).catch((e: unknown) => e);
      expect(error).to.be.instanceOf(TenantProvisioningError);
      expect((error as TenantProvisioningError).sqlState).to.equal('55P03'); // lock_not_available
      expect(await schemaExists(schema)).to.equal(false);
      await holder.query('COMMIT');
      await manager.createTenant(slug);
      expect(await schemaExists(schema)).to.equal(true);
    } finally {
      await holder.end();
    }
  });
});
