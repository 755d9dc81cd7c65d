import {
  Catch,
  Global,
  Inject,
  Injectable,
  Module,
  RequestMethod,
  type ArgumentsHost,
  type DynamicModule,
  type ExceptionFilter,
  type MiddlewareConsumer,
  type NestMiddleware,
  type NestModule,
  type OnModuleDestroy,
  type Provider,
} from '@nestjs/common';
import type { RouteInfo } from '@nestjs/common/interfaces';
import { APP_FILTER } from '@nestjs/core';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Repository, type EntityTarget, type ObjectLiteral } from 'typeorm';
import { tenantContext } from '../context/tenant-context';
import { TenantDataSourceManager } from '../manager/tenant-data-source-manager';
import type { TenantDataSourceManagerOptions } from '../manager/manager-options';
import { TenancyError } from '../errors';
import { sendTenancyError, tenantMiddleware, type TenantMiddleware } from './express';
import { retryAfterOf, tenancyErrorBody } from './http-errors';
import type { TenantMiddlewareOptions } from './tenant-resolution';

export { fromHeader, fromPath, fromSubdomain } from './tenant-resolvers';
export type { TenantResolver } from './tenant-resolvers';

/** Injection token of the `TenantDataSourceManager` (`@Inject(TENANCY_MANAGER)`). */
export const TENANCY_MANAGER = 'typeorm-tenants:manager';
/** Injection token of the installed middleware (its `resolver.cache.stats()` for the cache counters). */
export const TENANCY_MIDDLEWARE = 'typeorm-tenants:middleware';
const TENANCY_MODULE_OPTIONS = 'typeorm-tenants:module-options';

/**
 * Options of `TenancyModule.forRoot()`: a manager (initialised by you), or
 * `managerOptions` (the module creates, initialises and destroys it), plus
 * the HTTP contract. The resolvers read the raw Node request on both
 * platforms (headers, host); `fromPath()` is not supported under NestJS
 * (Nest matches middleware by the original URL and routes before it runs).
 */
export interface TenancyModuleOptions extends TenantMiddlewareOptions<IncomingMessage> {
  readonly manager?: TenantDataSourceManager;
  readonly managerOptions?: TenantDataSourceManagerOptions;
  /** Tenant-free routes: signup, health checks, the shared admin API (`'tenants'`, `{ path: 'health', method: RequestMethod.GET }`). */
  readonly exclude?: readonly (string | RouteInfo)[];
  /**
   * Register `TenancyExceptionFilter` for the whole app (default true), so a
   * `TenancyError` thrown in any handler answers its status and
   * `{ "error": { "code", "message" } }` rather than Nest's 500. Set false
   * to register it yourself (`app.useGlobalFilters(new TenancyExceptionFilter())`)
   * or not at all.
   */
  readonly exceptionFilter?: boolean;
}

/**
 * Nest exception filter for `TenancyError`: answers the error's status with
 * the documented `{ "error": { "code", "message" } }` (and `Retry-After`
 * where the error has one), on the Express and Fastify platforms, as the
 * tenant middleware answers its refusals: a taken slug at signup 409
 * `TENANT_ALREADY_EXISTS`, a bad slug 400 `INVALID_TENANT_NAME`, a unique
 * violation in the seed hook 409, `TENANT_CONTEXT_MISSING` 500. Other
 * exceptions are not caught by it. `TenancyModule.forRoot()` registers it
 * unless given `exceptionFilter: false`.
 */
@Catch(TenancyError)
export class TenancyExceptionFilter implements ExceptionFilter<TenancyError> {
  catch(error: TenancyError, host: ArgumentsHost): void {
    const response = host.switchToHttp().getResponse<unknown>();
    const reply = response as { code?: unknown; send?: unknown; header?: unknown; raw?: unknown; sent?: boolean };
    if (typeof reply.code === 'function' && typeof reply.send === 'function' && reply.raw !== undefined) {
      // Fastify: through its reply, so its hooks and serialisation apply.
      const fastifyReply = response as { code(status: number): unknown; header(name: string, value: string): unknown; send(body: unknown): unknown; type(value: string): unknown; sent: boolean; raw: ServerResponse };
      if (fastifyReply.sent) {
        fastifyReply.raw.destroy(error);
        return;
      }
      const retryAfter = retryAfterOf(error);
      if (retryAfter !== undefined) fastifyReply.header('retry-after', String(retryAfter));
      fastifyReply.code(error.statusCode);
      fastifyReply.type('application/json; charset=utf-8');
      fastifyReply.send(tenancyErrorBody(error));
      return;
    }
    sendTenancyError(response as ServerResponse, error);
  }
}

/** Injection token of the tenant-bound repository of `entity`, provided by `TenancyModule.forFeature([entity])`. */
export function getTenantRepositoryToken(entity: Function): string {
  return `typeorm-tenants:repository:${entity.name}`;
}

/**
 * Injects a repository of `entity` that resolves through `tenantContext` at
 * call time: each call goes to the repository of the request's tenant, so the
 * service holding it stays a singleton. Provide it with
 * `TenancyModule.forFeature([entity])`. Outside a request's tenant, calls
 * throw `TenantContextMissingError` (for a `@TenantScoped` entity).
 *
 * @example
 * ```ts
 * @Injectable()
 * export class ClientsService {
 *   constructor(@InjectTenantRepository(Client) private readonly clients: Repository<Client>) {}
 *   list(): Promise<Client[]> { return this.clients.find(); }
 * }
 * ```
 */
