import { Pool, PoolConfig, QueryConfig } from 'pg';
import { QueryResult, RolledBackError, SqlDatabase, SqlExecutor } from './database';

const BUSY_IS_HEALTHY_MS = 5000;
const READ_ONLY_TRANSACTION = '25006';
/** How much longer than the statement timeout the client waits for an answer (the network, a large result). */
const READ_TIMEOUT_MARGIN_MS = 5000;
/** pg's error when `query_timeout` passed. */
const READ_TIMEOUT = 'Query read timeout';
/** The longest a Node timer waits: for a transaction without timeouts (migrations). */
const NO_READ_TIMEOUT = 2 ** 31 - 1;
/**
 * The longest statement timeout whose read timeout a Node timer can wait (about 24.8 days): a longer
 * one fired at once, failing every query, and past 2^31 - 1 Postgres refused every connection.
 */
export const MAX_STATEMENT_TIMEOUT_MS = NO_READ_TIMEOUT - READ_TIMEOUT_MARGIN_MS;

export interface PgDatabaseConfig extends PoolConfig {
  connectionString: string;
  /** Postgres's `statement_timeout` for every connection; 0 or unset: none. */
  statementTimeoutMs?: number;
}

export function createPgDatabase({ statementTimeoutMs, ...config }: PgDatabaseConfig): SqlDatabase {
  // Keepalive: a connection left half-open by a failover is found dead in seconds, not at the TCP timeout.
  const pool = new Pool({
    max: 10,
    connectionTimeoutMillis: 5000,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    // The statement timeout is the server's: a server that stopped answering (its host gone without
    // a reset) never applies it, and the query would wait for TCP to give up (about 15 minutes with a
    // request unanswered), holding its client. The client gives up a little later than the server.
    ...(statementTimeoutMs
      ? { statement_timeout: statementTimeoutMs, query_timeout: statementTimeoutMs + READ_TIMEOUT_MARGIN_MS }
      : {}),
    ...config,
  });
  // An idle client losing its connection must not crash the process; the pool replaces it.
  pool.on('error', () => undefined);
  /** When a statement last succeeded: a pool busy with work that succeeds is a healthy database. */
  let answeredAt = 0;
  const query = async <R>(sql: string, params?: unknown[]): Promise<QueryResult<R>> => {
    const result = await pool.query(sql, params);
    answeredAt = Date.now();
    return { rows: result.rows as R[], rowCount: result.rowCount ?? 0 };
  };
  return {
    kind: 'postgres',
    query,
    async transaction(work, options) {
      const client = await pool.connect();
      // A connection lost while checked out is reported on the client, not the pool: without a
      // listener that 'error' event kills the process. Such a client is destroyed, never reused.
      let broken: Error | undefined;
      const onError = (err: Error) => (broken = err);
      client.on('error', onError);
      const tx: SqlExecutor = {
        query: async <R>(sql: string, params?: unknown[]) => {
          // pg reads a query's own query_timeout, but its types do not name it.
          const config: QueryConfig = options?.noTimeout
            ? ({ text: sql, values: params, query_timeout: NO_READ_TIMEOUT } as QueryConfig)
            : { text: sql, values: params };
          const result = await client.query(config);
          answeredAt = Date.now();
          return { rows: result.rows as R[], rowCount: result.rowCount ?? 0 };
        },
      };
      try {
        await client.query('BEGIN');
        const value = await work(tx);
        // After a failed statement that `work` caught, Postgres answers COMMIT by rolling back.
        if ((await client.query('COMMIT')).command === 'ROLLBACK') throw new RolledBackError();
        return value;
      } catch (err) {
        // A server that stopped answering would not answer the ROLLBACK either: the connection goes.
        if ((err as Error).message === READ_TIMEOUT) broken ??= err as Error;
        else await client.query('ROLLBACK').catch((rollbackFailed: Error) => (broken ??= rollbackFailed));
        // On a server a failover made read-only: let the pool connect anew, to the new primary.
        if ((err as { code?: string }).code === READ_ONLY_TRANSACTION) broken ??= err as Error;
        throw err;
      } finally {
        client.off('error', onError);
        client.release(broken);
      }
    },
    async ping() {
      // Every client busy (a backlog being worked off) and the last statement answered just now:
      // queueing the probe behind the work would time it out and take every replica out of service.
      if (pool.idleCount === 0 && pool.waitingCount > 0 && Date.now() - answeredAt < BUSY_IS_HEALTHY_MS)
        return;
      await query('SELECT 1');
    },
    close: () => pool.end(),
  };
}
