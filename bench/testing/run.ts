import 'reflect-metadata';
import { writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { Client, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { tenantContext, type TenantDataSourceManager, type TenantDataSourceManagerOptions } from '../../src';
import { createTestTenant, DEFAULT_TEST_WARM_POOL_SIZE, dropTestTenants, prefillWarmPool } from '../../src/testing';
import { startScratchDatabase } from '../../support/database';
import { cpuShareBetween, snapshotCpu } from '../cpu-share';
import { describeEnvironment, round2, type Environment } from '../environment';
import { ExampleManagers } from '../example-managers';
import { median, percentile } from '../measure';

/**
 * `node build/bench/testing/run.js [--quick]` (part of `npm run bench`): what
 * `createTestTenant()` of `typeorm-tenants/testing` costs on the example
 * model, in a simulated test suite: each "test" creates its tenant (timed),
 * does a small write in it (one client saved through `tenantContext`), and
 * its tenant is dropped later (after the scenario, as `useTestTenancy`'s
 * default `afterAll` does). The warm pool refills in the background between
 * and during the tests, as it does in a real suite. Scenarios, each with its
 * own manager (own registry table and warm pool, filled before it starts):
 * tests back to back; tests whose bodies take 20 ms more (a test that also
 * does other I/O); the claim alone (refill awaited, untimed, before each
 * test); no warm pool (every migration inline). Writes
 * bench/results/testing.json and .md (testing-quick.* with --quick).
 */

const TARGET_P50_MS = 10;
const RESULTS_DIR = join(__dirname, '..', '..', '..', 'bench', 'results');
const log = (line: string): void => console.error(`[bench:testing] ${line}`);

interface Scenario {
  readonly key: string;
  readonly label: string;
  readonly warmPool: boolean;
  /** Extra milliseconds each test body takes after its write. */
  readonly bodyMs: number;
  /** Wait for the refill to finish (untimed) before each test: the claim with nothing running beside it. */
  readonly settleBeforeEach: boolean;
  /** Fill the pool to one spare per test first, the serving manager keeping one (warmPoolRefill: 'upfront'). */
  readonly upfront?: boolean;
}

interface ScenarioResult {
  readonly key: string;
  readonly label: string;
  readonly tests: number;
  readonly warmPoolSize: number | null;
  /** Filling the pool before the first test (not part of the suite's time). */
  readonly fillMs: number | null;
  readonly bodyMs: number;
  readonly createTestTenant: { readonly p50Ms: number; readonly p90Ms: number; readonly p99Ms: number; readonly maxMs: number; readonly meanMs: number };
  /** Tests that found no ready spare when they started (their tenant was provisioned inline). */
  readonly provisionedInline: number;
  /** Spare schemas ready at the start of each test, lowest seen. */
  readonly lowestReady: number | null;
  readonly wholeTestP50Ms: number;
  readonly suiteMs: number;
  readonly dropMsPerTenant: number;
  readonly allCreateMs: readonly number[];
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const tests = quick ? 15 : 100;
  const warmPoolSize = DEFAULT_TEST_WARM_POOL_SIZE;
  const scenarios: Scenario[] = [
    { key: 'back-to-back', label: 'tests back to back, pool refilling', warmPool: true, bodyMs: 0, settleBeforeEach: false },
    { key: 'body-20ms', label: 'tests of 20 ms more each, pool refilling', warmPool: true, bodyMs: 20, settleBeforeEach: false },
    { key: 'claim-alone', label: 'the claim alone (refill awaited before each test, untimed)', warmPool: true, bodyMs: 0, settleBeforeEach: true },
    { key: 'upfront', label: "tests back to back, pool filled up front (warmPoolRefill: 'upfront')", warmPool: true, bodyMs: 0, settleBeforeEach: false, upfront: true },
    { key: 'no-warm-pool', label: 'no warm pool (every migration inline)', warmPool: false, bodyMs: 0, settleBeforeEach: false },
  ];
  const database = await startScratchDatabase({ settings: { max_connections: 100 } });
  const managers = new ExampleManagers(database.url, { poolSize: 10, logging: false });
  try {
    log(`database: ${database.description}`);
    const environment: Environment = await describeEnvironment(database.url, database.embedded, database.description);
    const results: ScenarioResult[] = [];
    const cpuStart = snapshotCpu();
    for (const scenario of scenarios) {
      const registryTable = `bt_${scenario.key.replace(/-/g, '_')}`;
      // Up front: one spare per test (and the warm-up's), filled by a manager of its own, as useTestTenancy does.
      const size = scenario.upfront === true ? tests + 1 : warmPoolSize;
      let fillMs: number | null = null;
      if (scenario.upfront === true) {
        const start = performance.now();
        await prefillWarmPool(exampleOptions(database.url, registryTable), size);
        fillMs = performance.now() - start;
      }
      const manager = await managers.open({ registryTable, warmPool: scenario.warmPool ? { size: scenario.upfront === true ? 1 : size } : undefined });
      if (scenario.warmPool && scenario.upfront !== true) {
        const start = performance.now();
        await manager.refillWarmPool();
        fillMs = performance.now() - start;
      }
      // One untimed test first: the tenant DataSource code paths and the statements' plans warm up.
      await oneTest(manager, scenario.bodyMs);
      if (scenario.warmPool && scenario.upfront !== true) await manager.refillWarmPool();
      results.push(await runScenario(manager, scenario, tests, scenario.warmPool ? size : null, fillMs));
      await managers.close(manager);
    }
    const cpu = cpuShareBetween(cpuStart, snapshotCpu());
    environment.machine.loadAverageEnd = loadavg().map(round2);
    if (cpu !== undefined) environment.machine.cpuWhileMeasuring = cpu;

    const report = {
      benchmark: 'testing',
      generatedAt: new Date().toISOString(),
      quick,
      environment,
      settings: { testsPerScenario: tests, warmPoolSize, poolSize: 10, targetP50Ms: TARGET_P50_MS },
      scenarios: results,
      target: {
        scenario: 'back-to-back',
        p50Ms: results[0]!.createTestTenant.p50Ms,
        met: results[0]!.createTestTenant.p50Ms < TARGET_P50_MS,
      },
    };
    const name = quick ? 'testing-quick' : 'testing';
    await writeFile(join(RESULTS_DIR, `${name}.json`), `${JSON.stringify(report, null, 2)}\n`);
    const markdown = renderMarkdown(report);
    await writeFile(join(RESULTS_DIR, `${name}.md`), markdown);
    console.log(markdown);
  } finally {
    await dropTestTenants().catch((error: unknown) => console.error(error));
    await managers.closeAll();
    await database.stop();
  }
}

/** The options `ExampleManagers` gives its managers, for the manager `prefillWarmPool` makes of its own. */
function exampleOptions(url: string, registryTable: string): TenantDataSourceManagerOptions {
  return {
    dataSource: { type: 'postgres', url, poolSize: 10, logging: false },
    entities: [Client, Project, Plan],
    tenantMigrations,
    sharedMigrations,
    registryTable,
  };
}

/** One test: its tenant, a small write in it; returns how long the tenant took. */
async function oneTest(manager: TenantDataSourceManager, bodyMs: number): Promise<{ createMs: number; testMs: number }> {
  const start = performance.now();
  const tenant = await createTestTenant(manager, { slugPrefix: 'bench' });
  const createMs = performance.now() - start;
  await manager.run(tenant.slug, () => tenantContext.getRepository(Client).save({ name: 'Ada', email: 'ada@bench.test' }));
  if (bodyMs > 0) await new Promise((resolve) => setTimeout(resolve, bodyMs));
  return { createMs, testMs: performance.now() - start };
}

async function runScenario(
  manager: TenantDataSourceManager,
  scenario: Scenario,
  tests: number,
  warmPoolSize: number | null,
  fillMs: number | null,
): Promise<ScenarioResult> {
  const createMs: number[] = [];
  const testMs: number[] = [];
  let inline = 0;
  let lowestReady: number | null = null;
  const suiteStart = performance.now();
  for (let i = 0; i < tests; i += 1) {
    if (scenario.settleBeforeEach) await manager.refillWarmPool();
    // Read between tests (not timed): whether this test will find a spare.
    const ready = warmPoolSize === null ? null : (await manager.warmPoolStatus()).ready;
    if (ready !== null) lowestReady = lowestReady === null ? ready : Math.min(lowestReady, ready);
    if (ready === 0 || ready === null) inline += 1;
    const result = await oneTest(manager, scenario.bodyMs);
    createMs.push(result.createMs);
    testMs.push(result.testMs);
  }
  const suiteMs = performance.now() - suiteStart;
  const dropStart = performance.now();
  const dropped = await dropTestTenants(manager);
  const dropMs = performance.now() - dropStart;
  const sorted = [...createMs].sort((a, b) => a - b);
  const result: ScenarioResult = {
    key: scenario.key,
    label: scenario.label,
    tests,
    warmPoolSize,
    fillMs: fillMs === null ? null : round2(fillMs),
    bodyMs: scenario.bodyMs,
    createTestTenant: {
      p50Ms: round2(median(createMs)),
      p90Ms: round2(percentile(sorted, 90)),
      p99Ms: round2(percentile(sorted, 99)),
      maxMs: round2(sorted[sorted.length - 1]!),
      meanMs: round2(createMs.reduce((a, b) => a + b, 0) / createMs.length),
    },
    provisionedInline: inline,
    lowestReady,
    wholeTestP50Ms: round2(median(testMs)),
    suiteMs: round2(suiteMs),
    dropMsPerTenant: round2(dropMs / Math.max(1, dropped.length)),
    allCreateMs: createMs.map(round2),
  };
  log(
    `${scenario.key}: createTestTenant p50 ${result.createTestTenant.p50Ms} ms, p90 ${result.createTestTenant.p90Ms} ms; ` +
      `${inline} of ${tests} inline; lowest ready ${lowestReady ?? '-'}`,
  );
  return result;
}

function renderMarkdown(report: {
  generatedAt: string;
  quick: boolean;
  environment: Environment;
  settings: { testsPerScenario: number; warmPoolSize: number; targetP50Ms: number };
  scenarios: readonly ScenarioResult[];
  target: { p50Ms: number; met: boolean };
}): string {
  const env = report.environment;
  const lines = [
    `<!-- generated by bench/testing/run.ts on ${report.generatedAt}; do not edit by hand -->`,
    '',
    `Measured on ${env.machine.cpuModel}, ${env.machine.cores} cores, Node ${env.node}, PostgreSQL ${env.postgres.version}${env.postgres.embedded ? ' (embedded, same machine)' : ''}` +
      `${report.quick ? ' (--quick: too few tests for real figures)' : ''}.` +
      (env.machine.cpuWhileMeasuring === undefined
        ? ''
        : ` Other processes used ${env.machine.cpuWhileMeasuring.otherCores} of ${env.machine.cpuWhileMeasuring.cores} cores meanwhile.`) +
      ` Load average at start ${env.machine.loadAverageStart.join(' / ')}.`,
    '',
    `\`createTestTenant()\` p50 with the warm pool refilling (tests back to back): **${report.target.p50Ms} ms** ` +
      `(target < ${report.settings.targetP50Ms} ms: ${report.target.met ? 'met' : 'missed'}).`,
    '',
    '| scenario | warm pool | fill first | createTestTenant p50 | p90 | p99 | max | inline (pool empty) | lowest ready | whole test p50 | suite | drop per tenant |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const s of report.scenarios) {
    const c = s.createTestTenant;
    lines.push(
      `| ${s.label} | ${s.warmPoolSize ?? 'none'} | ${s.fillMs === null ? '-' : `${Math.round(s.fillMs)} ms`} | ${c.p50Ms} ms | ${c.p90Ms} ms | ${c.p99Ms} ms | ${c.maxMs} ms | ${s.provisionedInline} of ${s.tests} | ${s.lowestReady ?? '-'} | ` +
        `${s.wholeTestP50Ms} ms | ${Math.round(s.suiteMs)} ms | ${s.dropMsPerTenant} ms |`,
    );
  }
  lines.push(
    '',
    `Method: one scratch database; per scenario a manager over the example model (entities/, migrations/: 2 tenant migrations; pool of 10, ` +
      `migrationGuard 'event-trigger'), its warm pool (size ${report.settings.warmPoolSize}, the kit's default) filled before the first test. ` +
      `Each of ${report.settings.testsPerScenario} tests: \`createTestTenant(manager)\` (timed), then one client saved in the tenant through \`manager.run\` and \`tenantContext\`, ` +
      `then (in the 20 ms scenario) a 20 ms wait; the next test starts at once. The pool refills in the background after every claim, during the ` +
      `next tests, except in "the claim alone", where the refill is awaited (untimed) before each test, and "up front", where \`prefillWarmPool()\` ` +
      `made one spare per test before the first (the time in "fill first", not part of "suite") and the serving manager keeps a pool of 1. "inline" counts the tests that found no ` +
      `ready spare when they started (their tenant ran every migration inline); "lowest ready" is the fewest ready spares any test found. ` +
      `The tenants are dropped after the scenario with \`dropTestTenants()\` (4 at a time), as \`useTestTenancy\` does in \`afterAll\`. ` +
      `One untimed test warms each manager up first.`,
    '',
  );
  return lines.join('\n');
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
