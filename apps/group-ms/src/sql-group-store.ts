import { deleteOlderThan, migrate, SqlDatabase, SqlExecutor } from '@parley/postgres';
import { GroupState, Member, Role } from './group';
import { GROUP_PAGE_MAX_BYTES, ParleyError, TopicPosition } from '@parley/contracts';
import {
  ApplyResult,
  BlockOutcome,
  DecideContext,
  GroupNotice,
  GroupStore,
  OpRefusal,
  StoredChange,
} from './group-store';
import { GROUP_MIGRATIONS } from './migrations';

interface GroupRow {
  id: string;
  name: string;
  created_by: string;
  created_at: string | number;
  updated_at: string | number;
}

/** About the bytes of group `f` (its `id` and `name`) as toGroup writes it: each member, each admin again. */
const GROUP_JSON_SIZE = `(SELECT 70 + octet_length(f.id) + octet_length(f.name)
     + coalesce(sum((octet_length(s.user_id) + 3) * CASE s.role WHEN 'admin' THEN 2 ELSE 1 END), 0)
   FROM group_members s WHERE s.group_id = f.id)`;

/** Advisory-lock namespace for per-group serialization (the second key is hashtext(group id)). */
const GROUP_LOCK_NAMESPACE = 7104;
/** Advisory-lock namespace for one user's blocks (the second key is hashtext(user id)). */
const BLOCK_LOCK_NAMESPACE = 0x626c6b73; // "blks"
/** Advisory lock that orders every change of blocks (`user_block_changes`' versions). */
const BLOCK_CHANGES_LOCK = 0x626c6b63; // "blkc"

