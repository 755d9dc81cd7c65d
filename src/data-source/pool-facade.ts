import type { Pool, PoolClient } from 'pg';

type ConnectCallback = (err: Error | undefined, client: PoolClient | undefined, release: (err?: Error | boolean) => void) => void;

/**
 * The `pg` module as one TypeORM DataSource sees it, when every DataSource of
 * a database server shares one `pg.Pool`. Pass it as the DataSource's
 * `driver` option: `new Pool()` hands back a view of the shared pool whose
 * `end()` does not close it and whose `on()` adds no listener (TypeORM adds an
 * error listener per DataSource; the manager keeps one on the real pool). It
 * exposes no `native`, so TypeORM never swaps in `pg-native` behind our back.
 */
export interface PgDriverFacade {
  readonly Pool: new (config?: unknown) => SharedPoolView;
}

/** What TypeORM's postgres driver uses of a pool, served by the shared pool. */
export interface SharedPoolView {
  connect(): Promise<PoolClient>;
  connect(callback: ConnectCallback): void;
  query(...args: unknown[]): unknown;
  end(callback?: (err?: Error) => void): Promise<void> | void;
  on(event: string, listener: (...args: unknown[]) => void): SharedPoolView;
  readonly totalCount: number;
  readonly idleCount: number;
  readonly waitingCount: number;
}

/**
 * Builds the `driver` facade over `pool`. Every DataSource built with it
 * checks connections out of `pool`; connections used never exceed the pool's
 * `max`, however many DataSources there are.
 */
export function createPgDriverFacade(pool: Pool): PgDriverFacade {
  const view: SharedPoolView = {
    connect(callback?: ConnectCallback): Promise<PoolClient> | void {
      if (callback === undefined) return pool.connect();
      pool.connect((err, client, release) => callback(err, client, release));
    },
    query(...args: unknown[]): unknown {
      return (pool.query as (...a: unknown[]) => unknown)(...args);
    },
    end(callback?: (err?: Error) => void): Promise<void> | void {
      // Closing one tenant's DataSource must not close the pool every tenant uses.
      if (callback === undefined) return Promise.resolve();
      queueMicrotask(() => callback());
    },
    on(): SharedPoolView {
      return view;
    },
    get totalCount() {
      return pool.totalCount;
    },
    get idleCount() {
      return pool.idleCount;
    },
    get waitingCount() {
      return pool.waitingCount;
    },
  } as SharedPoolView;

  // A constructor that returns an object makes `new Pool()` evaluate to it.
  const FacadePool = function FacadePool(): SharedPoolView {
    return view;
  } as unknown as new (config?: unknown) => SharedPoolView;
  return Object.freeze({ Pool: FacadePool });
}
