import 'reflect-metadata';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector';
import { SourceMap } from 'node:module';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startScratchDatabase } from '../../support/database';
import type { Workload } from '../config';
import { collectGarbage, runBatch } from '../measure';
import { openContender, type Contender } from './contenders';
import { buildRoutingFixture } from './fixture';

/**
 * `node build/bench/routing/profile.js [--contenders=B1,S100,B100] [--workload=find]
 * [--ops=20000] [--tenants=100] [--rounds=3] [--dir=/tmp/profiles]`: where
 * the client's CPU goes, contender by contender, on the routing benchmark's
 * data. Opens the contenders, warms them up like the routing benchmark, then
 * runs `--ops` operations of each at concurrency 1, several rounds
 * alternating, each under the V8 CPU profiler (100 µs sampling), and prints
 * CPU microseconds per operation: in all, by package (the library's src/,
 * typeorm, pg, node internals, GC) and the functions that differ most
 * between the first contender and each other one (self time, mapped back to
 * TypeScript lines through the source maps). The .cpuprofile files (Chrome
 * DevTools, speedscope) are written to `--dir`.
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const ROOT = join(__dirname, '..', '..', '..');

function parseFlags(argv: readonly string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (const arg of argv) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (m === null) throw new Error(`Unknown argument "${arg}"`);
    flags.set(m[1]!, m[2] ?? 'true');
  }
  return flags;
}

function post<T>(session: Session, method: string, params?: object): Promise<T> {
  return new Promise((resolve, reject) => {
    session.post(method, params ?? {}, (error, result) => (error ? reject(error) : resolve(result as T)));
  });
}

/** Package a frame belongs to. */
function packageOf(url: string, functionName: string): string {
  if (url === '') {
    if (functionName === '(garbage collector)') return 'gc';
    if (functionName === '(idle)') return 'idle';
    if (functionName === '(program)') return 'program';
    return 'native';
  }
  if (url.startsWith('node:')) return 'node';
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m !== null) return m[1]!;
  if (url.includes('/build/src/')) return 'typeorm-tenants (src/)';
  if (url.includes('/build/bench/')) return 'bench';
  return 'other';
}

const sourceMaps = new Map<string, SourceMap | null>();

/** `file:line` of a frame, in TypeScript when a source map exists. */
function locationOf(url: string, line: number, column: number): string {
  if (url === '' || url.startsWith('node:')) return url || '(native)';
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  // Packages are reported by their JavaScript file and line (as installed).
  const inPackage = path.lastIndexOf('/node_modules/');
  if (inPackage >= 0) return `${path.slice(inPackage + 1)}:${line + 1}`;
  let map = sourceMaps.get(path);
  if (map === undefined) {
    map = null;
    const mapPath = `${path}.map`;
    if (existsSync(mapPath)) {
      try {
        map = new SourceMap(JSON.parse(readFileSync(mapPath, 'utf8')));
      } catch {
        map = null;
      }
    }
    sourceMaps.set(path, map);
  }
  if (map !== null) {
    const entry = map.findEntry(line, column) as { originalSource?: string; originalLine?: number };
    if (entry.originalSource !== undefined && entry.originalLine !== undefined) {
      const source = entry.originalSource.startsWith('file://') ? fileURLToPath(entry.originalSource) : join(path, '..', entry.originalSource);
      return `${relative(ROOT, source)}:${entry.originalLine + 1}`;
    }
  }
  return `${relative(ROOT, path)}:${line + 1}`;
}

interface Tally {
  /** Microseconds of samples, by key. */
  readonly byPackage: Map<string, number>;
  readonly byFunction: Map<string, number>;
  /** Inclusive time of src/ functions (each counted once per sample). */
  readonly inclusiveSrc: Map<string, number>;
  busyUs: number;
}

