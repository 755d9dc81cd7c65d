import {
  BaseEntity,
  BeforeInsert,
  Column,
  CreateDateColumn,
  DeleteDateColumn,
  Entity,
  EventSubscriber,
  JoinColumn,
  JoinTable,
  ManyToMany,
  ManyToOne,
  OneToMany,
  OneToOne,
  PrimaryGeneratedColumn,
  Tree,
  TreeChildren,
  TreeParent,
  VersionColumn,
  ViewColumn,
  ViewEntity,
  VirtualColumn,
  type EntitySubscriberInterface,
  type InsertEvent,
  type Relation,
} from 'typeorm';
import { TenantScoped } from '../../src';

/**
 * The model of the TypeORM compatibility suite: every table name starts with
 * `compat_` so it cannot meet another suite's tables in the shared test
 * database. `CompatPlan` is shared (Active Record); everything else lives in
 * every tenant schema.
 */

/** Shared, Active Record: pinned to the shared DataSource. */
@Entity('compat_plan')
export class CompatPlan extends BaseEntity {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ unique: true }) code!: string;
  @Column() name!: string;
}

export enum BookStatus {
  Draft = 'draft',
  Published = 'published',
  Retired = 'retired',
}

/** Embedded columns: "dimsWidth" and "dimsHeight" of compat_book. */
export class CompatDimensions {
  @Column({ type: 'int', default: 0 }) width!: number;
  @Column({ type: 'int', default: 0 }) height!: number;
}

@TenantScoped()
@Entity('compat_author')
export class CompatAuthor {
  @PrimaryGeneratedColumn() id!: number;
  @Column() name!: string;

  /** tenant -> shared many-to-one. */
  @ManyToOne(() => CompatPlan, { nullable: true })
  @JoinColumn({ name: 'plan_id' })
  plan?: Relation<CompatPlan> | null;

  /** Inverse side of the one-to-one. */
  @OneToOne(() => CompatProfile, (profile) => profile.author)
  profile?: Relation<CompatProfile> | null;

  @OneToMany(() => CompatBook, (book) => book.author)
  books?: Relation<CompatBook>[];
}

@TenantScoped()
@Entity('compat_profile')
export class CompatProfile {
  @PrimaryGeneratedColumn() id!: number;
  @Column() bio!: string;

  /** Owning side of the one-to-one. */
  @OneToOne(() => CompatAuthor, (author) => author.profile, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'author_id' })
  author!: Relation<CompatAuthor>;
}

@TenantScoped()
@Entity('compat_book')
export class CompatBook {
  @PrimaryGeneratedColumn() id!: number;
  @Column() title!: string;

  @Column({ type: 'enum', enum: BookStatus, enumName: 'compat_book_status', default: BookStatus.Draft })
  status!: BookStatus;

  @Column(() => CompatDimensions)
  dims!: CompatDimensions;

  @ManyToOne(() => CompatAuthor, (author) => author.books, { nullable: true })
  @JoinColumn({ name: 'author_id' })
  author?: Relation<CompatAuthor> | null;

  @ManyToMany(() => CompatTag, (tag) => tag.books)
  @JoinTable({
    name: 'compat_book_tag',
    joinColumn: { name: 'book_id', referencedColumnName: 'id' },
    inverseJoinColumn: { name: 'tag_id', referencedColumnName: 'id' },
  })
  tags?: Relation<CompatTag>[];

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' }) createdAt!: Date;
  @DeleteDateColumn({ name: 'deleted_at', type: 'timestamptz' }) deletedAt!: Date | null;
  @VersionColumn() version!: number;
}

@TenantScoped()
@Entity('compat_tag')
export class CompatTag {
  @PrimaryGeneratedColumn() id!: number;
  @Column() label!: string;

  @ManyToMany(() => CompatBook, (book) => book.tags)
  books?: Relation<CompatBook>[];

  /** Hand-written SQL with an unqualified name: must count the tenant's join rows. */
  @VirtualColumn({ type: 'int', query: (alias) => `SELECT count(*)::int FROM compat_book_tag WHERE tag_id = ${alias}.id` })
  bookCount!: number;
}

