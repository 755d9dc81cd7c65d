import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * `node build/bench/chart.js [--quick]` (the last step of `npm run bench`):
 * draws bench/results/chart.svg from latest.json (routing) and cache.json
 * (cache scale, backend memory); with --quick from quick.json and
 * cache-quick.json into chart-quick.svg.
 *
 * A small hand-made SVG, on purpose: no charting library is installed, and
 * the headless ones (chart.js + a canvas binding, vega) pull in native
 * builds or a browser for three simple panels. Strings in, a file out: it
 * runs anywhere Node runs. A missing input file leaves its panels with a
 * "no data" note instead of failing.
 */

const RESULTS_DIR = join(__dirname, '..', '..', 'bench', 'results');

interface RoutingFile {
  settings: { tenants: number; poolSizePerTenantE: number };
  routing: {
    cells: Array<{ workload: string; concurrency: number; contenders: Array<{ name: string; roundRatioToA: { median: number } }> }>;
    connections: Array<{ name: string; tenants: number; peakServerConnections: number }>;
  };
}

interface CacheFile {
  scale: Array<{ maxDataSources: number; cachedDataSources: number; heapPerDataSourceKiB: number; peakServerConnections: number; tenants: number; poolSize: number }>;
  backend: Array<{ maxLifetimeSeconds: number; steps: Array<{ schemasTouched: number; contextsMiB: { sum: number } }> }>;
}

const COLORS = { find: '#3b6fb6', insert: '#e08a2c', b: '#2e8b57', e: '#c0392b', heap: '#6a4c93', noRecycle: '#c0392b', recycle: '#2e8b57', grid: '#dddddd', text: '#222222' };

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const text = (x: number, y: number, s: string, attrs = ''): string => `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attrs}>${esc(s)}</text>`;
const fmt = (v: number): string => (v >= 100 ? Math.round(v).toLocaleString('en-US') : v >= 10 ? v.toFixed(0) : v.toFixed(1));

