import {
  Catch,
  Global,
  Inject,
  Injectable,
  Module,
  RequestMethod,
  SetMetadata,
  StreamableFile,
  type ArgumentsHost,
  type CallHandler,
  type DynamicModule,
  type ExceptionFilter,
  type ExecutionContext,
  type FactoryProvider,
  type MiddlewareConsumer,
  type ModuleMetadata,
  type NestInterceptor,
  type NestMiddleware,
  type NestModule,
  type OnApplicationShutdown,
  type OnModuleInit,
  type Provider,
} from '@nestjs/common';
import { SSE_METADATA } from '@nestjs/common/constants';
import type { RouteInfo } from '@nestjs/common/interfaces';
import { AsyncResource } from 'node:async_hooks';
import type { Readable } from 'node:stream';
import { APP_FILTER, APP_INTERCEPTOR, Reflector } from '@nestjs/core';
import type { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Observable, finalize, type Subscriber, type Subscription } from 'rxjs';
import { Repository, type EntityTarget, type ObjectLiteral } from 'typeorm';
import { tenantContext } from '../context/tenant-context';
import { TenantDataSourceManager } from '../manager/tenant-data-source-manager';
import type { TenantDataSourceManagerOptions } from '../manager/manager-options';
import type { TenantRecord } from '../registry/tenant-record';
import { TenancyError } from '../errors';
import { sendTenancyError, tenantMiddleware, type TenantMiddleware } from './express';
import { retryAfterOf, tenancyErrorBody } from './http-errors';
import { TenantRequestResolver, bindEmittersToContext, releaseWhenClosed, type TenantMiddlewareOptions } from './tenant-resolution';

export { fromDomain, fromHeader, fromPath, fromSubdomain } from './tenant-resolvers';
export type { DomainResolver, DomainResolverOptions, TenantResolver } from './tenant-resolvers';

/** Injection token of the `TenantDataSourceManager` (`@Inject(TENANCY_MANAGER)`). */
export const TENANCY_MANAGER = 'typeorm-tenants:manager';
/** Injection token of the installed middleware in mode `'middleware'` (`null` in the other modes). */
export const TENANCY_MIDDLEWARE = 'typeorm-tenants:middleware';
/** Injection token of the module's `TenantRequestResolver`, in every mode: its `cache.stats()` for the cache counters. */
export const TENANCY_RESOLVER = 'typeorm-tenants:resolver';
const TENANCY_MODULE_OPTIONS = 'typeorm-tenants:module-options';
const TENANT_FREE = 'typeorm-tenants:tenant-free';

/**
 * Where `TenancyModule` resolves the tenant:
 * - `'middleware'`: a middleware on every route but `exclude`, before any
 *   guard (and before the app's own middleware), so it cannot see what
 *   authentication sets (`req.user`);
 * - `'interceptor'`: `TenancyInterceptor` as a global interceptor, after the
 *   guards (Passport's `AuthGuard` has set `req.user`), on every HTTP route
 *   but those marked `@TenantFree()`;
 * - `'manual'`: neither; bind `TenancyInterceptor` yourself with
 *   `@UseInterceptors(TenancyInterceptor)` on the controllers that need a tenant.
 */
export type TenancyModuleMode = 'middleware' | 'interceptor' | 'manual';
/** The default `mode` of `TenancyModule`. */
export const DEFAULT_TENANCY_MODE: TenancyModuleMode = 'middleware';
const MODES: readonly TenancyModuleMode[] = ['middleware', 'interceptor', 'manual'];

/**
 * Options of `TenancyModule.forRoot()` (or what the factory of
 * `forRootAsync()` returns): a manager (initialised and destroyed by you), or
 * `managerOptions` (the module creates the manager, initialises it when the
 * app initialises and destroys it when the app shuts down), plus the HTTP
 * contract. In mode `'middleware'` the resolvers get the raw Node request on
 * both platforms (headers, host) and `fromPath()` is not supported (Nest
 * matches middleware by the original URL and routes before it runs); in the
 * interceptor modes they get the platform's request (Express `Request`,
 * `FastifyRequest`), with what the guards set on it (`req.user`).
 */
