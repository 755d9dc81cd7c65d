// A process of the move crash tests (move-crash.test.ts), run compiled:
// `node move-child.js`. Over the servers SERVER_A_URL (home) and
// SERVER_B_URL it moves tenant SLUG to server TARGET, printing each progress
// step as a JSON line, and kills itself with SIGKILL at the first step named
// KILL_AT: a progress step (`copying`: after the first table is copied,
// inside the target's transaction), or `drop`: when the first statement
// dropping a moved copy is about to be sent (seen through the manager's
// logger, with query logging on), i.e. after the registry's commit, before
// the old copy goes; it prints `{"killing": <sql>}` first. It prints
// `{"finished": ...}` if it was not killed.
import 'reflect-metadata';
import type { LoggerOptions } from 'typeorm';
import { Client, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { TenantDataSourceManager } from '../../src';

async function main(): Promise<void> {
  const { SERVER_A_URL, SERVER_B_URL, SLUG, TARGET, KILL_AT } = process.env;
  if (SERVER_A_URL === undefined || SERVER_B_URL === undefined || SLUG === undefined || TARGET === undefined) {
    throw new Error('SERVER_A_URL, SERVER_B_URL, SLUG and TARGET are required.');
  }
  const logging: LoggerOptions = KILL_AT === 'drop' ? ['query'] : false;
  const tenants = new TenantDataSourceManager({
    servers: {
      a: { type: 'postgres', url: SERVER_A_URL, poolSize: 4, logging },
      b: { type: 'postgres', url: SERVER_B_URL, poolSize: 4, logging },
    },
    logger: (entry) => {
      if (KILL_AT === 'drop' && entry.kind === 'query' && entry.message.startsWith('DROP SCHEMA "typeorm_tenants_moved_')) {
        process.stdout.write(`${JSON.stringify({ killing: entry.message })}\n`);
        process.kill(process.pid, 'SIGKILL');
      }
      if (entry.level === 'error') console.error(entry.message);
    },
    entities: [Client, Project, Plan],
    tenantMigrations,
    sharedMigrations,
    slugReuseDelayMs: 0,
  });
  await tenants.initialize();
  const result = await tenants.moveTenant(SLUG, {
    server: TARGET,
    onProgress: (progress) => {
      // Pipes are written synchronously on Linux: the line is out before the kill.
      process.stdout.write(`${JSON.stringify(progress)}\n`);
      if (progress.step === KILL_AT) process.kill(process.pid, 'SIGKILL');
    },
  });
  process.stdout.write(`${JSON.stringify({ finished: result })}\n`);
  await tenants.destroy();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
