import { EntitySchema, MikroORM } from '@mikro-orm/postgresql';
import type { Contender, ContenderSettings } from './contenders';
import type { RoutingFixture } from './fixture';

/**
 * MikroORM 6 as a routing contender: the TypeScript peer with built-in schema
 * routing. Per operation, `orm.em.fork({ schema })` (a fresh identity map and
 * unit of work bound to the tenant schema), then `em.findOne(ClientSchema, { id })`
 * or `em.insert(ClientSchema, {...})`; MikroORM qualifies the table with the
 * fork's schema (`"t001"."client"`), so, like B, it needs no session state.
 *
 * The entity is an `EntitySchema` (no decorators, no reflection) over the
 * same `client` table the other contenders use. `plan_id` is mapped as a plain
 * column: the relation to the shared `plan` table plays no part in these
 * queries (TypeORM's `findOneBy` does not load it either).
 */
export interface ClientRow {
  id: number;
  name: string;
  email: string;
  internalNote?: string;
  planId?: number | null;
}

export const ClientSchema = new EntitySchema<ClientRow>({
  name: 'Client',
  tableName: 'client',
  properties: {
    id: { type: 'number', primary: true, autoincrement: true },
    name: { type: 'string' },
    email: { type: 'string' },
    internalNote: { type: 'string', fieldName: 'internal_note', default: '' },
    planId: { type: 'number', fieldName: 'plan_id', nullable: true },
  },
});

/** The key op `i` looks up; the same function as the TypeORM contenders (passed in to avoid an import cycle). */
type IdFor = (i: number, rows: number) => number;

export async function openMikroOrm(
  name: 'M1' | 'M100',
  description: string,
  fixture: RoutingFixture,
  settings: ContenderSettings,
  schemas: readonly string[],
  idFor: IdFor,
): Promise<Contender> {
  const applicationName = `bench-${name}`;
  const orm = await MikroORM.init({
    clientUrl: settings.url,
    entities: [ClientSchema],
    // No file access, no metadata cache on disk, no database creation check.
    discovery: { disableDynamicFileAccess: true, warnWhenNoEntities: false },
    metadataCache: { enabled: false },
    ensureDatabase: false,
    debug: false,
    // Same pool size and idle timeout as every other contender (knex/tarn pool, opened lazily).
    pool: { min: 0, max: settings.poolSize, idleTimeoutMillis: settings.idleTimeoutMillis },
    driverOptions: { connection: { application_name: applicationName } },
  });
  const rows = fixture.rowsPerSchema;
  const n = schemas.length;
  const knexPool = (): { numUsed(): number; numFree(): number } | undefined =>
    (orm.em.getConnection().getKnex().client as { pool?: { numUsed(): number; numFree(): number } }).pool;
  return {
    name,
    description,
    applicationName,
    tenants: n,
    poolSize: settings.poolSize,
    pools: 1,
    ops: {
      find: (i) => orm.em.fork({ schema: schemas[i % n]! }).findOne(ClientSchema, { id: idFor(i, rows) }),
      insert: (i) => orm.em.fork({ schema: schemas[i % n]! }).insert(ClientSchema, { name: 'Bench Client', email: 'bench@example.test' }),
    },
    openConnections: () => {
      const pool = knexPool();
      return pool === undefined ? 0 : pool.numUsed() + pool.numFree();
    },
    // Closes the knex pool, so the process can exit on its own.
    close: () => orm.close(true),
  };
}
