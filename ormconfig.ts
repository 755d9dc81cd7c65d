import 'reflect-metadata';
import { DataSource } from 'typeorm';
import { Plan } from './entities/plan';
import { sharedMigrations } from './migrations';

/**
 * A DataSource for the TypeORM CLI, for the SHARED schema only (tenant
 * migrations run through the manager, inside each tenant schema):
 *
 *   DATABASE_URL=postgres://... npx typeorm migration:run -d build/ormconfig.js
 */
export default new DataSource({
  type: 'postgres',
  url: process.env.DATABASE_URL,
  schema: 'public',
  entities: [Plan],
  migrations: sharedMigrations,
});
