import { deleteOlderThan, migrate, PURGE_SKIPS_LOCKED, SqlDatabase, SqlExecutor } from '@parley/postgres';
import { type Deliverable, SYNC_PAGE_MAX_BYTES } from '@parley/contracts';
import { MIGRATIONS } from './migrations';
import { keyOf, OfflineStore, PendingDeliverable, PendingPage, PurgeResult } from './store';

export interface SqlOfflineStoreOptions {
  /** Milliseconds since the epoch; injectable so retention can be tested. */
  now?: () => number;
  /** Rows deleted per statement while purging, so a large purge never holds long locks. */
  purgeBatch?: number;
}

/** The offline store on Postgres or PGlite (same SQL). */
export function createSqlOfflineStore(db: SqlDatabase, options: SqlOfflineStoreOptions = {}): OfflineStore {
  const now = options.now ?? Date.now;
  const byMessage = { batch: options.purgeBatch };
  /** Deletes what these acks name and remembers them, in one transaction for the lot (see `ack`). */
  const ackAll: OfflineStore['ackAll'] = async (acks) => {
    const pairs = new Map<string, { recipient: string; mid: string }>();
    /** What gets a tombstone: every mid acked, but those of an `unknown` ack only where deleted. */
    const remembered = new Map<string, { recipient: string; mid: string }>();
    for (const { user, mids, unknown } of acks)
      for (const mid of mids) {
        const key = keyOf(user, mid);
        pairs.set(key, { recipient: user, mid });
        if (!unknown) remembered.set(key, { recipient: user, mid });
      }
    if (pairs.size === 0) return 0;
    return db.transaction(async (tx) => {
      await reserveSequences(
        tx,
        [...new Set([...pairs.values()].map((pair) => pair.recipient))].map((recipient) => ({
          recipient,
          n: 0,
        })),
      );
      const deleted = await tx.query<{ recipient: string; mid: string }>(
        `DELETE FROM offline_messages o USING jsonb_to_recordset($1::text::jsonb) AS m(recipient text, mid text)
         WHERE o.recipient = m.recipient AND o.mid = m.mid
         RETURNING o.recipient, o.mid`,
        [JSON.stringify([...pairs.values()])],
      );
      for (const row of deleted.rows) remembered.set(keyOf(row.recipient, row.mid), row);
      if (remembered.size > 0)
        await tx.query(
          `INSERT INTO offline_acks (recipient, mid, acked_at)
           SELECT m.recipient, m.mid, $2 FROM jsonb_to_recordset($1::text::jsonb) AS m(recipient text, mid text)
           ON CONFLICT (recipient, mid) DO UPDATE SET acked_at = EXCLUDED.acked_at`,
          [JSON.stringify([...remembered.values()]), now()],
        );
      return deleted.rows.length;
    });
  };
  return {
    async init() {
      await migrate(db, 'persistence-ms', MIGRATIONS);
    },
    async store(items) {
      const byRecipient = groupByRecipient(items);
      if (byRecipient.size === 0) return [];
      const storedAt = now();
      return db.transaction(async (tx) => {
        const lastSeqs = await reserveSequences(
          tx,
          [...byRecipient].map(([recipient, frames]) => ({ recipient, n: frames.length })),
        );
        const rows = [...byRecipient].flatMap(([recipient, frames]) => {
          const firstSeq = lastSeqs.get(recipient)! - frames.length + 1;
          return frames.map((frame, i) => ({ recipient, mid: frame.mid, seq: firstSeq + i, frame }));
        });
        const inserted = await insertMessages(tx, rows, storedAt);
        return rows
          .filter((row) => inserted.has(keyOf(row.recipient, row.mid)))
          .map(({ recipient, frame }) => ({ to: recipient, frame }));
      });
    },
    async held(items) {
      if (items.length === 0) return [];
      const found = await db.query<{ recipient: string; mid: string }>(
        `SELECT o.recipient, o.mid FROM jsonb_to_recordset($1::text::jsonb) AS m(recipient text, mid text)
         JOIN offline_messages o ON o.recipient = m.recipient AND o.mid = m.mid`,
        [JSON.stringify(items.map(({ to, mid }) => ({ recipient: to, mid })))],
      );
      const stored = new Set(found.rows.map((row) => keyOf(row.recipient, row.mid)));
      return items.filter(({ to, mid }) => stored.has(keyOf(to, mid)));
    },
    ack: (user, mids) => ackAll([{ user, mids }]),
    ackAll,
    async page(user, afterSeq, limit, maxBytes = SYNC_PAGE_MAX_BYTES) {
      // The position is read as text (pg returns bigint as a string, PGlite as a number) under another
      // name: `ORDER BY seq` would otherwise sort by the text alias. Of the first `limit + 1` rows,
      // those whose predecessors' frames hold under `maxBytes` are read (octet_length reads a stored
      // value's size, not the value).
      const result = await db.query<{ position: string; frame: string; considered: string }>(
        `SELECT seq::text AS position, frame, considered FROM (
           SELECT seq, frame, count(*) OVER () AS considered,
                  sum(octet_length(frame)) OVER (ORDER BY seq) - octet_length(frame) AS before
           FROM (
             SELECT seq, frame FROM offline_messages WHERE recipient = $1 AND seq > $2 ORDER BY seq LIMIT $3
           ) firsts
         ) page WHERE before < $4 ORDER BY seq`,
        [user, afterSeq, limit + 1, maxBytes],
      );
      return toPage(result.rows, afterSeq, limit);
    },
    async markConnected(connects) {
      if (connects.length === 0) return new Set();
      return db.transaction(async (tx) => {
        // The users' sequence row locks: a store for one of them either committed before this looks
        // for stored rows (and is seen), or waits, and meets the connect noted once this commits.
        await reserveSequences(
          tx,
          [...new Set(connects.map((c) => c.user))].map((recipient) => ({ recipient, n: 0 })),
        );
        const result = await tx.query<{ recipient: string; replaying: boolean }>(
          `INSERT INTO offline_connects (recipient, connected_at, replaying)
           SELECT c.recipient, max(c.at), EXISTS (SELECT 1 FROM offline_messages m WHERE m.recipient = c.recipient)
           FROM jsonb_to_recordset($1::text::jsonb) AS c(recipient text, at bigint)
           GROUP BY c.recipient ORDER BY c.recipient COLLATE "C"
           ON CONFLICT (recipient) DO UPDATE SET
             connected_at = GREATEST(offline_connects.connected_at, EXCLUDED.connected_at),
             replaying = EXCLUDED.replaying
           RETURNING recipient, replaying`,
          [JSON.stringify(connects.map(({ user, at }) => ({ recipient: user, at })))],
        );
        return new Set(result.rows.filter((row) => row.replaying).map((row) => row.recipient));
      });
    },
    async replayed(user, afterSeq) {
      return db.transaction(async (tx) => {
        // The user's sequence row lock: a store for the user either committed before this reads
        // (and is seen behind `afterSeq`) or waits, and meets the replay over once this commits.
        await reserveSequences(tx, [{ recipient: user, n: 0 }]);
        if (afterSeq !== undefined) {
          const behind = await tx.query(
            'SELECT 1 FROM offline_messages WHERE recipient = $1 AND seq > $2 LIMIT 1',
            [user, afterSeq],
          );
          if (behind.rows.length > 0) return false;
        }
        await tx.query('UPDATE offline_connects SET replaying = false WHERE recipient = $1', [user]);
        return true;
      });
    },
    async connectedSince(users, since) {
      if (users.length === 0) return new Set();
      const result = await db.query<{ recipient: string }>(
        'SELECT recipient FROM offline_connects WHERE recipient IN (SELECT jsonb_array_elements_text($1::text::jsonb)) AND connected_at >= $2 AND NOT replaying',
        [JSON.stringify([...new Set(users)]), since],
      );
      return new Set(result.rows.map((row) => row.recipient));
    },
    async erase(user, outOfTime = () => false) {
      // In batches: a user flooded while away can have millions of rows, which one statement would
      // not delete within the statement timeout, so that no call ever got further.
      const batch = options.purgeBatch ?? 5000;
      let erased = 0;
      for (const table of ['offline_messages', 'offline_acks']) {
        for (;;) {
          const deleted = await db.transaction(async (tx) => {
            await reserveSequences(tx, [{ recipient: user, n: 0 }]);
            return (
              await tx.query(
                `DELETE FROM ${table} WHERE ctid = ANY (ARRAY(SELECT ctid FROM ${table} WHERE recipient = $1 LIMIT $2))`,
                [user, batch],
              )
            ).rowCount;
          });
          if (table === 'offline_messages') erased += deleted;
          if (deleted < batch) break; // this table holds no more of theirs
          if (outOfTime()) return { erased, done: false };
        }
      }
      await db.query('DELETE FROM offline_connects WHERE recipient = $1', [user]);
      return { erased, done: true };
    },
    async purge({ messagesBefore, tombstonesBefore }, signal): Promise<PurgeResult> {
      const purged = {
        messages: await deleteOlderThan(db, {
          ...byMessage,
          table: 'offline_messages',
          column: 'stored_at',
          before: messagesBefore,
          signal,
        }),
        tombstones: await deleteOlderThan(db, {
          ...byMessage,
          table: 'offline_acks',
          column: 'acked_at',
          before: tombstonesBefore,
          signal,
        }),
      };
      // Last: one unindexed statement (an index would cost every connect's upsert its HOT update),
      // which at tens of millions of rows could pass the statement timeout; it must not keep the
      // messages and tombstones above from being purged. Joined by address to the rows it could
      // lock (PURGE_SKIPS_LOCKED): a connection batch upserts its users' rows in key order.
      await db.query(
        `DELETE FROM offline_connects c
         USING (SELECT ctid AS old FROM offline_connects WHERE connected_at < $1 ${PURGE_SKIPS_LOCKED}) o
         WHERE c.ctid = o.old AND c.connected_at < $1`,
        [tombstonesBefore],
      );
      return { ...purged, sequences: await forgetIdleSequences(db, options.purgeBatch ?? 5000, signal) };
    },
  };
}

