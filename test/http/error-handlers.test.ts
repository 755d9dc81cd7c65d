import { expect } from 'chai';
import express, { type NextFunction, type Request, type Response } from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import { createServer, type Server } from 'node:http';
import { Client } from '../../entities';
import {
  DatabaseUnreachableError,
  TenantAlreadyExistsError,
  TenantDataSourceManager as Manager,
  TenantMigrationError,
  TenantMigrationPendingError,
  TenantProvisioningError,
  fromHeader,
  tenancyErrorBody,
  tenantContext,
  type TenantDataSourceManager,
} from '../../src';
import { tenancyErrorHandler as expressErrorHandler, tenantMiddleware } from '../../src/http/express';
import { tenancyErrorHandler as fastifyErrorHandler, tenancyPlugin } from '../../src/http/fastify';
import { managerOptions, uniqueSlug } from '../support/fixtures';
import { closeServer, expectError, getJson, listen } from './http-support';

/** Routes of a service that throws library errors from its handlers, the same in both frameworks. */
interface Routes {
  signup(slug: string): Promise<unknown>;
  signupSeeded(slug: string): Promise<unknown>;
  contextless(): Promise<unknown>;
  pending(): never;
  plain(): never;
}

function routesOf(manager: TenantDataSourceManager): Routes {
  return {
    signup: (slug) => manager.createTenant(slug),
    // The seed inserts two clients with one email into a table with a unique index on it.
    signupSeeded: (slug) =>
      manager.createTenant(slug, {
        seed: async ({ query }) => {
          await query('CREATE UNIQUE INDEX client_email_seed_key ON client (email)');
          await query(`INSERT INTO client (name, email) VALUES ('a', 'dup@x'), ('b', 'dup@x')`);
        },
      }),
    contextless: () => tenantContext.getRepository(Client).find(),
    pending: () => {
      throw new TenantMigrationPendingError('acme', 5);
    },
    plain: () => {
      throw new Error('a plain failure');
    },
  };
}

/** What every framework must answer, whichever handler produced it. */
function contractSuite(base: () => string, manager: () => TenantDataSourceManager): void {
  it('a TenantAlreadyExistsError from a handler answers 409 TENANT_ALREADY_EXISTS in the documented body', async () => {
    const slug = uniqueSlug('eh-dup');
    await manager().createTenant(slug);
    const answer = await getJson(`${base()}/signup/${slug}`, {}, { method: 'POST' });
    expectError(answer, 409, 'TENANT_ALREADY_EXISTS');
    expect(answer.body.error.message).to.include(slug);
  });

  it('a bad slug at signup answers 400 INVALID_TENANT_NAME', async () => {
    expectError(await getJson(`${base()}/signup/Not_A_Slug`, {}, { method: 'POST' }), 400, 'INVALID_TENANT_NAME');
  });

  it('a unique violation in the seed answers 409 TENANT_PROVISIONING_FAILED, the body naming no constraint (the error does); a broken migration would be 500', async () => {
    const answer = await getJson(`${base()}/seeded/${uniqueSlug('eh-seed')}`, {}, { method: 'POST' });
    expectError(answer, 409, 'TENANT_PROVISIONING_FAILED');
    expect(answer.body.error.message).to.match(/starting data conflicts with existing data/);
    expect(answer.body.error.message).not.to.include('client_email_seed_key');
    expect(answer.body.error.message).not.to.include('dup@x');
    const broken = new TenantProvisioningError('acme', 'CreateClient1700000000001', Object.assign(new Error('duplicate key'), { code: '23505' }));
    expect(broken.statusCode).to.equal(500);
  });

  it('TENANT_CONTEXT_MISSING (a handler outside any tenant) is a server bug: 500', async () => {
    expectError(await getJson(`${base()}/contextless`), 500, 'TENANT_CONTEXT_MISSING');
  });

  it('an error with Retry-After keeps it (503 TENANT_MIGRATION_PENDING)', async () => {
    const response = await fetch(`${base()}/pending`);
    expect(response.status).to.equal(503);
    expect(response.headers.get('retry-after')).to.equal('5');
    expect(((await response.json()) as { error: { code: string } }).error.code).to.equal('TENANT_MIGRATION_PENDING');
  });

  it('any other error is left to the framework (not turned into a tenancy body)', async () => {
    const answer = await getJson(`${base()}/plain`);
    expect(answer.status).to.equal(500);
    expect(JSON.stringify(answer.body ?? '')).not.to.include('"code":"TENANT');
  });

  it('a tenant route behind the middleware still answers its refusals as before', async () => {
    expectError(await getJson(`${base()}/t/clients`, { 'x-tenant-slug': uniqueSlug('eh-missing') }), 404, 'TENANT_NOT_FOUND');
  });
}

