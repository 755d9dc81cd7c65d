import { expect } from 'chai';
import { Client } from '../../entities';
import { tenantContext, type TenantDataSourceManager } from '../../src';
import { adminQuery, uniqueSlug } from './fixtures';

/** The one row of the legacy `public.client`: no tenant may ever read or write it. */
export const LEGACY_EMAIL = 'legacy@public.test';

/** The schema name of a slug (the documented rule: `-` becomes `_`). */
export const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

/** Emails in a schema's physical `client` table (or `table`), sorted. */
export async function emailsIn(schema: string, table = 'client'): Promise<string[]> {
  const rows = await adminQuery<{ email: string }>(`SELECT email FROM "${schema}".${table} ORDER BY email`);
  return rows.map((r) => r.email);
}

/**
 * Runs `work` with a legacy `public.client` next to the tenant tables, the
 * table an unfenced unqualified name would reach, then checks it still holds
 * exactly its one row, and drops it.
 */
export async function withLegacyPublicClient(work: () => Promise<void>): Promise<void> {
  await adminQuery('CREATE TABLE public.client (id serial PRIMARY KEY, name text, email text, internal_note text, plan_id int)');
  await adminQuery('INSERT INTO public.client (name, email) VALUES ($1, $2)', ['legacy', LEGACY_EMAIL]);
  try {
    await work();
    expect(await emailsIn('public'), 'public.client is never read or written').to.deep.equal([LEGACY_EMAIL]);
  } finally {
    await adminQuery('DROP TABLE IF EXISTS public.client');
  }
}

/** Creates a tenant holding one client, `seed@<slug>.test`. */
export async function tenantWithClient(manager: TenantDataSourceManager, prefix: string): Promise<string> {
  const slug = uniqueSlug(prefix);
  await manager.createTenant(slug);
  await manager.run(slug, () => tenantContext.getRepository(Client).save({ name: 'seed', email: `seed@${slug}.test` }));
  return slug;
}