function tally(profile: CpuProfile, into: Tally): void {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const label = (n: ProfileNode): string =>
    `${n.callFrame.functionName || '(anonymous)'} ${locationOf(n.callFrame.url, n.callFrame.lineNumber, n.callFrame.columnNumber)}`;
  const labels = new Map<number, string>();
  for (let k = 0; k < profile.samples.length; k++) {
    const id = profile.samples[k]!;
    // timeDeltas[k] is the time before sample k; attribute the next delta to it.
    const us = profile.timeDeltas[k + 1] ?? 0;
    const node = byId.get(id)!;
    const pkg = packageOf(node.callFrame.url, node.callFrame.functionName);
    into.byPackage.set(pkg, (into.byPackage.get(pkg) ?? 0) + us);
    if (pkg === 'idle') continue;
    into.busyUs += us;
    let l = labels.get(id);
    if (l === undefined) labels.set(id, (l = `[${pkg}] ${label(node)}`));
    into.byFunction.set(l, (into.byFunction.get(l) ?? 0) + us);
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const n = byId.get(at)!;
      if (packageOf(n.callFrame.url, n.callFrame.functionName) !== 'typeorm-tenants (src/)') continue;
      const key = label(n);
      if (seen.has(key)) continue;
      seen.add(key);
      into.inclusiveSrc.set(key, (into.inclusiveSrc.get(key) ?? 0) + us);
    }
  }
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2));
  const names = (flags.get('contenders') ?? 'B1,S100,B100').split(',');
  const workload = (flags.get('workload') ?? 'find') as Workload;
  const ops = Number(flags.get('ops') ?? 20_000);
  const tenants = Number(flags.get('tenants') ?? 100);
  const rounds = Number(flags.get('rounds') ?? 3);
  const dir = flags.get('dir') ?? join(ROOT, '.tmp', 'profiles');
  await mkdir(dir, { recursive: true });

  const database = await startScratchDatabase({ settings: { max_connections: 200 } });
  const contenders: Contender[] = [];
  const session = new Session();
  try {
    const fixture = await buildRoutingFixture(database.url, tenants, 1000);
    const settings = { url: database.url, poolSize: 10, poolSizePerTenantE: 2, idleTimeoutMillis: 120_000 };
    for (const name of names) contenders.push(await openContender(name, fixture, settings));
    for (const c of contenders) {
      await runBatch(c.ops.find, Math.max(200, 2 * c.tenants), 1, 1_000_000);
      await runBatch(c.ops.insert, Math.max(100, c.tenants), 1, 1_000_000);
      await runBatch(c.ops[workload], ops / 2, 1, 2_000_000);
    }
    session.connect();
    await post(session, 'Profiler.enable');
    await post(session, 'Profiler.setSamplingInterval', { interval: 100 });
    const tallies = new Map<string, Tally>(names.map((n) => [n, { byPackage: new Map(), byFunction: new Map(), inclusiveSrc: new Map(), busyUs: 0 }]));
    const wall = new Map<string, number>(names.map((n) => [n, 0]));
    const cpu = new Map<string, number>(names.map((n) => [n, 0]));
    let index = 3_000_000;
    for (let r = 0; r < rounds; r++) {
      for (let j = 0; j < contenders.length; j++) {
        const c = contenders[(r + j) % contenders.length]!;
        collectGarbage();
        await post(session, 'Profiler.start');
        const cpu0 = process.cpuUsage();
        const batch = await runBatch(c.ops[workload], ops, 1, index);
        const used = process.cpuUsage(cpu0);
        const { profile } = await post<{ profile: CpuProfile }>(session, 'Profiler.stop');
        index += ops;
        wall.set(c.name, wall.get(c.name)! + batch.elapsedMs * 1000);
        cpu.set(c.name, cpu.get(c.name)! + used.user + used.system);
        tally(profile, tallies.get(c.name)!);
        await writeFile(join(dir, `${c.name}-${workload}-${r + 1}.cpuprofile`), JSON.stringify(profile));
      }
    }
    const total = ops * rounds;
    const perOp = (us: number): string => (us / total).toFixed(1);
    console.log(`workload ${workload}, concurrency 1, ${rounds} rounds x ${ops} ops per contender, ${tenants} tenants; profiles in ${dir}`);
    console.log('contender  wall us/op  process CPU us/op  sampled busy us/op');
    for (const n of names) {
      console.log(`${n.padEnd(9)}  ${perOp(wall.get(n)!).padStart(10)}  ${perOp(cpu.get(n)!).padStart(17)}  ${perOp(tallies.get(n)!.busyUs).padStart(18)}`);
    }
    const packages = [...new Set(names.flatMap((n) => [...tallies.get(n)!.byPackage.keys()]))].filter((p) => p !== 'idle');
    packages.sort((a, b) => (tallies.get(names[0]!)!.byPackage.get(b) ?? 0) - (tallies.get(names[0]!)!.byPackage.get(a) ?? 0));
    console.log('\nself time by package, us/op');
    console.log(`${'package'.padEnd(28)}${names.map((n) => n.padStart(9)).join('')}`);
    for (const p of packages) console.log(`${p.padEnd(28)}${names.map((n) => perOp(tallies.get(n)!.byPackage.get(p) ?? 0).padStart(9)).join('')}`);
    const base = tallies.get(names[0]!)!;
    for (const n of names.slice(1)) {
      const t = tallies.get(n)!;
      const keys = new Set([...base.byFunction.keys(), ...t.byFunction.keys()]);
      const diffs = [...keys].map((k) => [k, (t.byFunction.get(k) ?? 0) - (base.byFunction.get(k) ?? 0)] as const);
      diffs.sort((a, b) => b[1] - a[1]);
      console.log(`\nfunctions whose self time grew most, ${n} vs ${names[0]} (us/op: ${names[0]} -> ${n})`);
      for (const [k, d] of diffs.slice(0, 25)) console.log(`  +${perOp(d).padStart(5)}  ${perOp(base.byFunction.get(k) ?? 0).padStart(5)} -> ${perOp(t.byFunction.get(k) ?? 0).padStart(5)}  ${k}`);
      console.log(`functions whose self time shrank most, ${n} vs ${names[0]}`);
      for (const [k, d] of diffs.slice(-8).reverse()) console.log(`  ${perOp(d).padStart(6)}  ${perOp(base.byFunction.get(k) ?? 0).padStart(5)} -> ${perOp(t.byFunction.get(k) ?? 0).padStart(5)}  ${k}`);
    }
    console.log('\ninclusive time of the library\'s own functions (src/), us/op');
    const srcKeys = [...new Set(names.flatMap((n) => [...tallies.get(n)!.inclusiveSrc.keys()]))];
    srcKeys.sort((a, b) => (base.inclusiveSrc.get(b) ?? 0) - (base.inclusiveSrc.get(a) ?? 0));
    console.log(`${''.padEnd(8)}${names.map((n) => n.padStart(9)).join('')}`);
    for (const k of srcKeys.slice(0, 20)) console.log(`${names.map((n) => perOp(tallies.get(n)!.inclusiveSrc.get(k) ?? 0).padStart(9)).join('')}  ${k}`);
  } finally {
    session.disconnect();
    for (const c of contenders.reverse()) await c.close().catch(() => undefined);
    await database.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
