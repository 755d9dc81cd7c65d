import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { adminQuery, databaseUrl, tablesOf, uniqueSlug } from '../support/fixtures';
import { expectError, getJson } from '../http/http-support';
import { createInstalledProject, expectExit, REPO_ROOT, runProcess, type InstalledProject } from './installed-project';

/** The Nest packages (and Node's types) the user's project installs, at the repository's versions. */
const NEST_PACKAGES = ['@nestjs/common', '@nestjs/core', '@nestjs/platform-express', '@nestjs/config', 'rxjs', '@types/node'];

// A small NestJS service of the user's, in TypeScript, on the installed
// package: options from ConfigService (forRootAsync), the tenant resolved
// after an auth guard (mode 'interceptor'), TenancyExceptionFilter for
// TenancyErrors, a tenant migration in raw SQL with unqualified names.
const NEST_APP_TS = `import 'reflect-metadata';
import { Body, Controller, Get, Inject, Injectable, Module, Post, UnauthorizedException, UseGuards, type CanActivate, type ExecutionContext } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { NestFactory } from '@nestjs/core';
import type { AddressInfo } from 'node:net';
import { Column, Entity, PrimaryGeneratedColumn, Repository, type MigrationInterface, type QueryRunner } from 'typeorm';
import { TenantScoped, type TenantDataSourceManager } from 'typeorm-tenants';
import { InjectTenantRepository, TENANCY_MANAGER, TenancyModule, TenantFree } from 'typeorm-tenants/nestjs';

@TenantScoped()
@Entity()
export class Note {
  @PrimaryGeneratedColumn() id!: number;
  @Column() text!: string;
}

export class CreateNote1700000000001 implements MigrationInterface {
  async up(q: QueryRunner): Promise<void> {
    await q.query('CREATE TABLE note (id serial PRIMARY KEY, text varchar NOT NULL)');
  }
  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE note');
  }
}

interface User { readonly tenant: string }
interface AuthedRequest { readonly headers: Record<string, string | undefined>; user?: User }

/** Stands in for the service's authentication: Bearer tokens from the TOKENS variable. */
@Injectable()
class TokenGuard implements CanActivate {
  constructor(private readonly config: ConfigService) {}
  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<AuthedRequest>();
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const tenant = token === undefined ? undefined : (JSON.parse(this.config.getOrThrow<string>('TOKENS')) as Record<string, string>)[token];
    if (tenant === undefined) throw new UnauthorizedException();
    req.user = { tenant };
    return true;
  }
}

@UseGuards(TokenGuard)
@Controller('notes')
class NotesController {
  constructor(@InjectTenantRepository(Note) private readonly notes: Repository<Note>) {}
  @Get()
  list(): Promise<Note[]> {
    return this.notes.find({ order: { id: 'ASC' } });
  }
  @Post()
  add(@Body() body: { text: string }): Promise<Note> {
    return this.notes.save(this.notes.create({ text: body.text }));
  }
}

@TenantFree()
@Controller('tenants')
class SignupController {
  constructor(@Inject(TENANCY_MANAGER) private readonly tenants: TenantDataSourceManager) {}
  @Post()
  async signup(@Body() body: { slug: string }): Promise<unknown> {
    return { slug: (await this.tenants.createTenant(body.slug)).slug };
  }
}

@Module({
  imports: [
    ConfigModule.forRoot({ isGlobal: true, ignoreEnvFile: true }),
    TenancyModule.forRootAsync({
      inject: [ConfigService],
      useFactory: (config: ConfigService) => ({
        managerOptions: {
          dataSource: { type: 'postgres' as const, url: config.getOrThrow<string>('DATABASE_URL'), poolSize: 3, applicationName: config.getOrThrow<string>('APP_NAME') },
          sharedSchema: config.getOrThrow<string>('TENANCY_SHARED_SCHEMA'),
          entities: [Note],
          tenantMigrations: [CreateNote1700000000001],
        },
        mode: 'interceptor' as const,
        resolve: (req: AuthedRequest) => req.user?.tenant,
      }),
    }),
    TenancyModule.forFeature([Note]),
  ],
  controllers: [NotesController, SignupController],
  providers: [TokenGuard],
})
class AppModule {}

async function main(): Promise<void> {
  const app = await NestFactory.create(AppModule, { logger: false });
  app.enableShutdownHooks();
  await app.listen(0, '127.0.0.1');
  console.log(JSON.stringify({ port: (app.getHttpServer().address() as AddressInfo).port }));
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
`;

/**
 * NestJS from the installed package: the project of installed-project.ts
 * plus the Nest packages, a service of the user's compiled there, run as a
 * process and asked over HTTP.
 */
