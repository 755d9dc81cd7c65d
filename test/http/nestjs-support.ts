import type { INestApplication, Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import type { AddressInfo } from 'node:net';
import { Client as PgClient } from 'pg';
import { adminQuery, databaseUrl } from '../support/fixtures';

/** The two platforms every NestJS test runs on. */
export const platforms = [
  { name: 'Express', adapter: (): ExpressAdapter => new ExpressAdapter() },
  { name: 'Fastify', adapter: (): FastifyAdapter => new FastifyAdapter() },
] as const;

export type Platform = (typeof platforms)[number];

/** A Nest app listening on an ephemeral loopback port, and its base URL. */
export interface StartedApp {
  readonly app: INestApplication;
  readonly base: string;
}

/** Builds `module` on `platform` (Express by default) and listens; `close()` it (the `apps()` hooks do). */
export async function startApp(module: Type, platform: Platform = platforms[0]): Promise<StartedApp> {
  const app = await NestFactory.create(module, platform.adapter() as never, { logger: false });
  try {
    await app.listen(0, '127.0.0.1');
  } catch (error) {
    await app.close();
    throw error;
  }
  return { app, base: `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}` };
}

/** Apps started in a test, closed after it whatever happens: `const started = apps(); ... await started.start(Module)`. */
export function apps(): { start(module: Type, platform?: Platform): Promise<StartedApp>; track(app: INestApplication): INestApplication } {
  const open = new Set<INestApplication>();
  afterEach(async () => {
    const closing = [...open];
    open.clear();
    await Promise.all(closing.map((app) => app.close()));
  });
  return {
    async start(module, platform) {
      const started = await startApp(module, platform);
      open.add(started.app);
      return started;
    },
    track(app) {
      open.add(app);
      return app;
    },
  };
}

/** Connections of `applicationName` to the test server, waiting up to `timeoutMs` for the count to reach `expected` (backends take a moment to leave). */
export async function connectionsOf(applicationName: string, expected?: number, timeoutMs = 3_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [row] = await adminQuery<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [applicationName]);
    const n = row!.n;
    if (expected === undefined || n === expected || Date.now() > deadline) return n;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** A second database on the test server, for apps that must each use their own; `drop()` removes it. */
export async function createOtherDatabase(name: string): Promise<{ url: string; drop(): Promise<void> }> {
  await adminQuery(`CREATE DATABASE "${name}"`);
  const url = new URL(databaseUrl());
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      await adminQuery(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    },
  };
}

/** Runs one query on the database at `url` (its own connection): to look at what physically landed where. */
export async function queryDatabase<T = Record<string, unknown>>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new PgClient({ connectionString: url, application_name: 'typeorm-tenants-test-probe' });
  await client.connect();
  try {
    return (await client.query(sql, params)).rows as T[];
  } finally {
    await client.end();
  }
}