export interface TenancyModuleOptions<Req extends object = IncomingMessage> extends TenantMiddlewareOptions<Req> {
  readonly manager?: TenantDataSourceManager;
  readonly managerOptions?: TenantDataSourceManagerOptions;
  /** Where the tenant is resolved (default `'middleware'`; see `TenancyModuleMode`). */
  readonly mode?: TenancyModuleMode;
  /**
   * Mode `'middleware'` only: tenant-free routes (signup, health checks, the
   * shared admin API): `'tenants'`, `{ path: 'health', method: RequestMethod.GET }`.
   * In the interceptor modes, mark them `@TenantFree()`.
   */
  readonly exclude?: readonly (string | RouteInfo)[];
  /**
   * Register `TenancyExceptionFilter` for the whole app (default true), so a
   * `TenancyError` thrown in any handler (and, in the interceptor modes, a
   * refused request) answers its status and
   * `{ "error": { "code", "message" } }` rather than Nest's 500. Set false
   * to register it yourself (`app.useGlobalFilters(new TenancyExceptionFilter())`)
   * or to handle `TenancyError`s in a filter of your own.
   */
  readonly exceptionFilter?: boolean;
}

/**
 * Options of `TenancyModule.forRootAsync()`: the modules the factory needs
 * (`imports`), what it is given (`inject`), and the factory, which returns
 * or resolves the `TenancyModuleOptions`. It runs once per application,
 * when Nest builds it, so two apps in one process each get their own
 * options (and their own manager).
 */
export interface TenancyModuleAsyncOptions<Req extends object = IncomingMessage> {
  readonly imports?: ModuleMetadata['imports'];
  readonly inject?: FactoryProvider['inject'];
  readonly useFactory: (...args: any[]) => TenancyModuleOptions<Req> | Promise<TenancyModuleOptions<Req>>;
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

/**
 * Marks a controller or a handler as tenant-free for `TenancyInterceptor`
 * (modes `'interceptor'` and `'manual'`): signup, health checks, the shared
 * admin API. It runs with no tenant context. In mode `'middleware'` use
 * `exclude` instead; the marker has no effect there.
 *
 * @example
 * ```ts
 * @TenantFree()
 * @Controller('tenants')
 * export class SignupController { ... }
 * ```
 */
export function TenantFree(): ClassDecorator & MethodDecorator {
  return SetMetadata(TENANT_FREE, true);
}

/**
 * Resolves the request's tenant after the guards, with the contract of the
 * middleware (resolvers, `required`, `authorize`), and runs the rest of the
 * request inside it: later interceptors, pipes, the handler and the whole
 * Observable it returns, including async work, streamed and `@Sse()`
 * responses. It subscribes to the handler inside `manager.run()` and holds
 * the tenant's DataSource until both the handler's Observable has ended
 * and the response has closed. A refusal is thrown as its `TenancyError`
 * (400 `TENANT_REQUIRED`, 404, 403 `TENANT_FORBIDDEN`, ...), which
 * `TenancyExceptionFilter` answers with the documented body. Routes marked
 * `@TenantFree()` and non-HTTP contexts (microservices, websockets) pass
 * through. `TenancyModule` registers it globally in mode `'interceptor'`;
 * in mode `'manual'` bind it where a tenant is needed.
 *
 * @example
 * ```ts
 * @UseGuards(AuthGuard('bearer'))
 * @UseInterceptors(TenancyInterceptor)
 * @Controller('clients')
 * export class ClientsController { ... }
 * ```
 */
@Injectable()
export class TenancyInterceptor implements NestInterceptor {
  readonly #resolver: TenantRequestResolver;
  readonly #reflector: Reflector;

