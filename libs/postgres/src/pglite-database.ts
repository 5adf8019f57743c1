import { PGlite } from '@electric-sql/pglite';
import { lockDataDir } from '@parley/service-kit';
import { QueryResult, RolledBackError, SqlDatabase, SqlExecutor } from './database';

/**
 * How often the adapter vacuums PGlite. PGlite runs Postgres in single-user mode, with no autovacuum:
 * the space of every row deleted (a message acked or purged, an op past retention) stayed taken for
 * good, so the data directory (memory, without one) grew with every row ever written, whatever the
 * purges left. A VACUUM pauses every query for its run: 0.3 s for 150,000 dead rows in 140 MB,
 * 40 ms with none (measured).
 */
export const PGLITE_VACUUM_INTERVAL_MS = 10 * 60_000;

/**
 * PGlite (Postgres compiled to WASM) in this process, persisted to `dataDir` (in memory without one).
 * PGlite is a single session, so transactions are serialized by PGlite itself. It is one process's
 * too: a second PGlite on the same files overwrites the first's writes or crashes, so the directory
 * is locked and a second opener refused ("in use by process N"). Vacuumed every `vacuumIntervalMs`.
 */
export async function createPgliteDatabase(
  dataDir?: string,
  { vacuumIntervalMs = PGLITE_VACUUM_INTERVAL_MS }: { vacuumIntervalMs?: number } = {},
): Promise<SqlDatabase> {
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
      // PGlite counts only the rows a statement changed (0 for a SELECT); pg, the rows the
      // statement's tag names: those changed, or those a SELECT returned.
      return { rows: result.rows, rowCount: result.affectedRows || result.rows.length };
    },
  });
  const executor = wrap(db);
  // One at a time; a failure (a full disk) leaves the space to the next run.
  let vacuuming: Promise<unknown> | undefined;
  const vacuum = setInterval(() => {
    vacuuming ??= db
      .query('VACUUM')
      .catch(() => undefined)
      .finally(() => (vacuuming = undefined));
  }, vacuumIntervalMs).unref();
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
    async close() {
      clearInterval(vacuum);
      await vacuuming;
      await db.close().finally(unlock);
    },
  };
}
