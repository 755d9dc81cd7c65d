import type { Pool, PoolClient } from 'pg';
import { quoteIdent } from '../naming/quote-ident';
import { describeConnectionTarget, namingConnectionTarget, poolConfigOf, unnamedServerHint } from './connection-target';

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
export function createPgDriverFacade(pool: Pool, options: { readonly role?: string; readonly server?: string } = {}): PgDriverFacade {
  const role = options.role;
  const checkout = namedCheckout(pool, options.server);
  const view: SharedPoolView = {
    connect(callback?: ConnectCallback): Promise<PoolClient> | void {
      if (role !== undefined) return connectAs(checkout, role, callback);
      if (callback === undefined) {
        return new Promise<PoolClient>((resolve, reject) => checkout((err, client) => (err === undefined ? resolve(client!) : reject(err))));
      }
      checkout(callback);
    },
    query(...args: unknown[]): unknown {
      if (role === undefined) return (pool.query as (...a: unknown[]) => unknown)(...args);
      if (typeof args[args.length - 1] === 'function') {
        throw new TypeError('The role-bound pool supports promise queries only.');
      }
      return (async () => {
        const client = await (connectAs(checkout, role) as Promise<PoolClient>);
        try {
          return await (client.query as (...a: unknown[]) => Promise<unknown>)(...args);
        } finally {
          client.release();
        }
      })();
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

/**
 * `pool.connect(callback)` whose failure to open a connection is a
 * `DatabaseUnreachableError` naming the server (its name in the manager's
 * options, when given) and database (never the password); a full pool's timeout and other errors pass unchanged.
 */
function namedCheckout(pool: Pool, server: string | undefined): (callback: ConnectCallback) => void {
  const config = poolConfigOf(pool);
  const address = describeConnectionTarget(config);
  const target = server === undefined ? address : `server "${server}" (${address})`;
  const hint = unnamedServerHint(config);
  return (callback) => {
    pool.connect((err, client, release) => {
      if (err === undefined || err === null) callback(undefined, client, release);
      else callback(namingConnectionTarget(err, target, hint) as Error, client, release);
    });
  };
}

/**
 * Checks a connection out of `pool` with `SET ROLE` to the tenant's role, and
 * hands it back with `RESET ROLE` run before it returns to the pool, so every
 * statement of the checkout, reads outside transactions included, runs under
 * the role. This is session state for the length of a checkout: it cannot
 * work through a transaction pooler (documented). A connection whose reset
 * fails is destroyed, never reused.
 */
function connectAs(connect: (callback: ConnectCallback) => void, role: string, callback?: ConnectCallback): Promise<PoolClient> | void {
  const setRole = `SET ROLE ${quoteIdent(role)}`;
  const checkout = new Promise<PoolClient>((resolve, reject) => {
    connect((err, client, release) => {
      if (err !== undefined || client === undefined) {
        reject(err ?? new Error('The pool returned no connection.'));
        return;
      }
      // Checked out, the client has no 'error' listener (pg-pool removes its
      // own, TypeORM adds one only after this): a socket that dies during SET
      // ROLE or RESET ROLE would throw from an event nobody hears. The
      // statement's own rejection carries the error (the caller gets it, or
      // the connection is destroyed at release).
      const heard = (): void => undefined;
      client.on('error', heard);
      client.query(setRole).finally(() => client.off('error', heard)).then(
        () => {
          let released = false;
          const resetAndRelease = (releaseError?: Error | boolean): void => {
            if (released) return;
            released = true;
            if (releaseError !== undefined && releaseError !== false) {
              release(releaseError);
              return;
            }
            client.on('error', heard);
            client.query('RESET ROLE').finally(() => client.off('error', heard)).then(
              () => release(),
              (resetError: Error) => release(resetError),
            );
          };
          (client as { release: (err?: Error | boolean) => void }).release = resetAndRelease;
          resolve(client);
        },
        (setError: Error) => {
          release(setError);
          reject(setError);
        },
      );
    });
  });
  if (callback === undefined) return checkout;
  checkout.then(
    (client) => callback(undefined, client, client.release.bind(client)),
    (error: Error) => callback(error, undefined, () => undefined),
  );
}