export function InjectTenantRepository(entity: Function): PropertyDecorator & ParameterDecorator {
  return Inject(getTenantRepositoryToken(entity));
}

/**
 * A `Repository` whose every member is looked up on
 * `tenantContext.getRepository(entity)` when it is used. Members a
 * `Repository` does not have answer `undefined` without asking for a tenant,
 * so Nest's lifecycle probes (`onModuleInit`, `then`, ...) at startup do no harm.
 */
export function tenantRepositoryProxy<Entity extends ObjectLiteral>(entity: EntityTarget<Entity>): Repository<Entity> {
  const instanceMembers = new Set<PropertyKey>(['manager', 'target', 'queryRunner']);
  return new Proxy(Object.create(Repository.prototype) as Repository<Entity>, {
    get(_target, property) {
      if (!(property in Repository.prototype) && !instanceMembers.has(property)) return undefined;
      if (property === 'constructor') return Repository;
      const repository = tenantContext.getRepository(entity);
      const value = Reflect.get(repository, property, repository) as unknown;
      return typeof value === 'function' ? (value as Function).bind(repository) : value;
    },
    has(_target, property) {
      return property in Repository.prototype || instanceMembers.has(property);
    },
  });
}

/** The Nest middleware wrapping `tenantMiddleware` (Express platform; raw Node req/res on Fastify). */
@Injectable()
class TenancyMiddleware implements NestMiddleware {
  constructor(@Inject(TENANCY_MIDDLEWARE) private readonly handler: TenantMiddleware) {}

  use(req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void): void {
    this.handler(req, res, next);
  }
}

/**
 * NestJS integration: `forRoot()` installs the tenant middleware for every
 * route (but `exclude`), on the Express and Fastify platforms, and provides
 * the manager (`TENANCY_MANAGER`) everywhere; `forFeature([Entity])` provides
 * `@InjectTenantRepository(Entity)` repositories.
 *
 * @example
 * ```ts
 * @Module({
 *   imports: [
 *     TenancyModule.forRoot({ manager: tenants, resolve: fromHeader(), exclude: ['tenants'] }),
 *     TenancyModule.forFeature([Client]),
 *   ],
 *   controllers: [ClientsController],
 *   providers: [ClientsService],
 * })
 * export class AppModule {}
 * ```
 */
@Global()
@Module({})
export class TenancyModule implements NestModule, OnModuleDestroy {
  constructor(
    @Inject(TENANCY_MODULE_OPTIONS) private readonly options: TenancyModuleOptions,
    @Inject(TENANCY_MANAGER) private readonly manager: TenantDataSourceManager,
    @Inject(TENANCY_MIDDLEWARE) private readonly middleware: TenantMiddleware,
  ) {}

  static forRoot(options: TenancyModuleOptions): DynamicModule {
    if ((options.manager === undefined) === (options.managerOptions === undefined)) {
      throw new TypeError('TenancyModule.forRoot() needs exactly one of "manager" (a TenantDataSourceManager) and "managerOptions".');
    }
    const providers: Provider[] = [
      { provide: TENANCY_MODULE_OPTIONS, useValue: options },
      {
        provide: TENANCY_MANAGER,
        useFactory: async (): Promise<TenantDataSourceManager> => {
          if (options.manager !== undefined) return options.manager;
          const manager = new TenantDataSourceManager(options.managerOptions!);
          await manager.initialize();
          return manager;
        },
      },
      ...(options.exceptionFilter === false ? [] : [{ provide: APP_FILTER, useClass: TenancyExceptionFilter }]),
      {
        provide: TENANCY_MIDDLEWARE,
        useFactory: (manager: TenantDataSourceManager): TenantMiddleware => {
          const { manager: _m, managerOptions: _o, exclude: _e, exceptionFilter: _f, ...contract } = options;
          return tenantMiddleware(manager, contract);
        },
        inject: [TENANCY_MANAGER],
      },
    ];
    return { module: TenancyModule, global: true, providers, exports: [TENANCY_MANAGER, TENANCY_MIDDLEWARE] };
  }

  /** Provides `@InjectTenantRepository(Entity)` for each of `entities`. */
  static forFeature(entities: readonly Function[]): DynamicModule {
    const providers: Provider[] = entities.map((entity) => ({
      provide: getTenantRepositoryToken(entity),
      useValue: tenantRepositoryProxy(entity),
    }));
    return { module: TenancyFeatureModule, providers, exports: providers };
  }

  configure(consumer: MiddlewareConsumer): void {
    const applied = consumer.apply(TenancyMiddleware);
    const excluded = this.options.exclude ?? [];
    (excluded.length > 0 ? applied.exclude(...excluded) : applied).forRoutes({ path: '*path', method: RequestMethod.ALL });
  }

  async onModuleDestroy(): Promise<void> {
    this.middleware.close();
    if (this.options.manager === undefined) await this.manager.destroy();
  }
}

/** Holder of `forFeature()` providers. */
@Module({})
export class TenancyFeatureModule {}
