import 'reflect-metadata';
import autocannon from 'autocannon';
import { execFileSync, fork, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startScratchDatabase } from '../../support/database';
import { describeEnvironment } from '../environment';
import { median } from '../measure';
import { VARIANTS, type Variant, type VariantName } from './variants';

/**
 * `node build/bench/http/instructions.js [--reps N] [--only a,b] [--quick]` (part of the
 * full `npm run bench`, not of `--quick`): the HTTP benchmark's variants
 * (bench/http/run.ts) counted in CPU instructions per request instead of
 * requests/s, with valgrind's callgrind.
 *
 * Each variant runs in a fresh server process (bench/http/server.ts) under
 * callgrind with instrumentation off; it is warmed up with `WARMUP_REQUESTS`,
 * then `callgrind_control -i on` counts the instructions its threads execute
 * while autocannon sends `MEASURED_REQUESTS` (10 connections), and
 * `callgrind_control -i off` stops the count. The variants take turns, one
 * process each, `--reps` times (default 3).
 *
 * Why: autocannon's throughput ratios vary by ±30% from one round to the
 * next on the 2-core machine the benchmarks run on; an instruction count
 * varies by a few percent (JIT and GC timing) and does not depend on what
 * else the machine does. It leaves out the kernel's side of system calls,
 * PostgreSQL and the load generator, so it is a companion to requests/s,
 * not a replacement. Writes bench/results/http-instructions.json and .md
 * (http-instructions-quick.* with --quick: 10 tenants, 1 repetition).
 */

const RESULTS_DIR = join(__dirname, '..', '..', '..', 'bench', 'results');
const log = (line: string): void => console.error(`[bench:http-instructions] ${line}`);

const WARMUP_REQUESTS = 1500;
const MEASURED_REQUESTS = 1000;
const CONNECTIONS = 10;

interface Sample {
  readonly instructionsPerRequest: number;
  readonly statementsPerRequest: number;
}

interface Figures {
  /** Median over the repetitions, with the range. */
  readonly instructionsPerRequest: number;
  readonly min: number;
  readonly max: number;
  /** Ratios of medians to the plain and the ALS control of the same framework. */
  readonly ratioToPlain: number;
  readonly ratioToAls: number;
  readonly statementsPerRequest: number;
  readonly repetitions: readonly number[];
}

async function main(): Promise<void> {
  const valgrind = toolVersion('valgrind', ['--version']);
  if (valgrind === undefined || toolVersion('callgrind_control', ['--version']) === undefined) {
    console.error('[bench:http-instructions] valgrind and callgrind_control are needed (apt-get install valgrind); not found on PATH.');
    process.exitCode = 1;
    return;
  }
  const quick = process.argv.includes('--quick');
  const tenants = quick ? 10 : 100;
  const rows = 100;
  const reps = numberArgument('--reps') ?? (quick ? 1 : 3);
  // --only fastify-tenancy-1,...: those variants and their controls, for investigations (written to http-instructions-partial.*).
  const only = argumentValue('--only')?.split(',');
  const variants = only === undefined ? VARIANTS : VARIANTS.filter((v) => VARIANTS.some((c) => only.includes(c.name) && (c.name === v.name || c.plain === v.name || c.als === v.name)));
  if (variants.length === 0) throw new Error(`--only names no variant; the variants are ${VARIANTS.map((v) => v.name).join(', ')}.`);
  const started = Date.now();
  const database = await startScratchDatabase();
  const directory = await mkdtemp(join(tmpdir(), 'bench-http-instructions-'));
  try {
    const env = { DATABASE_URL: database.url, TENANTS: String(tenants), ROWS: String(rows) };
    await runSetup(env);
    log(`${tenants} tenants created`);
    const environment = await describeEnvironment(database.url, database.embedded, database.description);
    const slugs = Array.from({ length: tenants }, (_, i) => `http-${i}`);
    const samples = new Map<VariantName, Sample[]>(variants.map((v) => [v.name, []]));
    for (let rep = 0; rep < reps; rep += 1) {
      for (const variant of variants) {
        const t0 = Date.now();
        const sample = await measure(variant, env, variant.tenants === 'all' ? slugs : [slugs[0]!], rows, directory);
        samples.get(variant.name)!.push(sample);
        log(`rep ${rep + 1}/${reps} ${variant.name}: ${Math.round(sample.instructionsPerRequest)} instructions/request (${Math.round((Date.now() - t0) / 1000)} s)`);
      }
    }
    const medians = new Map(variants.map((v) => [v.name, median(samples.get(v.name)!.map((s) => s.instructionsPerRequest))]));
    const r3 = (v: number): number => Math.round(v * 1000) / 1000;
    const figures = Object.fromEntries(
      variants.map((variant) => {
        const own = samples.get(variant.name)!.map((s) => s.instructionsPerRequest);
        const m = medians.get(variant.name)!;
        const statements = samples.get(variant.name)!.map((s) => s.statementsPerRequest);
        const f: Figures = {
          instructionsPerRequest: Math.round(m),
          min: Math.round(Math.min(...own)),
          max: Math.round(Math.max(...own)),
          ratioToPlain: r3(m / medians.get(variant.plain)!),
          ratioToAls: r3(m / medians.get(variant.als)!),
          statementsPerRequest: r3(median(statements)),
          repetitions: own.map(Math.round),
        };
        return [variant.name, f];
      }),
    ) as Partial<Record<VariantName, Figures>>;
    const report = {
      benchmark: 'http-instructions',
      generatedAt: new Date().toISOString(),
      quick,
      durationSeconds: Math.round((Date.now() - started) / 1000),
      environment,
      valgrind,
      settings: {
        tenants,
        rows,
        repetitions: reps,
        warmupRequests: WARMUP_REQUESTS,
        measuredRequests: MEASURED_REQUESTS,
        connections: CONNECTIONS,
        route: 'GET /clients/:id',
      },
      figures,
    };
    const name = only !== undefined ? 'http-instructions-partial' : quick ? 'http-instructions-quick' : 'http-instructions';
    await writeFile(join(RESULTS_DIR, `${name}.json`), `${JSON.stringify(report, null, 2)}\n`);
    const markdown = renderMarkdown(report, figures);
    await writeFile(join(RESULTS_DIR, `${name}.md`), markdown);
    console.log(markdown);
  } finally {
    await rm(directory, { recursive: true, force: true });
    await database.stop();
  }
}

