import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

/**
 * `npm run bench [-- --quick ...]`: the routing benchmark (every argument
 * goes to it), then the provisioning and fleet benchmark and the HTTP
 * benchmark (`--quick` only), each in its own process so none disturbs
 * another's heap.
 */
function main(): void {
  const args = process.argv.slice(2);
  const parts: Array<[string, string[]]> = [
    ['run.js', args],
    [join('fleet', 'run.js'), args.filter((a) => a === '--quick')],
    [join('http', 'run.js'), args.filter((a) => a === '--quick')],
  ];
  for (const [script, scriptArgs] of parts) {
    const result = spawnSync(process.execPath, [join(__dirname, script), ...scriptArgs], { stdio: 'inherit' });
    if (result.status !== 0) {
      console.error(`[bench] ${script} failed (exit ${result.status ?? result.signal})`);
      process.exitCode = 1;
      return;
    }
  }
}

main();
