import type { Logger } from 'pino';
import { SqlExecutor } from '@parley/postgres';

/** A 1:1 frame's two ends: the user it is addressed to, and the user who sent it. */
export interface BlockPair {
  recipient: string;
  sender: string;
}

/** The users whose blocks changed after a position, oldest change first, and the position after them. */
export interface BlockChanges {
  users: string[];
  position: string;
}

/** Who blocked whom, and whose blocks changed when (group-ms's `user_blocks` and `user_block_changes`). */
export interface BlockReader {
  /** Whom each of `users` blocked: every user asked is in the map, with an empty set for nobody. */
  blocksOf(users: readonly string[]): Promise<Map<string, ReadonlySet<string>>>;
  /**
   * The users whose blocks changed after `since`, at most `limit` of them, oldest change first;
   * with `since` undefined, none, and the position of the latest change (where to read from).
   */
  changesSince(since: string | undefined, limit: number): Promise<BlockChanges>;
}

/** A pair as one string: user ids never hold a NUL (USER_ID_PATTERN). */
export function blockKey(recipient: string, sender: string): string {
  return `${recipient}\u0000${sender}`;
}

/** Postgres' undefined_table: group-ms has not run migration 023/025 yet (a router rolled out first). */
const UNDEFINED_TABLE = '42P01';
const BLOCKS_NOBODY: ReadonlySet<string> = new Set();

/**
 * Reads group-ms's `user_blocks` and `user_block_changes` (read-only; group-ms owns and migrates
 * them), one statement a call. Before group-ms has created them, nobody has blocked anybody
 * (warned once), and no change is found after position 0, so the changes made once it has are.
 */
export function createSqlBlockReader(db: SqlExecutor, logger: Pick<Logger, 'warn'>): BlockReader {
  let warnedMissing = false;
  const ifMigrated = async <T>(read: () => Promise<T>, before: T): Promise<T> => {
    try {
      return await read();
    } catch (err) {
      if ((err as { code?: string }).code !== UNDEFINED_TABLE) throw err;
      if (!warnedMissing) {
        warnedMissing = true;
        logger.warn(
          { err },
          "user blocks are not in the database (group-ms has not migrated to this release yet): no user's blocks are enforced until they are",
        );
      }
      return before;
    }
  };
  return {
    async blocksOf(users) {
      const distinct = [...new Set(users)];
      const found = new Map<string, Set<string>>();
      if (distinct.length === 0) return found;
      const rows = await ifMigrated(
        async () =>
          (
            await db.query<{ user_id: string; blocked_id: string }>(
              'SELECT user_id, blocked_id FROM user_blocks WHERE user_id = ANY($1::text[])',
              [distinct],
            )
          ).rows,
        [],
      );
      for (const row of rows) {
        const blocked = found.get(row.user_id) ?? new Set<string>();
        blocked.add(row.blocked_id);
        found.set(row.user_id, blocked);
      }
      return new Map(distinct.map((user) => [user, found.get(user) ?? BLOCKS_NOBODY]));
    },
    async changesSince(since, limit) {
      if (since === undefined) {
        const latest = await ifMigrated(
          async () =>
            (
              await db.query<{ version: string }>(
                'SELECT coalesce(max(version), 0)::text AS version FROM user_block_changes',
              )
            ).rows[0].version,
          '0',
        );
        return { users: [], position: latest };
      }
      // The version is read as text (pg returns bigint as a string, PGlite as a number) under another
      // name: `ORDER BY version` would otherwise sort by the text alias ('9' after '12'), so a read
      // stopping at its limit went on past versions it never read, and left them out for good.
      const rows = await ifMigrated(
        async () =>
          (
            await db.query<{ user_id: string; position: string }>(
              'SELECT user_id, version::text AS position FROM user_block_changes WHERE version > $1::bigint ORDER BY version LIMIT $2',
              [since, limit],
            )
          ).rows,
        [],
      );
      return { users: rows.map((row) => row.user_id), position: rows.at(-1)?.position ?? since };
    },
  };
}

export interface BlockCacheOptions {
  /** How often the changes are read (a block applies within it); 0: before every lookup. */
  pollMs: number;
  /**
   * What is kept at most, counted as one a recipient plus one a user they blocked (memory follows
   * the ids kept); past it, the recipients kept longest are forgotten.
   */
  maxEntries: number;
  clock: () => number;
}

/** The changes read in one go; more are read at once. */
const CHANGES_PER_READ = 1000;
/**
 * Past this without a successful read of the changes, the cache starts again from nothing: group-ms
 * forgets changes after GROUP_OPS_KEEP_DAYS, far longer, so none unseen has been forgotten.
 */
const START_AGAIN_AFTER_MS = 10 * 60_000;
/**
 * A recipient's blocks are read again this long after they were, changed or not: a change that
 * never reached `user_block_changes` (a hand edit of `user_blocks`, a database restored from a
 * backup, whose versions went back) holds within it rather than until the router restarts.
 */