function readJson<T>(name: string): T | undefined {
  const path = join(RESULTS_DIR, name);
  if (!existsSync(path)) return undefined;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/** Panel 1: throughput relative to A at concurrency 1, a pair of bars (find, insert) per contender. */
function routingPanel(x0: number, y0: number, w: number, h: number, data: RoutingFile | undefined): string {
  const out: string[] = [text(x0, y0 - 8, 'Throughput vs plain TypeORM (A = 1.0), concurrency 1', 'font-weight="bold"')];
  const cells = data?.routing.cells.filter((c) => c.concurrency === 1) ?? [];
  if (cells.length === 0) return out.concat(text(x0 + 10, y0 + 30, 'no data (run the routing benchmark)')).join('\n');
  const names = cells[0]!.contenders.map((c) => c.name);
  const workloads = ['find', 'insert'].filter((wl) => cells.some((c) => c.workload === wl));
  const labelW = 60;
  const plotW = w - labelW - 40;
  const values = cells.flatMap((c) => c.contenders.map((x) => x.roundRatioToA.median));
  const max = Math.max(1.2, Math.ceil(Math.max(...values) * 10) / 10 + 0.1);
  const sx = (v: number): number => x0 + labelW + (Math.min(v, max) / max) * plotW;
  const rowH = (h - 30) / names.length;
  const barH = Math.min(12, (rowH - 6) / workloads.length);
  for (const t of [0, 0.25, 0.5, 0.75, 1, ...(max > 1.25 ? [1.25] : [])]) {
    out.push(`<line x1="${sx(t)}" y1="${y0}" x2="${sx(t)}" y2="${y0 + h - 30}" stroke="${t === 1 ? '#888' : COLORS.grid}" ${t === 1 ? 'stroke-dasharray="4 3"' : ''}/>`);
    out.push(text(sx(t), y0 + h - 16, t.toFixed(2), 'text-anchor="middle" font-size="11"'));
  }
  names.forEach((name, k) => {
    const yRow = y0 + k * rowH + 3;
    out.push(text(x0 + labelW - 8, yRow + (workloads.length * barH) / 2 + 4, name, 'text-anchor="end" font-size="12"'));
    workloads.forEach((wl, j) => {
      const value = cells.find((c) => c.workload === wl)?.contenders.find((c) => c.name === name)?.roundRatioToA.median;
      if (value === undefined) return;
      const y = yRow + j * barH;
      out.push(`<rect x="${sx(0)}" y="${y.toFixed(1)}" width="${(sx(value) - sx(0)).toFixed(1)}" height="${(barH - 1).toFixed(1)}" fill="${COLORS[wl as 'find' | 'insert']}"/>`);
      out.push(text(sx(value) + 3, y + barH - 2, value.toFixed(2), 'font-size="10"'));
    });
  });
  workloads.forEach((wl, j) => {
    out.push(`<rect x="${x0 + labelW + j * 90}" y="${y0 + h - 8}" width="10" height="10" fill="${COLORS[wl as 'find' | 'insert']}"/>`);
    out.push(text(x0 + labelW + j * 90 + 14, y0 + h + 1, wl === 'find' ? 'findOneBy' : 'insert', 'font-size="11"'));
  });
  out.push(text(x0 + labelW + 190, y0 + h + 1, 'median of round-by-round ratios', 'font-size="11" fill="#666"'));
  return out.join('\n');
}

/** A log-x, linear-or-log-y line panel. */
interface Series {
  readonly label: string;
  readonly color: string;
  readonly points: ReadonlyArray<readonly [number, number]>;
  readonly dashed?: boolean;
}

function linePanel(x0: number, y0: number, w: number, h: number, title: string, yLabel: string, series: readonly Series[], logY: boolean): string {
  const out: string[] = [text(x0, y0 - 8, title, 'font-weight="bold"')];
  // Room above the plot for the top point's value label.
  y0 += 16;
  h -= 16;
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return out.concat(text(x0 + 10, y0 + 30, 'no data (run the cache benchmark)')).join('\n');
  const left = x0 + 50;
  const plotW = w - 60;
  const plotH = h - 90;
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const lx = (v: number): number => Math.log10(Math.max(v, 1));
  const xMin = Math.floor(lx(Math.min(...xs)));
  const xMax = Math.max(xMin + 1, Math.ceil(lx(Math.max(...xs))));
  const yMinRaw = Math.min(...ys);
  const yMaxRaw = Math.max(...ys);
  const yMin = logY ? Math.floor(Math.log10(Math.max(yMinRaw, 0.1))) : 0;
  const step = 10 ** Math.floor(Math.log10(Math.max(yMaxRaw, 1e-9)));
  const yMax = logY ? Math.max(yMin + 1, Math.ceil(Math.log10(yMaxRaw))) : Math.ceil((yMaxRaw * 1.1) / (step / 2)) * (step / 2);
  const sx = (v: number): number => left + ((lx(v) - xMin) / (xMax - xMin)) * plotW;
  const sy = (v: number): number => {
    const t = logY ? (Math.log10(Math.max(v, 0.1)) - yMin) / (yMax - yMin) : v / yMax;
    return y0 + plotH - t * plotH;
  };
  for (let e = xMin; e <= xMax; e += 1) {
    const v = 10 ** e;
    out.push(`<line x1="${sx(v)}" y1="${y0}" x2="${sx(v)}" y2="${y0 + plotH}" stroke="${COLORS.grid}"/>`);
    out.push(text(sx(v), y0 + plotH + 14, fmt(v), 'text-anchor="middle" font-size="11"'));
  }
  const yTicks = logY ? Array.from({ length: yMax - yMin + 1 }, (_, k) => 10 ** (yMin + k)) : [0, 0.25, 0.5, 0.75, 1].map((t) => t * yMax);
  for (const v of yTicks) {
    out.push(`<line x1="${left}" y1="${sy(v)}" x2="${left + plotW}" y2="${sy(v)}" stroke="${COLORS.grid}"/>`);
    out.push(text(left - 4, sy(v) + 4, fmt(v), 'text-anchor="end" font-size="11"'));
  }
  out.push(text(left + plotW / 2, y0 + plotH + 30, 'tenants (log scale)', 'text-anchor="middle" font-size="11"'));
  out.push(text(x0 + 10, y0 + plotH / 2, yLabel, `text-anchor="middle" font-size="11" transform="rotate(-90 ${x0 + 10} ${y0 + plotH / 2})"`));
  series.forEach((s, k) => {
    if (s.points.length === 0) return;
    const path = s.points.map((p, i) => `${i === 0 ? 'M' : 'L'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(' ');
    out.push(`<path d="${path}" fill="none" stroke="${s.color}" stroke-width="2" ${s.dashed === true ? 'stroke-dasharray="5 4"' : ''}/>`);
    for (const p of s.points) {
      out.push(`<circle cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}" r="3" fill="${s.color}"/>`);
      const nearRight = sx(p[0]) > left + plotW - 40;
      out.push(text(sx(p[0]) + (nearRight ? -4 : 4), sy(p[1]) - 5 - k * 2, fmt(p[1]), `font-size="10" fill="${s.color}" ${nearRight ? 'text-anchor="end"' : ''}`));
    }
    const ly = y0 + plotH + 44 + k * 14;
    out.push(`<line x1="${left}" y1="${ly - 4}" x2="${left + 18}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2" ${s.dashed === true ? 'stroke-dasharray="5 4"' : ''}/>`);
    out.push(text(left + 24, ly, s.label, 'font-size="11"'));
  });
  return out.join('\n');
}

