import 'reflect-metadata';
import autocannon from 'autocannon';
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { startScratchDatabase } from '../../support/database';
import { cpuShareBetween, snapshotCpu } from '../cpu-share';
import { describeEnvironment, round2 } from '../environment';
import { median } from '../measure';
import { SHARE_GROUPS, profileShares } from './profile-shares';
import { VARIANTS, type ServerName, type Variant, type VariantName } from './variants';

/**
 * `node build/bench/http/run.js [--quick]` (part of `npm run bench`):
 * requests/s of GET /clients/:id, autocannon with 10 connections, on
 * Express and on Fastify, each in four forms measured side by side:
 *
 * - plain: the framework + TypeORM on one schema, no tenancy;
 * - ALS: the same plus one `AsyncLocalStorage` run per request, the
 *   handler's DataSource read from its store (what Node's async context
 *   costs, with no tenancy code at all);
 * - tenancy with 1 tenant, and with 100 tenants round-robin: the example
 *   service (examples/service.ts) on Express, the same route behind
 *   `tenancyPlugin` on Fastify.
 *
 * Every server runs in a process of its own (bench/http/server.ts), so the
 * plain controls never pay for promise hooks the tenancy servers turn on;
 * autocannon drives them from this process, rotating the order each round.
 * Besides requests/s, each server reports its CPU time and its round trips
 * to PostgreSQL, so the figures say per request how much CPU the server
 * spent and how many statements it sent. The ratios are paired: each
 * round's requests/s over its control's in the same round, median and range.
 * Writes bench/results/http.json and http.md (http-quick.* with --quick).
 */

const RESULTS_DIR = join(__dirname, '..', '..', '..', 'bench', 'results');
const log = (line: string): void => console.error(`[bench:http] ${line}`);

interface ServerStats {
  readonly queries: number;
  readonly cpuMicros: number;
}

interface RunningServer {
  readonly name: ServerName;
  readonly port: number;
  readonly pid: number;
  stats(): Promise<ServerStats>;
  startProfile(): Promise<void>;
  stopProfile(file: string): Promise<void>;
  stop(): Promise<void>;
}