/** The group store on Postgres (pg or PGlite, same SQL). Tables: see migrations.ts. */
export function createSqlGroupStore(db: SqlDatabase): GroupStore {
  return {
    async init() {
      await migrate(db, 'group-ms', GROUP_MIGRATIONS);
    },
    find: (id) => findGroup(db, id),
    async listForMember(user, { after, limit, maxBytes = GROUP_PAGE_MAX_BYTES }) {
      // Of the first `limit + 1` groups, those whose predecessors hold under `maxBytes` are read with
      // their members, `limit` at most: a page of 200 full groups was 200,000 rows at once. Each is
      // sized (about as toGroup writes it) only once its predecessors are known to hold under it.
      const rows = await db.query<GroupRow & { considered: string; users: string[]; roles: Role[] }>(
        `WITH RECURSIVE firsts AS (
           SELECT id, name, row_number() OVER (ORDER BY created_at, id) AS n, count(*) OVER () AS considered
           FROM (
             SELECT p.id, p.name, p.created_at FROM groups p JOIN group_members pm ON pm.group_id = p.id
             WHERE pm.user_id = $1 AND (p.created_at, p.id) > ($2::bigint, $3::text)
             ORDER BY p.created_at, p.id LIMIT $4 + 1
           ) candidates
         ), page (n, id, considered, through) AS (
           SELECT n, id, considered, ${GROUP_JSON_SIZE} FROM firsts f WHERE n = 1
           UNION ALL
           SELECT f.n, f.id, f.considered, page.through + ${GROUP_JSON_SIZE}
           FROM page JOIN firsts f ON f.n = page.n + 1
           WHERE page.through < $5 AND f.n <= $4
         )
         SELECT g.id, g.name, g.created_by, g.created_at, g.updated_at, page.considered,
                array_agg(m.user_id ORDER BY m.seq) AS users, array_agg(m.role ORDER BY m.seq) AS roles
         FROM page JOIN groups g ON g.id = page.id JOIN group_members m ON m.group_id = g.id
         GROUP BY g.id, page.considered
         ORDER BY g.created_at, g.id`,
        [user, after?.createdAt ?? -1, after?.id ?? '', limit, maxBytes],
      );
      // A row a group, its members in arrays: a row a member repeated the group's columns each time.
      const groups = rows.rows.map((row) => ({
        ...stateOf(row),
        members: row.users.map((member, i) => ({ user: member, role: row.roles[i] })),
      }));
      return { groups, more: Number(rows.rows[0]?.considered ?? 0) > groups.length };
    },
    async apply(group, opMid, decide, replayable) {
      const result = await db.transaction(async (tx) => {
        try {
          return await applyInTransaction(tx, group, opMid, decide, replayable);
        } catch (err) {
          if (!replayable || !(err instanceof ParleyError)) throw err;
          await recordOp(tx, {
            opMid,
            group,
            at: replayable.at,
            refusal: { code: err.code, message: err.message },
          });
          return err;
        }
      });
      if (result instanceof ParleyError) throw result; // after the commit that remembers it
      return result;
    },
    forgetOpsBefore: (appliedBefore, signal) =>
      deleteOlderThan(db, {
        table: 'group_ops',
        column: 'applied_at',
        before: appliedBefore,
        only: 'published', // a notice the outbox has yet to publish stays, however old
        signal,
      }),
    forgetEmptyGroupsBefore: (changedBefore, signal) =>
      deleteOlderThan(db, {
        table: 'groups',
        column: 'updated_at',
        before: changedBefore,
        // Found through the partial index on memberless groups (migration 015). The members are
        // checked too: a group emptied by an older release's replica during a rollout, after the
        // backfill, is not marked (it stays, as every emptied group did before this purge), and a
        // mark is never trusted alone. Checked again on the row deleted: a create of its id
        // meanwhile (a member added) moved updated_at to now, so that version is not deleted.
        only: 'memberless AND NOT EXISTS (SELECT 1 FROM group_members m WHERE m.group_id = groups.id)',
        signal,
      }),
    async unpublished(appliedBefore, limit) {
      const rows = await db.query<{ mid: string; notice: GroupNotice }>(
        'SELECT mid, notice FROM group_ops WHERE NOT published AND applied_at < $1 ORDER BY applied_at, seq LIMIT $2',
        [appliedBefore, limit],
      );
      return rows.rows.map((row) => ({ opMid: row.mid, notice: row.notice }));
    },
    async markPublished(opMids) {
      if (opMids.length === 0) return;
      await db.query(
        'UPDATE group_ops SET published = true WHERE mid IN (SELECT jsonb_array_elements_text($1::text::jsonb))',
        [JSON.stringify(opMids)],
      );
    },
    block: (user, blocked, at, max) =>
      db.transaction(async (tx): Promise<BlockOutcome> => {
        // One block by this user at a time: two at the limit would each count the other's row out
        // and both insert. One advisory lock a transaction, whoever is blocked.
        await tx.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [BLOCK_LOCK_NAMESPACE, user]);
        const existing = await tx.query('SELECT 1 FROM user_blocks WHERE user_id = $1 AND blocked_id = $2', [
          user,
          blocked,
        ]);
        if (existing.rows.length > 0) return 'already'; // at the limit too: a repeat is no new block
        const counted = await tx.query<{ n: string | number }>(
          'SELECT count(*) AS n FROM user_blocks WHERE user_id = $1',
          [user],
        );
        if (Number(counted.rows[0].n) >= max) return 'too_many';
        await tx.query('INSERT INTO user_blocks (user_id, blocked_id, created_at) VALUES ($1, $2, $3)', [
          user,
          blocked,
          at,
        ]);
        await recordBlockChanges(tx, [user], at);
        return 'blocked';
      }),
    unblock: (user, blocked, at) =>
      db.transaction(async (tx) => {
        const deleted = await tx.query('DELETE FROM user_blocks WHERE user_id = $1 AND blocked_id = $2', [
          user,
          blocked,
        ]);
        if (deleted.rowCount > 0) await recordBlockChanges(tx, [user], at);
      }),
    async blocksOf(user) {
      const rows = await db.query<{ blocked_id: string }>(
        'SELECT blocked_id FROM user_blocks WHERE user_id = $1 ORDER BY created_at, blocked_id',
        [user],
      );
      return rows.rows.map((row) => row.blocked_id);
    },
    blockersAmong: (user, candidates) => blockersAmong(db, user, candidates),
    forgetBlocksOf: (user, at) =>
      db.transaction(async (tx) => {
        const deleted = await tx.query('DELETE FROM user_blocks WHERE user_id = $1', [user]);
        if (deleted.rowCount > 0) await recordBlockChanges(tx, [user], at);
        return deleted.rowCount;
      }),
    forgetBlockChangesBefore: (changedBefore, signal) =>
      deleteOlderThan(db, {
        table: 'user_block_changes',
        column: 'changed_at',
        before: changedBefore,
        signal,
      }),
    forgetRoutedBefore: (routedBefore, signal) =>
      deleteOlderThan(db, {
        table: 'group_routed_messages',
        column: 'routed_at',
        before: routedBefore,
        signal,
      }),
    async forgetRoutedOf(user) {
      return (await db.query('DELETE FROM group_routed_messages WHERE sender = $1', [user])).rowCount;
    },
  };
}

const ID_USED_ELSEWHERE: OpRefusal = {
  code: 'invalid_frame',
  message: 'id: already used by an op of yours on another group; give each frame an id of its own',
};

