import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/**
 * A throwaway user project outside the repository, with the packed
 * `typeorm-tenants` installed from its tarball next to typeorm, pg and
 * reflect-metadata, the user's entities compiled by the repository's
 * TypeScript, and a `tenancy.config.js` for the installed bin.
 */

/** The repository root: three levels up from <build folder>/test/installed/. */
export const REPO_ROOT = resolve(__dirname, '../../..');

/** The tenant entity's table and the enum type TypeORM names after it and its column. */
export const TENANT_TABLE = 'ticket';
export const SHARED_TABLE = 'category';
export const ENUM_TYPE = 'ticket_status_enum';

export interface ProcessResult {
  readonly command: string;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  readonly cwd: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly timeoutMs?: number;
}

/** This process's environment with `extra` on top (npm's lifecycle variables from `npm test` do not disturb the nested npm). */
export function childEnvironment(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, ...extra };
}

/** Runs a command to its end with pipes (no terminal, no shell); kills it after `timeoutMs`. */
export function runProcess(command: string, args: readonly string[], options: RunOptions): Promise<ProcessResult> {
  const shown = [command, ...args].join(' ');
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? childEnvironment(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timeoutMs = options.timeoutMs ?? 60_000;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${shown} did not exit within ${timeoutMs} ms. stderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`Cannot start ${shown}: ${error.message}`, { cause: error }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ command: shown, code, signal, stdout, stderr });
    });
  });
}

/** Throws with the command's output unless it exited with `expected`. */
export function expectExit(result: ProcessResult, expected = 0): ProcessResult {
  if (result.code !== expected) {
    throw new Error(
      `${result.command} exited with ${result.code ?? result.signal} (expected ${expected}).\nstdout: ${result.stdout.trim()}\nstderr: ${result.stderr.trim()}`,
    );
  }
  return result;
}

// The user's code. Entities in TypeScript with decorators, as TypeORM users
// write them, compiled in the project with the repository's tsc
// (experimentalDecorators, emitDecoratorMetadata); the config in plain
// CommonJS, as the README's "Command line" asks.
const ENTITIES_TS = `import { Column, Entity, ManyToOne, PrimaryGeneratedColumn } from 'typeorm';
import { TenantScoped } from 'typeorm-tenants';

/** Shared: one table in the shared schema. */
@Entity()
export class Category {
  @PrimaryGeneratedColumn() id!: number;
  @Column() name!: string;
}

export enum TicketStatus {
  Open = 'open',
  Closed = 'closed',
}

/** One table per tenant schema, with an enum column and a uuid key. */
@TenantScoped()
@Entity()
export class Ticket {
  @PrimaryGeneratedColumn('uuid') id!: string;
  @Column() title!: string;
  @Column({ type: 'enum', enum: TicketStatus, default: TicketStatus.Open }) status!: TicketStatus;
  @ManyToOne(() => Category, { nullable: true }) category?: Category | null;
}
`;

const TSCONFIG = {
  compilerOptions: {
    target: 'ES2022',
    module: 'node16',
    moduleResolution: 'node16',
    strict: true,
    experimentalDecorators: true,
    emitDecoratorMetadata: true,
    skipLibCheck: true,
    rootDir: 'src',
    outDir: 'dist',
  },
  include: ['src'],
};

const TENANCY_CONFIG_JS = `'use strict';
require('reflect-metadata');
const { readdirSync } = require('node:fs');
const { join } = require('node:path');
const { Category, Ticket } = require('./dist/entities');

// Every .js file of migrations/<kind>, in name (timestamp) order: the
// manager takes migration classes, not globs.
function migrationsIn(kind) {
  const folder = join(__dirname, 'migrations', kind);
  let files;
  try {
    files = readdirSync(folder).filter((file) => file.endsWith('.js')).sort();
  } catch (error) {
    if (error.code === 'ENOENT') return [];
    throw error;
  }
  return files.flatMap((file) => {
    const exported = require(join(folder, file));
    return typeof exported === 'function' ? [exported] : Object.values(exported);
  });
}

module.exports = {
  dataSource: { type: 'postgres', url: process.env.DATABASE_URL, poolSize: 4 },
  entities: [Category, Ticket],
  tenantMigrations: migrationsIn('tenant'),
  sharedMigrations: migrationsIn('shared'),
  sharedSchema: process.env.TENANCY_SHARED_SCHEMA || 'public',
};
`;