describe('HTTP error handlers: a TenancyError thrown in a handler answers as the middleware refusals do', () => {
  let manager: TenantDataSourceManager;
  // One manager for the whole block (the fixtures' managers are destroyed after each test).
  before(async () => {
    manager = new Manager(managerOptions());
    await manager.initialize();
  });
  after(async () => {
    await manager.destroy();
  });

  describe('Express: tenancyErrorHandler()', () => {
    let server: Server;
    let base = '';
    before(async () => {
      const routes = routesOf(manager);
      const app = express();
      app.set('env', 'test'); // Express's final handler then answers 500 without printing the stack
      const wrap = (fn: (req: Request) => Promise<unknown> | unknown) => async (req: Request, res: Response, next: NextFunction) => {
        try {
          res.status(201).json(await fn(req));
        } catch (error) {
          next(error);
        }
      };
      app.post('/signup/:slug', wrap((req) => routes.signup(String(req.params.slug))));
      app.post('/seeded/:slug', wrap((req) => routes.signupSeeded(String(req.params.slug))));
      app.get('/contextless', wrap(() => routes.contextless()));
      app.get('/pending', () => routes.pending()); // Express 5 passes a thrown error to the error handlers
      app.get('/plain', () => routes.plain());
      const tenantRoutes = express.Router();
      tenantRoutes.use(tenantMiddleware(manager, { resolve: fromHeader() }));
      tenantRoutes.get('/clients', wrap(() => tenantContext.getRepository(Client).find()));
      app.use('/t', tenantRoutes);
      app.use(expressErrorHandler());
      server = createServer(app);
      base = await listen(server);
    });
    after(async () => {
      await closeServer(server);
    });
    contractSuite(() => base, () => manager);
  });

  describe('Fastify: the plugin installs tenancyErrorHandler() in its scope', () => {
    let app: FastifyInstance;
    let base = '';
    before(async () => {
      const routes = routesOf(manager);
      app = Fastify();
      await app.register(tenancyPlugin, { manager, resolve: fromHeader(), required: false });
      app.post<{ Params: { slug: string } }>('/signup/:slug', async (request, reply) => reply.code(201).send(await routes.signup(request.params.slug)));
      app.post<{ Params: { slug: string } }>('/seeded/:slug', async (request, reply) => reply.code(201).send(await routes.signupSeeded(request.params.slug)));
      app.get('/contextless', async () => routes.contextless());
      app.get('/pending', async () => routes.pending());
      app.get('/plain', async () => routes.plain());
      app.get('/t/clients', async (request) => {
        if (request.tenant === undefined) throw new Error('no tenant');
        return tenantContext.getRepository(Client).find();
      });
      base = await app.listen({ port: 0, host: '127.0.0.1' });
    });
    after(async () => {
      await app.close();
    });
    contractSuite(() => base, () => manager);
  });

  describe('Fastify: errorHandler: false, and tenancyErrorHandler() called from the service\'s own handler', () => {
    let app: FastifyInstance;
    let base = '';
    before(async () => {
      const routes = routesOf(manager);
      app = Fastify();
      const handleTenancy = fastifyErrorHandler();
      await app.register(tenancyPlugin, { manager, resolve: fromHeader(), required: false, errorHandler: false });
      app.setErrorHandler((error, request, reply) => {
        try {
          handleTenancy(error, request, reply);
        } catch {
          void reply.code(500).send({ mine: true });
        }
      });
      app.get('/contextless', async () => routes.contextless());
      app.get('/plain', async () => routes.plain());
      base = await app.listen({ port: 0, host: '127.0.0.1' });
    });
    after(async () => {
      await app.close();
    });

    it('the service\'s handler gets every error; the tenancy ones answer the documented body, the rest its own', async () => {
      expectError(await getJson(`${base}/contextless`), 500, 'TENANT_CONTEXT_MISSING');
      expect(await getJson(`${base}/plain`)).to.deep.include({ status: 500, body: { mine: true } });
    });
  });
});

describe('tenancyErrorBody: what an HTTP client learns of errors that carry the database\'s words', () => {
  const unreachable = new DatabaseUnreachableError(
    'postgres://app@db.internal:5432/app',
    Object.assign(new Error('connect ECONNREFUSED 10.0.0.7:5432'), { code: 'ECONNREFUSED' }),
  );
  const seedConflict = new TenantProvisioningError(
    'acme',
    undefined,
    Object.assign(new Error('duplicate key value violates unique constraint "client_email_key"'), { code: '23505', constraint: 'client_email_key', detail: 'Key (email)=(a@x) already exists.' }),
  );
  const brokenMigration = new TenantMigrationError('acme', 'AddPhone1700000000003', Object.assign(new Error('column "phone" of relation "client" already exists'), { code: '42701' }));

  it('DATABASE_UNREACHABLE: the body names no user, host, port or database; the error keeps them', () => {
    const body = tenancyErrorBody(unreachable);
    expect(body.error.code).to.equal('DATABASE_UNREACHABLE');
    expect(body.error.message).not.to.match(/db\.internal|10\.0\.0\.7|5432|app@/);
    expect(unreachable.message).to.include('postgres://app@db.internal:5432/app');
  });

  it('provisioning and migration failures: the body names no constraint, value, migration or column; databaseDetails: true sends the whole message', () => {
    for (const error of [seedConflict, brokenMigration]) {
      const message = tenancyErrorBody(error).error.message;
      expect(message).not.to.match(/client_email_key|a@x|AddPhone|phone/);
      expect(tenancyErrorBody(error, { databaseDetails: true }).error.message).to.equal(error.message);
    }
    expect(seedConflict.statusCode).to.equal(409);
    expect(tenancyErrorBody(seedConflict).error.message).to.match(/conflicts with existing data/);
    expect(seedConflict.constraint).to.equal('client_email_key');
  });

  it('other errors keep their own message (a taken slug names the slug)', () => {
    const taken = new TenantAlreadyExistsError('acme', 'acme', 'acme');
    expect(tenancyErrorBody(taken).error.message).to.equal(taken.message);
  });
});