interface Sample {
  readonly requestsPerSecond: number;
  readonly requests: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuUsPerRequest: number;
  readonly queriesPerRequest: number;
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const tenants = quick ? 10 : 100;
  const rows = 100;
  const rounds = numberArgument('--rounds') ?? (quick ? 1 : 12);
  const seconds = numberArgument('--seconds') ?? (quick ? 1 : 2);
  // Two passes: Express's JIT needs about 10 s of load to settle (measured on a 2-core VM).
  const warmupSeconds = quick ? 0 : 4;
  // --no-profile: skip the profiled run of each variant.
  const profileSeconds = quick || process.argv.includes('--no-profile') ? 0 : 5;
  const connections = 10;
  // --only fastify-tenancy-1,...: those variants and their controls, for investigations (written to http-partial.*).
  const only = argument('--only')?.split(',');
  const chosen = only === undefined ? VARIANTS : VARIANTS.filter((v) => only.includes(v.name));
  const variants = VARIANTS.filter((v) => chosen.some((c) => c.name === v.name || c.plain === v.name || c.als === v.name));
  // --no-pin: leave the scheduler to place servers, load generator and PostgreSQL.
  const pin = process.argv.includes('--no-pin') ? undefined : cpuPinning();
  pin?.self();
  const database = await startScratchDatabase();
  const servers: RunningServer[] = [];
  try {
    const env = { DATABASE_URL: database.url, TENANTS: String(tenants), ROWS: String(rows) };
    await runSetup(env);
    log(`${tenants} tenants created`);
    const names = [...new Set(variants.map((v) => v.server))];
    for (const name of names) servers.push(await startServer(name, env, pin));
    log(`servers up: ${names.join(', ')}`);
    const slugs = Array.from({ length: tenants }, (_, i) => `http-${i}`);
    const environment = await describeEnvironment(database.url, database.embedded, database.description);
    const serverOf = (variant: Variant): RunningServer => servers.find((s) => s.name === variant.server)!;
    const measure = async (variant: Variant, duration: number): Promise<Sample> => {
      const server = serverOf(variant);
      pin?.active(server.pid);
      const before = await server.stats();
      const result = await load(server.port, variant.tenants === 'all' ? slugs : [slugs[0]!], rows, duration, connections);
      const after = await server.stats();
      pin?.idle(server.pid);
      if (result.non2xx > 0 || result.errors > 0) throw new Error(`${variant.name}: ${result.non2xx} non-2xx responses, ${result.errors} errors`);
      const requests = result.requests.total;
      return {
        requestsPerSecond: result.requests.average,
        requests,
        p50Ms: result.latency.p50,
        p99Ms: result.latency.p99,
        cpuUsPerRequest: (after.cpuMicros - before.cpuMicros) / requests,
        queriesPerRequest: (after.queries - before.queries) / requests,
      };
    };
    for (let pass = 0; pass < 2 && warmupSeconds > 0; pass += 1) for (const variant of variants) await measure(variant, warmupSeconds);
    const samples = new Map<VariantName, Sample[]>(variants.map((v) => [v.name, []]));
    const cpuStart = snapshotCpu();
    for (let round = 0; round < rounds; round += 1) {
      for (const variant of roundOrder(variants, round)) samples.get(variant.name)!.push(await measure(variant, seconds));
      if ((round + 1) % Math.max(1, Math.floor(rounds / 4)) === 0 || round + 1 === rounds) log(`round ${round + 1}/${rounds} done`);
    }
    environment.machine.cpuWhileMeasuring = cpuShareBetween(cpuStart, snapshotCpu());
    environment.machine.loadAverageEnd = loadavg().map(round2);

    // Where each server's CPU goes: one profiled run per variant, after the
    // measured ones (the profiler slows what it watches). Shares of a profile
    // hold still while this machine's speed drifts, the ratios above do not.
    const profiles: Partial<Record<VariantName, ReturnType<typeof profileShares>>> = {};
    if (profileSeconds > 0) {
      const directory = await mkdtemp(join(tmpdir(), 'bench-http-'));
      try {
        for (const variant of variants) {
          const server = serverOf(variant);
          const file = join(directory, `${variant.name}.cpuprofile`);
          pin?.active(server.pid);
          await server.startProfile();
          await load(server.port, variant.tenants === 'all' ? slugs : [slugs[0]!], rows, profileSeconds, connections);
          await server.stopProfile(file);
          pin?.idle(server.pid);
          profiles[variant.name] = profileShares(file, join(__dirname, '..', '..', 'src'));
        }
      } finally {
        await rm(directory, { recursive: true, force: true });
      }
      log('profiles taken');
    }

    const figures = Object.fromEntries(variants.map((variant) => [variant.name, summarize(variant, samples)])) as Partial<Record<VariantName, Figures>>;
    const report = {
      benchmark: 'http',
      generatedAt: new Date().toISOString(),
      quick,
      environment,
      settings: { tenants, rows, rounds, seconds, warmupSeconds, connections, route: 'GET /clients/:id', cpus: pin?.description ?? 'not pinned' },
      figures,
      profiles,
    };
    const name = only !== undefined ? 'http-partial' : quick ? 'http-quick' : 'http';
    await writeFile(join(RESULTS_DIR, `${name}.json`), `${JSON.stringify(report, null, 2)}\n`);
    const markdown = renderMarkdown(report, figures, profiles);
    await writeFile(join(RESULTS_DIR, `${name}.md`), markdown);
    console.log(markdown);
  } finally {
    for (const server of servers) await server.stop();
    await database.stop();
  }
}

interface Figures {
  readonly requestsPerSecond: number;
  /** Median of the per-round ratios to the plain control of the same framework, with their range. */
  readonly ratioToPlain: Ratio;
  /** The same against the ALS control. */
  readonly ratioToAls: Ratio;
  readonly cpuUsPerRequest: number;
  /** Extra server CPU per request over the plain control (medians). */
  readonly cpuUsOverPlain: number;
  readonly queriesPerRequest: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly rounds: readonly number[];
  /** Server CPU µs per request in each round. */
  readonly cpuRounds: readonly number[];
}

