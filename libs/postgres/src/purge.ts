import type { SqlExecutor } from './database';

/**
 * The locking clause of a purge's select of the rows it deletes. A purge deletes rows in the order
 * it finds them (their physical order), while a service's statement locks several rows in another
 * (an ack batch in the order acks came, upserts in key order): each can hold a row the other waits
 * for, a deadlock in which Postgres fails one of them after a second. A purge that takes only the
 * rows it can lock at once never waits on a row, so it is never part of such a cycle; the rows it
 * skipped are being written now, and go at a later run if still old then.
 */
export const PURGE_SKIPS_LOCKED = 'FOR UPDATE SKIP LOCKED';

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

/**
 * Deletes the rows whose `column` is below `before`, a batch per statement; returns how many went.
 * Rows locked by a transaction at work on them are left for the next run (see PURGE_SKIPS_LOCKED).
 */
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
      `DELETE FROM ${table} WHERE ctid = ANY (ARRAY(SELECT ctid FROM ${table} WHERE ${old} LIMIT $2 ${PURGE_SKIPS_LOCKED})) AND ${old}`,
      [before, batch],
    );
    total += result.rowCount;
    if (result.rowCount < batch) return total;
  }
}
