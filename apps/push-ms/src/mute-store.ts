import type { Mute } from '@parley/contracts';
import { SqlDatabase } from '@parley/postgres';

/** A conversation as its recipient sees it: the other user of a 1:1 chat, or the group. */
export interface Conversation {
  chat: 'direct' | 'group';
  id: string;
}

/** A user's muted conversations: their messages send that user no push notification. */
export interface MuteStore {
  /**
   * Mutes the conversation until `until` (null: until unmuted), or changes when a mute ends;
   * 'too_many' when the user has `max` other mutes in force.
   */
  mute(
    user: string,
    conversation: Conversation,
    until: number | null,
    max: number,
  ): Promise<'muted' | 'too_many'>;
  /** Idempotent: unmuting a conversation not muted changes nothing. */
  unmute(user: string, conversation: Conversation): Promise<void>;
  /** The user's mutes in force at `now`, oldest first. */
  mutesOf(user: string, now: number): Promise<Mute[]>;
  /** Of these recipients' conversations, those muted at `now`, as `muteKey`s. */
  mutedAmong(asked: Array<{ user: string } & Conversation>, now: number): Promise<Set<string>>;
  /**
   * Account erasure: the user's mutes (returns how many). Others' mutes of a 1:1 with the user are
   * theirs and stay (as their blocks of the user do): the user's own token erases.
   */
  forgetMutesOf(user: string): Promise<number>;
}

/** A user's mute of a conversation as one string: ids never hold a NUL (USER_ID_PATTERN). */
export function muteKey(user: string, { chat, id }: Conversation): string {
  return `${user}\u0000${chat}\u0000${id}`;
}

/** Advisory-lock namespace for one user's mutes (the second key is hashtext(user id)). */
const MUTE_LOCK_NAMESPACE = 0x706d7574; // "pmut"

/** The mute store on push-ms's Postgres or PGlite: table `push_mutes` (device-store.ts's MIGRATIONS). */
export function createSqlMuteStore(db: SqlDatabase, now: () => number = Date.now): MuteStore {
  return {
    mute: (user, { chat, id }, until, max) =>
      db.transaction(async (tx) => {
        // One change of a user's mutes at a time: two at the limit would both pass it.
        await tx.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [MUTE_LOCK_NAMESPACE, user]);
        await tx.query('DELETE FROM push_mutes WHERE user_id = $1 AND until <= $2', [user, now()]);
        const others = await tx.query<{ n: string | number }>(
          'SELECT count(*) AS n FROM push_mutes WHERE user_id = $1 AND NOT (chat = $2 AND conversation = $3)',
          [user, chat, id],
        );
        if (Number(others.rows[0].n) >= max) return 'too_many';
        await tx.query(
          `INSERT INTO push_mutes (user_id, chat, conversation, until, created_at) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (user_id, chat, conversation) DO UPDATE SET until = EXCLUDED.until`,
          [user, chat, id, until, now()],
        );
        return 'muted';
      }),
    async unmute(user, { chat, id }) {
      await db.query('DELETE FROM push_mutes WHERE user_id = $1 AND chat = $2 AND conversation = $3', [
        user,
        chat,
        id,
      ]);
    },
    async mutesOf(user, at) {
      const rows = await db.query<{ chat: Mute['chat']; conversation: string; until: string | null }>(
        `SELECT chat, conversation, until FROM push_mutes
         WHERE user_id = $1 AND (until IS NULL OR until > $2) ORDER BY created_at, chat, conversation`,
        [user, at],
      );
      return rows.rows.map((row) => ({
        chat: row.chat,
        id: row.conversation,
        until: row.until === null ? null : Number(row.until),
      }));
    },
    async mutedAmong(asked, at) {
      if (asked.length === 0) return new Set();
      const rows = await db.query<{ user_id: string; chat: Mute['chat']; conversation: string }>(
        `SELECT m.user_id, m.chat, m.conversation
         FROM unnest($1::text[], $2::text[], $3::text[]) AS a(user_id, chat, conversation)
         JOIN push_mutes m ON m.user_id = a.user_id AND m.chat = a.chat AND m.conversation = a.conversation
         WHERE m.until IS NULL OR m.until > $4`,
        [asked.map((a) => a.user), asked.map((a) => a.chat), asked.map((a) => a.id), at],
      );
      return new Set(rows.rows.map((row) => muteKey(row.user_id, { chat: row.chat, id: row.conversation })));
    },
    async forgetMutesOf(user) {
      const deleted = await db.query('DELETE FROM push_mutes WHERE user_id = $1', [user]);
      return deleted.rowCount;
    },
  };
}
