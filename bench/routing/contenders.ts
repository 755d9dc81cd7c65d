import { DataSource, type DataSourceOptions, type Repository } from 'typeorm';
import type { PostgresDriver } from 'typeorm/driver/postgres/PostgresDriver';
import { Client, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { Client as PgClient } from 'pg';
import { DEFAULT_SHARED_SCHEMA, TenantDataSourceManager, quoteIdent, schemaNameForSlug, tenantContext } from '../../src';
import type { Workload } from '../config';
import type { Operation } from '../measure';
import { inParallel, type RoutingFixture } from './fixture';
import { openMikroOrm } from './mikro-orm';
import { Registry } from 'prom-client';
import { tenantMetrics } from '../../src/observability/metrics';

/**
 * The ways of routing a query to a tenant that the routing benchmark
 * compares, all on the same `client` table and rows:
 *
 * - A    plain TypeORM, one DataSource on `public`, no tenancy (baseline);
 * - B1   typeorm-tenants, one tenant;
 * - B100 typeorm-tenants, all tenants round-robin;
 * - S100 control: typeorm-tenants, N tenants round-robin whose registry rows
 *        all name B1's schema: B100's client work (N tenant DataSources built
 *        by the library, N cache entries, N run states), one set of relations
 *        on the server (B1's);
 * - C1   one DataSource, per op: QueryRunner + `SET search_path` + query +
 *        release, one tenant (control: C100's client work, one schema);
 * - C100 the same, all tenants round-robin (the contender once called C);
 * - D    one DataSource, per op: `BEGIN; SET LOCAL search_path; query; COMMIT`;
 * - E    one DataSource with its own pool per tenant;
 * - M1   MikroORM 6, `em.fork({ schema })` per op, one tenant;
 * - M100 MikroORM 6, `em.fork({ schema })` per op, all tenants round-robin.
 *
 * Every contender has its own pool(s) and its own PostgreSQL
 * application_name, so the connections each uses can be counted.
 */
export interface Contender {
  readonly name: string;
  readonly description: string;
  /** application_name of its connections. */
  readonly applicationName: string;
  /** Tenants (schemas) it routes over. */
  readonly tenants: number;
  /** Configured size of its pool, or of each of its pools. */
  readonly poolSize: number;
  readonly pools: number;
  readonly ops: Readonly<Record<Workload, Operation>>;
  /** Connections its pool(s) hold now, as the client sees them. */
  openConnections(): number;
  close(): Promise<void>;
}

export interface ContenderSettings {
  readonly url: string;
  readonly poolSize: number;
  readonly poolSizePerTenantE: number;
  /** Idle connections stay this long in every pool (same for all contenders). */
  readonly idleTimeoutMillis: number;
}

/** Short names for tables. */
export const CONTENDER_LABELS: Readonly<Record<string, string>> = {
  A: 'plain TypeORM (baseline)',
  B1: 'typeorm-tenants, 1 tenant',
  B1c: 'typeorm-tenants, 1 tenant, sqlComment: true',
  B1m: 'typeorm-tenants, 1 tenant, typeorm-tenants/metrics on',
  R1: "typeorm-tenants, 1 tenant, isolation: 'role'",
  B100: 'typeorm-tenants, N tenants',
  S100: 'typeorm-tenants, N tenants on one schema (control)',
  C1: 'SET search_path per op, 1 tenant',
  C100: 'SET search_path per op, N tenants',
  D: 'BEGIN; SET LOCAL; COMMIT per op',
  E: 'own pool per tenant',
  M1: 'MikroORM em.fork({ schema }), 1 tenant',
  M100: 'MikroORM em.fork({ schema }), N tenants',
};

export const CONTENDER_DESCRIPTIONS: Readonly<Record<string, string>> = {
  A: 'plain TypeORM DataSource on one schema, no tenancy (baseline)',
  B1: 'typeorm-tenants, 1 tenant: manager.run(slug, () => tenantContext.getRepository(Client)...)',
  B1c: "as B1, with sqlComment: true (/*tenant='<slug>'*/ in front of every statement)",
  B1m: 'as B1, with tenantMetrics(manager, { registry }) subscribed (diagnostics_channel run events, a counter and a histogram per run; tenant labels off)',
  R1: "as B1, with isolation: 'role' (the tenant's PostgreSQL role set at every connection checkout, reset at release)",
  B100: 'typeorm-tenants, N tenants round-robin, one shared pool',
  S100:
    "control for B100: N tenants round-robin through the same library code (manager.run, one tenant DataSource each, built by the library), " +
    "but every tenant's registry row names B1's schema, so PostgreSQL sees one set of relations; the client does B100's work. " +
    '(The bench keeps these tenants in a registry table of their own, bench_same_schema_tenants, with its UNIQUE (schema_name) constraint dropped.)',
  C1: 'one DataSource; per op: QueryRunner, SET search_path, query, release; 1 tenant (B1\'s schema)',
  C100: 'one DataSource; per op: QueryRunner, SET search_path, query, release; N tenants round-robin',
  D: 'one DataSource; per op: BEGIN; SET LOCAL search_path; query; COMMIT',
  E: 'one DataSource with its own pool per tenant',
  M1: 'MikroORM 6.6 (@mikro-orm/postgresql), 1 tenant: per op em.fork({ schema }).findOne(ClientSchema, { id }) / .insert(ClientSchema, {...}); EntitySchema, knex pool',
  M100: 'MikroORM 6.6, N tenants round-robin: em.fork({ schema }) per op, one pool',
};

/** A new row per insert: TypeORM writes the generated id and defaults back into the object. */
const row = (): Partial<Client> => ({ name: 'Bench Client', email: 'bench@example.test' });

/** The primary key op `i` looks up: spread over 1..rows, the same sequence for every contender. */
export function idFor(i: number, rows: number): number {
  return 1 + (Math.imul(i, 0x9e3779b1) >>> 0) % rows;
}

export async function openContender(name: string, fixture: RoutingFixture, settings: ContenderSettings): Promise<Contender> {
  switch (name) {
    case 'A':
      return openPlain(fixture, settings);
    case 'B1':
      return openTenants('B1', fixture, settings, [fixture.soloSlug]);
    case 'B1c':
      return openTenants('B1c', fixture, settings, [fixture.soloSlug]);
    case 'B1m':
      return openTenants('B1m', fixture, settings, [fixture.soloSlug]);
    case 'R1':
      return openTenants('R1', fixture, settings, [ROLE_SLUG]);
    case 'B100':
      return openTenants('B100', fixture, settings, fixture.tenantSlugs);
    case 'S100':
      return openSameSchemaTenants(fixture, settings);
    case 'C1':
      return openSearchPath('C1', fixture, settings, [schemaNameForSlug(fixture.soloSlug)]);
    case 'C100':
      return openSearchPath('C100', fixture, settings, fixture.tenantSchemas);
    case 'D':
      return openSetLocal(fixture, settings);
    case 'E':
      return openPoolPerTenant(fixture, settings);
    case 'M1':
      return openMikroOrm('M1', CONTENDER_DESCRIPTIONS.M1!, fixture, settings, [schemaNameForSlug(fixture.soloSlug)], idFor);
    case 'M100':
      return openMikroOrm('M100', CONTENDER_DESCRIPTIONS.M100!, fixture, settings, fixture.tenantSchemas, idFor);
    default:
      throw new Error(`Unknown contender "${name}"`);
  }
}

function plainOptions(settings: ContenderSettings, applicationName: string, poolSize: number, schema?: string): DataSourceOptions {
  return {
    type: 'postgres',
    url: settings.url,
    ...(schema === undefined ? {} : { schema }),
    entities: [Client, Project, Plan],
    poolSize,
    applicationName,
    extra: { idleTimeoutMillis: settings.idleTimeoutMillis },
  };
}

function poolConnections(dataSource: DataSource): number {
  const pool = (dataSource.driver as PostgresDriver).master as { totalCount?: number } | undefined;
  return pool?.totalCount ?? 0;
}

async function openPlain(fixture: RoutingFixture, settings: ContenderSettings): Promise<Contender> {
  const dataSource = new DataSource(plainOptions(settings, 'bench-A', settings.poolSize));
  await dataSource.initialize();
  const clients: Repository<Client> = dataSource.getRepository(Client);
  const rows = fixture.rowsPerSchema;
  return {
    name: 'A',
    description: CONTENDER_DESCRIPTIONS.A!,
    applicationName: 'bench-A',
    tenants: 0,
    poolSize: settings.poolSize,
    pools: 1,
    ops: {
      find: (i) => clients.findOneBy({ id: idFor(i, rows) }),
      insert: () => clients.insert(row()),
    },
    openConnections: () => poolConnections(dataSource),
    close: () => dataSource.destroy(),
  };
}

/** The tenant of R1: its own registry, created with a role, filled like the others. */
const ROLE_SLUG = 'bench-role';

/** The registry table of S100's tenants (each of them names B1's schema). */
const SAME_SCHEMA_REGISTRY = 'bench_same_schema_tenants';

/** Slug of S100's tenant `index`. */
export function sameSchemaSlug(index: number): string {
  return `same-${String(index).padStart(3, '0')}`;
}

async function openTenants(
  name: 'B1' | 'B1c' | 'B1m' | 'B100' | 'R1' | 'S100',
  fixture: RoutingFixture,
  settings: ContenderSettings,
  slugs: readonly string[],
): Promise<Contender> {
  const applicationName = `bench-${name}`;
  const role = name === 'R1';
  const sameSchema = name === 'S100';
  const manager = new TenantDataSourceManager({
    dataSource: { type: 'postgres', url: settings.url, poolSize: settings.poolSize, applicationName },
    entities: [Client, Project, Plan],
    tenantMigrations,
    sharedMigrations,
    pool: { idleTimeoutMillis: settings.idleTimeoutMillis },
    ...(role ? { isolation: 'role' as const, registryTable: 'bench_role_tenants' } : {}),
    ...(sameSchema ? { registryTable: SAME_SCHEMA_REGISTRY } : {}),
    ...(name === 'B1c' ? { sqlComment: true } : {}),
  });
  const metrics = name === 'B1m' ? tenantMetrics(manager, { registry: new Registry() }) : undefined;
  try {
    await manager.initialize();
    if (role && (await manager.getTenant(ROLE_SLUG)) === undefined) {
      await manager.createTenant(ROLE_SLUG);
      await manager.run(ROLE_SLUG, () => tenantContext.getRepository(Client).insert(Array.from({ length: fixture.rowsPerSchema }, row)));
    }
    if (sameSchema) await registerSameSchemaTenants(settings.url, slugs, schemaNameForSlug(fixture.soloSlug));
  } catch (error) {
    await manager.destroy().catch(() => undefined);
    throw error;
  }
  const rows = fixture.rowsPerSchema;
  const n = slugs.length;
  const insert = (): Promise<unknown> => tenantContext.getRepository(Client).insert(row());
  return {
    name,
    description: CONTENDER_DESCRIPTIONS[name]!,
    applicationName,
    tenants: n,
    poolSize: settings.poolSize,
    pools: 1,
    ops: {
      find: (i) => {
        const id = idFor(i, rows);
        return manager.run(slugs[i % n]!, () => tenantContext.getRepository(Client).findOneBy({ id }));
      },
      insert: (i) => manager.run(slugs[i % n]!, insert),
    },
    openConnections: () => manager.stats().pool.total,
    close: () => {
      metrics?.close();
      return manager.destroy();
    },
  };
}

/**
 * S100: as many tenants as B100 (`fixture.tenantSlugs.length`), run through
 * the library exactly as B100 is, whose registry rows all name B1's schema.
 */
function openSameSchemaTenants(fixture: RoutingFixture, settings: ContenderSettings): Promise<Contender> {
  const slugs = fixture.tenantSlugs.map((_, k) => sameSchemaSlug(k));
  return openTenants('S100', fixture, settings, slugs);
}

/**
 * Registers `slugs` as active tenants in S100's registry table, every one
 * with `schemaName`. The library's registry keeps schema_name UNIQUE (one
 * schema per tenant is its point), so the bench drops that constraint on its
 * own registry table first; nothing else about the tenants is unusual, and
 * `manager.run()` builds each one's DataSource as it does for any tenant.
 */
async function registerSameSchemaTenants(url: string, slugs: readonly string[], schemaName: string): Promise<void> {
  const table = `${quoteIdent(DEFAULT_SHARED_SCHEMA)}.${quoteIdent(SAME_SCHEMA_REGISTRY)}`;
  const admin = new PgClient({ connectionString: url, application_name: 'bench-setup' });
  await admin.connect();
  try {
    const { rows } = await admin.query<{ conname: string }>(
      `SELECT conname FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'u'`,
      [table],
    );
    for (const { conname } of rows) await admin.query(`ALTER TABLE ${table} DROP CONSTRAINT ${quoteIdent(conname)}`);
    await admin.query(
      `INSERT INTO ${table} (slug, schema_name, name, status) SELECT s, $2, s, 'active' FROM unnest($1::text[]) AS s ON CONFLICT (slug) DO NOTHING`,
      [slugs, schemaName],
    );
  } finally {
    await admin.end();
  }
}

async function openSearchPath(name: 'C1' | 'C100', fixture: RoutingFixture, settings: ContenderSettings, schemas: readonly string[]): Promise<Contender> {
  const applicationName = `bench-${name}`;
  const dataSource = new DataSource(plainOptions(settings, applicationName, settings.poolSize));
  await dataSource.initialize();
  const setPath = schemas.map((s) => `SET search_path TO ${quoteIdent(s)}`);
  const n = setPath.length;
  const rows = fixture.rowsPerSchema;
  const withTenant = async <T>(i: number, work: (runner: ReturnType<DataSource['createQueryRunner']>) => Promise<T>): Promise<T> => {
    const runner = dataSource.createQueryRunner();
    try {
      await runner.query(setPath[i % n]!);
      return await work(runner);
    } finally {
      await runner.release();
    }
  };
  return {
    name,
    description: CONTENDER_DESCRIPTIONS[name]!,
    applicationName,
    tenants: n,
    poolSize: settings.poolSize,
    pools: 1,
    ops: {
      find: (i) => withTenant(i, (runner) => runner.manager.findOneBy(Client, { id: idFor(i, rows) })),
      insert: (i) => withTenant(i, (runner) => runner.manager.insert(Client, row())),
    },
    openConnections: () => poolConnections(dataSource),
    close: () => dataSource.destroy(),
  };
}

async function openSetLocal(fixture: RoutingFixture, settings: ContenderSettings): Promise<Contender> {
  const dataSource = new DataSource(plainOptions(settings, 'bench-D', settings.poolSize));
  await dataSource.initialize();
  const setLocal = fixture.tenantSchemas.map((s) => `SET LOCAL search_path TO ${quoteIdent(s)}`);
  const n = setLocal.length;
  const rows = fixture.rowsPerSchema;
  return {
    name: 'D',
    description: CONTENDER_DESCRIPTIONS.D!,
    applicationName: 'bench-D',
    tenants: n,
    poolSize: settings.poolSize,
    pools: 1,
    ops: {
      find: (i) =>
        dataSource.transaction(async (em) => {
          await em.query(setLocal[i % n]!);
          return em.findOneBy(Client, { id: idFor(i, rows) });
        }),
      insert: (i) =>
        dataSource.transaction(async (em) => {
          await em.query(setLocal[i % n]!);
          return em.insert(Client, row());
        }),
    },
    openConnections: () => poolConnections(dataSource),
    close: () => dataSource.destroy(),
  };
}

async function openPoolPerTenant(fixture: RoutingFixture, settings: ContenderSettings): Promise<Contender> {
  const dataSources: DataSource[] = fixture.tenantSchemas.map(
    (schema) => new DataSource(plainOptions(settings, 'bench-E', settings.poolSizePerTenantE, schema)),
  );
  const close = async (): Promise<void> => {
    await Promise.all(dataSources.filter((ds) => ds.isInitialized).map((ds) => ds.destroy()));
  };
  try {
    await inParallel(dataSources, 8, async (ds) => {
      await ds.initialize();
    });
  } catch (error) {
    await close().catch(() => undefined);
    throw error;
  }
  const repositories = dataSources.map((ds) => ds.getRepository(Client));
  const n = repositories.length;
  const rows = fixture.rowsPerSchema;
  return {
    name: 'E',
    description: CONTENDER_DESCRIPTIONS.E!,
    applicationName: 'bench-E',
    tenants: n,
    poolSize: settings.poolSizePerTenantE,
    pools: n,
    ops: {
      find: (i) => repositories[i % n]!.findOneBy({ id: idFor(i, rows) }),
      insert: (i) => repositories[i % n]!.insert(row()),
    },
    openConnections: () => dataSources.reduce((sum, ds) => sum + poolConnections(ds), 0),
    close,
  };
}
