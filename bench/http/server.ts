import 'reflect-metadata';
import { instanceToPlain } from 'class-transformer';
import express from 'express';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DataSource } from 'typeorm';
import { Client, Plan, Project } from '../../entities';
import { tenantContext } from '../../src';
import { startService } from '../../examples/service';

/**
 * The servers of the HTTP benchmark, in a process of their own (the load
 * generator runs in the parent): the example service (tenancy middleware)
 * with `TENANTS` tenants of `ROWS` clients each, and the same route on plain
 * Express + TypeORM over one schema, no tenancy. Prints one JSON line with
 * the ports and the slugs, then serves until SIGTERM.
 */
async function main(): Promise<void> {
  const databaseUrl = process.env.DATABASE_URL!;
  const tenantCount = Number(process.env.TENANTS ?? 100);
  const rows = Number(process.env.ROWS ?? 100);
  const service = await startService({ databaseUrl });
  const slugs = Array.from({ length: tenantCount }, (_, i) => `http-${i}`);
  for (const slug of ['http-plain', ...slugs]) {
    await service.tenants.createTenant(slug);
    await service.tenants.run(slug, () =>
      tenantContext.getRepository(Client).insert(Array.from({ length: rows }, (_, i) => ({ name: `Client ${i}`, email: `c${i}@${slug}.test` }))),
    );
  }

  // No tenancy: the same handler on a plain DataSource bound to one schema, no middleware.
  const plain = new DataSource({ type: 'postgres', url: databaseUrl, schema: 'http_plain', entities: [Client, Project, Plan], poolSize: 10 });
  await plain.initialize();
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json());
  app.get('/clients/:id', async (req, res, next) => {
    try {
      const id = Number(req.params.id);
      const client = Number.isSafeInteger(id) && id > 0 ? await plain.getRepository(Client).findOneBy({ id }) : null;
      if (client === null) res.status(404).json({ error: { code: 'NOT_FOUND', message: 'No such client.' } });
      else res.json(instanceToPlain(client));
    } catch (error) {
      next(error);
    }
  });
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  console.log(JSON.stringify({ tenancyPort: service.port, plainPort: (server.address() as AddressInfo).port, slugs, rows }));

  const stop = async (): Promise<void> => {
    await new Promise((resolve) => server.close(resolve));
    await plain.destroy();
    await service.close();
  };
  process.once('SIGTERM', () => void stop());
  process.once('SIGINT', () => void stop());
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
