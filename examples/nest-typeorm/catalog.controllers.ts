import { Body, Controller, Get, Inject, Post } from '@nestjs/common';
import { instanceToPlain } from 'class-transformer';
import type { TenantDataSourceManager } from '../../src';
import { TENANCY_MANAGER } from '../../src/http/nestjs';
import { CatalogService, type NewClient, type NewPlan } from './catalog.service';

/** Shared data, tenant-free (excluded from the tenant middleware in the module). */
@Controller('plans')
export class PlansController {
  constructor(private readonly catalog: CatalogService) {}

  @Get()
  list(): Promise<unknown> {
    return this.catalog.listPlans();
  }

  @Post()
  create(@Body() body: NewPlan): Promise<unknown> {
    return this.catalog.createPlan(body);
  }
}

/** Signup, tenant-free: a taken or bad slug is answered by TenancyExceptionFilter (409, 400). */
@Controller('tenants')
export class SignupController {
  constructor(@Inject(TENANCY_MANAGER) private readonly tenants: TenantDataSourceManager) {}

  @Post()
  async signup(@Body() body: { slug: string }): Promise<unknown> {
    const tenant = await this.tenants.createTenant(body.slug);
    return { slug: tenant.slug, status: tenant.status };
  }
}

/** Tenant data: every route runs in the tenant of the X-Tenant-Slug header. */
@Controller('clients')
export class ClientsController {
  constructor(private readonly catalog: CatalogService) {}

  @Get()
  async list(): Promise<unknown> {
    return instanceToPlain(await this.catalog.listClients());
  }

  @Post()
  async add(@Body() body: NewClient): Promise<unknown> {
    return instanceToPlain(await this.catalog.addClient(body));
  }
}
