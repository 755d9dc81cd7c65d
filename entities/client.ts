import { Exclude } from 'class-transformer';
import { Column, Entity, JoinColumn, ManyToOne, OneToMany, PrimaryGeneratedColumn, type Relation } from 'typeorm';
import { TenantScoped } from '../src';
import { Plan } from './plan';
import { Project } from './project';

/** A tenant's client: the table lives in every tenant schema. */
@TenantScoped()
@Entity()
export class Client {
  @PrimaryGeneratedColumn() id!: number;
  @Column() name!: string;
  @Column() email!: string;

  /** Kept for the tenant's staff; never part of the API's JSON. */
  @Exclude()
  @Column({ name: 'internal_note', default: '' })
  internalNote!: string;

  /** The shared plan the client is on: a tenant table pointing at a shared one. */
  @ManyToOne(() => Plan, { nullable: true })
  @JoinColumn({ name: 'plan_id' })
  plan?: Relation<Plan> | null;

  @OneToMany(() => Project, (project) => project.client)
  projects?: Relation<Project>[];
}