describe('the installed package under NestJS (forRootAsync, mode interceptor, TenancyExceptionFilter)', function () {
  this.timeout(240_000);

  let project: InstalledProject | undefined;
  let service: ChildProcess | undefined;
  const sharedSchema = `installed_nest_${randomBytes(4).toString('hex')}`;
  const appName = `tt-installed-nest-${randomBytes(4).toString('hex')}`;
  const [acme, globex] = [uniqueSlug('iacme'), uniqueSlug('iglobex')];
  const schemaOf = (slug: string): string => slug.replace(/-/g, '_');

  before(async function () {
    this.timeout(240_000);
    project = await createInstalledProject();
    const manifest = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
    const nest = NEST_PACKAGES.map((name) => `${name}@${manifest.devDependencies[name]}`);
    expectExit(await runProcess('npm', ['install', ...nest, '--prefer-offline', '--no-audit', '--no-fund'], { cwd: project.dir, timeoutMs: 150_000 }));
    writeFileSync(join(project.dir, 'src', 'nest-app.ts'), NEST_APP_TS);
    expectExit(await runProcess(process.execPath, [join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: project.dir }));
  });

  after(async () => {
    if (service !== undefined && service.exitCode === null && service.signalCode === null) service.kill('SIGKILL');
    project?.remove();
    for (const schema of [schemaOf(acme), schemaOf(globex), sharedSchema]) await adminQuery(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  });

  it('serves tenants resolved after the guard, answers TenancyErrors with the documented body, and exits on SIGTERM through the shutdown hooks with no connection left', async () => {
    const tokens = { 'tok-acme': acme, 'tok-globex': globex, 'tok-ghost': uniqueSlug('ghost') };
    const child = spawn(process.execPath, ['dist/nest-app.js'], {
      cwd: project!.dir,
      env: { ...process.env, DATABASE_URL: databaseUrl(), TENANCY_SHARED_SCHEMA: sharedSchema, APP_NAME: appName, TOKENS: JSON.stringify(tokens) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    service = child;
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('close', (_code, signal) => resolve(signal)));
    for (let i = 0; i < 1_200 && !stdout.includes('"port"') && child.exitCode === null; i += 1) await new Promise((r) => setTimeout(r, 25));
    expect(stdout, stderr).to.match(/\{"port":\d+\}/);
    const base = `http://127.0.0.1:${(JSON.parse(stdout.trim().split('\n')[0]!) as { port: number }).port}`;
    const json = { 'content-type': 'application/json' };
    const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
      getJson(`${base}/${path}`, { ...json, ...headers }, { method: 'POST', body: JSON.stringify(body) });
    const as = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });

    for (const slug of [acme, globex]) expect(await post('tenants', { slug })).to.deep.include({ status: 201, body: { slug } });
    expectError(await post('tenants', { slug: acme }), 409, 'TENANT_ALREADY_EXISTS');
    expectError(await post('tenants', { slug: 'Not A Slug' }), 400, 'INVALID_TENANT_NAME');

    expect(await post('notes', { text: 'hello from acme' }, as('tok-acme'))).to.deep.include({ status: 201 });
    expect((await getJson(`${base}/notes`, as('tok-acme'))).body).to.deep.equal([{ id: 1, text: 'hello from acme' }]);
    expect((await getJson(`${base}/notes`, as('tok-globex'))).body).to.deep.equal([]);
    expect((await getJson(`${base}/notes`)).status).to.equal(401);
    expectError(await getJson(`${base}/notes`, as('tok-ghost')), 404, 'TENANT_NOT_FOUND');
    // Physically: the note is in acme's schema, created there by the unqualified raw migration.
    expect(await tablesOf(schemaOf(acme))).to.include('note');
    expect(await adminQuery(`SELECT text FROM "${schemaOf(acme)}".note`)).to.deep.equal([{ text: 'hello from acme' }]);
    expect(await adminQuery(`SELECT text FROM "${schemaOf(globex)}".note`)).to.deep.equal([]);

    const [open] = await adminQuery<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [appName]);
    expect(open!.n).to.be.greaterThan(0);
    child.kill('SIGTERM');
    expect(await exited, stderr).to.equal('SIGTERM');
    let left = -1;
    for (let i = 0; i < 100 && left !== 0; i += 1) {
      left = (await adminQuery<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [appName]))[0]!.n;
      if (left !== 0) await new Promise((r) => setTimeout(r, 25));
    }
    expect(left).to.equal(0);
    expect(stderr).to.equal('');
  });
});
