/**
 * The search paths the library sets, each with `SET LOCAL` inside a
 * transaction, never on the session. The extensions schema is in every one
 * of them, so the types, functions and operators of extensions resolve
 * wherever the library runs SQL; the shared schema only where migrations
 * need it.
 */
export interface SearchPaths {
  /** Raw SQL of a run: the tenant, the extensions schema, the `querySearchPath` extras (`pg_temp` is added last). */
  tenantRaw(schemaName: string): readonly string[];
  /** Tenant migrations and seed hooks: the tenant, the shared schema (unqualified references to shared tables), the extensions schema. */
  tenantMigration(schemaName: string): readonly string[];
  /** Shared migrations: the shared schema, the extensions schema. */
  sharedMigration(): readonly string[];
}

export function searchPathsOf(options: {
  readonly sharedSchema: string;
  readonly extensionsSchema: string;
  readonly querySearchPath: readonly string[];
}): SearchPaths {
  const { sharedSchema, extensionsSchema } = options;
  const extras = options.querySearchPath.filter((schema) => schema !== extensionsSchema);
  return {
    tenantRaw: (schemaName) => [schemaName, extensionsSchema, ...extras],
    tenantMigration: (schemaName) => [schemaName, sharedSchema, extensionsSchema],
    sharedMigration: () => [sharedSchema, extensionsSchema],
  };
}
