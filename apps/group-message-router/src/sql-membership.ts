import { SqlExecutor } from '@parley/postgres';
import { membershipOf, MembershipReader } from './membership';

/** Reads group-ms's `groups` and `group_members` tables (read-only; group-ms owns and migrates them). */
export function createSqlMembershipReader(db: SqlExecutor): MembershipReader {
  return {
    async membersOf(group) {
      // One statement: the members and the version they belong to.
      const rows = await db.query<{ version: string | number; user_id: string | null }>(
        `SELECT g.version, m.user_id FROM groups g LEFT JOIN group_members m ON m.group_id = g.id
         WHERE g.id = $1 ORDER BY m.seq`,
        [group],
      );
      if (rows.rows.length === 0) return membershipOf([]);
      const members = rows.rows.flatMap((row) => (row.user_id === null ? [] : [row.user_id]));
      return membershipOf(members, Number(rows.rows[0].version));
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
