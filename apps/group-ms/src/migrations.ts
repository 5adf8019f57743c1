import { Migration } from '@parley/postgres';

/**
 * group-ms owns these tables; group-message-router reads `groups` and `group_members` and writes
 * `group_routed_messages`, and message-router reads `user_blocks` and `user_block_changes`.
 * One statement per migration: PGlite runs each as a prepared statement.
 */
export const GROUP_MIGRATIONS: Migration[] = [
  {
    id: '001_groups',
    sql: `CREATE TABLE groups (
      id text PRIMARY KEY,
      name text NOT NULL,
      created_by text NOT NULL,
      created_at bigint NOT NULL,
      updated_at bigint NOT NULL
    )`,
  },
  {
    id: '002_group_members',
    sql: `CREATE TABLE group_members (
      group_id text NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
      user_id text NOT NULL,
      role text NOT NULL CHECK (role IN ('admin', 'member')),
      joined_at bigint NOT NULL,
      seq bigint GENERATED ALWAYS AS IDENTITY,
      PRIMARY KEY (group_id, user_id)
    )`,
  },
  { id: '003_group_members_by_user', sql: 'CREATE INDEX group_members_by_user ON group_members (user_id)' },
  {
    id: '004_group_ops',
    sql: `CREATE TABLE group_ops (
      mid text PRIMARY KEY,
      group_id text NOT NULL,
      applied_at bigint NOT NULL,
      notice jsonb NOT NULL
    )`,
  },
  {
    id: '005_group_ops_by_applied_at',
    sql: 'CREATE INDEX group_ops_by_applied_at ON group_ops (applied_at)',
  },
  // The outbox: an op's notice is marked published once Kafka took it (ops before this: published).
  {
    id: '006_group_ops_published',
    sql: 'ALTER TABLE group_ops ADD COLUMN published boolean NOT NULL DEFAULT true',
  },
  {
    id: '007_group_ops_unpublished',
    sql: 'CREATE INDEX group_ops_unpublished ON group_ops (applied_at) WHERE NOT published',
  },
  // Ops from the pipe that changed nothing, or were refused, are remembered too (no notice).
  { id: '008_group_ops_notice_optional', sql: 'ALTER TABLE group_ops ALTER COLUMN notice DROP NOT NULL' },
  { id: '009_group_ops_refusal', sql: 'ALTER TABLE group_ops ADD COLUMN refusal jsonb' },
  // The order ops were applied in, for the outbox: two in one millisecond keep theirs.
  {
    id: '010_group_ops_seq',
    sql: 'ALTER TABLE group_ops ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY',
  },
  // Grows with every change: group-message-router checks its cached member lists against it.
  { id: '011_groups_version', sql: 'ALTER TABLE groups ADD COLUMN version bigint NOT NULL DEFAULT 0' },
  // The last op from the group topic that changed the group: its place there (partition, offset,
  // place in a packed record) and when it was applied. A router handling a batch again (a crash or
  // a rebalance before its offsets were committed) skips the group's events placed before it: they
  // were routed before that op was applied, against the membership of their place.
  {
    id: '012_groups_last_piped_op',
    sql: `ALTER TABLE groups ADD COLUMN pipe_partition integer, ADD COLUMN pipe_offset bigint,
      ADD COLUMN pipe_index integer, ADD COLUMN pipe_at bigint`,
  },
  // Whether the group has no members (its last member left), written with every change: the purge
  // of such groups (forgetEmptyGroupsBefore) finds them through the partial index below instead of
  // checking every group's members each run (a scan of the whole table, every hour).
  {
    id: '013_groups_memberless',
    sql: 'ALTER TABLE groups ADD COLUMN memberless boolean NOT NULL DEFAULT false',
  },
  {
    id: '014_groups_memberless_backfill',
    sql: `UPDATE groups SET memberless = true
      WHERE NOT EXISTS (SELECT 1 FROM group_members m WHERE m.group_id = groups.id)`,
  },
  {
    id: '015_groups_memberless_updated_at',
    sql: 'CREATE INDEX groups_memberless_updated_at ON groups (updated_at) WHERE memberless',
  },
  // How many groups each user is in, kept by triggers on group_members (016-022), so that whatever writes
  // members (this release, an older replica during a rollout, an operator) keeps it. A limit reads
  // and locks a user's row instead of counting the user's memberships under a shared lock stripe.
  // The triggers and the backfill are in the one migration transaction: creating a trigger holds
  // off writes to group_members until it commits, so the backfill misses none.
  {
    id: '016_group_user_counts',
    sql: 'CREATE TABLE group_user_counts (user_id text PRIMARY KEY, groups integer NOT NULL)',
  },
  {
    id: '017_group_user_counts_follow',
    // In user order: two changes moving the same users' counts lock their rows in the same order.
    // A user in no group keeps no row: an erased user's id is not left behind here.
    // Its search_path is the migration's: a session with another one (an operator's) writing
    // group_members still finds group_user_counts.
    sql: `CREATE FUNCTION group_user_counts_follow() RETURNS trigger LANGUAGE plpgsql
      SET search_path FROM CURRENT AS $$
      BEGIN
        INSERT INTO group_user_counts (user_id, groups)
        SELECT user_id, count(*) * CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END
        FROM changed GROUP BY user_id ORDER BY user_id
        ON CONFLICT (user_id) DO UPDATE SET groups = group_user_counts.groups + EXCLUDED.groups;
        IF TG_OP = 'DELETE' THEN
          DELETE FROM group_user_counts
          WHERE groups <= 0 AND user_id IN (SELECT user_id FROM changed);
        END IF;
        RETURN NULL;
      END $$`,
  },
  {
    id: '018_group_members_counted_on_insert',
    sql: `CREATE TRIGGER group_members_counted_on_insert AFTER INSERT ON group_members
      REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION group_user_counts_follow()`,
  },
  {
    id: '019_group_members_counted_on_delete',
    sql: `CREATE TRIGGER group_members_counted_on_delete AFTER DELETE ON group_members
      REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION group_user_counts_follow()`,
  },
  // A TRUNCATE of group_members (an operator's) fires no row or delete trigger: it empties the counts too.
  {
    id: '020_group_user_counts_clear',
    sql: `CREATE FUNCTION group_user_counts_clear() RETURNS trigger LANGUAGE plpgsql
      SET search_path FROM CURRENT AS $$
      BEGIN
        DELETE FROM group_user_counts;
        RETURN NULL;
      END $$`,
  },
  {
    id: '021_group_members_counted_on_truncate',
    sql: `CREATE TRIGGER group_members_counted_on_truncate AFTER TRUNCATE ON group_members
      FOR EACH STATEMENT EXECUTE FUNCTION group_user_counts_clear()`,
  },
  {
    id: '022_group_user_counts_backfill',
    sql: `INSERT INTO group_user_counts (user_id, groups)
      SELECT user_id, count(*) FROM group_members GROUP BY user_id`,
  },
  // A user's blocks: message-router drops a blocked sender's 1:1 frames to the blocker, looked up
  // by (user_id, blocked_id); presence and erasure look up by the blocked user.
  {
    id: '023_user_blocks',
    sql: `CREATE TABLE user_blocks (
      user_id text NOT NULL,
      blocked_id text NOT NULL,
      created_at bigint NOT NULL,
      PRIMARY KEY (user_id, blocked_id)
    )`,
  },
  {
    id: '024_user_blocks_by_blocked',
    sql: `CREATE INDEX user_blocks_by_blocked ON user_blocks (blocked_id, user_id)`,
  },
  // Whose blocks changed, in the order they did (version): a message-router caches each recipient's
  // blocks and reads the changes after the last version it saw, once a second, to forget those it
  // cached. One row a user, its version raised at each change; forgotten after the ops' retention.
  {
    id: '025_user_block_changes',
    sql: `CREATE TABLE user_block_changes (
      user_id text PRIMARY KEY,
      version bigint NOT NULL,
      changed_at bigint NOT NULL
    )`,
  },
  {
    id: '026_user_block_changes_by_version',
    sql: `CREATE UNIQUE INDEX user_block_changes_by_version ON user_block_changes (version)`,
  },
  // The versions come from a sequence, not max(version) + 1: the purge may forget every change (a
  // week without any), and a version handed out again would be below where the routers read from.
  {
    id: '027_user_block_changes_versions',
    sql: `CREATE SEQUENCE user_block_changes_versions`,
  },
  {
    id: '028_user_block_changes_versions_start',
    sql: `SELECT setval('user_block_changes_versions', (SELECT coalesce(max(version), 0) + 1 FROM user_block_changes), false)`,
  },
  // Reports of users for moderators, read in filing order (position); a reporter's last day is
  // counted for the daily limit; purged after REPORTS_KEEP_DAYS. The quoted messages are their
  // JSON text, as persistence-ms keeps frames: any body, exactly as sent.
  {
    id: '029_user_reports',
    sql: `CREATE TABLE user_reports (
      position bigserial PRIMARY KEY,
      id text NOT NULL UNIQUE,
      reporter text NOT NULL,
      reported text NOT NULL,
      reason text NOT NULL,
      comment text,
      messages text NOT NULL,
      created_at bigint NOT NULL
    )`,
  },
  {
    id: '030_user_reports_by_reporter',
    sql: `CREATE INDEX user_reports_by_reporter ON user_reports (reporter, created_at)`,
  },
  {
    id: '031_user_reports_by_reported',
    sql: `CREATE INDEX user_reports_by_reported ON user_reports (reported)`,
  },
  {
    id: '032_user_reports_by_time',
    sql: `CREATE INDEX user_reports_by_time ON user_reports (created_at)`,
  },
  // The group messages group-message-router routed (it writes them once their deliveries are
  // written), so that one met again, the same record read again after a crash or a new one its
  // client sent again, is not routed again to a membership that changed since. `place`: the
  // record's place in the group topic (a refusal is remembered for that record only). Purged with
  // the ops; an erasure forgets the user's (sender, the key's first column).
  {
    id: '033_group_routed_messages',
    sql: `CREATE TABLE group_routed_messages (
      sender text NOT NULL,
      id text NOT NULL,
      group_id text NOT NULL,
      place text NOT NULL,
      delivered boolean NOT NULL,
      routed_at bigint NOT NULL,
      PRIMARY KEY (sender, id, group_id, place)
    )`,
  },
  {
    id: '034_group_routed_messages_by_time',
    sql: 'CREATE INDEX group_routed_messages_by_time ON group_routed_messages (routed_at)',
  },
];
