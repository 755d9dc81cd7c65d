import { readFileSync } from 'node:fs';
import type { ConnectionMonitor } from './connections';

/**
 * CPU time each timed batch used, on both sides: the benchmark process (the
 * client: the contender's JavaScript, pg, GC; `process.cpuUsage()`, all
 * threads, and apart the main thread alone, which runs the JavaScript; V8's
 * helper threads doing parallel scavenges, concurrent marking and compiling
 * take a large part of the rest) and the
 * PostgreSQL backends of the contender's pool (`/proc/<pid>/schedstat`,
 * nanoseconds on CPU, read for the pids pg_stat_activity lists under the
 * contender's application_name). Readings are taken just before and just
 * after each batch, outside the timed part. Unlike wall time, CPU time is
 * hardly moved by other processes taking turns on the cores, so it splits a
 * difference between contenders into the client's part and the server's
 * even on a busy machine (it still moves somewhat: shared caches, frequency).
 *
 * Server CPU is only read when the server runs on this machine (the embedded
 * one, or DATABASE_URL on localhost) and Linux exposes schedstat; otherwise
 * it is absent. A batch during which one of the contender's backends exited
 * (a connection recycled) has no server figure; a backend that started
 * during the batch counts whole.
 */
export interface CpuFigures {
  /** Client CPU per op over all rounds, in microseconds (every thread of the process: JavaScript, GC helpers, compiler). */
  readonly clientUsPerOp: number;
  /** The part of it on the main (JavaScript) thread, when Linux exposes it (`/proc/thread-self/schedstat`). */
  readonly clientMainUsPerOp: number | null;
  /** Server CPU per op over the rounds that have it, in microseconds. */
  readonly serverUsPerOp: number | null;
  /** Per round, in round order. */
  readonly roundClientUsPerOp: readonly number[];
  readonly roundClientMainUsPerOp: ReadonlyArray<number | null>;
  readonly roundServerUsPerOp: ReadonlyArray<number | null>;
}

interface Start {
  readonly name: string;
  readonly server: Map<number, number> | undefined;
  readonly client: NodeJS.CpuUsage;
  readonly mainNs: number | undefined;
}

interface Reading {
  readonly ops: number;
  readonly clientUs: number;
  readonly clientMainUs: number | null;
  readonly serverUs: number | null;
}

/** Nanoseconds the calling (main) thread has run, when Linux exposes it. */
function mainThreadNanos(): number | undefined {
  try {
    return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]);
  } catch {
    return undefined;
  }
}

/** Nanoseconds `pid` has run, or undefined when it is not a local PostgreSQL process. */
function cpuNanosOf(pid: number): number | undefined {
  try {
    const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    if (!comm.startsWith('postgres') && !comm.startsWith('postmaster')) return undefined;
    return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]);
  } catch {
    return undefined;
  }
}

export class BatchCpuMeter {
  readonly #monitor: ConnectionMonitor;
  readonly #applicationNames: ReadonlyMap<string, string>;
  readonly #readings = new Map<string, Reading[]>();
  #start: Start | undefined;
  #serverReadable = true;

  /** `applicationNames`: contender name to the application_name of its connections. */
  constructor(monitor: ConnectionMonitor, applicationNames: ReadonlyMap<string, string>) {
    this.#monitor = monitor;
    this.#applicationNames = applicationNames;
  }

  /** Before a batch of `name`. */
  async begin(name: string): Promise<void> {
    let server: Map<number, number> | undefined;
    if (this.#serverReadable) {
      server = new Map();
      for (const pid of await this.#monitor.backendPids(this.#applicationNames.get(name)!)) {
        const ns = cpuNanosOf(pid);
        if (ns === undefined) {
          this.#serverReadable = false;
          server = undefined;
          break;
        }
        server.set(pid, ns);
      }
    }
    this.#start = { name, server, client: process.cpuUsage(), mainNs: mainThreadNanos() };
  }

  /** After the batch of `name` that ran `ops` operations; `round` -1 (warm-up) is not kept. */
  async end(name: string, round: number, ops: number): Promise<void> {
    const start = this.#start;
    this.#start = undefined;
    if (start === undefined || start.name !== name) return;
    const mainNs = mainThreadNanos();
    const client = process.cpuUsage(start.client);
    let serverNs: number | null = null;
    if (start.server !== undefined) {
      serverNs = 0;
      for (const [pid, before] of start.server) {
        const now = cpuNanosOf(pid);
        if (now === undefined) {
          serverNs = null; // it exited during the batch: part of its time is lost
          break;
        }
        serverNs += now - before;
      }
      if (serverNs !== null) {
        for (const pid of await this.#monitor.backendPids(this.#applicationNames.get(name)!)) {
          if (start.server.has(pid)) continue;
          serverNs += cpuNanosOf(pid) ?? 0; // started during the batch
        }
      }
    }
    if (round < 0) return;
    let list = this.#readings.get(name);
    if (list === undefined) this.#readings.set(name, (list = []));
    list[round] = {
      ops,
      clientUs: client.user + client.system,
      clientMainUs: mainNs === undefined || start.mainNs === undefined ? null : (mainNs - start.mainNs) / 1000,
      serverUs: serverNs === null ? null : serverNs / 1000,
    };
  }

  figures(name: string): CpuFigures | undefined {
    const list = this.#readings.get(name);
    if (list === undefined || list.length === 0) return undefined;
    const ops = list.reduce((s, r) => s + r.ops, 0);
    const withServer = list.filter((r) => r.serverUs !== null);
    const serverOps = withServer.reduce((s, r) => s + r.ops, 0);
    const withMain = list.filter((r) => r.clientMainUs !== null);
    const mainOps = withMain.reduce((s, r) => s + r.ops, 0);
    return {
      clientUsPerOp: list.reduce((s, r) => s + r.clientUs, 0) / ops,
      clientMainUsPerOp: mainOps === 0 ? null : withMain.reduce((s, r) => s + r.clientMainUs!, 0) / mainOps,
      serverUsPerOp: serverOps === 0 ? null : withServer.reduce((s, r) => s + r.serverUs!, 0) / serverOps,
      roundClientUsPerOp: list.map((r) => r.clientUs / r.ops),
      roundClientMainUsPerOp: list.map((r) => (r.clientMainUs === null ? null : r.clientMainUs / r.ops)),
      roundServerUsPerOp: list.map((r) => (r.serverUs === null ? null : r.serverUs / r.ops)),
    };
  }
}
