import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

/**
 * `npm run bench [-- --quick ...]`: the routing benchmark (every argument
 * goes to it), then the provisioning and fleet benchmark, the fan-out
 * benchmark (under `--expose-gc`: it measures heap above a forced GC), the
 * export/import benchmark, the
 * migration-guard benchmark, the HTTP benchmark, the cache-scale
 * benchmark, the testing-kit benchmark (`--quick` only) and the Citus
 * benchmark (only with `CITUS_URL`: single server and cluster side by side), each in its own
 * process so none disturbs another's heap; the cache benchmark runs under
 * `--expose-gc` (it measures heap after a forced GC). Last, the chart is
 * drawn from the results.
 */
function main(): void {
  const args = process.argv.slice(2);
  const quickOnly = args.filter((a) => a === '--quick');
  const parts: Array<[string, string[], string[]]> = [
    ['run.js', [], args],
    [join('fleet', 'run.js'), [], quickOnly],
    [join('fan-out', 'run.js'), ['--expose-gc'], quickOnly],
    [join('portability', 'run.js'), [], quickOnly],
    [join('migration-guard', 'run.js'), [], quickOnly],
    [join('http', 'run.js'), [], quickOnly],
    [join('cache', 'run.js'), ['--expose-gc'], quickOnly],
    [join('testing', 'run.js'), [], quickOnly],
    [join('citus', 'run.js'), [], quickOnly],
    ['chart.js', [], quickOnly],
  ];
  for (const [script, nodeFlags, scriptArgs] of parts) {
    const result = spawnSync(process.execPath, [...nodeFlags, join(__dirname, script), ...scriptArgs], { stdio: 'inherit' });
    if (result.status !== 0) {
      console.error(`[bench] ${script} failed (exit ${result.status ?? result.signal})`);
      process.exitCode = 1;
      return;
    }
  }
}

main();