  constructor(@Inject(TENANCY_RESOLVER) resolver: TenantRequestResolver, @Inject(Reflector) reflector: Reflector) {
    this.#resolver = resolver;
    this.#reflector = reflector;
  }

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() !== 'http') return next.handle();
    if (this.#reflector.getAllAndOverride<boolean | undefined>(TENANT_FREE, [context.getHandler(), context.getClass()]) === true) {
      return next.handle();
    }
    const sse = this.#reflector.get<boolean | undefined>(SSE_METADATA, context.getHandler()) === true;
    const http = context.switchToHttp();
    const request = http.getRequest<object>();
    const response = http.getResponse<object>();
    return new Observable<unknown>((subscriber) => {
      let handling: Subscription | undefined;
      this.#serve(request, response, subscriber, next, (subscription) => (handling = subscription)).catch((error: unknown) => subscriber.error(error));
      // An @Sse() stream ends when its client goes: stop it. Any other
      // handler is a promise under way (an outer TimeoutInterceptor may have
      // answered already): let it finish in its tenant, holding its DataSource,
      // as manager.run() would; what it emits then goes nowhere.
      return () => {
        if (sse) handling?.unsubscribe();
      };
    });
  }

  async #serve(request: object, response: object, subscriber: Subscriber<unknown>, next: CallHandler, track: (subscription: Subscription) => void): Promise<void> {
    const outcome = await this.#resolver.resolve(request);
    if (subscriber.closed) return;
    const forward = {
      next: (value: unknown) => {
        // Nest pipes a StreamableFile after this Observable ends, from its own
        // context: its reads must still run in the tenant (a lazy export of rows).
        if (value instanceof StreamableFile) readInThisContext(value.getStream());
        subscriber.next(value);
      },
      error: (error: unknown) => subscriber.error(error),
      complete: () => subscriber.complete(),
    };
    switch (outcome.kind) {
      case 'none':
        track(next.handle().subscribe(forward));
        return;
      case 'refused':
        subscriber.error(outcome.error);
        return;
      case 'tenant': {
        const rawRequest = rawOf(request);
        const rawResponse = rawOf(response);
        const refusal = await this.#resolver.enter(outcome.tenant.slug, (release) => {
          // The lease ends when both the handler's Observable has ended (its
          // async work is done) and the response has closed (it is written).
          let open = 2;
          const done = (): void => {
            open -= 1;
            if (open === 0) release();
          };
          releaseWhenClosed(rawResponse, done);
          if (subscriber.closed) {
            done();
            return;
          }
          bindEmittersToContext(rawRequest, rawResponse);
          (request as { tenant?: TenantRecord }).tenant = outcome.tenant;
          // Subscribing here, inside the run, is what puts the handler in the
          // tenant: next.handle() is lazy, so returning it from a run would
          // leave the run before the handler starts.
          track(next.handle().pipe(finalize(done)).subscribe(forward));
        });
        if (refusal !== undefined) subscriber.error(refusal);
        return;
      }
      default:
        throw new Error(`Unexpected resolution "${(outcome satisfies never as { kind: string }).kind}"`);
    }
  }
}

/** Runs the stream's reads (and its destruction) in the async context of the caller: the tenant's run. */
function readInThisContext(stream: Readable): void {
  const resource = new AsyncResource('typeorm-tenants.stream');
  const read = stream._read;
  stream._read = function readInTenant(this: Readable, size: number): void {
    resource.runInAsyncScope(read, this, size);
  };
  const destroy = stream._destroy;
  stream._destroy = function destroyInTenant(this: Readable, error: Error | null, callback: (error?: Error | null) => void): void {
    resource.runInAsyncScope(destroy, this, error, callback);
  };
}