function groupByRecipient(items: PendingDeliverable[]): Map<string, Deliverable[]> {
  const byRecipient = new Map<string, Map<string, Deliverable>>();
  for (const { to, frame } of items) {
    const frames = byRecipient.get(to) ?? new Map<string, Deliverable>();
    byRecipient.set(to, frames);
    if (!frames.has(frame.mid)) frames.set(frame.mid, frame);
  }
  return new Map([...byRecipient].map(([to, frames]) => [to, [...frames.values()]]));
}

/**
 * Where a recipient's positions start when its sequence row is made: the transaction's start in
 * microseconds since the epoch, by the database's one clock. A row forgotten (`forgetIdleSequences`)
 * and made again thus hands out positions after every one the old row did (unless that row gave out
 * more than one a microsecond over its life), so a cursor an app kept skips nothing stored later.
 * Safe integers until the year 2255.
 */
const SEQUENCE_FLOOR = '(extract(epoch from now()) * 1000000)::bigint';

/**
 * Takes the sequence row lock of each recipient (held until commit) and reserves `n` positions for
 * it, in one statement; returns each recipient's last reserved position. Stores and acks of one
 * recipient thus run one after the other, so an ack and a concurrent store of the same mid cannot
 * both miss each other, and positions are handed out in commit order. Rows are locked in byte
 * order (COLLATE "C", whatever the database's collation, as the release before sorted them), so
 * two transactions cannot deadlock. A new row starts at SEQUENCE_FLOOR.
 */
