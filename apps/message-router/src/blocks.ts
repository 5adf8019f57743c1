import type { Logger } from 'pino';
import { SqlExecutor } from '@parley/postgres';

/** A 1:1 frame's two ends: the user it is addressed to, and the user who sent it. */
export interface BlockPair {
  recipient: string;
  sender: string;
}

/** What a lookup of pairs finds. */
export interface BlockedPairs {
  /** The `blockKey`s of the pairs whose recipient blocked the sender. */
  blocked: Set<string>;
  /** The recipients asked about who blocked anyone at all (those who did not block nobody). */
  blockingAnyone: Set<string>;
}

/** Which recipients blocked which senders (a user's blocks: group-ms's `user_blocks`). */
export interface BlockReader {
  blockedPairs(pairs: readonly BlockPair[]): Promise<BlockedPairs>;
}

const NOTHING_BLOCKED: BlockedPairs = { blocked: new Set(), blockingAnyone: new Set() };

/** A pair as one string: user ids never hold a NUL (USER_ID_PATTERN). */
export function blockKey(recipient: string, sender: string): string {
  return `${recipient}\u0000${sender}`;
}

/** Postgres' undefined_table: group-ms has not run migration 023 yet (a router rolled out first). */
const UNDEFINED_TABLE = '42P01';

/**
 * Reads group-ms's `user_blocks` (read-only; group-ms owns and migrates it): one statement per
 * call, whatever the number of pairs, each distinct pair asked once, looked up by the primary key,
 * and each recipient probed once for any block at all. Before group-ms has created the table,
 * nobody has blocked anybody (warned once).
 */
export function createSqlBlockReader(db: SqlExecutor, logger: Pick<Logger, 'warn'>): BlockReader {
  let warnedMissing = false;
  return {
    async blockedPairs(pairs) {
      const distinct = new Map(pairs.map((p) => [blockKey(p.recipient, p.sender), p]));
      if (distinct.size === 0) return NOTHING_BLOCKED;
      const recipients: string[] = [];
      const senders: string[] = [];
      for (const { recipient, sender } of distinct.values()) {
        recipients.push(recipient);
        senders.push(sender);
      }
      try {
        // The blocked pairs, then (blocked_id NULL) the recipients who blocked anyone.
        const rows = await db.query<{ user_id: string; blocked_id: string | null }>(
          `SELECT b.user_id, b.blocked_id
           FROM unnest($1::text[], $2::text[]) AS p(user_id, blocked_id)
           JOIN user_blocks b ON b.user_id = p.user_id AND b.blocked_id = p.blocked_id
           UNION ALL
           SELECT r.user_id, NULL
           FROM unnest($3::text[]) AS r(user_id)
           WHERE EXISTS (SELECT 1 FROM user_blocks b WHERE b.user_id = r.user_id)`,
          [recipients, senders, [...new Set(recipients)]],
        );
        const found: BlockedPairs = { blocked: new Set(), blockingAnyone: new Set() };
        for (const row of rows.rows) {
          if (row.blocked_id === null) found.blockingAnyone.add(row.user_id);
          else found.blocked.add(blockKey(row.user_id, row.blocked_id));
        }
        return found;
      } catch (err) {
        if ((err as { code?: string }).code !== UNDEFINED_TABLE) throw err;
        if (!warnedMissing) {
          warnedMissing = true;
          logger.warn(
            { err },
            "user_blocks does not exist (group-ms has not migrated to this release yet): no user's blocks are enforced until it does",
          );
        }
        return NOTHING_BLOCKED;
      }
    },
  };
}

export interface NonBlockerCacheOptions {
  /** How long a recipient found to block nobody is not asked about again (0: always asked). */
  windowMs: number;
  /** Recipients remembered at most in a window; past it, the rest are asked about each batch. */
  maxRecipients: number;
  clock: () => number;
}

/**
 * Remembers, for a window, the recipients found to block nobody (nearly everyone), so a batch
 * whose recipients all block nobody asks nothing. The remembered set is dropped whole when the
 * window ends, so the next batches ask about their recipients in a few large lookups rather than
 * each batch asking about the few whose time ran out. A recipient who blocks anyone is asked about
 * on every batch: their blocks and unblocks apply at once. A first block applies within a window.
 */
export function cacheNonBlockers(reader: BlockReader, options: NonBlockerCacheOptions): BlockReader {
  let blocksNobody = new Set<string>();
  let windowEnds = 0;
  return {
    async blockedPairs(pairs) {
      const now = options.clock();
      if (now >= windowEnds) {
        blocksNobody = new Set();
        windowEnds = now + options.windowMs;
      }
      const asked = pairs.filter((pair) => !blocksNobody.has(pair.recipient));
      if (asked.length === 0) return NOTHING_BLOCKED;
      const remembered = blocksNobody; // a lookup that ends in the next window adds nothing to it
      const found = await reader.blockedPairs(asked);
      for (const { recipient } of asked)
        if (!found.blockingAnyone.has(recipient) && remembered.size < options.maxRecipients)
          remembered.add(recipient);
      return found;
    },
  };
}
