import { Check, Column, Entity, Index, JoinTable, ManyToMany, ManyToOne, PrimaryGeneratedColumn, ViewColumn, ViewEntity, type Relation } from 'typeorm';
import { TenantScoped } from '../../src';

/**
 * The model of the migration:generate round trip: enums, jsonb, arrays, uuid
 * keys, many-to-many, a tenant-to-shared foreign key, indexes and a check
 * constraint. `GenPlan` is shared; the rest lives in every tenant.
 */

@Entity('gen_plan')
export class GenPlan {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ unique: true }) code!: string;
}

@Entity('gen_label')
@TenantScoped()
export class GenLabel {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ unique: true }) name!: string;
}

export enum InvoiceStatus {
  Draft = 'draft',
  Sent = 'sent',
  Paid = 'paid',
}

@Entity('gen_invoice')
@TenantScoped()
@Check('"amount_cents" >= 0')
@Index(['status', 'issuedOn'])
export class GenInvoice {
  @PrimaryGeneratedColumn('uuid') id!: string;
  @Index({ unique: true }) @Column() number!: string;
  @Column({ type: 'enum', enum: InvoiceStatus, default: InvoiceStatus.Draft }) status!: InvoiceStatus;
  @Column({ name: 'amount_cents', type: 'int' }) amountCents!: number;
  @Column({ type: 'jsonb', default: () => "'{}'" }) data!: Record<string, unknown>;
  @Column('text', { array: true, default: () => "'{}'" }) tags!: string[];
  @Column({ name: 'issued_on', type: 'date', nullable: true }) issuedOn!: string | null;
  @ManyToOne(() => GenPlan, { nullable: true }) plan?: Relation<GenPlan> | null;
  @ManyToMany(() => GenLabel) @JoinTable() labels?: Relation<GenLabel>[];
}

export enum InvoiceStatusV2 {
  Draft = 'draft',
  Sent = 'sent',
  Paid = 'paid',
  Void = 'void',
}

/** The next version of `GenInvoice` (same table): one more enum value, one more column. */
@Entity('gen_invoice')
@TenantScoped()
@Check('"amount_cents" >= 0')
@Index(['status', 'issuedOn'])
export class GenInvoiceV2 {
  @PrimaryGeneratedColumn('uuid') id!: string;
  @Index({ unique: true }) @Column() number!: string;
  @Column({ type: 'enum', enum: InvoiceStatusV2, default: InvoiceStatusV2.Draft }) status!: InvoiceStatusV2;
  @Column({ name: 'amount_cents', type: 'int' }) amountCents!: number;
  @Column({ type: 'jsonb', default: () => "'{}'" }) data!: Record<string, unknown>;
  @Column('text', { array: true, default: () => "'{}'" }) tags!: string[];
  @Column({ name: 'issued_on', type: 'date', nullable: true }) issuedOn!: string | null;
  @Column({ type: 'text', nullable: true }) note!: string | null;
  @ManyToOne(() => GenPlan, { nullable: true }) plan?: Relation<GenPlan> | null;
  @ManyToMany(() => GenLabel) @JoinTable({ name: 'gen_invoice_labels_gen_label', joinColumn: { name: 'genInvoiceId' }, inverseJoinColumn: { name: 'genLabelId' } })
  labels?: Relation<GenLabel>[];
}

/** A view over the tenant's invoices: TypeORM records it in the tenant's typeorm_metadata, under the schema it runs in. */
@ViewEntity({ name: 'gen_invoice_totals', expression: 'SELECT count(*)::int AS "count", coalesce(sum("amount_cents"), 0)::int AS "total" FROM "gen_invoice"' })
@TenantScoped()
export class GenInvoiceTotals {
  @ViewColumn() count!: number;
  @ViewColumn() total!: number;
}
