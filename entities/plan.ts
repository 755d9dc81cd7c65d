import { Column, Entity, PrimaryGeneratedColumn } from 'typeorm';

/** A subscription plan: shared, one table in the shared schema for every tenant. */
@Entity()
export class Plan {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ unique: true }) code!: string;
  @Column() name!: string;
  @Column({ name: 'monthly_price_cents', type: 'int' }) monthlyPriceCents!: number;
}
