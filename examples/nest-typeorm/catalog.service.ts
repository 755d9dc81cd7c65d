import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { Repository } from 'typeorm';
import { Client, Plan } from '../../entities';
import { InjectTenantRepository } from '../../src/http/nestjs';

/** What a new plan needs. */
export interface NewPlan {
  readonly code: string;
  readonly name: string;
  readonly monthlyPriceCents: number;
}

/** What a new client needs: the plan by its code. */
export interface NewClient {
  readonly name: string;
  readonly email: string;
  readonly planCode: string;
}

/**
 * One singleton service over both kinds of data: the shared plans through
 * `@nestjs/typeorm`'s `@InjectRepository(Plan)` (TypeOrmModule's own
 * DataSource, the shared schema), and the clients of the request's tenant
 * through `@InjectTenantRepository(Client)` (looked up per call, in the
 * tenant's schema).
 */
@Injectable()
export class CatalogService {
  constructor(
    @InjectRepository(Plan) private readonly plans: Repository<Plan>,
    @InjectTenantRepository(Client) private readonly clients: Repository<Client>,
  ) {}

  listPlans(): Promise<Plan[]> {
    return this.plans.find({ order: { code: 'ASC' } });
  }

  createPlan(plan: NewPlan): Promise<Plan> {
    return this.plans.save(this.plans.create(plan));
  }

  /** A client of the request's tenant, on a shared plan: the row's plan_id points at the shared table. */
  async addClient(client: NewClient): Promise<Client> {
    const plan = await this.plans.findOneByOrFail({ code: client.planCode });
    return this.clients.save(this.clients.create({ name: client.name, email: client.email, plan }));
  }

  /** The tenant's clients with their plans (one query joining the tenant's table to the shared one). */
  listClients(): Promise<Client[]> {
    return this.clients.find({ relations: { plan: true }, order: { id: 'ASC' } });
  }
}