/**
 * One server process under callgrind: warm up uninstrumented, count
 * `MEASURED_REQUESTS`, stop the process and read the count from its output.
 */
async function measure(variant: Variant, env: Record<string, string>, slugs: readonly string[], rows: number, directory: string): Promise<Sample> {
  const out = join(directory, `${variant.name}.%p`);
  const child: ChildProcess = fork(join(__dirname, 'server.js'), [], {
    execPath: 'valgrind',
    // V8 writes and rewrites machine code in anonymous memory: without the
    // self-modifying-code check valgrind would run stale translations.
    execArgv: ['--tool=callgrind', '--smc-check=all-non-file', `--callgrind-out-file=${out}`, '--instr-atstart=no', process.execPath],
    env: { ...process.env, ...env, SERVER: variant.server },
    // valgrind's own banner goes to stderr; keep it out of the log unless the server fails.
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let running = true;
  void exited.then(() => {
    running = false;
  });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`The server ${variant.server} exited under valgrind before listening (code ${code}):\n${stderr}`)));
      child.once('message', (message) => resolve((message as { port: number }).port));
    });
    const pid = String(child.pid!);
    checked(variant, 'warm-up', await load(port, slugs, rows, WARMUP_REQUESTS), WARMUP_REQUESTS);
    const before = await ask<{ queries: number }>(child, 'stats', 'queries');
    execFileSync('callgrind_control', ['-i', 'on', pid], { stdio: 'ignore' });
    const result = await load(port, slugs, rows, MEASURED_REQUESTS);
    execFileSync('callgrind_control', ['-i', 'off', pid], { stdio: 'ignore' });
    checked(variant, 'measured run', result, MEASURED_REQUESTS);
    const after = await ask<{ queries: number }>(child, 'stats', 'queries');
    child.kill('SIGTERM');
    const code = await exited;
    if (code !== 0) throw new Error(`The server ${variant.server} exited with code ${code} after its run:\n${stderr}`);
    // Without --separate-threads, one file holds every thread's count; it is written when the process exits.
    const text = await readFile(out.replace('%p', pid), 'utf8');
    const total = /^totals: (\d+)/m.exec(text)?.[1];
    if (total === undefined) throw new Error(`No totals line in the callgrind output of ${variant.name}.`);
    return { instructionsPerRequest: Number(total) / MEASURED_REQUESTS, statementsPerRequest: (after.queries - before.queries) / MEASURED_REQUESTS };
  } finally {
    if (running) {
      child.kill('SIGKILL');
      await exited;
    }
  }
}

function checked(variant: Variant, what: string, result: autocannon.Result, amount: number): void {
  if (result.non2xx > 0 || result.errors > 0 || result.timeouts > 0 || result.requests.total !== amount) {
    throw new Error(
      `${variant.name}, ${what}: ${result.requests.total} of ${amount} responses, ${result.non2xx} non-2xx, ${result.errors} errors, ${result.timeouts} timeouts.`,
    );
  }
}

function load(port: number, slugs: readonly string[], rows: number, amount: number): Promise<autocannon.Result> {
  let next = 0;
  return autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: CONNECTIONS,
    amount,
    // Under valgrind a response can take far longer than autocannon's default 10 s.
    timeout: 120,
    requests: [
      {
        method: 'GET',
        setupRequest: (request) => {
          const n = next++;
          const slug = slugs[n % slugs.length]!;
          return { ...request, path: `/clients/${1 + (n % rows)}`, headers: { ...request.headers, 'x-tenant-slug': slug } };
        },
      },
    ],
  });
}

