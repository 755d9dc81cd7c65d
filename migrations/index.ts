import { CreatePlan1700000000000 } from './shared/1700000000000-create-plan';
import { CreateClient1700000000001 } from './tenant/1700000000001-create-client';
import { CreateProject1700000000002 } from './tenant/1700000000002-create-project';

/** Migrations of the example model run in every tenant schema. */
export const tenantMigrations = [CreateClient1700000000001, CreateProject1700000000002];
/** Migrations of the example model run once in the shared schema. */
export const sharedMigrations = [CreatePlan1700000000000];

export { CreatePlan1700000000000, CreateClient1700000000001, CreateProject1700000000002 };
