import { readFileSync } from 'node:fs';
import { sep } from 'node:path';

/** Where a server's CPU went, by kind of code, in percent of its busy (non-idle) samples. */
export type Shares = Readonly<Record<ShareGroup, number>>;

export type ShareGroup =
  | 'typeorm-tenants'
  | 'async hooks'
  | 'framework'
  | 'typeorm'
  | 'pg'
  | 'node (JavaScript)'
  | 'native (syscalls, C++)'
  | 'garbage collector'
  | 'other';

export const SHARE_GROUPS: readonly ShareGroup[] = [
  'typeorm-tenants',
  'async hooks',
  'framework',
  'typeorm',
  'pg',
  'node (JavaScript)',
  'native (syscalls, C++)',
  'garbage collector',
  'other',
];

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** The shares of a V8 `.cpuprofile`, plus the library's own functions that took the most (percent of busy samples). */
export function profileShares(file: string, librarySourceDir: string): { shares: Shares; libraryTop: Array<{ name: string; percent: number }> } {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const totals = new Map<ShareGroup, number>(SHARE_GROUPS.map((group) => [group, 0]));
  const library = new Map<string, number>();
  let busy = 0;
  for (let i = 0; i < profile.samples.length; i += 1) {
    const frame = nodes.get(profile.samples[i]!)!.callFrame;
    const time = profile.timeDeltas[i] ?? 0;
    const group = groupOf(frame, librarySourceDir);
    if (group === undefined) continue; // idle
    busy += time;
    totals.set(group, totals.get(group)! + time);
    if (group === 'typeorm-tenants') {
      const name = `${frame.functionName || '(anonymous)'} (${frame.url.slice(frame.url.indexOf(librarySourceDir) + librarySourceDir.length + 1)}:${frame.lineNumber + 1})`;
      library.set(name, (library.get(name) ?? 0) + time);
    }
  }
  const percent = (time: number): number => (busy === 0 ? 0 : Math.round((1000 * time) / busy) / 10);
  return {
    shares: Object.fromEntries(SHARE_GROUPS.map((group) => [group, percent(totals.get(group)!)])) as Record<ShareGroup, number>,
    libraryTop: [...library]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 8)
      .map(([name, time]) => ({ name, percent: percent(time) })),
  };
}

const TYPEORM = new Set(['typeorm']);
const PG = new Set(['pg', 'pg-pool', 'pg-protocol', 'pg-types', 'pg-connection-string', 'postgres-array', 'postgres-date', 'postgres-bytea', 'postgres-interval', 'pg-int8']);

function groupOf(frame: ProfileNode['callFrame'], librarySourceDir: string): ShareGroup | undefined {
  const { url, functionName } = frame;
  if (url === '') {
    if (functionName === '(idle)') return undefined;
    if (functionName === '(garbage collector)') return 'garbage collector';
    if (functionName === '(program)') return 'other';
    return 'native (syscalls, C++)';
  }
  if (url.includes('async_hooks')) return 'async hooks';
  if (url.startsWith('node:')) return 'node (JavaScript)';
  const path = url.startsWith('file://') ? decodeURIComponent(url.slice('file://'.length)) : url;
  if (path.startsWith(librarySourceDir + sep)) return 'typeorm-tenants';
  const match = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(path);
  if (match === null) return 'other'; // the bench's own server, the example service, entities
  if (TYPEORM.has(match[1]!)) return 'typeorm';
  if (PG.has(match[1]!)) return 'pg';
  if (match[1] === 'class-transformer' || match[1] === 'reflect-metadata') return 'other';
  return 'framework';
}
