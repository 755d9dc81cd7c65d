import { Column, Entity, Index, JoinColumn, ManyToOne, PrimaryGeneratedColumn, type Relation } from 'typeorm';
import { TenantScoped } from '../src';
import { Client } from './client';

/** A project of one of the tenant's clients. */
@TenantScoped()
@Entity()
export class Project {
  @PrimaryGeneratedColumn() id!: number;
  @Column() name!: string;

  // As the tenant migration made it (migration:generate --check keeps the two in step).
  @Index('project_client_id_idx')
  @ManyToOne(() => Client, (client) => client.projects, { onDelete: 'CASCADE', nullable: false })
  @JoinColumn({ name: 'client_id', foreignKeyConstraintName: 'project_client_id_fkey' })
  client!: Relation<Client>;
}
