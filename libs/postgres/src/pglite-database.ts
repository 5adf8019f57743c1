import { PGlite } from '@electric-sql/pglite';
import { QueryResult, RolledBackError, SqlDatabase, SqlExecutor } from './database';

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
    // PGlite's COMMIT after a failed statement that `work` caught rolls back without saying so.
    transaction: (work) =>
      db.transaction(async (tx) => {
        let failed = false;
        const inner = wrap(tx);
        const value = await work({
          query: <R>(sql: string, params?: unknown[]) =>
            inner.query<R>(sql, params).catch((err: unknown) => {
              failed = true;
              throw err;
            }),
        });
        if (failed) throw new RolledBackError();
        return value;
      }),
    async ping() {
      await db.query('SELECT 1');
    },
    close: () => db.close(),
  };
}
