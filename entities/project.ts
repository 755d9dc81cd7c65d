import { Column, Entity, JoinColumn, ManyToOne, PrimaryGeneratedColumn, type Relation } from 'typeorm';
import { TenantScoped } from '../src';
import { Client } from './client';

/** A project of one of the tenant's clients. */
@TenantScoped()
@Entity()
export class Project {
  @PrimaryGeneratedColumn() id!: number;
  @Column() name!: string;

  @ManyToOne(() => Client, (client) => client.projects, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'client_id' })
  client!: Relation<Client>;
}
