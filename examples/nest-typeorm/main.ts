import 'reflect-metadata';
import type { INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { AppModule } from './app.module';

/** Starts the example on `port` (0: any free one) with shutdown hooks, as a service's main.ts does. */
export async function bootstrap(port: number, host = '127.0.0.1'): Promise<INestApplication> {
  const app = await NestFactory.create(AppModule, { logger: ['error', 'warn'] });
  app.enableShutdownHooks();
  await app.listen(port, host);
  return app;
}

if (require.main === module) {
  // DATABASE_URL=postgres://... PORT=3000 node build/examples/nest-typeorm/main.js
  bootstrap(Number(process.env.PORT ?? 3000)).then(
    async (app) => console.log(`NestJS + TypeOrmModule + typeorm-tenants example on ${await app.getUrl()}`),
    (error: unknown) => {
      console.error(error);
      process.exitCode = 1;
    },
  );
}