interface Ratio {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

function summarize(variant: Variant, samples: ReadonlyMap<VariantName, Sample[]>): Figures {
  const own = samples.get(variant.name)!;
  const paired = (control: VariantName): Ratio => {
    const base = samples.get(control)!;
    const ratios = own.map((s, i) => s.requestsPerSecond / base[i]!.requestsPerSecond);
    const r3 = (v: number): number => Math.round(v * 1000) / 1000;
    return { median: r3(median(ratios)), min: r3(Math.min(...ratios)), max: r3(Math.max(...ratios)) };
  };
  const cpu = median(own.map((s) => s.cpuUsPerRequest));
  const plainCpu = median(samples.get(variant.plain)!.map((s) => s.cpuUsPerRequest));
  const totalRequests = own.reduce((sum, s) => sum + s.requests, 0);
  const totalQueries = own.reduce((sum, s) => sum + s.queriesPerRequest * s.requests, 0);
  return {
    requestsPerSecond: Math.round(median(own.map((s) => s.requestsPerSecond))),
    ratioToPlain: paired(variant.plain),
    ratioToAls: paired(variant.als),
    cpuUsPerRequest: Math.round(cpu),
    cpuUsOverPlain: Math.round(cpu - plainCpu),
    queriesPerRequest: Math.round((totalQueries / totalRequests) * 1000) / 1000,
    p50Ms: median(own.map((s) => s.p50Ms)),
    p99Ms: median(own.map((s) => s.p99Ms)),
    rounds: own.map((s) => Math.round(s.requestsPerSecond)),
    cpuRounds: own.map((s) => Math.round(s.cpuUsPerRequest)),
  };
}

function renderMarkdown(
  report: { generatedAt: string; environment: Awaited<ReturnType<typeof describeEnvironment>>; settings: { tenants: number; rounds: number; seconds: number; connections: number; cpus: string } },
  figures: Partial<Record<VariantName, Figures>>,
  profiles: Partial<Record<VariantName, ReturnType<typeof profileShares>>>,
): string {
  const { environment, settings } = report;
  const cpu = environment.machine.cpuWhileMeasuring;
  const ratio = (r: Ratio): string => (r.min === r.max ? `${r.median}` : `${r.median} (${r.min}-${r.max})`);
  const row = (label: string, name: VariantName): string[] => {
    const f = figures[name];
    if (f === undefined) return [];
    const vsPlain = name.endsWith('-plain') ? '1' : ratio(f.ratioToPlain);
    const vsAls = name.endsWith('-plain') ? '' : name.endsWith('-als') ? '1' : ratio(f.ratioToAls);
    const extra = name.endsWith('-plain') ? '' : ` (${f.cpuUsOverPlain >= 0 ? '+' : ''}${f.cpuUsOverPlain})`;
    return [`| ${label} | ${f.requestsPerSecond} | ${vsPlain} | ${vsAls} | ${f.cpuUsPerRequest}${extra} | ${f.queriesPerRequest} | ${f.p50Ms} / ${f.p99Ms} |`];
  };
  const table = (framework: 'Express' | 'Fastify', prefix: 'express' | 'fastify', tenancyLabel: string): string[] =>
    figures[`${prefix}-plain`] === undefined ? [] : [
    `| ${framework} | requests/s | x plain | x ALS control | server CPU µs/request (vs plain) | statements/request | p50 / p99 ms |`,
    '|---|---:|---:|---:|---:|---:|---:|',
    ...row(`plain ${framework} + TypeORM, no tenancy`, `${prefix}-plain`),
    ...row(`plain ${framework} + an AsyncLocalStorage run per request`, `${prefix}-als`),
    ...row(`${tenancyLabel}, 1 tenant`, `${prefix}-tenancy-1`),
    ...row(`${tenancyLabel}, ${settings.tenants} tenants round-robin`, `${prefix}-tenancy-n`),
    '',
  ];
  return [
    `<!-- generated by bench/http/run.ts on ${report.generatedAt}; do not edit by hand -->`,
    '',
    `GET /clients/:id, autocannon with ${settings.connections} connections, ${settings.rounds} rotating rounds of ${settings.seconds} s per variant; ` +
      `${environment.machine.cpuModel}, ${environment.machine.cores} cores, Node ${environment.node}, PostgreSQL ${environment.postgres.version} ` +
      `(${environment.postgres.embedded ? 'embedded' : 'server'}); each server in its own process, ${settings.cpus}` +
      (cpu === undefined ? '.' : `; other processes used ${cpu.otherCores} of ${cpu.cores} cores on average while this was measured.`),
    '',
    'Ratios are the median of per-round ratios to the control measured in the same round (range in brackets). ' +
      '"Server CPU" is the server process\'s user + system time per request; "statements" counts every message its pg clients sent (round trips).',
    '',
    ...table('Express', 'express', 'example service (tenant middleware)'),
    ...table('Fastify', 'fastify', 'Fastify tenancyPlugin'),
    ...profileTables(profiles, settings.tenants),
  ].join('\n');
}

function profileTables(profiles: Partial<Record<VariantName, ReturnType<typeof profileShares>>>, tenants: number): string[] {
  const measured = VARIANTS.filter((v) => profiles[v.name] !== undefined);
  if (measured.length === 0) return [];
  const label = (name: VariantName): string => name.replace('-tenancy-1', ' tenancy, 1 tenant').replace('-tenancy-n', ` tenancy, ${tenants} tenants`).replace('-als', ' ALS').replace('-plain', ' plain');
  return [
    'Where each server\'s CPU went: one profiled run of each variant after the measured ones, in percent of the server\'s busy time ' +
      '("typeorm-tenants" is the library\'s own code; "async hooks" what AsyncLocalStorage costs Node 20 per promise; "native" mostly the sockets\' system calls).',
    '',
    `| variant | ${SHARE_GROUPS.join(' | ')} |`,
    `|---|${SHARE_GROUPS.map(() => '---:').join('|')}|`,
    ...measured.map((v) => `| ${label(v.name)} | ${SHARE_GROUPS.map((g) => profiles[v.name]!.shares[g]).join(' | ')} |`),
    '',
    'The library\'s costliest functions (percent of the server\'s busy time):',
    '',
    ...measured
      .filter((v) => profiles[v.name]!.libraryTop.length > 0)
      .map((v) => `- ${label(v.name)}: ${profiles[v.name]!.libraryTop.slice(0, 5).map((f) => `${f.name} ${f.percent}`).join(', ')}`),
    '',
  ];
}

/**
 * The order of one round: a framework's variants next to each other (so a
 * variant and its controls are measured within seconds of each other: this
 * machine's speed drifts over tens of seconds), rotated each round so none
 * always follows the same neighbour, and the frameworks taking turns to go
 * first.
 */
function roundOrder(variants: readonly Variant[], round: number): Variant[] {
  const groups = [...new Set(variants.map((v) => v.plain))].map((plain) => variants.filter((v) => v.plain === plain));
  if (round % 2 === 1) groups.reverse();
  return groups.flatMap((group) => group.map((_, j) => group[(round + j) % group.length]!));
}

interface CpuPinning {
  /** The cores, as described in the report. */
  readonly description: string;
  /** Pins this process (the load generator, and the embedded PostgreSQL it starts next) to every core but the first. */
  self(): void;
  /** Pins a server process to the cores of the load generator, where it waits. */
  idle(pid: number): void;
  /** Gives a server process the first core to itself while it is measured. */
  active(pid: number): void;
}

/**
 * With `taskset` (Linux) and two cores or more: the JavaScript thread of the
 * server being measured gets the first core to itself; autocannon,
 * PostgreSQL, the server's helper threads and the servers waiting their turn
 * share the others. Otherwise the server
 * trades cores with the load generator from one round to the next, and a
 * server just measured (V8 collects garbage and finishes compiling after
 * the load stops) takes CPU from the next one.
 */
function cpuPinning(): CpuPinning | undefined {
  const cores = cpus().length;
  if (cores < 2 || process.platform !== 'linux') return undefined;
  const taskset = (args: string[]): boolean => spawnSync('taskset', args, { stdio: 'ignore' }).status === 0;
  if (!taskset(['-p', String(process.pid)])) return undefined;
  const others = cores === 2 ? '1' : `1-${cores - 1}`;
  const pin = (cpuList: string, pid: number, threads: 'all' | 'main'): void => {
    if (!taskset([...(threads === 'all' ? ['-a'] : []), '-pc', cpuList, String(pid)])) {
      throw new Error(`taskset could not pin process ${pid} to cores ${cpuList}; run with --no-pin.`);
    }
  };
  return {
    description:
      `the JavaScript thread of the server measured pinned to core 0; its helper threads, autocannon, PostgreSQL and the idle servers ` +
      `to core${cores === 2 ? '' : 's'} ${others}`,
    self: () => pin(others, process.pid, 'all'),
    idle: (pid) => pin(others, pid, 'all'),
    // The main thread only: V8's garbage-collection and compiler threads stay on the other cores.
    active: (pid) => pin('0', pid, 'main'),
  };
}

function runSetup(env: Record<string, string>): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = fork(join(__dirname, 'server.js'), [], { env: { ...process.env, ...env, SERVER: 'setup' }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`The benchmark's setup exited with code ${code}.`))));
  });
}