/** The Node request or response under a platform's (Fastify's `.raw`; Express's are Node's own). */
function rawOf<T extends EventEmitter & { readonly closed?: boolean; readonly destroyed?: boolean }>(value: object): T {
  return ((value as { raw?: T }).raw ?? value) as T;
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

/** Checks the options once and freezes them; what `forRoot()` throws at import and `forRootAsync()` at startup. */
function checkedOptions<Req extends object>(options: TenancyModuleOptions<Req>, caller: string): TenancyModuleOptions<Req> {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`${caller} needs the TenancyModuleOptions object (manager or managerOptions, resolve, ...); got ${options === null ? 'null' : typeof options}.`);
  }
  if ((options.manager === undefined) === (options.managerOptions === undefined)) {
    throw new TypeError(`${caller} needs exactly one of "manager" (a TenantDataSourceManager) and "managerOptions".`);
  }
  const mode = options.mode ?? DEFAULT_TENANCY_MODE;
  if (!MODES.includes(mode)) {
    throw new TypeError(`${caller}: option "mode" must be one of ${MODES.map((m) => `'${m}'`).join(', ')}; got ${JSON.stringify(mode)}.`);
  }
  if (mode !== 'middleware' && options.exclude !== undefined && options.exclude.length > 0) {
    throw new TypeError(`${caller}: "exclude" applies to mode 'middleware' only. In mode '${mode}', mark tenant-free controllers or handlers with @TenantFree().`);
  }
  return Object.freeze({ ...options, exclude: options.exclude === undefined ? undefined : Object.freeze([...options.exclude]) });
}

/** The HTTP contract part of the options. */
function contractOf(options: TenancyModuleOptions<any>): TenantMiddlewareOptions<any> {
  const { manager: _m, managerOptions: _o, exclude: _e, exceptionFilter: _f, mode: _mode, ...contract } = options;
  return contract;
}

const modeOf = (options: TenancyModuleOptions<any>): TenancyModuleMode => options.mode ?? DEFAULT_TENANCY_MODE;

/** Every provider of the root module but the options, which `forRoot()` gives as a value and `forRootAsync()` through its factory. */
function rootProviders(): Provider[] {
  return [
    {
      provide: TENANCY_MANAGER,
      useFactory: (options: TenancyModuleOptions<any>): TenantDataSourceManager => options.manager ?? new TenantDataSourceManager(options.managerOptions!),
      inject: [TENANCY_MODULE_OPTIONS],
    },
    {
      provide: TENANCY_MIDDLEWARE,
      useFactory: (options: TenancyModuleOptions<any>, manager: TenantDataSourceManager): TenantMiddleware | null =>
        modeOf(options) === 'middleware' ? tenantMiddleware(manager, contractOf(options)) : null,
      inject: [TENANCY_MODULE_OPTIONS, TENANCY_MANAGER],
    },
    {
      provide: TENANCY_RESOLVER,
      useFactory: (options: TenancyModuleOptions<any>, manager: TenantDataSourceManager, middleware: TenantMiddleware | null): TenantRequestResolver =>
        middleware?.resolver ?? new TenantRequestResolver(manager, contractOf(options)),
      inject: [TENANCY_MODULE_OPTIONS, TENANCY_MANAGER, TENANCY_MIDDLEWARE],
    },
    // Enhancers whose factory returns null are not registered: that is how
    // options that arrive at startup (forRootAsync) still decide them.
    {
      provide: APP_FILTER,
      useFactory: (options: TenancyModuleOptions<any>): TenancyExceptionFilter | null => (options.exceptionFilter === false ? null : new TenancyExceptionFilter()),
      inject: [TENANCY_MODULE_OPTIONS],
    },
    {
      provide: APP_INTERCEPTOR,
      useFactory: (options: TenancyModuleOptions<any>, resolver: TenantRequestResolver, reflector: Reflector): TenancyInterceptor | null =>
        modeOf(options) === 'interceptor' ? new TenancyInterceptor(resolver, reflector) : null,
      inject: [TENANCY_MODULE_OPTIONS, TENANCY_RESOLVER, Reflector],
    },
  ];
}

const ROOT_EXPORTS = [TENANCY_MANAGER, TENANCY_MIDDLEWARE, TENANCY_RESOLVER];