async function applyInTransaction(
  tx: SqlExecutor,
  group: string,
  opMid: string,
  decide: (current: GroupState | undefined, context: DecideContext) => Promise<StoredChange | null>,
  replayable: { at: number; position?: TopicPosition } | undefined,
): Promise<ApplyResult> {
  await tx.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [GROUP_LOCK_NAMESPACE, group]);
  const decided = await tx.query<{ notice: GroupNotice | null; refusal: OpRefusal | null; group_id: string }>(
    'SELECT notice, refusal, group_id FROM group_ops WHERE mid = $1',
    [opMid],
  );
  if (decided.rows.length > 0) {
    const { notice, refusal, group_id } = decided.rows[0];
    // Not a replay: the client gave an op on another group the same id (ids are unique per sender).
    // Taken for one, it would be dropped unseen and the other group's notice sent again.
    if (group_id !== group) return { kind: 'replayed', notice: null, refusal: ID_USED_ELSEWHERE };
    return { kind: 'replayed', notice, refusal };
  }
  const current = await findGroup(tx, group);
  const locked: string[] = [];
  let change: StoredChange | null;
  try {
    change = await decide(current, {
      lockGroupCounts: (users) => {
        locked.push(...users);
        return lockGroupCounts(tx, users);
      },
      blockersAmong: (user, candidates) => blockersAmong(tx, user, candidates),
    });
  } catch (err) {
    // A refused pipe op is remembered, so this transaction may commit: the rows the check created
    // for users in no group go with it (a user in no group keeps no row).
    if (err instanceof ParleyError && locked.length > 0) await dropUncounted(tx, locked);
    throw err;
  }
  if (!change) {
    if (replayable) await recordOp(tx, { opMid, group, at: replayable.at });
    return { kind: 'unchanged', current };
  }
  await writeGroup(tx, current, change.next, replayable?.position);
  await recordOp(tx, { opMid, group, at: change.next.updatedAt, notice: change.notice });
  return { kind: 'applied', next: change.next, notice: change.notice };
}

/**
 * Locks the users' rows of group_user_counts (kept by triggers on group_members, migration 016),
 * in user order, and reads them. Every change holds one group's lock and takes these after it:
 * changes adding the same users, named in any order, to different groups wait for each other
 * without a cycle, and changes adding other users do not wait at all. Row locks live in the rows,
 * not in Postgres's lock table (the whole server's, sized for 64 locks a connection), so a create
 * of a thousand members holds no more of it than an add of one. A waiting upsert reads the row
 * the change it waited for left, not its own snapshot's.
 */
async function lockGroupCounts(tx: SqlExecutor, users: string[]): Promise<Map<string, number>> {
  if (users.length === 0) return new Map();
  const locked = await tx.query<{ user_id: string; groups: number }>(
    `INSERT INTO group_user_counts (user_id, groups)
     SELECT DISTINCT u, 0 FROM unnest($1::text[]) AS u ORDER BY u
     ON CONFLICT (user_id) DO UPDATE SET groups = group_user_counts.groups
     RETURNING user_id, groups`,
    [users],
  );
  const groupsOf = new Map(locked.rows.map((row) => [row.user_id, Number(row.groups)]));
  return new Map(users.map((user) => [user, groupsOf.get(user) ?? 0]));
}

/** Those of `candidates` who blocked `user`, each once, in the order asked (by the index on (blocked_id, user_id)). */
async function blockersAmong(executor: SqlExecutor, user: string, candidates: string[]): Promise<string[]> {
  if (candidates.length === 0) return [];
  const rows = await executor.query<{ user_id: string }>(
    'SELECT user_id FROM user_blocks WHERE blocked_id = $1 AND user_id = ANY($2::text[])',
    [user, candidates],
  );
  const blockers = new Set(rows.rows.map((row) => row.user_id));
  return [...new Set(candidates)].filter((candidate) => blockers.has(candidate));
}

/**
 * Raises each user's version in `user_block_changes` above every version before it. Versions are
 * handed out, and committed, one transaction at a time (the lock is held until commit), so a
 * router that read up to version v has seen every change at or below it. They come from a
 * sequence, never from the table: the purge may have emptied it, and a version below one already
 * read would never be read.
 */
async function recordBlockChanges(tx: SqlExecutor, users: string[], at: number): Promise<void> {
  await tx.query('SELECT pg_advisory_xact_lock($1)', [BLOCK_CHANGES_LOCK]);
  await tx.query(
    `INSERT INTO user_block_changes (user_id, version, changed_at)
     SELECT u.user_id, nextval('user_block_changes_versions'), $2
     FROM unnest($1::text[]) AS u(user_id)
     ON CONFLICT (user_id) DO UPDATE SET version = EXCLUDED.version, changed_at = EXCLUDED.changed_at`,
    [users, at],
  );
}

async function dropUncounted(tx: SqlExecutor, users: string[]): Promise<void> {
  await tx.query('DELETE FROM group_user_counts WHERE user_id = ANY($1::text[]) AND groups = 0', [users]);
}

