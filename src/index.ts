export { TenantScoped, isTenantScoped } from './entity/tenant-scoped';
export { TenantDataSourceManager } from './manager/tenant-data-source-manager';
export type { MoveTenantOptions, MoveTenantProgress, MoveTenantResult } from './portability/move-tenant';
export type {
  CitusTransfer,
  MoveTenantToNodeOptions,
  NodeMoveProgress,
  NodeMoveResult,
  RebalanceProgress,
  RebalanceTenantsOptions,
  RebalanceTenantsResult,
} from './citus/schema-move';
export type { CreateTenantOptions, ImportTenantOptions, GenerateMigrationOptions, GeneratedMigration, TenantManagerStats, TenantPoolStats } from './manager/tenant-data-source-manager';
export type { AddTenantDomainOptions, TenantDomain, UpdateTenantDomainOptions } from './registry/tenant-domains';
export { HOSTNAME_RULE, MAX_HOSTNAME_LENGTH, normaliseHostname } from './naming/hostname';
export type { MigrationStatement } from './migration/migration-source';
export type { FleetMigrationOptions, TenantMigrationStatus } from './migration/fleet-migrator';
export type {
  FleetReport,
  FleetRunOptions,
  FleetTenantError,
  FleetTenantResult,
  FleetTenantStatus,
  FleetTotals,
  WaveSize,
} from './migration/fleet-run';
export {
  DEFAULT_DESTROY_TIMEOUT_MS,
  DEFAULT_DROP_BATCH_SIZE,
  DEFAULT_EXTENSIONS_SCHEMA,
  DEFAULT_LOCK_TIMEOUT_MS,
  DEFAULT_MAX_DATA_SOURCES,
  DEFAULT_REGISTRY_TABLE,
  DEFAULT_SERVER_NAME,
  DEFAULT_SHARED_SCHEMA,
  DEFAULT_TENANT_RECORD_TTL_MS,
} from './manager/manager-options';
export type { TenantDataSourceManagerOptions, TenantPlacement, TenantPlacementContext, TenantSeed, TenantSeedContext } from './manager/manager-options';
export type { TenancyLogEntry, TenancyLogKind, TenancyLogLevel, TenancyLogger } from './manager/tenancy-logger';
export type { DropTenantOptions } from './lifecycle/tenant-lifecycle';
export { tenantIncarnation } from './lifecycle/lifecycle-plugins';
export type { LifecycleHookStep, LifecycleTenant, TenantLifecyclePlugin } from './lifecycle/lifecycle-plugins';
export type { WarmPoolOptions } from './provisioning/warm-pool';
export { DEFAULT_POOL_OPTIONS, DEFAULT_POOL_SIZE } from './data-source/shared-pool';
export type { TenantConnectionOptions, TenantPoolOptions } from './data-source/shared-pool';
export { tenantContext, TenantContext } from './context/tenant-context';
export { TENANT_STATUSES } from './registry/tenant-record';
export type { TenantRecord, TenantStatus } from './registry/tenant-record';
export { SLUG_RULE, LIBRARY_SCHEMA_PREFIX, schemaNameForSlug, validateTenantSlug } from './naming/tenant-slug';
export type { ReservedNames } from './naming/tenant-slug';
export { quoteIdent } from './naming/quote-ident';
export {
  TenancyError,
  TenantContextMissingError,
  TenantNotFoundError,
  TenantAlreadyExistsError,
  TenantRecentlyDroppedError,
  MigrationGenerationError,
  TenantMigrationPendingError,
  MigrationOutsideTenantError,
  NonTransactionalStatementError,
  MigrationEscapeError,
  InvalidTenantNameError,
  TenantNotActiveError,
  TenantSuspendedError,
  InvalidTenantStateError,
  TenantProvisioningError,
  TenantMigrationError,
  InvalidArgumentError,
  TenancyConfigurationError,
  ManagerNotInitializedError,
  ManagerDestroyedError,
  AmbiguousManagerError,
  RawSqlRefusedError,
  TenantRoleEscapeError,
  TenantDroppedError,
  CrossTenantAccessError,
  DatabaseUnreachableError,
  InvalidHostnameError,
  TenantDomainTakenError,
  TenantDomainNotFoundError,
  EmbeddedPostgresMissingError,
  TestTenancyNotReadyError,
  TenantLifecycleHookError,
  JobTenantMissingError,
  JobTenantChangedError,
  InvalidFileKeyError,
  TenantFileNotFoundError,
  TenantArchiveError,
  TenantMovedError,
  TenantMoveError,
  TenantRebalanceError,
  TenantSchemaNotDistributedError,
} from './errors';
export type { MigrationOutsideTenantObject, TenancyErrorCode } from './errors';
export type { TenantArchiveManifest } from './portability/tenant-archive';
export type { MigrationGuardMode } from './migration/migration-guard';
export { tenantSchemaOf } from './migration/migration-schema';
export type { TenantEventMap, TenantEventName } from './manager/tenant-events';
export { TENANT_CHANNELS, TENANT_EVENT_NAMES, TENANT_RUN_END, TENANT_RUN_START, tenantEventChannel } from './observability/channels';
export type { TenantEventMessage, TenantMigrationMessage, TenantOperationMessage, TenantRunMessage } from './observability/channels';
export { sqlCommentOf } from './observability/sql-comment';
export { tenantLogger } from './observability/tenant-logger';
export type { ChildLogger, FunctionLogger, TenantLogBindings } from './observability/tenant-logger';
export { TENANT_SCHEMA_ATTRIBUTE, TENANT_SLUG_ATTRIBUTE } from './observability/tracing';
export { fromDomain, fromHeader, fromPath, fromSubdomain, DEFAULT_TENANT_HEADER } from './http/tenant-resolvers';
export type {
  DomainResolver,
  DomainResolverOptions,
  HttpRequestLike,
  PathResolverOptions,
  ResolvedSlug,
  SubdomainResolverOptions,
  TenantResolver,
} from './http/tenant-resolvers';
export { DomainDirectory, DEFAULT_DOMAIN_TTL_MS } from './http/domain-directory';
export type { DomainDirectoryEntry, DomainDirectoryStats } from './http/domain-directory';
export { TenantRequestResolver } from './http/tenant-resolution';
export type { TenantMiddlewareOptions, TenantResolution } from './http/tenant-resolution';
export { ResolutionCache, DEFAULT_RESOLUTION_CACHE_OPTIONS } from './http/resolution-cache';
export type { ResolutionCacheOptions, ResolutionCacheStats } from './http/resolution-cache';
export { TenantRequiredError, TenantForbiddenError, tenancyErrorBody } from './http/http-errors';
export type { HttpTenancyErrorCode, TenancyErrorBody, TenancyErrorBodyOptions } from './http/http-errors';
export type {
  FanOutOptions,
  ForEachTenantOptions,
  TenantWorkReport,
  TenantWorkResult,
  TenantWorkStatus,
  TenantWorkTotals,
} from './fan-out/for-each-tenant';
export { DEFAULT_FAN_OUT_STATEMENT_TIMEOUT_MS, DEFAULT_TENANT_COLUMN } from './fan-out/query-across-tenants';
export type { TenantScriptContext } from './cli/commands/fan-out-commands';
export type {
  AggregateAcrossTenantsOptions,
  QueryAcrossTenantsOptions,
  TenantAggregateResult,
  TenantQueryFailure,
  TenantQueryResult,
  TenantQueryTotals,
} from './fan-out/query-across-tenants';
export type { AggregateFunction, AggregateGroup } from './fan-out/group-aggregator';