export function renderChart(routing: RoutingFile | undefined, cache: CacheFile | undefined): string {
  // Connections vs tenants: B measured (routing B1/B100, cache scale); E measured at the routing size, then at least one per tenant.
  const bPoints = new Map<number, number>();
  for (const c of routing?.routing.connections ?? []) if (c.name === 'B1' || c.name === 'B100') bPoints.set(c.tenants, c.peakServerConnections);
  for (const s of cache?.scale ?? []) bPoints.set(s.tenants, Math.max(bPoints.get(s.tenants) ?? 0, s.peakServerConnections));
  const e = routing?.routing.connections.find((c) => c.name === 'E');
  const biggest = Math.max(...(cache?.scale.map((s) => s.tenants) ?? [0]), e?.tenants ?? 0);
  const connections: Series[] = [
    { label: 'B typeorm-tenants, one shared pool', color: COLORS.b, points: [...bPoints.entries()].sort((a, b) => a[0] - b[0]) },
    ...(e === undefined
      ? []
      : [
          { label: `E pool per tenant (measured at ${e.tenants})`, color: COLORS.e, points: [[e.tenants, e.peakServerConnections] as const] },
          ...(biggest > e.tenants
            ? [{ label: 'E beyond: >= 1 per tenant (projected)', color: COLORS.e, dashed: true, points: [[e.tenants, e.peakServerConnections] as const, [biggest, biggest] as const] }]
            : []),
        ]),
  ];
  const memory: Series[] = [
    {
      label: 'Node heap of the DataSource cache',
      color: COLORS.heap,
      points: (cache?.scale ?? []).map((s) => [s.cachedDataSources, (s.heapPerDataSourceKiB * s.cachedDataSources) / 1024] as const),
    },
    ...(cache?.backend ?? []).map((b) => ({
      label: `PG backends of the pool, ${b.maxLifetimeSeconds === 0 ? 'no recycling' : `recycled every ${b.maxLifetimeSeconds} s`}`,
      color: b.maxLifetimeSeconds === 0 ? COLORS.noRecycle : COLORS.recycle,
      dashed: b.maxLifetimeSeconds !== 0,
      points: b.steps.filter((s) => s.schemasTouched > 1).map((s) => [s.schemasTouched, s.contextsMiB.sum] as const),
    })),
  ];
  const W = 1240;
  const H = 470;
  const body = [
    routingPanel(20, 50, 470, 380, routing),
    linePanel(520, 50, 340, H - 40, 'PostgreSQL connections vs tenants', 'connections', connections, true),
    linePanel(890, 50, 340, H - 40, 'Memory vs tenants (MiB)', 'MiB', memory, false),
  ];
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H + 40}" viewBox="0 0 ${W} ${H + 40}" font-family="Helvetica, Arial, sans-serif" fill="${COLORS.text}">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    text(20, 24, 'typeorm-tenants benchmark (npm run bench): routing cost, connections and memory', 'font-size="15" font-weight="bold"'),
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

function main(): void {
  const quick = process.argv.includes('--quick');
  const routing = readJson<RoutingFile>(quick ? 'quick.json' : 'latest.json');
  const cache = readJson<CacheFile>(quick ? 'cache-quick.json' : 'cache.json');
  const path = join(RESULTS_DIR, quick ? 'chart-quick.svg' : 'chart.svg');
  writeFileSync(path, renderChart(routing, cache));
  console.error(`[bench:chart] wrote ${path}${routing === undefined ? ' (no routing results)' : ''}${cache === undefined ? ' (no cache results)' : ''}`);
}

if (require.main === module) main();
