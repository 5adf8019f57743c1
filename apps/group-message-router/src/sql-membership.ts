import { SqlExecutor } from '@parley/postgres';
import { membershipOf, MembershipReader } from './membership';

/** Reads group-ms's `group_members` table (read-only; group-ms owns and migrates it). */
export function createSqlMembershipReader(db: SqlExecutor): MembershipReader {
  return {
    async membersOf(group) {
      const rows = await db.query<{ user_id: string }>(
        'SELECT user_id FROM group_members WHERE group_id = $1 ORDER BY seq',
        [group],
      );
      return membershipOf(rows.rows.map((row) => row.user_id));
    },
  };
}
