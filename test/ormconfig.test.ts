import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openManager } from './support/fixtures';
import { databaseUrl } from './support/fixtures';

const run = promisify(execFile);

describe('ormconfig.ts (TypeORM CLI, shared schema)', () => {
  it('the TypeORM CLI reads DATABASE_URL and sees the shared migrations the manager applied', async () => {
    await openManager(); // applies the shared migrations
    const root = join(__dirname, '..', '..');
    const { stdout } = await run(
      process.execPath,
      [join(root, 'node_modules', 'typeorm', 'cli.js'), 'migration:show', '-d', join(root, 'build', 'ormconfig.js')],
      { env: { ...process.env, DATABASE_URL: databaseUrl() }, cwd: root },
    );
    expect(stdout).to.match(/\[X\] \d+ CreatePlan1700000000000/);
  });
});