function renderMarkdown(
  report: { generatedAt: string; durationSeconds: number; valgrind: string; environment: Awaited<ReturnType<typeof describeEnvironment>>; settings: { tenants: number; repetitions: number } },
  figures: Partial<Record<VariantName, Figures>>,
): string {
  const { environment, settings } = report;
  const millions = (n: number): string => (n / 1e6).toFixed(2);
  const row = (label: string, name: VariantName): string[] => {
    const f = figures[name];
    if (f === undefined) return [];
    const vsPlain = name.endsWith('-plain') ? '1' : `${f.ratioToPlain}`;
    const vsAls = name.endsWith('-plain') ? '' : name.endsWith('-als') ? '1' : `${f.ratioToAls}`;
    return [`| ${label} | ${millions(f.instructionsPerRequest)} | ${millions(f.min)}-${millions(f.max)} | ${vsPlain} | ${vsAls} | ${f.statementsPerRequest} |`];
  };
  const table = (framework: 'Express' | 'Fastify', prefix: 'express' | 'fastify', tenancyLabel: string): string[] =>
    figures[`${prefix}-plain`] === undefined ? [] : [
    `| ${framework} | M instructions/request | range | x plain | x ALS control | statements/request |`,
    '|---|---:|---:|---:|---:|---:|',
    ...row(`plain ${framework} + TypeORM, no tenancy`, `${prefix}-plain`),
    ...row(`plain ${framework} + an AsyncLocalStorage run per request`, `${prefix}-als`),
    ...row(`${tenancyLabel}, 1 tenant`, `${prefix}-tenancy-1`),
    ...row(`${tenancyLabel}, ${settings.tenants} tenants round-robin`, `${prefix}-tenancy-n`),
    '',
  ];
  return [
    `<!-- generated by bench/http/instructions.ts on ${report.generatedAt}; do not edit by hand -->`,
    '',
    `GET /clients/:id, the variants of http.md counted with ${report.valgrind} callgrind: each server in a fresh process under callgrind, ` +
      `${WARMUP_REQUESTS} requests of warm-up uninstrumented, then ${MEASURED_REQUESTS} requests (autocannon, ${CONNECTIONS} connections) counted; ` +
      `${settings.repetitions} repetitions, the variants taking turns; ${environment.machine.cpuModel}, ${environment.machine.cores} cores, ` +
      `Node ${environment.node}, PostgreSQL ${environment.postgres.version} (${environment.postgres.embedded ? 'embedded' : 'server'}); ` +
      `the run took ${Math.round(report.durationSeconds / 60)} min.`,
    '',
    'The figure is the instructions the server process executed, all its threads (JavaScript, V8\'s compiler and garbage-collector threads, libuv), ' +
      'while instrumentation was on, divided by the requests: the median of the repetitions, their range beside it; ratios are ratios of medians ' +
      'to the controls of the same framework. It leaves out the kernel\'s side of system calls, PostgreSQL and the load generator, and it counts ' +
      'instructions, not cycles (cache misses and waits do not show). It is given because it repeats within a few percent (JIT and GC timing) ' +
      'where requests/s on this 2-core machine moves by ±30% from round to round; read it beside http.md, not instead of it.',
    '',
    ...table('Express', 'express', 'example service (tenant middleware)'),
    ...table('Fastify', 'fastify', 'Fastify tenancyPlugin'),
  ].join('\n');
}

/** The first line a tool prints for `args`, or undefined when it cannot be run. */
function toolVersion(command: string, args: string[]): string | undefined {
  const result = spawnSync(command, args, { encoding: 'utf8' });
  if (result.error !== undefined || result.status !== 0) return undefined;
  return `${result.stdout}${result.stderr}`.trim().split('\n')[0];
}

function runSetup(env: Record<string, string>): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = fork(join(__dirname, 'server.js'), [], { env: { ...process.env, ...env, SERVER: 'setup' }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`The benchmark's setup exited with code ${code}.`))));
  });
}

/** Sends `message` to the server and waits for its answer, the next message holding `key`. */
function ask<T>(child: ChildProcess, message: unknown, key: string): Promise<T> {
  return new Promise<T>((resolve) => {
    const onMessage = (answer: unknown): void => {
      if (typeof answer !== 'object' || answer === null || !(key in answer)) return;
      child.off('message', onMessage);
      resolve(answer as T);
    };
    child.on('message', onMessage);
    child.send(message as object);
  });
}

function argumentValue(name: string): string | undefined {
  const at = process.argv.indexOf(name);
  return at === -1 ? undefined : process.argv[at + 1];
}

function numberArgument(name: string): number | undefined {
  const value = argumentValue(name);
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!Number.isInteger(number) || number <= 0) throw new Error(`${name} needs a positive whole number; got ${value}.`);
  return number;
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
