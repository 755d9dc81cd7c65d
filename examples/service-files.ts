import express, { type Express } from 'express';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TenantDataSourceManager } from '../src';
import { localDiskDriver, tenantFiles } from '../src/storage';

/** The files part of the example service: what `startService()` closes. */
export interface ServiceFiles {
  close(): void;
}

/**
 * Files per tenant for the example service, on local disk: under `root`
 * when given, else under a new folder in the system temp dir, removed on
 * close. Mounted behind the tenant middleware: `PUT /files/<key>` stores the
 * request body, `GET /files/<key>` streams it back, `GET /files` lists the
 * tenant's files. Bad keys answer 400 `INVALID_FILE_KEY`, missing files 404
 * `TENANT_FILE_NOT_FOUND` (through `tenancyErrorHandler()`).
 */
export function mountFiles(app: Express, tenants: TenantDataSourceManager, root?: string): ServiceFiles {
  const folder = root ?? mkdtempSync(join(tmpdir(), 'typeorm-tenants-example-files-'));
  const files = tenantFiles(tenants, { driver: localDiskDriver({ root: folder }) });
  const keyOf = (segments: string | string[]): string => (Array.isArray(segments) ? segments.join('/') : segments);

  app.put('/files/*key', express.raw({ type: () => true, limit: '10mb' }), async (req, res) => {
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const contentType = req.get('content-type');
    await files.put(keyOf(req.params.key as string | string[]), body, contentType === undefined ? {} : { contentType });
    res.status(204).end();
  });
  app.get('/files/*key', async (req, res) => {
    const stream = await files.stream(keyOf(req.params.key as string | string[]));
    res.type('application/octet-stream');
    stream.on('error', (error) => res.destroy(error));
    stream.pipe(res);
  });
  app.get('/files', async (_req, res) => {
    const listed = [];
    for await (const file of files.list()) listed.push(file);
    res.json(listed);
  });
  return {
    close() {
      files.close();
      if (root === undefined) rmSync(folder, { recursive: true, force: true });
    },
  };
}
