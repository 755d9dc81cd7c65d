import { readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';

/**
 * How much CPU other processes took while the benchmark measured: the whole
 * machine's busy time (/proc/stat) minus this process and its descendants
 * (the embedded PostgreSQL server and its backends). Linux only; elsewhere
 * `undefined`. Unlike the load average, it does not count the benchmark's own
 * work, so it says whether someone else disturbed the figures.
 */
export interface CpuSnapshot {
  readonly machineBusy: number;
  readonly machineTotal: number;
  readonly ownTree: number;
}

export interface CpuShare {
  /** Cores' worth of CPU used by this process and its children (the embedded server), on average. */
  readonly benchmarkCores: number;
  /** Cores' worth of CPU used by every other process, on average. */
  readonly otherCores: number;
  readonly cores: number;
}

export function snapshotCpu(): CpuSnapshot | undefined {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = fields;
    const busy = user + nice + system + irq + softirq + steal;
    return { machineBusy: busy, machineTotal: busy + idle + iowait, ownTree: treeTicks(process.pid) };
  } catch {
    return undefined;
  }
}

export function cpuShareBetween(start: CpuSnapshot | undefined, end: CpuSnapshot | undefined): CpuShare | undefined {
  if (start === undefined || end === undefined) return undefined;
  const total = end.machineTotal - start.machineTotal;
  if (total <= 0) return undefined;
  const cores = cpus().length;
  const busy = end.machineBusy - start.machineBusy;
  const own = Math.min(busy, end.ownTree - start.ownTree);
  const round = (v: number): number => Math.round(v * 100) / 100;
  return { benchmarkCores: round((own / total) * cores), otherCores: round((Math.max(0, busy - own) / total) * cores), cores };
}

/** CPU ticks of `root` and all its descendants (with the reaped children each has waited for). */
function treeTicks(root: number): number {
  const stats = new Map<number, { ppid: number; ticks: number }>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const raw = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
      const rest = raw.slice(raw.lastIndexOf(')') + 2).split(' ');
      const ppid = Number(rest[1]);
      const ticks = Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14]);
      stats.set(Number(entry), { ppid, ticks });
    } catch {
      // the process ended while we looked
    }
  }
  const children = new Map<number, number[]>();
  for (const [pid, { ppid }] of stats) {
    const list = children.get(ppid);
    if (list === undefined) children.set(ppid, [pid]);
    else list.push(pid);
  }
  let total = 0;
  const stack = [root];
  while (stack.length > 0) {
    const pid = stack.pop()!;
    total += stats.get(pid)?.ticks ?? 0;
    stack.push(...(children.get(pid) ?? []));
  }
  return total;
}