const KEEP_AT_MOST_MS = 10 * 60_000;

/** The blocked pairs among a batch's, as `blockKey`s; and how many ids it keeps (a gauge's). */
export type BlockLookup = ((pairs: readonly BlockPair[]) => Promise<Set<string>>) & { keptIds(): number };

/**
 * Each recipient's blocks, read once and kept (nearly everyone's: nobody) until the recipient's
 * blocks change: the changes after the last one seen are read every `pollMs`, in the background
 * while batches keep coming, and each changed user is forgotten (read again when next asked about).
 * When the changes have not been read for two `pollMs` (the router idled, or the reads fail), a
 * lookup reads them first (a read started within `pollMs`, or a new one), and fails when it
 * cannot, so the batch goes unchecked rather than on blocks that may be stale. A lookup that a
 * read of changes overtook keeps nothing it read. Kept blocks are read again after
 * KEEP_AT_MOST_MS in any case.
 */
export function cacheBlocks(reader: BlockReader, options: BlockCacheOptions): BlockLookup {
  const { clock, pollMs, maxEntries } = options;
  const kept = new Map<string, { blocked: ReadonlySet<string>; at: number }>();
  let position: string | undefined;
  /** Raised when the cache changes under a lookup: users forgotten, or a new start. */
  let generation = 0;
  let readAt = -Infinity;
  /** The latest read of the changes, while under way, and when it started. */
  let reading: { done: Promise<void>; askedAt: number } | undefined;
  let keptEntries = 0;
  const entriesOf = (blocked: ReadonlySet<string>) => 1 + blocked.size;
  const forget = (user: string) => {
    const entry = kept.get(user);
    if (!entry) return;
    keptEntries -= entriesOf(entry.blocked);
    kept.delete(user);
  };

  const readChanges = async () => {
    const startedAt = clock();
    if (position === undefined || startedAt - readAt > START_AGAIN_AFTER_MS) {
      const latest = await reader.changesSince(undefined, CHANGES_PER_READ);
      kept.clear();
      keptEntries = 0;
      generation++;
      position = latest.position;
    } else {
      for (;;) {
        const changes = await reader.changesSince(position, CHANGES_PER_READ);
        if (changes.users.length > 0) generation++;
        for (const user of changes.users) forget(user);
        position = changes.position;
        if (changes.users.length < CHANGES_PER_READ) break;
      }
    }
    readAt = Math.max(readAt, startedAt); // a read that hung may end after a later one
  };
  /**
   * A read of the changes that started at `since` or later: the one under way if it did, else a new
   * one beside it. A read answers as of its start: one that hung for seconds and answers late must
   * not pass for the read of now, nor hold the reads after it (a stalled connection, while the
   * others answer). Reads side by side are safe: each forgets the users it finds before it moves
   * the position past them, and one that moves it back only has some forgotten again.
   */
  const readChangesFrom = (since: number): Promise<void> => {
    if (reading && reading.askedAt >= since) return reading.done;
    const read = { askedAt: clock(), done: readChanges() };
    reading = read;
    const settled = () => {
      if (reading === read) reading = undefined;
    };
    read.done.then(settled, settled);
    return read.done;
  };

  const keep = (user: string, blocked: ReadonlySet<string>, at: number) => {
    forget(user); // read again after KEEP_AT_MOST_MS: kept anew, the last to go past maxEntries
    while (kept.size > 0 && keptEntries + entriesOf(blocked) > maxEntries) forget(kept.keys().next().value!);
    kept.set(user, { blocked, at });
    keptEntries += entriesOf(blocked);
  };

  const lookup = async (pairs: readonly BlockPair[]) => {
    const now = clock();
    const sinceRead = now - readAt;
    if (sinceRead > 2 * pollMs || pollMs === 0) await readChangesFrom(now - pollMs);
    else if (sinceRead >= pollMs) readChangesFrom(-Infinity).catch(() => undefined); // failing reads: the lookup after next waits for one
    // What is kept is taken now: while the missing are read, a read of the changes or keeping them
    // (past maxEntries) may forget some of the batch's recipients, whose blocks still hold for it.
    const known = new Map<string, ReadonlySet<string>>();
    const missing: string[] = [];
    for (const user of new Set(pairs.map((p) => p.recipient))) {
      const entry = kept.get(user);
      if (entry && now - entry.at < KEEP_AT_MOST_MS) known.set(user, entry.blocked);
      else missing.push(user);
    }
    const generationAsked = generation;
    const read = missing.length > 0 ? await reader.blocksOf(missing) : undefined;
    if (read && generation === generationAsked) for (const [user, blocked] of read) keep(user, blocked, now);
    const blocked = new Set<string>();
    for (const { recipient, sender } of pairs)
      if ((read?.get(recipient) ?? known.get(recipient))?.has(sender))
        blocked.add(blockKey(recipient, sender));
    return blocked;
  };
  return Object.assign(lookup, { keptIds: () => keptEntries });
}
