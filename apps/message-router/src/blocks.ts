import type { Logger } from 'pino';
import { SqlExecutor } from '@parley/postgres';

/** A 1:1 frame's two ends: the user it is addressed to, and the user who sent it. */
export interface BlockPair {
  recipient: string;
  sender: string;
}

/** Which recipients blocked which senders (a user's blocks: group-ms's `user_blocks`). */
export interface BlockReader {
  /** Of these pairs, the `blockKey`s of those whose recipient blocked the sender. */
  blockedPairs(pairs: readonly BlockPair[]): Promise<Set<string>>;
}

/** A pair as one string: user ids never hold a NUL (USER_ID_PATTERN). */
export function blockKey(recipient: string, sender: string): string {
  return `${recipient}\u0000${sender}`;
}

/** Postgres' undefined_table: group-ms has not run migration 023 yet (a router rolled out first). */
const UNDEFINED_TABLE = '42P01';

/**
 * Reads group-ms's `user_blocks` (read-only; group-ms owns and migrates it): one statement per
 * call, whatever the number of pairs, each distinct pair asked once, looked up by the primary key.
 * Before group-ms has created the table, nobody has blocked anybody: no pair is blocked (warned once).
 */
export function createSqlBlockReader(db: SqlExecutor, logger: Pick<Logger, 'warn'>): BlockReader {
  let warnedMissing = false;
  return {
    async blockedPairs(pairs) {
      const distinct = new Map(pairs.map((p) => [blockKey(p.recipient, p.sender), p]));
      if (distinct.size === 0) return new Set();
      const recipients: string[] = [];
      const senders: string[] = [];
      for (const { recipient, sender } of distinct.values()) {
        recipients.push(recipient);
        senders.push(sender);
      }
      try {
        const rows = await db.query<{ user_id: string; blocked_id: string }>(
          `SELECT b.user_id, b.blocked_id
           FROM unnest($1::text[], $2::text[]) AS p(user_id, blocked_id)
           JOIN user_blocks b ON b.user_id = p.user_id AND b.blocked_id = p.blocked_id`,
          [recipients, senders],
        );
        return new Set(rows.rows.map((row) => blockKey(row.user_id, row.blocked_id)));
      } catch (err) {
        if ((err as { code?: string }).code !== UNDEFINED_TABLE) throw err;
        if (!warnedMissing) {
          warnedMissing = true;
          logger.warn(
            { err },
            "user_blocks does not exist (group-ms has not migrated to this release yet): no user's blocks are enforced until it does",
          );
        }
        return new Set();
      }
    },
  };
}