/**
 * NestJS integration, on the Express and Fastify platforms. `forRoot()` (or
 * `forRootAsync()`, for options from `ConfigService`) provides the manager
 * (`TENANCY_MANAGER`) everywhere and resolves each request's tenant: by
 * default in a middleware on every route but `exclude`; with
 * `mode: 'interceptor'` after the guards, so a resolver can read what
 * authentication set (`req.user`). `forFeature([Entity])` provides
 * `@InjectTenantRepository(Entity)` repositories. A manager the module
 * creates (`managerOptions`) is initialised on module init and destroyed on
 * application shutdown (`app.close()`, or a signal after
 * `app.enableShutdownHooks()`); a manager you pass stays yours.
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
export class TenancyModule implements NestModule, OnModuleInit, OnApplicationShutdown {
  constructor(
    @Inject(TENANCY_MODULE_OPTIONS) private readonly options: TenancyModuleOptions<any>,
    @Inject(TENANCY_MANAGER) private readonly manager: TenantDataSourceManager,
    @Inject(TENANCY_RESOLVER) private readonly resolver: TenantRequestResolver,
  ) {}

  /** The module with options fixed now. Throws a `TypeError` for options that cannot work. */
  static forRoot<Req extends object = IncomingMessage>(options: TenancyModuleOptions<Req>): DynamicModule {
    const checked = checkedOptions(options, 'TenancyModule.forRoot()');
    return {
      module: TenancyModule,
      global: true,
      providers: [{ provide: TENANCY_MODULE_OPTIONS, useValue: checked }, ...rootProviders()],
      exports: ROOT_EXPORTS,
    };
  }

  /**
   * The module with options from a factory that runs when the app is built,
   * with what `inject` names (from `imports`). A factory that returns
   * options that cannot work fails the app's startup with a `TypeError`.
   *
   * @example
   * ```ts
   * TenancyModule.forRootAsync({
   *   imports: [ConfigModule],
   *   inject: [ConfigService],
   *   useFactory: (config: ConfigService) => ({
   *     managerOptions: { dataSource: { type: 'postgres', url: config.getOrThrow('DATABASE_URL') }, entities: [Client, Plan], tenantMigrations },
   *     resolve: fromHeader(),
   *   }),
   * })
   * ```
   */
  static forRootAsync<Req extends object = IncomingMessage>(options: TenancyModuleAsyncOptions<Req>): DynamicModule {
    if (options === null || typeof options !== 'object' || typeof options.useFactory !== 'function') {
      throw new TypeError('TenancyModule.forRootAsync() needs { useFactory }, a function that returns (or resolves) the TenancyModuleOptions, with optional imports and inject.');
    }
    const { useFactory } = options;
    return {
      module: TenancyModule,
      global: true,
      imports: [...(options.imports ?? [])],
      providers: [
        {
          provide: TENANCY_MODULE_OPTIONS,
          useFactory: async (...args: unknown[]): Promise<TenancyModuleOptions<Req>> => checkedOptions(await useFactory(...args), 'The useFactory of TenancyModule.forRootAsync()'),
          inject: [...(options.inject ?? [])],
        },
        ...rootProviders(),
      ],
      exports: ROOT_EXPORTS,
    };
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
    if (modeOf(this.options) !== 'middleware') return;
    const applied = consumer.apply(TenancyMiddleware);
    const excluded = this.options.exclude ?? [];
    (excluded.length > 0 ? applied.exclude(...excluded) : applied).forRoutes({ path: '*path', method: RequestMethod.ALL });
  }

  /** Initialises a manager the module created (TenancyModule is global: this runs before your modules' `onModuleInit`). */
  async onModuleInit(): Promise<void> {
    if (this.options.manager === undefined) await this.manager.initialize();
  }

  /** Destroys a manager the module created, after the HTTP server has stopped and waiting for the runs still active. */
  async onApplicationShutdown(): Promise<void> {
    this.resolver.close();
    if (this.options.manager === undefined) await this.manager.destroy();
  }
}

/** Holder of `forFeature()` providers. */
@Module({})
export class TenancyFeatureModule {}