// A service of the user's, as the README's "Usage" writes one: a ticket
// saved in the first tenant given, then what each tenant sees, as JSON.
const APP_JS = `'use strict';
require('reflect-metadata');
const { TenantDataSourceManager, tenantContext } = require('typeorm-tenants');
const { Category, Ticket } = require('./dist/entities');
const options = require('./tenancy.config.js');

async function main([first, ...others]) {
  const tenants = new TenantDataSourceManager(options);
  await tenants.initialize();
  try {
    const category = await tenantContext.getRepository(Category).save({ name: 'billing' });
    await tenants.run(first, () => tenantContext.getRepository(Ticket).save({ title: 'Printer on fire', category }));
    const seen = {};
    for (const slug of [first, ...others]) {
      seen[slug] = await tenants.run(slug, () => tenantContext.getRepository(Ticket).find({ relations: { category: true } }));
    }
    let outside;
    try {
      tenantContext.getRepository(Ticket);
    } catch (error) {
      outside = error.code;
    }
    console.log(JSON.stringify({ seen, outside }));
  } finally {
    await tenants.destroy();
  }
}

main(process.argv.slice(2)).catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
`;

export interface InstalledProject {
  /** The project directory (under os.tmpdir()). */
  readonly dir: string;
  /** What `npm pack` wrote: the tarball's file name and the files it holds. */
  readonly pack: { readonly filename: string; readonly files: readonly string[] };
  /** Spawns `node_modules/.bin/typeorm-tenants --config tenancy.config.js --json ...args` in the project. */
  cli(args: readonly string[], env: NodeJS.ProcessEnv): Promise<ProcessResult>;
  /** Runs `node ...args` in the project (`['-e', script]`, or `['app.js', ...]`: the user's service). */
  node(args: readonly string[], env?: NodeJS.ProcessEnv): Promise<ProcessResult>;
  /** Removes the project and the tarball; safe to call twice. */
  remove(): void;
}

interface PackEntry {
  readonly filename: string;
  readonly files: readonly { readonly path: string }[];
}

/**
 * Packs the repository (dist/ as it is: the caller builds it), installs the
 * tarball with typeorm, pg and reflect-metadata at the repository's versions
 * into a new project under os.tmpdir(), writes the user's code and compiles
 * it. On failure nothing is left behind.
 */
export async function createInstalledProject(): Promise<InstalledProject> {
  const packDir = mkdtempSync(join(tmpdir(), 'typeorm-tenants-pack-'));
  // Real path: Node reports resolved modules by it, and a tmpdir may be a symlink (macOS).
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'typeorm-tenants-user-')));
  const remove = (): void => {
    rmSync(dir, { recursive: true, force: true });
    rmSync(packDir, { recursive: true, force: true });
  };
  try {
    if (!existsSync(join(REPO_ROOT, 'dist', 'cli', 'main.js'))) {
      throw new Error(`${join(REPO_ROOT, 'dist')} has no cli/main.js: build the package first (npx tsc -p tsconfig.build.json).`);
    }
    const packed = expectExit(
      await runProcess('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', packDir], { cwd: REPO_ROOT, timeoutMs: 60_000 }),
    );
    const [entry] = JSON.parse(packed.stdout) as PackEntry[];
    if (entry === undefined) throw new Error(`npm pack printed no tarball: ${packed.stdout}`);
    const tarball = join(packDir, entry.filename);

    const manifest = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    const userDependencies = ['typeorm', 'pg', 'reflect-metadata'].map((name) => `${name}@${manifest.dependencies[name]}`);
    writeFileSync(join(dir, 'package.json'), `${JSON.stringify({ name: 'tenants-user-app', version: '1.0.0', private: true }, null, 2)}\n`);
    expectExit(
      await runProcess('npm', ['install', tarball, ...userDependencies, '--prefer-offline', '--no-audit', '--no-fund'], {
        cwd: dir,
        timeoutMs: 150_000,
      }),
    );

    mkdirSync(join(dir, 'src'));
    writeFileSync(join(dir, 'src', 'entities.ts'), ENTITIES_TS);
    writeFileSync(join(dir, 'tsconfig.json'), `${JSON.stringify(TSCONFIG, null, 2)}\n`);
    writeFileSync(join(dir, 'tenancy.config.js'), TENANCY_CONFIG_JS);
    writeFileSync(join(dir, 'app.js'), APP_JS);
    expectExit(await runProcess(process.execPath, [join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: dir }));

    const bin = join(dir, 'node_modules', '.bin', 'typeorm-tenants');
    return {
      dir,
      pack: { filename: entry.filename, files: entry.files.map((file) => file.path) },
      cli: (args, env) => runProcess(bin, ['--config', 'tenancy.config.js', '--json', ...args], { cwd: dir, env: childEnvironment(env) }),
      node: (args, env) => runProcess(process.execPath, args, { cwd: dir, env: childEnvironment(env) }),
      remove,
    };
  } catch (error) {
    remove();
    throw error;
  }
}