async function reserveSequences(
  tx: SqlExecutor,
  reservations: { recipient: string; n: number }[],
): Promise<Map<string, number>> {
  const result = await tx.query<{ recipient: string; last_seq: string }>(
    `INSERT INTO offline_sequences (recipient, last_seq)
     SELECT r.recipient, ${SEQUENCE_FLOOR} + r.n FROM jsonb_to_recordset($1::text::jsonb) AS r(recipient text, n bigint)
     ORDER BY r.recipient COLLATE "C"
     ON CONFLICT (recipient) DO UPDATE SET
       last_seq = offline_sequences.last_seq + (EXCLUDED.last_seq - ${SEQUENCE_FLOOR})
     RETURNING recipient, last_seq::text AS last_seq`,
    [JSON.stringify(reservations)],
  );
  return new Map(result.rows.map((row) => [row.recipient, Number(row.last_seq)]));
}

/**
 * Forgets, `batch` rows a statement, the sequence rows of recipients with nothing stored and no
 * connect remembered: made for every recipient ever stored for, acked or connected (any user id a
 * client names, one that does not exist too), they were kept for good. Deleted by address, and a
 * row a reservation has touched since the statement began (a store, an ack, a connect: each writes
 * a new version) is not deleted: its transaction may have stored behind it, and one a reservation
 * holds now is skipped (PURGE_SKIPS_LOCKED: reservations lock rows in key order). Returns how many went.
 */
