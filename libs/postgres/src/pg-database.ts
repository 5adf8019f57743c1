import { Pool, PoolConfig } from 'pg';
import { QueryResult, SqlDatabase, SqlExecutor } from './database';

export function createPgDatabase(config: PoolConfig & { connectionString: string }): SqlDatabase {
  const pool = new Pool({ max: 10, connectionTimeoutMillis: 5000, ...config });
  // An idle client losing its connection must not crash the process; the pool replaces it.
  pool.on('error', () => undefined);
  const query = async <R>(sql: string, params?: unknown[]): Promise<QueryResult<R>> => {
    const result = await pool.query(sql, params);
    return { rows: result.rows as R[], rowCount: result.rowCount ?? 0 };
  };
  return {
    kind: 'postgres',
    query,
    async transaction(work) {
      const client = await pool.connect();
      const tx: SqlExecutor = {
        query: async <R>(sql: string, params?: unknown[]) => {
          const result = await client.query(sql, params);
          return { rows: result.rows as R[], rowCount: result.rowCount ?? 0 };
        },
      };
      try {
        await client.query('BEGIN');
        const value = await work(tx);
        await client.query('COMMIT');
        return value;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      } finally {
        client.release();
      }
    },
    async ping() {
      await pool.query('SELECT 1');
    },
    close: () => pool.end(),
  };
}
