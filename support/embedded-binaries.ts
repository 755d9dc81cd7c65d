// The implementation lives in the testing kit (src/testing/embedded-binaries.ts), which users get as typeorm-tenants/testing.
export { embeddedPostgresSpecifier, loadEmbeddedPostgres } from '../src/testing/embedded-binaries';