/** Lazy relations (Promise-typed). */
@TenantScoped()
@Entity('compat_shelf')
export class CompatShelf {
  @PrimaryGeneratedColumn() id!: number;
  @Column() name!: string;

  @OneToMany(() => CompatShelfItem, (item) => item.shelf)
  items!: Promise<CompatShelfItem[]>;
}

@TenantScoped()
@Entity('compat_shelf_item')
export class CompatShelfItem {
  @PrimaryGeneratedColumn() id!: number;
  @Column() label!: string;

  @ManyToOne(() => CompatShelf, (shelf) => shelf.items, { nullable: true })
  @JoinColumn({ name: 'shelf_id' })
  shelf!: Promise<CompatShelf | null>;
}

@TenantScoped()
@Entity('compat_category')
@Tree('closure-table')
export class CompatCategory {
  @PrimaryGeneratedColumn() id!: number;
  @Column() name!: string;
  @TreeParent() parent?: CompatCategory | null;
  @TreeChildren() children?: CompatCategory[];
}

@TenantScoped()
@Entity('compat_node')
@Tree('nested-set')
export class CompatNode {
  @PrimaryGeneratedColumn() id!: number;
  @Column() name!: string;
  @TreeParent() parent?: CompatNode | null;
  @TreeChildren() children?: CompatNode[];
}

@TenantScoped()
@Entity('compat_folder')
@Tree('materialized-path')
export class CompatFolder {
  @PrimaryGeneratedColumn() id!: number;
  @Column() name!: string;
  @TreeParent() parent?: CompatFolder | null;
  @TreeChildren() children?: CompatFolder[];
}

/** A view created by the tenant migration (unqualified names, resolved in the tenant at creation). */
@TenantScoped()
@ViewEntity({
  name: 'compat_author_stats',
  expression:
    'SELECT a.id AS author_id, a.name AS name, count(b.id)::int AS books FROM compat_author a ' +
    'LEFT JOIN compat_book b ON b.author_id = a.id AND b.deleted_at IS NULL GROUP BY a.id, a.name',
})
export class CompatAuthorStats {
  @ViewColumn({ name: 'author_id' }) authorId!: number;
  @ViewColumn() name!: string;
  @ViewColumn() books!: number;
}

/** uuid primary key, an entity listener and a subscriber. */
@TenantScoped()
@Entity('compat_event')
export class CompatEvent {
  @PrimaryGeneratedColumn('uuid') id!: string;
  @Column() name!: string;
  @Column() slug!: string;
  @Column({ type: 'varchar', nullable: true }) stamp!: string | null;

  @ManyToOne(() => CompatPlan, { nullable: true })
  @JoinColumn({ name: 'plan_id' })
  plan?: Relation<CompatPlan> | null;

  @BeforeInsert()
  makeSlug(): void {
    this.slug = this.name.trim().toLowerCase().replace(/\s+/g, '-');
  }
}

/** What the subscriber saw: the schema of each inserted event's table. */
export const subscriberLog: { name: string; schema: string | undefined }[] = [];

@EventSubscriber()
export class CompatEventSubscriber implements EntitySubscriberInterface<CompatEvent> {
  listenTo(): Function {
    return CompatEvent;
  }

  beforeInsert(event: InsertEvent<CompatEvent>): void {
    event.entity.stamp = `sub:${event.entity.name}`;
  }

  /** Raw SQL with an unqualified name, inside the save's transaction: must land in the tenant. */
  async afterInsert(event: InsertEvent<CompatEvent>): Promise<void> {
    subscriberLog.push({ name: event.entity.name, schema: event.metadata.schema });
    await event.queryRunner.query('INSERT INTO compat_audit (note) VALUES ($1)', [`event:${event.entity.name}`]);
  }
}

export const compatEntities = [
  CompatPlan,
  CompatAuthor,
  CompatProfile,
  CompatBook,
  CompatTag,
  CompatShelf,
  CompatShelfItem,
  CompatCategory,
  CompatNode,
  CompatFolder,
  CompatAuthorStats,
  CompatEvent,
];
