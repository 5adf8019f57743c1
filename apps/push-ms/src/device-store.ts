import type { Platform } from '@parley/contracts';
import { migrate, Migration, SqlDatabase } from '@parley/postgres';

export interface Device {
  deviceId: string;
  token: string;
  platform: Platform;
}

/** The device-token port of push-ms: where each user's devices can be reached. */
export interface DeviceStore {
  /** Creates or upgrades the schema; safe when several replicas start together. */
  init(): Promise<void>;
  /**
   * Registers or replaces the device's token. A token moves: no other user or device keeps it. A
   * user keeps the MAX_DEVICES_PER_USER devices registered last: one more drops the oldest.
   */
  register(user: string, deviceId: string, token: string, platform: Platform): Promise<void>;
  remove(user: string, deviceId: string): Promise<void>;
  devices(user: string): Promise<Device[]>;
  /** Forgets tokens the push provider reported as invalid; returns how many rows went. */
  removeTokens(user: string, tokens: string[]): Promise<number>;
  /** Forgets every device of the user (their account is erased); returns how many went. */
  removeUser(user: string): Promise<number>;
}

/** push-ms's schema (devices, and mute-store.ts's mutes). One statement per migration (PGlite runs prepared statements only); never edited once released. */
export const MIGRATIONS: Migration[] = [
  {
    id: '001_push_devices',
    sql: `CREATE TABLE push_devices (
      user_id text NOT NULL,
      device_id text NOT NULL,
      token text NOT NULL,
      platform text NOT NULL,
      updated_at bigint NOT NULL,
      PRIMARY KEY (user_id, device_id)
    )`,
  },
  { id: '002_push_devices_token', sql: 'CREATE INDEX push_devices_token ON push_devices (token)' },
  // Conversations whose messages send a user no push (mute-store.ts): looked up by the key.
  {
    id: '003_push_mutes',
    sql: `CREATE TABLE push_mutes (
      user_id text NOT NULL,
      chat text NOT NULL,
      conversation text NOT NULL,
      until bigint,
      created_at bigint NOT NULL,
      PRIMARY KEY (user_id, chat, conversation)
    )`,
  },
  // Served erasing others' mutes of a user's 1:1 with the user's account, which they now outlive
  // (mute-store.ts forgetMutesOf); unused since, kept as applied.
  {
    id: '004_push_mutes_direct',
    sql: `CREATE INDEX push_mutes_direct ON push_mutes (conversation) WHERE chat = 'direct'`,
  },
  // The token's lookups are by equality. A btree entry holds the whole token and Postgres refuses
  // one over 2,704 bytes, so a token of up to the 4,096 characters the API takes failed its
  // registration (500); a hash index keeps 4 bytes of each.
  {
    id: '005_push_devices_token_hash',
    sql: 'CREATE INDEX push_devices_token_hash ON push_devices USING hash (token)',
  },
  { id: '006_drop_push_devices_token', sql: 'DROP INDEX push_devices_token' },
];

/**
 * Each push goes to every device of the user: without a cap, one account registering device after
 * device would turn each notification into as many FCM calls. Apps register on every start, so the
 * devices dropped are those not seen for longest (an old phone).
 */
export const MAX_DEVICES_PER_USER = 20;

/** The first key of push-ms's advisory locks (group-ms uses its own). */
const TOKEN_LOCK_NAMESPACE = 0x70757368; // "push"
/** The first key of the lock on a user's devices (always taken after the token's: no deadlock). */
const USER_LOCK_NAMESPACE = 0x70757375; // "pusu"

/** The device store on Postgres or PGlite (same SQL). */
export function createSqlDeviceStore(db: SqlDatabase, now: () => number = Date.now): DeviceStore {
  return {
    async init() {
      await migrate(db, 'push-ms', MIGRATIONS);
    },
    async register(user, deviceId, token, platform) {
      await db.transaction(async (tx) => {
        // One registration of a token at a time: two at once would each delete the other's row
        // before either committed, and the token would reach both accounts.
        await tx.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [TOKEN_LOCK_NAMESPACE, token]);
        // One registration per user at a time: two at once would each trim the others to the cap
        // without seeing the other's new row, and the user would keep more than the cap.
        await tx.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [USER_LOCK_NAMESPACE, user]);
        // A phone that signs in as someone else keeps its token: the previous owner must stop getting pushes.
        await tx.query(
          'DELETE FROM push_devices WHERE token = $1 AND NOT (user_id = $2 AND device_id = $3)',
          [token, user, deviceId],
        );
        await tx.query(
          `INSERT INTO push_devices (user_id, device_id, token, platform, updated_at) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (user_id, device_id) DO UPDATE SET token = EXCLUDED.token, platform = EXCLUDED.platform, updated_at = EXCLUDED.updated_at`,
          [user, deviceId, token, platform, now()],
        );
        await tx.query(
          `DELETE FROM push_devices WHERE user_id = $1 AND device_id IN (
             SELECT device_id FROM push_devices WHERE user_id = $1 AND device_id <> $2
             ORDER BY updated_at DESC, device_id DESC OFFSET $3)`,
          [user, deviceId, MAX_DEVICES_PER_USER - 1],
        );
      });
    },
    async remove(user, deviceId) {
      await db.query('DELETE FROM push_devices WHERE user_id = $1 AND device_id = $2', [user, deviceId]);
    },
    async devices(user) {
      const result = await db.query<{ device_id: string; token: string; platform: Platform }>(
        'SELECT device_id, token, platform FROM push_devices WHERE user_id = $1 ORDER BY device_id',
        [user],
      );
      return result.rows.map((row) => ({
        deviceId: row.device_id,
        token: row.token,
        platform: row.platform,
      }));
    },
    async removeTokens(user, tokens) {
      if (tokens.length === 0) return 0;
      const result = await db.query(
        'DELETE FROM push_devices WHERE user_id = $1 AND token IN (SELECT jsonb_array_elements_text($2::text::jsonb))',
        [user, JSON.stringify(tokens)],
      );
      return result.rowCount;
    },
    async removeUser(user) {
      return (await db.query('DELETE FROM push_devices WHERE user_id = $1', [user])).rowCount;
    },
  };
}
