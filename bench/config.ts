/** Sizes and switches of a benchmark run, from the command line. */
export interface BenchConfig {
  /** `--quick`: a few seconds in all, for CI; writes quick.json / quick.md. */
  readonly quick: boolean;
  /** Tenants of B100, S100, C100, D, E and M100 (100; `--quick`: 10). */
  readonly tenants: number;
  /** Rows pre-filled into every `client` table. */
  readonly rowsPerSchema: number;
  /** Size of every pool (all but E's per-tenant pools). */
  readonly poolSize: number;
  /** Pool size of each tenant's own DataSource in E. */
  readonly poolSizePerTenantE: number;
  readonly concurrencies: readonly number[];
  readonly workloads: readonly Workload[];
  /** Contender names to run (A is always run: it is the baseline). */
  readonly contenders: readonly string[];
  readonly rounds: number;
  /** Ops per contender per round, by concurrency. */
  readonly opsPerRound: Readonly<Record<number, number>>;
  /** Untimed ops per contender before the rounds of each cell. */
  readonly warmupOps: Readonly<Record<number, number>>;
  /** Untimed find calls per contender before everything (at least 2 per tenant). */
  readonly initialWarmupOps: number;
  /** Base name of the result files in bench/results/ (`latest` or `quick`). */
  readonly outputName: string;
}

export type Workload = 'find' | 'insert';

export const ALL_CONTENDERS = ['A', 'B1', 'R1', 'B100', 'S100', 'C1', 'C100', 'D', 'E', 'M1', 'M100'] as const;
/** Run only when named in --contenders: B1 with sqlComment on (B1c), B1 with typeorm-tenants/metrics on (B1m). */
export const OPTIONAL_CONTENDERS = ['B1c', 'B1m'] as const;

/** Old contender names still accepted by --contenders. */
const CONTENDER_ALIASES: Readonly<Record<string, string>> = { C: 'C100' };

const USAGE = `Usage: node build/bench/run.js [options]
  --quick                 a few seconds in all (10 tenants, small op counts); writes bench/results/quick.{json,md}
  --tenants=N             tenants for B100, S100, C100, D, E, M100 (default 100)
  --rounds=N              alternation rounds (default 15)
  --ops=N                 ops per contender per round at concurrency 1 (default 500; higher concurrency: 4/3 as many)
  --contenders=A,B1,...   run only these (A always runs: it is the baseline); one of
                          A B1 R1 B100 S100 C1 C100 D E M1 M100 (C = C100).
                          S100 (N tenants all on B1's schema) and C1/C100 are the
                          controls that split B100's gap to B1 into PostgreSQL's
                          share (N schemas) and the client's (N DataSources)
  --workloads=find,insert run only these workloads
  --concurrency=1,10      concurrency levels
  --out=NAME              result files bench/results/NAME.{json,md} (default latest, or quick)
  --help`;

export function parseArgs(argv: readonly string[]): BenchConfig {
  const flags = new Map<string, string>();
  for (const arg of argv) {
    if (arg === '--help' || arg === '-h') {
      console.log(USAGE);
      process.exit(0);
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (m === null) throw new Error(`Unknown argument "${arg}".\n${USAGE}`);
    flags.set(m[1]!, m[2] ?? 'true');
  }
  const known = new Set(['quick', 'tenants', 'rounds', 'ops', 'contenders', 'workloads', 'concurrency', 'out']);
  for (const key of flags.keys()) if (!known.has(key)) throw new Error(`Unknown option "--${key}".\n${USAGE}`);

  const quick = flags.get('quick') === 'true';
  const int = (key: string, fallback: number): number => {
    const raw = flags.get(key);
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < 1) throw new Error(`--${key} must be a positive integer; got "${raw}".`);
    return value;
  };
  const list = (key: string, fallback: readonly string[]): string[] => flags.get(key)?.split(',').map((s) => s.trim()).filter(Boolean) ?? [...fallback];

  const ops1 = int('ops', quick ? 60 : 500);
  // Concurrency above 1 gets more ops per round: it runs more ops per second.
  const opsAt = (c: number): number => (c === 1 ? ops1 : Math.round(ops1 * (quick ? 2 : 4 / 3)));
  const contenders = list('contenders', ALL_CONTENDERS).map((c) => CONTENDER_ALIASES[c] ?? c);
  for (const c of contenders) if (![...ALL_CONTENDERS, ...OPTIONAL_CONTENDERS].includes(c as never)) throw new Error(`Unknown contender "${c}".`);
  if (!contenders.includes('A')) contenders.unshift('A');
  const workloads = list('workloads', ['find', 'insert']);
  for (const w of workloads) if (w !== 'find' && w !== 'insert') throw new Error(`Unknown workload "${w}".`);
  const concurrencies = list('concurrency', ['1', '10']).map(Number);
  for (const c of concurrencies) if (!Number.isInteger(c) || c < 1) throw new Error(`Bad concurrency "${c}".`);

  return {
    quick,
    tenants: int('tenants', quick ? 10 : 100),
    rowsPerSchema: quick ? 200 : 1000,
    poolSize: 10,
    poolSizePerTenantE: 2,
    concurrencies,
    workloads: workloads as Workload[],
    contenders: [...ALL_CONTENDERS, ...OPTIONAL_CONTENDERS].filter((c) => contenders.includes(c)),
    rounds: int('rounds', quick ? 2 : 15),
    opsPerRound: Object.fromEntries(concurrencies.map((c) => [c, opsAt(c)])),
    warmupOps: Object.fromEntries(concurrencies.map((c) => [c, Math.max(20, Math.round(opsAt(c) / 2))])),
    initialWarmupOps: quick ? 20 : 200,
    outputName: flags.get('out') ?? (quick ? 'quick' : 'latest'),
  };
}
