import { expect } from 'chai';
import { request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client } from '../../entities';
import { tenantContext, type TenantDataSourceManager } from '../../src';

/** Starts `server` (not yet listening) on an ephemeral loopback port; returns its base URL. */
export async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

export async function closeServer(server: Server): Promise<void> {
  if (!server.listening) return;
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

export interface HttpAnswer {
  readonly status: number;
  readonly contentType: string | undefined;
  readonly text: string;
  json<T = any>(): T;
}

/**
 * A request over node:http, for what fetch will not send (fetch always
 * writes its own Host header).
 */
export function rawRequest(url: string, options: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: options.method ?? 'GET', headers: options.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'], text, json: () => JSON.parse(text) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

/** fetch, answered as status + parsed JSON. */
export async function getJson(url: string, headers: Record<string, string> = {}, init: RequestInit = {}): Promise<{ status: number; body: any; contentType: string | null }> {
  const response = await fetch(url, { ...init, headers: { ...headers, ...(init.headers as Record<string, string> | undefined) } });
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, body, contentType: response.headers.get('content-type') };
}

/** Asserts the documented error answer: the status and `{ error: { code, message } }`. */
export function expectError(answer: { status: number; body: any; contentType?: string | null }, status: number, code: string): void {
  expect(answer.status, JSON.stringify(answer.body)).to.equal(status);
  expect(answer.body).to.have.all.keys('error');
  expect(answer.body.error).to.have.all.keys('code', 'message');
  expect(answer.body.error.code).to.equal(code);
  expect(answer.body.error.message).to.be.a('string').with.length.greaterThan(20);
  if (answer.contentType !== undefined) expect(answer.contentType).to.match(/^application\/json/);
}

/** Inserts clients named after the tenant, so a response shows whose rows it holds. */
export async function seedClients(manager: TenantDataSourceManager, slug: string, count: number): Promise<void> {
  await manager.run(slug, async () => {
    const repository = tenantContext.getRepository(Client);
    for (let i = 0; i < count; i += 1) {
      await repository.save(repository.create({ name: `${slug} client ${i}`, email: `c${i}@${slug}.test`, internalNote: `secret of ${slug}` }));
    }
  });
}

/** A promise with its resolve function outside. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Runs `tasks` with at most `limit` in flight. */
export async function inParallel<T>(tasks: ReadonlyArray<() => Promise<T>>, limit: number): Promise<T[]> {
  const results: T[] = new Array(tasks.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < tasks.length) {
      const index = next;
      next += 1;
      results[index] = await tasks[index]!();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return results;
}

/**
 * POSTs `first`, waits for `between()` (e.g. the server saying it got that
 * far), then sends `second`: the rest of the body then arrives in a later
 * socket event, outside any context the server entered before.
 */
export function twoPartPost(url: string, headers: Record<string, string>, first: string, second: string, between: () => Promise<void>): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const length = Buffer.byteLength(first) + Buffer.byteLength(second);
    const req = httpRequest(url, { method: 'POST', headers: { ...headers, 'content-length': String(length) }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'], text, json: () => JSON.parse(text) });
      });
    });
    req.on('error', reject);
    req.write(first);
    between().then(
      () => req.end(second),
      (error: unknown) => req.destroy(error as Error),
    );
  });
}