async function startServer(name: ServerName, env: Record<string, string>, pin: CpuPinning | undefined): Promise<RunningServer> {
  const child: ChildProcess = fork(join(__dirname, 'server.js'), [], { env: { ...process.env, ...env, SERVER: name }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  if (child.pid !== undefined) pin?.idle(child.pid);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`The benchmark server ${name} exited early (code ${code}).`)));
    child.once('message', (message) => resolve((message as { port: number }).port));
  });
  return {
    name,
    port,
    pid: child.pid!,
    stats: () => ask<ServerStats>(child, 'stats', 'queries'),
    startProfile: async () => {
      await ask(child, 'profile-start', 'profiling');
    },
    stopProfile: async (file) => {
      const { profiled } = await ask<{ profiled: string }>(child, { profileTo: file }, 'profiled');
      if (profiled !== 'ok') throw new Error(`The profiler of ${name} failed: ${profiled}`);
    },
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
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

function load(port: number, slugs: readonly string[], rows: number, seconds: number, connections: number): Promise<autocannon.Result> {
  let next = 0;
  return autocannon({
    url: `http://127.0.0.1:${port}`,
    connections,
    duration: seconds,
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

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});

function argument(name: string): string | undefined {
  const at = process.argv.indexOf(name);
  return at === -1 ? undefined : process.argv[at + 1];
}

function numberArgument(name: string): number | undefined {
  const value = argument(name);
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!Number.isFinite(number) || number <= 0) throw new Error(`${name} needs a positive number; got ${value}.`);
  return number;
}
