import { Module } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { TypeOrmModule } from '@nestjs/typeorm';
import { Client, Plan, Project } from '../../entities';
import { sharedMigrations, tenantMigrations } from '../../migrations';
import { fromHeader } from '../../src';
import { TenancyModule } from '../../src/http/nestjs';
import { ClientsController, PlansController, SignupController } from './catalog.controllers';
import { CatalogService } from './catalog.service';

/**
 * `@nestjs/typeorm` and typeorm-tenants side by side, both configured from
 * `ConfigService` (`DATABASE_URL`):
 * - `TypeOrmModule` owns a DataSource for the shared entities only (`Plan`),
 *   in the shared schema (named as its `schema`), with its own small pool.
 *   Tenant entities are never given to it: outside the manager they would
 *   resolve to the shared schema.
 * - `TenancyModule` creates the manager from `managerOptions` (it runs the
 *   shared and tenant migrations; TypeOrmModule has `synchronize: false`),
 *   initialises it on module init and destroys it on shutdown.
 */
@Module({
  imports: [
    ConfigModule.forRoot({ isGlobal: true }),
    TypeOrmModule.forRootAsync({
      inject: [ConfigService],
      useFactory: (config: ConfigService) => ({
        type: 'postgres' as const,
        url: config.getOrThrow<string>('DATABASE_URL'),
        // The manager's sharedSchema: TypeORM then qualifies every table ("public"."plan")
        // rather than leaving it to the connection's search_path.
        schema: 'public',
        entities: [Plan],
        synchronize: false,
        poolSize: 2,
      }),
    }),
    TypeOrmModule.forFeature([Plan]),
    TenancyModule.forRootAsync({
      inject: [ConfigService],
      useFactory: (config: ConfigService) => ({
        managerOptions: {
          dataSource: { type: 'postgres', url: config.getOrThrow<string>('DATABASE_URL'), poolSize: 8 },
          entities: [Client, Project, Plan],
          tenantMigrations,
          sharedMigrations,
        },
        resolve: fromHeader(),
        exclude: ['plans', 'tenants'],
      }),
    }),
    TenancyModule.forFeature([Client]),
  ],
  controllers: [PlansController, SignupController, ClientsController],
  providers: [CatalogService],
})
export class AppModule {}
