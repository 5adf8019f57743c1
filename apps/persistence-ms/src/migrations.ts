import type { Migration } from '@parley/postgres';

/**
 * persistence-ms's schema, applied in order at start-up under an advisory lock (`migrate`).
 * One statement per migration (PGlite runs prepared statements only). Released migrations are
 * never edited; changes come as new ones.
 */
export const MIGRATIONS: Migration[] = [
  // One row per recipient: the last position handed out. Its row lock serializes a recipient's
  // writers, so positions become visible in order and a paging reader never skips one.
  {
    id: '001_offline_sequences',
    sql: `CREATE TABLE offline_sequences (
      recipient text PRIMARY KEY,
      last_seq bigint NOT NULL
    )`,
  },
  {
    id: '002_offline_messages',
    sql: `CREATE TABLE offline_messages (
      recipient text NOT NULL,
      mid text NOT NULL,
      seq bigint NOT NULL,
      frame text NOT NULL,
      stored_at bigint NOT NULL,
      PRIMARY KEY (recipient, mid)
    )`,
  },
  {
    id: '003_offline_messages_seq',
    sql: 'CREATE UNIQUE INDEX offline_messages_seq ON offline_messages (recipient, seq)',
  },
  {
    id: '004_offline_messages_stored_at',
    sql: 'CREATE INDEX offline_messages_stored_at ON offline_messages (stored_at)',
  },
  // Acked mids, kept for a while so a deliverable arriving after its ack is not stored again.
  {
    id: '005_offline_acks',
    sql: `CREATE TABLE offline_acks (
      recipient text NOT NULL,
      mid text NOT NULL,
      acked_at bigint NOT NULL,
      PRIMARY KEY (recipient, mid)
    )`,
  },
  { id: '006_offline_acks_acked_at', sql: 'CREATE INDEX offline_acks_acked_at ON offline_acks (acked_at)' },
  // When each user last connected: a deliverable stored just after a connect raced it (see consumers.ts).
  {
    id: '007_offline_connects',
    sql: `CREATE TABLE offline_connects (
      recipient text PRIMARY KEY,
      connected_at bigint NOT NULL
    )`,
  },
  // Whether the replay of the user's latest connect is under way: until it is over, what is stored for
  // them is left to that replay (it reads again once over), so nothing overtakes what it hands back.
  {
    id: '008_offline_connects_replaying',
    sql: 'ALTER TABLE offline_connects ADD COLUMN replaying boolean NOT NULL DEFAULT false',
  },
];
