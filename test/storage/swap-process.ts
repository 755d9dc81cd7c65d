/**
 * Swaps a folder for a symbolic link and back as fast as it can, until its
 * stdin closes: `<folder>` is renamed to `<folder>.real` and a link named
 * `<folder>` pointing at `<target>` takes its place, then the other way
 * round. A separate process, so the swaps really run between the checks and
 * the opens of the process under test.
 */
import { renameSync, symlinkSync, unlinkSync } from 'node:fs';

const [folder, target] = process.argv.slice(2) as [string, string];
let running = true;
let swaps = 0;
process.stdin.on('end', () => {
  running = false;
});
process.stdin.resume();

function swapBatch(): void {
  for (let i = 0; i < 200 && running; i += 1) {
    renameSync(folder, `${folder}.real`);
    symlinkSync(target, folder);
    unlinkSync(folder);
    renameSync(`${folder}.real`, folder);
    swaps += 1;
  }
  if (running) setImmediate(swapBatch);
  else process.stdout.write(`${swaps}\n`);
}
process.stdout.write('ready\n');
swapBatch();
