/** The variants of the HTTP benchmark, shared by bench/http/run.ts (requests/s) and bench/http/instructions.ts (instructions/request). */

export type ServerName = 'express-plain' | 'express-als' | 'express-tenancy' | 'fastify-plain' | 'fastify-als' | 'fastify-tenancy';
export type VariantName =
  | 'express-plain'
  | 'express-als'
  | 'express-tenancy-1'
  | 'express-tenancy-n'
  | 'fastify-plain'
  | 'fastify-als'
  | 'fastify-tenancy-1'
  | 'fastify-tenancy-n';

export interface Variant {
  readonly name: VariantName;
  readonly server: ServerName;
  /** How many tenants the requests go to, round-robin (1 for the controls: they ignore the header). */
  readonly tenants: 'one' | 'all';
  /** The plain control of the same framework, and the ALS control. */
  readonly plain: VariantName;
  readonly als: VariantName;
}

export const VARIANTS: readonly Variant[] = [
  { name: 'express-plain', server: 'express-plain', tenants: 'one', plain: 'express-plain', als: 'express-als' },
  { name: 'express-als', server: 'express-als', tenants: 'one', plain: 'express-plain', als: 'express-als' },
  { name: 'express-tenancy-1', server: 'express-tenancy', tenants: 'one', plain: 'express-plain', als: 'express-als' },
  { name: 'express-tenancy-n', server: 'express-tenancy', tenants: 'all', plain: 'express-plain', als: 'express-als' },
  { name: 'fastify-plain', server: 'fastify-plain', tenants: 'one', plain: 'fastify-plain', als: 'fastify-als' },
  { name: 'fastify-als', server: 'fastify-als', tenants: 'one', plain: 'fastify-plain', als: 'fastify-als' },
  { name: 'fastify-tenancy-1', server: 'fastify-tenancy', tenants: 'one', plain: 'fastify-plain', als: 'fastify-als' },
  { name: 'fastify-tenancy-n', server: 'fastify-tenancy', tenants: 'all', plain: 'fastify-plain', als: 'fastify-als' },
];