async function forgetIdleSequences(db: SqlExecutor, batch: number, signal?: AbortSignal): Promise<number> {
  let total = 0;
  for (;;) {
    if (signal?.aborted) return total;
    const result = await db.query(
      `DELETE FROM offline_sequences WHERE ctid = ANY (ARRAY(
         SELECT s.ctid FROM offline_sequences s
         WHERE NOT EXISTS (SELECT 1 FROM offline_messages m WHERE m.recipient = s.recipient)
           AND NOT EXISTS (SELECT 1 FROM offline_connects c WHERE c.recipient = s.recipient)
         LIMIT $1 ${PURGE_SKIPS_LOCKED}))`,
      [batch],
    );
    total += result.rowCount;
    if (result.rowCount < batch) return total;
  }
}

/** Inserts what is neither stored nor acked yet, in one statement; returns the `keyOf`s it inserted. */
async function insertMessages(
  tx: SqlExecutor,
  rows: { recipient: string; mid: string; seq: number; frame: Deliverable }[],
  storedAt: number,
): Promise<Set<string>> {
  const inserted = await tx.query<{ recipient: string; mid: string }>(
    `INSERT INTO offline_messages (recipient, mid, seq, frame, stored_at)
     SELECT m.recipient, m.mid, m.seq, m.frame, $2
     FROM jsonb_to_recordset($1::text::jsonb) AS m(recipient text, mid text, seq bigint, frame text)
     WHERE NOT EXISTS (SELECT 1 FROM offline_acks a WHERE a.recipient = m.recipient AND a.mid = m.mid)
     ON CONFLICT (recipient, mid) DO NOTHING
     RETURNING recipient, mid`,
    [JSON.stringify(rows.map((row) => ({ ...row, frame: JSON.stringify(row.frame) }))), storedAt],
  );
  return new Set(inserted.rows.map((row) => keyOf(row.recipient, row.mid)));
}

/** `rows`: the first `limit + 1` after `afterSeq` (`considered` of them), less those past the page's bytes. */
function toPage(
  rows: { position: string; frame: string; considered: string }[],
  afterSeq: number,
  limit: number,
): PendingPage {
  const page = rows.slice(0, limit);
  return {
    messages: page.map((row) => JSON.parse(row.frame) as Deliverable),
    lastSeq: page.length > 0 ? Number(page[page.length - 1].position) : afterSeq,
    hasMore: Number(rows[0]?.considered ?? 0) > page.length,
  };
}
