import { readFileSync } from 'node:fs';
import { cpus, loadavg, totalmem, hostname, platform, release } from 'node:os';
import { dirname, join } from 'node:path';
import { Client } from 'pg';
import type { CpuShare } from './cpu-share';

/** Where the figures were measured: machine, runtime, database, package versions. */
export interface Environment {
  readonly machine: {
    readonly cpuModel: string;
    readonly cores: number;
    readonly memoryGiB: number;
    readonly platform: string;
    readonly hostname: string;
    /** 1/5/15-minute load averages when the run started and ended. */
    readonly loadAverageStart: readonly number[];
    loadAverageEnd?: readonly number[];
    /** CPU taken by the benchmark (with its embedded server) and by every other process while measuring. */
    cpuWhileMeasuring?: CpuShare;
  };
  readonly node: string;
  readonly postgres: {
    readonly version: string;
    readonly embedded: boolean;
    readonly description: string;
    readonly settings: Readonly<Record<string, string>>;
  };
  readonly packages: Readonly<Record<string, string>>;
}

export async function describeEnvironment(url: string, embedded: boolean, description: string): Promise<Environment> {
  const client = new Client({ connectionString: url, application_name: 'bench-setup' });
  await client.connect();
  let version: string;
  const settings: Record<string, string> = {};
  try {
    version = (await client.query('SHOW server_version')).rows[0].server_version;
    const { rows } = await client.query<{ name: string; setting: string; unit: string | null }>(
      `SELECT name, setting, unit FROM pg_settings
        WHERE name IN ('max_connections', 'shared_buffers', 'fsync', 'synchronous_commit', 'full_page_writes', 'jit')`,
    );
    for (const row of rows) settings[row.name] = row.unit ? `${row.setting} ${row.unit}` : row.setting;
  } finally {
    await client.end();
  }
  const cpuList = cpus();
  return {
    machine: {
      cpuModel: cpuList[0]?.model.trim() ?? 'unknown',
      cores: cpuList.length,
      memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
      platform: `${platform()} ${release()}`,
      hostname: hostname(),
      loadAverageStart: loadavg().map(round2),
    },
    node: process.version,
    postgres: { version, embedded, description, settings },
    packages: {
      typeorm: packageVersion('typeorm'),
      pg: packageVersion('pg'),
      'pg-pool': packageVersion('pg-pool'),
      '@mikro-orm/postgresql': packageVersion('@mikro-orm/postgresql'),
      'typeorm-tenants': packageVersion('.'),
    },
  };
}

export function round2(value: number): number {
  return Math.round(value * 100) / 100;
}

/** Version of an installed package (its package.json may not be exported, so it is read from disk). */
function packageVersion(name: string): string {
  try {
    const root = join(__dirname, '..', '..');
    if (name === '.') return JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version;
    let dir = dirname(require.resolve(name));
    for (;;) {
      try {
        const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
        if (pkg.name === name) return pkg.version;
      } catch {
        // no package.json at this level: go up
      }
      const parent = dirname(dir);
      if (parent === dir) return 'unknown';
      dir = parent;
    }
  } catch {
    return 'unknown';
  }
}
