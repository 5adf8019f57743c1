import { PGlite } from '@electric-sql/pglite';
import { lockDataDir } from '@parley/service-kit';
import { QueryResult, RolledBackError, SqlDatabase, SqlExecutor } from './database';

/**
 * PGlite (Postgres compiled to WASM) in this process, persisted to `dataDir` (in memory without one).
 * PGlite is a single session, so transactions are serialized by PGlite itself. It is one process's
 * too: a second PGlite on the same files overwrites the first's writes or crashes, so the directory
 * is locked and a second opener refused ("in use by process N").
 */
export async function createPgliteDatabase(dataDir?: string): Promise<SqlDatabase> {
  const unlock = dataDir ? lockDataDir(dataDir, 'PGlite database') : () => undefined;
  let db: PGlite;
  try {
    db = await PGlite.create(dataDir ? { dataDir } : {});
  } catch (err) {
    unlock();
    throw err;
  }
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
    close: () => db.close().finally(unlock),
  };
}
