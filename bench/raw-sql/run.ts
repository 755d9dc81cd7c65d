import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Client, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { TenantDataSourceManager, tenantContext } from '../../src';
import { startScratchDatabase } from '../../support/database';

/**
 * The cost of raw SQL through each entry point of a tenant DataSource, at
 * concurrency 1, against a generated findOneBy of the same row: the
 * entry points alternate in rounds so that drift hits all alike.
 * `node build/bench/raw-sql/run.js [--label=NAME] [--rounds=N] [--ops=N]`
 * (from the repository root) writes bench/results/raw-sql-NAME.json.
 */
// Qualified, so that the same statement also runs where raw SQL is not
// fenced (before the fence, unqualified names reached "public"): what is
// measured is the cost of the entry point, not of name resolution.
const SQL = 'SELECT id, email FROM "solo".client WHERE id = $1';

async function main(): Promise<void> {
  const arg = (name: string, fallback: string): string =>
    process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback;
  const label = arg('label', 'latest');
  const rounds = Number(arg('rounds', '8'));
  const ops = Number(arg('ops', '400'));
  const database = await startScratchDatabase();
  const manager = new TenantDataSourceManager({
    dataSource: { type: 'postgres', url: database.url, poolSize: 10 },
    entities: [Client, Project, Plan],
    tenantMigrations,
    sharedMigrations,
  });
  try {
    await manager.initialize();
    await manager.createTenant('solo');
    await manager.run('solo', async () => {
      const repo = tenantContext.getRepository(Client);
      for (let i = 0; i < 100; i += 1) await repo.save({ name: `c${i}`, email: `c${i}@solo.test` });
    });
    const dataSource = await manager.getDataSource('solo');
    const entryPoints: Record<string, (id: number) => Promise<unknown>> = {
      'findOneBy (generated, reference)': (id) => tenantContext.getRepository(Client).findOneBy({ id }),
      'tenantContext.query': (id) => tenantContext.query(SQL, [id]),
      'EntityManager.query': (id) => tenantContext.getManager().query(SQL, [id]),
      'Repository.query': (id) => tenantContext.getRepository(Client).query(SQL, [id]),
      'DataSource.query': (id) => dataSource.query(SQL, [id]),
    };
    const samples = new Map<string, number[]>(Object.keys(entryPoints).map((name) => [name, []]));
    for (let round = 0; round <= rounds; round += 1) {
      for (const [name, op] of Object.entries(entryPoints)) {
        const start = performance.now();
        await manager.run('solo', async () => {
          for (let i = 0; i < ops; i += 1) await op((i % 100) + 1);
        });
        const perSecond = ops / ((performance.now() - start) / 1000);
        if (round > 0) samples.get(name)!.push(perSecond); // round 0 warms up
      }
    }
    const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
    const reference = median(samples.get('findOneBy (generated, reference)')!);
    const results = [...samples].map(([name, values]) => ({
      entryPoint: name,
      opsPerSecond: Math.round(median(values)),
      vsFindOneBy: Number((median(values) / reference).toFixed(3)),
    }));
    const out = join(process.cwd(), 'bench', 'results', `raw-sql-${label}.json`);
    writeFileSync(out, `${JSON.stringify({ label, database: database.description, rounds, opsPerRound: ops, results }, null, 2)}\n`);
    console.table(results);
    console.log(`[bench] raw SQL entry points written to ${out}`);
  } finally {
    await manager.destroy();
    await database.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
