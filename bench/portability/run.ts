import 'reflect-metadata';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MigrationInterface, QueryRunner } from 'typeorm';
import { tenantMigrations } from '../../migrations';
import { tenantContext, type TenantDataSourceManager } from '../../src';
import { startScratchDatabase } from '../../support/database';
import { describeEnvironment } from '../environment';
import { ExampleManagers } from '../example-managers';
import { median } from '../measure';

/**
 * `node build/bench/portability/run.js [--quick]` (part of `npm run bench`):
 * exportTenant and importTenant of one tenant of 100,000 rows over 10
 * tables (1,000 per table with --quick), each timed 3 times, and the
 * archive's size; then moveTenant of such a tenant between 2 servers (a
 * second embedded PostgreSQL on this machine), there and back, 3 moves:
 * total time and write-freeze time. Writes bench/results/portability.json and .md
 * (portability-quick.* with --quick).
 */

const TABLES = 10;
const RESULTS_DIR = join(__dirname, '..', '..', '..', 'bench', 'results');
const log = (line: string): void => console.error(`[bench:portability] ${line}`);

/** Ten tables of a few column types each, the first nine referenced by the next. */
class CreateWideModel1700000000500 implements MigrationInterface {
  async up(queryRunner: QueryRunner): Promise<void> {
    for (let i = 0; i < TABLES; i += 1) {
      await queryRunner.query(
        `CREATE TABLE bench_t${i} (id serial PRIMARY KEY, name text NOT NULL, amount numeric(12,2), happened timestamptz NOT NULL DEFAULT now(),
         data jsonb, previous_id int${i === 0 ? '' : ` REFERENCES bench_t${i - 1}(id)`})`,
      );
    }
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    for (let i = TABLES - 1; i >= 0; i -= 1) await queryRunner.query(`DROP TABLE bench_t${i}`);
  }
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const perTable = quick ? 1_000 : 10_000;
  const repeats = 3;
  const database = await startScratchDatabase();
  let second: Awaited<ReturnType<typeof startScratchDatabase>> | undefined;
  const managers = new ExampleManagers(database.url, { poolSize: 10, logging: false });
  const directory = await mkdtemp(join(tmpdir(), 'bench-portability-'));
  try {
    const environment = await describeEnvironment(database.url, database.embedded, database.description);
    const manager = await managers.open({ tenantMigrations: [...tenantMigrations, CreateWideModel1700000000500] });
    await manager.createTenant('big');
    await fillWideTenant(manager, 'big', perTable);
    const rows = perTable * TABLES;
    log(`tenant "big": ${rows} rows over ${TABLES} tables`);
    const exportMs: number[] = [];
    const importMs: number[] = [];
    let bytes = 0;
    for (let r = 0; r < repeats; r += 1) {
      const file = join(directory, `big-${r}.tenant.gz`);
      let started = performance.now();
      await manager.exportTenant('big', file);
      exportMs.push(performance.now() - started);
      bytes = (await stat(file)).size;
      started = performance.now();
      await manager.importTenant(`big-copy-${r}`, file);
      importMs.push(performance.now() - started);
      log(`round ${r + 1}: export ${Math.round(exportMs[r]!)} ms, import ${Math.round(importMs[r]!)} ms, archive ${bytes} bytes`);
    }
    const figures = {
      rows,
      tables: TABLES,
      archiveBytes: bytes,
      exportMs: Math.round(median(exportMs)),
      importMs: Math.round(median(importMs)),
      exportRowsPerSecond: Math.round(rows / (median(exportMs) / 1000)),
      importRowsPerSecond: Math.round(rows / (median(importMs) / 1000)),
      exportRounds: exportMs.map(Math.round),
      importRounds: importMs.map(Math.round),
    };
    await managers.close(manager);

    second = await startScratchDatabase({ forceEmbedded: true });
    log(`second server: ${second.description}`);
    const pair = await managers.openOn(
      { one: { type: 'postgres', url: database.url, poolSize: 10, logging: false }, two: { type: 'postgres', url: second.url, poolSize: 10, logging: false } },
      { registryTable: 'moves', tenantMigrations: [...tenantMigrations, CreateWideModel1700000000500] },
    );
    await pair.createTenant('mover', { server: 'one' });
    await fillWideTenant(pair, 'mover', perTable);
    const moves: Array<{ to: string; ms: number; freezeMs: number }> = [];
    for (const to of ['two', 'one', 'two']) {
      const result = await pair.moveTenant('mover', { server: to });
      if (!result.moved || result.rows !== String(rows)) throw new Error(`move to ${to}: ${JSON.stringify(result)}`);
      moves.push({ to, ms: result.ms, freezeMs: result.freezeMs });
      log(`move to ${to}: ${result.ms} ms, writes held ${result.freezeMs} ms`);
    }
    // Once more with a writer inserting into the last table all along: that table is copied again under the freeze.
    let writing = true;
    let inserted = 0;
    const writer = (async () => {
      while (writing) {
        await pair.run('mover', () => tenantContext.query(`INSERT INTO bench_t${TABLES - 1} (name) VALUES ('written during the move')`)).then(
          () => (inserted += 1),
          (error: unknown) => {
            if ((error as { code?: string }).code !== 'TENANT_MOVED') throw error;
          },
        );
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 200));
    const busy = await pair.moveTenant('mover', { server: 'one' });
    await new Promise((resolve) => setTimeout(resolve, 200));
    writing = false;
    await writer;
    const [{ n }] = await pair.run('mover', () => tenantContext.query(`SELECT count(*)::int AS n FROM bench_t${TABLES - 1} WHERE name = 'written during the move'`));
    if (n !== inserted) throw new Error(`the writer's ${inserted} acknowledged rows came out as ${n} on the target`);
    log(`move under writes: ${busy.ms} ms, writes held ${busy.freezeMs} ms, copied again: ${busy.recopied.join(', ')}; ${inserted} rows written meanwhile, all on the target`);
    const moveFigures = {
      moveMs: Math.round(median(moves.map((m) => m.ms))),
      freezeMs: Math.round(median(moves.map((m) => m.freezeMs))),
      rounds: moves,
      underWrites: { ms: busy.ms, freezeMs: busy.freezeMs, recopied: busy.recopied, rowsWritten: inserted },
    };
    const report = { benchmark: 'portability', generatedAt: new Date().toISOString(), quick, environment, figures, moves: moveFigures };
    const name = quick ? 'portability-quick' : 'portability';
    await writeFile(join(RESULTS_DIR, `${name}.json`), `${JSON.stringify(report, null, 2)}\n`);
    const markdown = [
      `<!-- generated by bench/portability/run.ts on ${report.generatedAt}; do not edit by hand -->`,
      '',
      `exportTenant and importTenant of one tenant of ${rows.toLocaleString('en')} rows over ${TABLES} tables (serial key, text, numeric, timestamptz, jsonb, a foreign key to the previous table), ` +
        `median of ${repeats} rounds; ${environment.machine.cpuModel}, PostgreSQL ${environment.postgres.version}.`,
      '',
      '| step | median ms | rows/s | rounds (ms) |',
      '|---|---:|---:|---|',
      `| exportTenant (snapshot, COPY out, gzip, to a file) | ${figures.exportMs} | ${figures.exportRowsPerSecond} | ${figures.exportRounds.join(', ')} |`,
      `| importTenant (migrations, COPY in, checksums, registry, one transaction) | ${figures.importMs} | ${figures.importRowsPerSecond} | ${figures.importRounds.join(', ')} |`,
      '',
      `Archive: ${(bytes / 1024 / 1024).toFixed(2)} MiB.`,
      '',
      `moveTenant of a tenant of the same ${rows.toLocaleString('en')} rows between 2 servers (the second an embedded PostgreSQL on the same 2 cores), ` +
        `there and back, ${moves.length} moves: median ${moveFigures.moveMs} ms in all, writes held (the freeze) ${moveFigures.freezeMs} ms; ` +
        `rounds ${moves.map((m) => `${m.ms} / ${m.freezeMs} ms`).join(', ')}. ` +
        `With a writer inserting into one table all along (${moveFigures.underWrites.rowsWritten} rows acknowledged, every one on the target): ` +
        `${moveFigures.underWrites.ms} ms in all, writes held ${moveFigures.underWrites.freezeMs} ms (copied again under the freeze: ${moveFigures.underWrites.recopied.join(', ') || 'none'}).`,
      '',
    ].join('\n');
    await writeFile(join(RESULTS_DIR, `${name}.md`), markdown);
    console.log(markdown);
  } finally {
    await managers.closeAll();
    await rm(directory, { recursive: true, force: true });
    await second?.stop();
    await database.stop();
  }
}

/** Creates `rows per table` rows in each of the wide model's tables of the tenant. */
async function fillWideTenant(manager: TenantDataSourceManager, slug: string, perTable: number): Promise<void> {
  await manager.run(slug, async () => {
    for (let i = 0; i < TABLES; i += 1) {
      await tenantContext.query(
        `INSERT INTO bench_t${i} (name, amount, data, previous_id)
         SELECT 'row ' || n, n * 1.25, jsonb_build_object('n', n, 'tags', jsonb_build_array('a', 'b')), ${i === 0 ? 'NULL' : 'n'}
         FROM generate_series(1, $1) n`,
        [perTable],
      );
    }
  });
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
