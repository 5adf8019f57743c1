import { Pool, PoolConfig } from 'pg';
import { QueryResult, RolledBackError, SqlDatabase, SqlExecutor } from './database';

const BUSY_IS_HEALTHY_MS = 5000;
const READ_ONLY_TRANSACTION = '25006';

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
    ...(statementTimeoutMs ? { statement_timeout: statementTimeoutMs } : {}),
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
    async transaction(work) {
      const client = await pool.connect();
      // A connection lost while checked out is reported on the client, not the pool: without a
      // listener that 'error' event kills the process. Such a client is destroyed, never reused.
      let broken: Error | undefined;
      const onError = (err: Error) => (broken = err);
      client.on('error', onError);
      const tx: SqlExecutor = {
        query: async <R>(sql: string, params?: unknown[]) => {
          const result = await client.query(sql, params);
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
        await client.query('ROLLBACK').catch((rollbackFailed: Error) => (broken ??= rollbackFailed));
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