/** Remembers a decided op: with its notice (to publish: the outbox watches it), or without (nothing to tell). */
async function recordOp(
  tx: SqlExecutor,
  op: { opMid: string; group: string; at: number; notice?: GroupNotice; refusal?: OpRefusal },
): Promise<void> {
  await tx.query(
    'INSERT INTO group_ops (mid, group_id, applied_at, notice, refusal, published) VALUES ($1, $2, $3, $4, $5, $6)',
    [
      op.opMid,
      op.group,
      op.at,
      op.notice ? JSON.stringify(op.notice) : null,
      op.refusal ? JSON.stringify(op.refusal) : null,
      !op.notice,
    ],
  );
}

async function findGroup(db: SqlExecutor, id: string): Promise<GroupState | undefined> {
  const [group] = await readGroups(db, 'WHERE g.id = $1', [id], 'g.id');
  return group;
}

/**
 * Groups with their members, in one statement: outside a transaction, a second statement for the
 * members could see a change committed after the first (a name before a rename with the members
 * after an add; a group listed for a user already removed from it).
 */
async function readGroups(
  db: SqlExecutor,
  where: string,
  params: unknown[],
  orderBy: string,
): Promise<GroupState[]> {
  const rows = await db.query<GroupRow & { user_id: string | null; role: Role | null }>(
    `SELECT g.id, g.name, g.created_by, g.created_at, g.updated_at, m.user_id, m.role
     FROM groups g LEFT JOIN group_members m ON m.group_id = g.id ${where}
     ORDER BY ${orderBy}, m.seq`,
    params,
  );
  const groups = new Map<string, GroupState>();
  for (const row of rows.rows) {
    let group = groups.get(row.id);
    if (!group) groups.set(row.id, (group = stateOf(row)));
    if (row.user_id !== null) group.members.push({ user: row.user_id, role: row.role! });
  }
  return [...groups.values()];
}

function stateOf(row: GroupRow): GroupState {
  return {
    id: row.id,
    name: row.name,
    createdBy: row.created_by,
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at),
    members: [],
  };
}

/**
 * Writes only the difference between `current` and `next`. A change by an op from the group topic
 * (`position`) becomes the group's last piped op; any other keeps the one before.
 */
async function writeGroup(
  tx: SqlExecutor,
  current: GroupState | undefined,
  next: GroupState,
  position: TopicPosition | undefined,
): Promise<void> {
  await tx.query(
    `INSERT INTO groups (id, name, created_by, created_at, updated_at, pipe_partition, pipe_offset, pipe_index, pipe_at, memberless)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
     ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, updated_at = EXCLUDED.updated_at,
       created_by = EXCLUDED.created_by, created_at = EXCLUDED.created_at, version = groups.version + 1,
       memberless = EXCLUDED.memberless,
       pipe_partition = COALESCE(EXCLUDED.pipe_partition, groups.pipe_partition),
       pipe_offset = COALESCE(EXCLUDED.pipe_offset, groups.pipe_offset),
       pipe_index = COALESCE(EXCLUDED.pipe_index, groups.pipe_index),
       pipe_at = COALESCE(EXCLUDED.pipe_at, groups.pipe_at)`,
    [
      next.id,
      next.name,
      next.createdBy,
      next.createdAt,
      next.updatedAt,
      position?.partition ?? null,
      position?.offset ?? null,
      position?.index ?? null,
      position ? next.updatedAt : null,
      next.members.length === 0,
    ],
  );
  const before = new Map((current?.members ?? []).map((m) => [m.user, m.role]));
  const after = new Set(next.members.map((m) => m.user));
  const removed = [...before.keys()].filter((user) => !after.has(user));
  const added = next.members.filter((m) => !before.has(m.user));
  const promoted = next.members.filter((m) => before.has(m.user) && before.get(m.user) !== m.role);
  if (removed.length > 0) {
    await tx.query('DELETE FROM group_members WHERE group_id = $1 AND user_id = ANY($2::text[])', [
      next.id,
      removed,
    ]);
  }
  if (added.length > 0) await insertMembers(tx, next.id, added, next.updatedAt);
  for (const member of promoted) {
    await tx.query('UPDATE group_members SET role = $3 WHERE group_id = $1 AND user_id = $2', [
      next.id,
      member.user,
      member.role,
    ]);
  }
}

function insertMembers(tx: SqlExecutor, group: string, members: Member[], joinedAt: number) {
  return tx.query(
    `INSERT INTO group_members (group_id, user_id, role, joined_at)
     SELECT $1, t.user_id, t.role, $4 FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t(user_id, role, n) ORDER BY t.n`,
    [group, members.map((m) => m.user), members.map((m) => m.role), joinedAt],
  );
}
