import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { median } from '../measure';
import type { GapFigures } from './gap';

/**
 * `node build/bench/routing/gap-summary.js bench/results/routing-gap-1.json ...`:
 * the tenant-count gap figures (bench/routing/gap.ts) of several routing
 * runs side by side, as markdown: each run's value and, in bold, the median
 * over the runs.
 */

interface RunFile {
  readonly generatedAt: string;
  readonly gap?: readonly GapFigures[];
  readonly environment?: { machine?: { cpuWhileMeasuring?: { otherCores: number; benchmarkCores: number } } };
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node build/bench/routing/gap-summary.js <routing json>...');
  process.exit(2);
}
const runs = files.map((f) => ({ name: basename(f, '.json'), data: JSON.parse(readFileSync(f, 'utf8')) as RunFile }));

const cells = runs[0]!.data.gap?.map((g) => [g.workload, g.concurrency] as const) ?? [];
const find = (run: RunFile, workload: string, concurrency: number): GapFigures | undefined =>
  run.gap?.find((g) => g.workload === workload && g.concurrency === concurrency);

const ROWS: ReadonlyArray<readonly [string, (g: GapFigures) => number | undefined, (v: number) => string]> = [
  ['B1/A', (g) => g.ratios['B1/A']?.median, (v) => v.toFixed(3)],
  ['B100/A', (g) => g.ratios['B100/A']?.median, (v) => v.toFixed(3)],
  ['B100/B1', (g) => g.ratios['B100/B1']?.median, (v) => v.toFixed(3)],
  ['S100/B1 (client)', (g) => g.ratios['S100/B1']?.median, (v) => v.toFixed(3)],
  ['B100/S100 (PostgreSQL)', (g) => g.ratios['B100/S100']?.median, (v) => v.toFixed(3)],
  ['C100/C1 (PostgreSQL, via C)', (g) => g.ratios['C100/C1']?.median, (v) => v.toFixed(3)],
  ['us/op B100 - A', (g) => g.deltasUs['B100-A']?.median, (v) => v.toFixed(1)],
  ['us/op B1 - A (library, 1 tenant)', (g) => g.deltasUs['B1-A']?.median, (v) => v.toFixed(1)],
  ['us/op B100 - B1', (g) => g.deltasUs['B100-B1']?.median, (v) => v.toFixed(1)],
  ['us/op S100 - B1 (client)', (g) => g.deltasUs['S100-B1']?.median, (v) => v.toFixed(1)],
  ['us/op B100 - S100 (PostgreSQL)', (g) => g.deltasUs['B100-S100']?.median, (v) => v.toFixed(1)],
  ['us/op C100 - C1 (PostgreSQL, via C)', (g) => g.deltasUs['C100-C1']?.median, (v) => v.toFixed(1)],
  ['us/op B1 (wall time per op)', (g) => g.usPerOp['B1'], (v) => v.toFixed(1)],
  ['client share of B100 - B1 (wall time)', (g) => g.shareOfTenantGap?.client, (v) => `${Math.round(v * 100)}%`],
  ['client CPU us/op B1', (g) => g.cpuUsPerOp?.['B1']?.client, (v) => v.toFixed(1)],
  ['server CPU us/op B1', (g) => g.cpuUsPerOp?.['B1']?.server ?? undefined, (v) => v.toFixed(1)],
  ['client CPU us/op B1 - A', (g) => g.cpuDeltasUs?.client['B1-A']?.median, (v) => v.toFixed(1)],
  ['server CPU us/op B1 - A', (g) => g.cpuDeltasUs?.server['B1-A']?.median, (v) => v.toFixed(1)],
  ['client CPU us/op B100 - B1', (g) => g.cpuDeltasUs?.client['B100-B1']?.median, (v) => v.toFixed(1)],
  ['client CPU us/op S100 - B1', (g) => g.cpuDeltasUs?.client['S100-B1']?.median, (v) => v.toFixed(1)],
  ['client CPU us/op B100 - S100', (g) => g.cpuDeltasUs?.client['B100-S100']?.median, (v) => v.toFixed(1)],
  ['client main-thread CPU us/op B1', (g) => g.cpuUsPerOp?.['B1']?.clientMain ?? undefined, (v) => v.toFixed(1)],
  ['client main-thread CPU us/op B1 - A', (g) => g.cpuDeltasUs?.clientMain?.['B1-A']?.median, (v) => v.toFixed(1)],
  ['client main-thread CPU us/op B100 - B1', (g) => g.cpuDeltasUs?.clientMain?.['B100-B1']?.median, (v) => v.toFixed(1)],
  ['client main-thread CPU us/op S100 - B1', (g) => g.cpuDeltasUs?.clientMain?.['S100-B1']?.median, (v) => v.toFixed(1)],
  ['client main-thread CPU us/op B100 - S100', (g) => g.cpuDeltasUs?.clientMain?.['B100-S100']?.median, (v) => v.toFixed(1)],
  ['server CPU us/op B100 - B1', (g) => g.cpuDeltasUs?.server['B100-B1']?.median, (v) => v.toFixed(1)],
  ['server CPU us/op S100 - B1', (g) => g.cpuDeltasUs?.server['S100-B1']?.median, (v) => v.toFixed(1)],
  ['server CPU us/op B100 - S100', (g) => g.cpuDeltasUs?.server['B100-S100']?.median, (v) => v.toFixed(1)],
  ['server CPU us/op C100 - C1', (g) => g.cpuDeltasUs?.server['C100-C1']?.median, (v) => v.toFixed(1)],
  ['client CPU us/op C100 - C1', (g) => g.cpuDeltasUs?.client['C100-C1']?.median, (v) => v.toFixed(1)],
  ['client share of B100 - B1 (CPU)', (g) => g.cpuShareOfTenantGap?.client, (v) => `${Math.round(v * 100)}%`],
];

const out: string[] = [];
for (const [workload, concurrency] of cells) {
  out.push(`**${workload}, concurrency ${concurrency}**`);
  out.push('');
  out.push(`| figure | ${runs.map((r) => r.name).join(' | ')} | median |`);
  out.push(`|---|${runs.map(() => '---:').join('|')}|---:|`);
  for (const [label, pick, fmt] of ROWS) {
    const values = runs.map((r) => {
      const g = find(r.data, workload, concurrency);
      return g === undefined ? undefined : pick(g);
    });
    const present = values.filter((v): v is number => v !== undefined);
    if (present.length === 0) continue;
    out.push(`| ${label} | ${values.map((v) => (v === undefined ? '-' : fmt(v))).join(' | ')} | **${fmt(median(present))}** |`);
  }
  out.push('');
}
const load = runs.map((r) => {
  const c = r.data.environment?.machine?.cpuWhileMeasuring;
  return c === undefined ? `${r.name}: ?` : `${r.name}: ${c.otherCores}`;
});
out.push(`Cores used by other processes while measuring (of 2): ${load.join(', ')}.`);
console.log(out.join('\n'));
