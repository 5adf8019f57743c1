import type { SqlExecutor } from './database';

export interface DeleteOlderThan {
  table: string;
  /** A time column, compared with `before`. */
  column: string;
  before: number;
  /** A further condition a row must meet to go (SQL, from code, never from input). */
  only?: string;
  /** Rows per statement (default 5,000), so that a large purge never holds long locks. */
  batch?: number;
  /** Stops between statements once aborted (a service shutting down); the rest goes next time. */
  signal?: AbortSignal;
}

/** Deletes the rows whose `column` is below `before`, a batch per statement; returns how many went. */
export async function deleteOlderThan(db: SqlExecutor, options: DeleteOlderThan): Promise<number> {
  const { table, column, before } = options;
  const batch = options.batch ?? 5000;
  const old = options.only ? `${column} < $1 AND (${options.only})` : `${column} < $1`;
  let total = 0;
  for (;;) {
    if (options.signal?.aborted) return total;
    // The rows found are deleted by their physical address (a TID scan): joined by key, the
    // planner read every old row again through the time index for each batch (a hash semi join),
    // so a large purge grew with the square of its rows. The time condition again on the deleted
    // row: one updated after the subquery's snapshot (an ack refreshing its tombstone) is checked
    // on its new version, not deleted by its address alone.
    const result = await db.query(
      `DELETE FROM ${table} WHERE ctid = ANY (ARRAY(SELECT ctid FROM ${table} WHERE ${old} LIMIT $2)) AND ${old}`,
      [before, batch],
    );
    total += result.rowCount;
    if (result.rowCount < batch) return total;
  }
}
