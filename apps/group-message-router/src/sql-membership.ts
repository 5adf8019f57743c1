import { SqlExecutor } from '@parley/postgres';
import { membershipOf, MembershipReader } from './membership';

interface MemberRow {
  version: string | number;
  pipe_partition?: number | null;
  pipe_offset?: string | number | null;
  pipe_index?: number | null;
  pipe_at?: string | number | null;
  user_id: string | null;
}

/** Postgres' undefined_column: group-ms has not migrated its tables to this release yet. */
const UNDEFINED_COLUMN = '42703';
/** How long the router reads as an earlier release did, after it found the columns missing. */
const LEGACY_RECHECK_MS = 60_000;

/** Reads group-ms's `groups` and `group_members` tables (read-only; group-ms owns and migrates them). */
export function createSqlMembershipReader(db: SqlExecutor, clock: () => number = Date.now): MembershipReader {
  /** Until when to read without the last piped op (a rolling upgrade: group-ms not migrated yet). */
  let legacyUntil = 0;
  const readMembers = async (group: string) => {
    if (clock() >= legacyUntil) {
      try {
        // One statement: the members, the version they belong to, and the group's last piped op.
        return await db.query<MemberRow>(
          `SELECT g.version, g.pipe_partition, g.pipe_offset, g.pipe_index, g.pipe_at, m.user_id
           FROM groups g LEFT JOIN group_members m ON m.group_id = g.id WHERE g.id = $1 ORDER BY m.seq`,
          [group],
        );
      } catch (err) {
        if ((err as { code?: string }).code !== UNDEFINED_COLUMN) throw err;
        legacyUntil = clock() + LEGACY_RECHECK_MS;
      }
    }
    return db.query<MemberRow>(
      `SELECT g.version, m.user_id FROM groups g LEFT JOIN group_members m ON m.group_id = g.id
       WHERE g.id = $1 ORDER BY m.seq`,
      [group],
    );
  };
  return {
    async membersOf(group) {
      const rows = await readMembers(group);
      if (rows.rows.length === 0) return membershipOf([]);
      const members = rows.rows.flatMap((row) => (row.user_id === null ? [] : [row.user_id]));
      const first = rows.rows[0];
      const lastOp =
        first.pipe_offset === null || first.pipe_offset === undefined
          ? undefined
          : {
              partition: first.pipe_partition!,
              offset: Number(first.pipe_offset),
              index: first.pipe_index ?? 0,
              at: Number(first.pipe_at),
            };
      return membershipOf(members, Number(first.version), lastOp);
    },
    async versionsOf(groups) {
      if (groups.length === 0) return new Map();
      const rows = await db.query<{ id: string; version: string | number }>(
        'SELECT id, version FROM groups WHERE id = ANY($1::text[])',
        [groups],
      );
      return new Map(rows.rows.map((row) => [row.id, Number(row.version)]));
    },
  };
}
