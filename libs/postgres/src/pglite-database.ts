import { PGlite } from '@electric-sql/pglite';
import { QueryResult, SqlDatabase, SqlExecutor } from './database';

/**
 * PGlite (Postgres compiled to WASM) in this process, persisted to `dataDir` (in memory without one).
 * PGlite is a single session, so transactions are serialized by PGlite itself.
 */
export async function createPgliteDatabase(dataDir?: string): Promise<SqlDatabase> {
  const db = await PGlite.create(dataDir ? { dataDir } : {});
  const wrap = (target: Pick<PGlite, 'query'>): SqlExecutor => ({
    async query<R>(sql: string, params?: unknown[]): Promise<QueryResult<R>> {
      const result = await target.query<R>(sql, params);
      return { rows: result.rows, rowCount: result.affectedRows ?? result.rows.length };
    },
  });
  const executor = wrap(db);
  return {
    kind: 'pglite',
    query: executor.query,
    transaction: (work) => db.transaction((tx) => work(wrap(tx))),
    async ping() {
      await db.query('SELECT 1');
    },
    close: () => db.close(),
  };
}
