import type { PoolClient } from 'pg';
import type { ReplicationMode } from 'typeorm';
import { TransactionNotStartedError } from 'typeorm';
import type { PostgresDriver } from 'typeorm/driver/postgres/PostgresDriver';
import { PostgresQueryRunner } from 'typeorm/driver/postgres/PostgresQueryRunner';
import { RawSqlRefusedError, TenantRoleEscapeError } from '../errors';

/**
 * Statements that undo every kind of session state SQL can leave on a
 * connection: settings (`RESET ALL`; it does not reset the role), prepared
 * statements, cursors, listeners, session advisory locks and temporary
 * objects. Sent in the same message as the COMMIT (or ROLLBACK) of a
 * transaction that ran raw SQL, so it costs no extra round trip and also
 * works behind a transaction pooler.
 */
const SESSION_RESET =
  'RESET ALL; DEALLOCATE ALL; CLOSE ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES';

/** The reset plus the role: for schema mode, and before a connection is closed (a pooler would hand its server connection on). */
const FULL_SESSION_RESET = `${SESSION_RESET}; RESET SESSION AUTHORIZATION; RESET ROLE`;

/** Command tags after which a `SET LOCAL search_path` sent earlier in the transaction may be undone. */
const PATH_UNDOING_COMMANDS = new Set(['ROLLBACK', 'RESET', 'DISCARD']);

/** How the runners of one tenant DataSource treat SQL that TypeORM did not generate. */
export interface RawSqlPolicy {
  /**
   * `SET LOCAL search_path TO ...` for raw SQL: the tenant schema, the
   * extras, `pg_temp` last. `undefined` for a library DataSource
   * (provisioning, migrations), whose runners set their own search_path.
   */
  readonly setSearchPath: string | undefined;
  /** Under role isolation: the role every statement of a run must run as. */
  readonly role: string | undefined;
  /** The role the pool connects as (what `session_user` must stay). */
  readonly sessionUser: string | undefined;
  /** Throws when the DataSource may no longer send statements (its tenant was dropped). */
  assertServed(): void;
  /** True when `sql` with exactly `parameters` came out of TypeORM's query building, fully qualified. */
  isGenerated(sql: string, parameters: unknown): boolean;
  /** The manager's `sqlComment` option: the tenant's sqlcommenter comment and a space, put in front of every statement. */
  readonly sqlComment?: string;
  /** In Citus mode: renames the shards a failed statement's error names to the tenant's tables (see `shardNameRenamer`). */
  readonly renameShards?: (error: unknown) => Promise<void>;
}

/**
 * The query runner of a tenant DataSource. TypeORM's generated SQL is fully
 * qualified (`"acme"."client"`) and passes through untouched. Everything else
 * sent through `query()` (raw SQL from `DataSource`, `EntityManager`,
 * `Repository`, the tagged `sql`, a user's own QueryRunner, TypeORM's tree
 * maintenance) is fenced:
 *
 * - it runs inside a transaction whose first raw statement is preceded by
 *   `SET LOCAL search_path TO "<tenant>", <extras>, pg_temp` (a standalone
 *   statement gets a transaction of its own), so unqualified names resolve in
 *   the tenant and never in the shared schema, behind a transaction pooler too;
 * - it is sent with the extended protocol, one statement per call, so a
 *   string cannot end the transaction and go on outside it;
 * - a statement that leaves the transaction (a raw `COMMIT`) is refused and
 *   the connection is destroyed at release;
 * - the transaction ends with a session reset in the same message as its
 *   COMMIT or ROLLBACK, so nothing it left (settings, temp tables, prepared
 *   statements, cursors, listeners, advisory locks) reaches the next user of
 *   the connection;
 * - under role isolation, a statement that leaves the connection under any
 *   other role is rolled back at once, the connection destroyed, and
 *   `TenantRoleEscapeError` raised.
 *
 * Checkouts that ran only generated SQL pay nothing of this.
 */
