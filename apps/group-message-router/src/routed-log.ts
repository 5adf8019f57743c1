import type { Logger } from 'pino';
import { TopicPosition } from '@parley/contracts';
import { SqlExecutor } from '@parley/postgres';

/** A group message as its client named it: the group, the sender and the client's id (its mid). */
export interface SentMessage {
  group: string;
  sender: string;
  id: string;
}

/** One routing of a group message: the record it came in (its place), and whether it went out. */
export interface Routing extends SentMessage {
  place: string;
  /** Fanned out to the members; false: refused, the sender not a member. */
  delivered: boolean;
}

/**
 * The group messages routed, kept as long as the group topic can bring them back (group-ms's
 * `group_routed_messages`, purged with its ops). A message met again, the same record after a crash
 * or a rebalance or a new one its client sent again, is not routed again: the membership may have
 * changed since (a member added over REST would get a message sent before they joined).
 */
export interface RoutedLog {
  /** Every routing recorded of these messages. */
  routingsOf(messages: SentMessage[]): Promise<Routing[]>;
  /** Records these routings, once their deliveries are written. Recording one again changes nothing. */
  record(routings: Routing[]): Promise<void>;
}

/** An event's place in the group topic, as the log keeps it. */
export function placeKey({ partition, offset, index }: TopicPosition): string {
  return `${partition}:${offset}:${index}`;
}

/** A message as one string: user ids and group ids never hold a NUL. */
export function sentKey({ group, sender, id }: SentMessage): string {
  return `${group}\u0000${sender}\u0000${id}`;
}

/**
 * Whether a message met at `place` was routed before: it went out (from whatever record), or this
 * very record was refused before (a replay). A message refused and sent again is routed again: its
 * sender may have joined since.
 */
export function routedAlready(routings: readonly Routing[], place: string): boolean {
  return routings.some((routing) => routing.delivered || routing.place === place);
}

/** The log in memory: unit tests, and the shared suite's reference. */
export function createMemoryRoutedLog(): RoutedLog {
  const routings = new Map<string, Routing[]>();
  return {
    async routingsOf(messages) {
      return [...new Set(messages.map(sentKey))].flatMap((key) => routings.get(key) ?? []);
    },
    async record(recorded) {
      for (const routing of recorded) {
        const key = sentKey(routing);
        const known = routings.get(key) ?? [];
        if (known.some((r) => r.place === routing.place)) continue;
        routings.set(key, [...known, { ...routing }]);
      }
    },
  };
}

/** Postgres' undefined_table (group-ms not migrated yet) and insufficient_privilege (a role without the grant). */
const UNUSABLE = new Set(['42P01', '42501']);
/** How often a log that cannot be used is said so again. */
const UNUSABLE_WARN_MS = 60_000;

/**
 * The log in group-ms's `group_routed_messages` (group-ms creates and purges it; this router writes
 * it). While the table is missing (a router rolled out before group-ms migrated) or the router's role
 * may not use it, messages are routed without it, as before it existed, and the log says so each
 * minute: the messages go on, only what is met again is routed again.
 */
export function createSqlRoutedLog(
  db: SqlExecutor,
  logger: Pick<Logger, 'error'>,
  clock: () => number = Date.now,
): RoutedLog {
  let warnedAt = -Infinity;
  const unlessUnusable = async <T>(work: () => Promise<T>, instead: T): Promise<T> => {
    try {
      return await work();
    } catch (err) {
      if (!UNUSABLE.has((err as { code?: string }).code ?? '')) throw err;
      if (clock() - warnedAt >= UNUSABLE_WARN_MS) {
        warnedAt = clock();
        logger.error(
          { err },
          'group_routed_messages cannot be used (group-ms not migrated to this release, or no grant): a group message read again after a crash or sent again is routed again, to the members of now',
        );
      }
      return instead;
    }
  };
  return {
    async routingsOf(messages) {
      if (messages.length === 0) return [];
      const rows = await unlessUnusable(
        async () =>
          (
            await db.query<{
              group_id: string;
              sender: string;
              id: string;
              place: string;
              delivered: boolean;
            }>(
              `SELECT r.group_id, r.sender, r.id, r.place, r.delivered FROM group_routed_messages r
               JOIN unnest($1::text[], $2::text[], $3::text[]) AS m(sender, id, group_id)
                 ON r.sender = m.sender AND r.id = m.id AND r.group_id = m.group_id`,
              columnsOf(messages, ['sender', 'id', 'group']),
            )
          ).rows,
        [],
      );
      const found = new Map<string, Routing>();
      for (const row of rows) {
        const routing = {
          group: row.group_id,
          sender: row.sender,
          id: row.id,
          place: row.place,
          delivered: row.delivered,
        };
        found.set(`${sentKey(routing)}\u0000${routing.place}`, routing); // a message asked twice matches twice
      }
      return [...found.values()];
    },
    async record(routings) {
      if (routings.length === 0) return;
      await unlessUnusable(async () => {
        await db.query(
          `INSERT INTO group_routed_messages (sender, id, group_id, place, delivered, routed_at)
           SELECT m.*, $6::bigint FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::boolean[])
             AS m(sender, id, group_id, place, delivered)
           ON CONFLICT DO NOTHING`,
          [...columnsOf(routings, ['sender', 'id', 'group', 'place', 'delivered']), clock()],
        );
      }, undefined);
    },
  };
}

/** Rows as one array per column, for unnest. */
function columnsOf<T, K extends keyof T>(rows: readonly T[], keys: readonly K[]): Array<Array<T[K]>> {
  return keys.map((key) => rows.map((row) => row[key]));
}