export class TenantQueryRunner extends PostgresQueryRunner {
  readonly #policy: RawSqlPolicy;
  /** `SET LOCAL search_path` is in force in the open transaction. */
  #pathSet = false;
  /** Raw SQL ran in the open transaction: end it with the session reset. */
  #dirty = false;
  /** The connection may hold state we could not clear: destroy it at release. */
  #broken = false;
  /** The standalone raw statement in progress: the next waits for it (each needs the connection's transaction to itself). */
  #standalone: Promise<unknown> | undefined;
  /** Command tag of the last raw statement (`COMMIT`, `ROLLBACK`, `SET`, ...). */
  #lastCommand: string | undefined;

  constructor(driver: PostgresDriver, mode: ReplicationMode, policy: RawSqlPolicy) {
    super(driver, mode);
    this.#policy = policy;
  }

  // Not async: the generated path, every find and save, hands TypeORM's
  // promise back as is (each extra promise costs an async-hooks round under
  // AsyncLocalStorage).
  override query(query: string, parameters?: any[], useStructuredResult = false): Promise<any> {
    const rename = this.#policy.renameShards;
    if (rename === undefined) return this.#query(query, parameters, useStructuredResult);
    return this.#query(query, parameters, useStructuredResult).catch(async (error: unknown) => {
      await rename(error);
      throw error;
    });
  }

  #query(query: string, parameters: any[] | undefined, useStructuredResult: boolean): Promise<any> {
    try {
      this.#policy.assertServed();
    } catch (error) {
      return Promise.reject(error);
    }
    if (useStructuredResult && this.#policy.isGenerated(query, parameters)) {
      return super.query(this.#commented(query), parameters, useStructuredResult);
    }
    return this.#fenced(query, parameters, useStructuredResult);
  }

  async #fenced(query: string, parameters: any[] | undefined, useStructuredResult: boolean): Promise<any> {
    if (this.#policy.setSearchPath === undefined) {
      // A library runner (provisioning, migrations): it sets its own search_path;
      // raw SQL of a seed hook may leave state, so its transaction ends with the reset.
      if (this.isTransactionActive) this.#dirty = true;
      return super.query(query, parameters, useStructuredResult);
    }
    if (typeof query !== 'string') {
      throw new RawSqlRefusedError(`Raw SQL must be a string; got ${typeof query}.`);
    }
    if (this.isTransactionActive) return this.#rawInTransaction(query, parameters, useStructuredResult);
    // Raw statements sent at once on one runner outside a transaction would
    // share one fenced transaction, and the first COMMIT would leave the
    // others outside it: they take turns.
    const turn = (this.#standalone ?? Promise.resolve()).then(() =>
      this.isTransactionActive
        ? this.#rawInTransaction(query, parameters, useStructuredResult)
        : this.#rawStandalone(query, parameters, useStructuredResult),
    );
    this.#standalone = turn.catch(() => undefined);
    return turn;
  }

  override async stream(query: string, parameters?: any[], onEnd?: Function, onError?: Function): Promise<any> {
    this.#policy.assertServed();
    if (this.#policy.isGenerated(query, parameters) || this.#policy.setSearchPath === undefined) {
      return super.stream(this.#commented(query), parameters, onEnd, onError);
    }
    if (!this.isTransactionActive) {
      throw new RawSqlRefusedError(
        'A raw SQL stream outside a transaction cannot be fenced to the tenant schema. ' +
          'Call queryRunner.startTransaction() first, or stream a QueryBuilder.',
      );
    }
    await this.#fenceTransaction();
    return super.stream(this.#commented(query), parameters, onEnd, onError);
  }

  override async startTransaction(isolationLevel?: any): Promise<void> {
    this.#policy.assertServed();
    isolationLevel ??= this.dataSource.options.isolationLevel;
    this.isTransactionActive = true;
    try {
      await this.broadcaster.broadcast('BeforeTransactionStart');
    } catch (error) {
      this.isTransactionActive = false;
      throw error;
    }
    if (this.transactionDepth === 0) {
      this.#pathSet = false;
      this.#dirty = false;
      await this.#send('START TRANSACTION');
      if (isolationLevel) await this.#send(`SET TRANSACTION ISOLATION LEVEL ${isolationLevel}`);
    } else {
      await this.#send(`SAVEPOINT typeorm_${this.transactionDepth}`);
    }
    this.transactionDepth += 1;
    await this.broadcaster.broadcast('AfterTransactionStart');
  }

  override async commitTransaction(): Promise<void> {
    if (!this.isTransactionActive) throw new TransactionNotStartedError();
    await this.broadcaster.broadcast('BeforeTransactionCommit');
    if (this.transactionDepth > 1) {
      await this.#send(`RELEASE SAVEPOINT typeorm_${this.transactionDepth - 1}`);
    } else {
      await this.#end('COMMIT');
      this.isTransactionActive = false;
    }
    this.transactionDepth -= 1;
    await this.broadcaster.broadcast('AfterTransactionCommit');
  }

  override async rollbackTransaction(): Promise<void> {
    if (!this.isTransactionActive) throw new TransactionNotStartedError();
    await this.broadcaster.broadcast('BeforeTransactionRollback');
    if (this.transactionDepth > 1) {
      await this.#send(`ROLLBACK TO SAVEPOINT typeorm_${this.transactionDepth - 1}`);
      this.#pathSet = false; // a SET LOCAL made inside the savepoint is undone with it
    } else {
      await this.#end('ROLLBACK');
      this.isTransactionActive = false;
    }
    this.transactionDepth -= 1;
    await this.broadcaster.broadcast('AfterTransactionRollback');
  }

  override release(): Promise<void> {
    const connection = this.databaseConnection as PoolClient | undefined;
    const status = connection === undefined || this.isReleased ? 'I' : transactionStatusOf(connection);
    if (connection === undefined || this.isReleased || (!this.#broken && !this.#dirty && status === 'I')) return super.release();
    return this.#resetAndClose(connection, status);
  }

  async #resetAndClose(connection: PoolClient, status: string | null): Promise<void> {
    // Closing the client connection is not enough behind a transaction pooler,
    // which hands the server connection to the next client as it is: reset it
    // first (best effort: it may be broken), then close it.
    await connection.query(status === 'I' ? FULL_SESSION_RESET : `ROLLBACK; ${FULL_SESSION_RESET}`).catch(() => undefined);
    // pg-pool destroys a connection released with an error instead of reusing it.
    const releaseWithError = (this as unknown as { releasePostgresConnection(err: Error): Promise<void> }).releasePostgresConnection;
    return releaseWithError.call(
      this,
      new Error('typeorm-tenants: this connection may hold session state left by raw SQL, so it is closed instead of reused.'),
    );
  }

  /** Ends the top-level transaction; after raw SQL, the session reset rides in the same message. */
  async #end(command: 'COMMIT' | 'ROLLBACK'): Promise<void> {
    const dirty = this.#dirty;
    this.#pathSet = false;
    if (!dirty) {
      await this.#send(command);
      return;
    }
    try {
      if (command === 'COMMIT') await this.#assertRole();
      await this.#send(`${command}; ${this.#sessionReset()}`);
      this.#dirty = false;
    } catch (error) {
      this.#broken = true;
      throw error;
    }
  }

  /** With `sqlComment`, the tenant's comment in front of `sql` (TypeORM's log shows it too). */
  #commented(sql: string): string {
    const comment = this.#policy.sqlComment;
    return comment === undefined ? sql : comment + sql;
  }

  /** A statement of the runner's own (transaction control, the fence's `SET LOCAL`), with the comment. */
  #send(sql: string): Promise<any> {
    return super.query(this.#commented(sql));
  }

  #sessionReset(): string {
    // Schema mode: no statement may run as another role. Role mode: the role
    // set at checkout stays (the check before COMMIT verified it).
    return this.#policy.role === undefined ? FULL_SESSION_RESET : SESSION_RESET;
  }

  async #fenceTransaction(): Promise<void> {
    this.#dirty = true;
    if (this.#pathSet) return;
    await this.#send(this.#policy.setSearchPath!);
    this.#pathSet = true;
  }

  async #rawInTransaction(query: string, parameters: any[] | undefined, structured: boolean): Promise<any> {
    await this.#fenceTransaction();
    const result = await this.#sendOne(query, parameters, structured);
    await this.#afterRawStatement();
    return result;
  }

  async #rawStandalone(query: string, parameters: any[] | undefined, structured: boolean): Promise<any> {
    await this.#send(`START TRANSACTION; ${this.#policy.setSearchPath!}`);
    this.#dirty = true;
    this.#pathSet = true;
    let result: unknown;
    try {
      result = await this.#sendOne(query, parameters, structured);
      await this.#afterRawStatement();
    } catch (error) {
      if (!this.#broken) {
        await this.#end('ROLLBACK').catch(() => {
          this.#broken = true; // the original error is what the caller needs; the connection is dropped at release
        });
      }
      throw error;
    }
    await this.#end('COMMIT');
    return result;
  }

  /** Sends one statement with the extended protocol (a string of several statements is refused by PostgreSQL). */
  async #sendOne(query: string, parameters: any[] | undefined, structured: boolean): Promise<any> {
    const connection = (await this.connect()) as PoolClient;
    const extended = Object.create(connection, {
      query: {
        value: async (text: string, values?: unknown[]) => {
          const result = await connection.query({ text, values: values ?? [], queryMode: 'extended' } as never);
          this.#lastCommand = (result as { command?: string }).command;
          return result;
        },
      },
    }) as PoolClient;
    // TypeORM's query() reads the connection once, synchronously, at its start.
    this.databaseConnection = extended;
    let pending: Promise<any>;
    try {
      pending = super.query(this.#commented(query), parameters, structured);
    } finally {
      this.databaseConnection = connection;
    }
    this.#lastCommand = undefined;
    const result = await pending;
    if (this.#lastCommand !== undefined && PATH_UNDOING_COMMANDS.has(this.#lastCommand)) this.#pathSet = false;
    return result;
  }

  async #afterRawStatement(): Promise<void> {
    const connection = this.databaseConnection as PoolClient;
    if (transactionStatusOf(connection) === 'I' || this.#lastCommand === 'COMMIT') {
      // The statement ended the transaction (COMMIT, ROLLBACK, PREPARE
      // TRANSACTION), or committed it and opened another (COMMIT AND CHAIN):
      // what follows would run outside the fence.
      this.#broken = true;
      this.isTransactionActive = false;
      this.transactionDepth = 0;
      throw new RawSqlRefusedError(
        'Raw SQL ended the transaction it ran in. Transaction control is not allowed in raw SQL: ' +
          'use queryRunner.startTransaction()/commitTransaction() or tenantContext.transaction(). The connection was closed.',
      );
    }
    await this.#assertRole();
  }

  /** Role isolation: the statement must have left the connection under the tenant's role. */
  async #assertRole(): Promise<void> {
    const role = this.#policy.role;
    if (role === undefined) return;
    const connection = this.databaseConnection as PoolClient;
    if (transactionStatusOf(connection) === 'E') return; // aborted: only a rollback can follow
    const { rows } = await connection.query<{ current: string; session: string }>(
      'SELECT current_user::text AS current, session_user::text AS session',
    );
    const [{ current, session }] = rows as [{ current: string; session: string }];
    if (current === role && (this.#policy.sessionUser === undefined || session === this.#policy.sessionUser)) return;
    this.#broken = true;
    await connection.query('ROLLBACK').catch(() => undefined);
    this.isTransactionActive = false;
    this.transactionDepth = 0;
    this.#dirty = false;
    throw new TenantRoleEscapeError(role, current);
  }
}

function transactionStatusOf(connection: PoolClient): string | null {
  const status = (connection as unknown as { getTransactionStatus?: () => string | null }).getTransactionStatus?.();
  return status ?? 'I';
}
