import { USER_ID_PATTERN } from '@parley/contracts';
import { opaqueCursor } from '@parley/service-kit';

/** Where a page of a member's groups ends: the last group's creation time and id (the list's order). */
export interface GroupPosition {
  createdAt: number;
  id: string;
}

/** A group id (a cursor naming anything else, a NUL say, is forged: Postgres could not even take it). */
const GROUP_ID = new RegExp(USER_ID_PATTERN);

/** A position in a member's list of groups (`g1:` was the unbound form). */
export const groupCursor = opaqueCursor<GroupPosition>(
  'g2:',
  {
    write: ({ createdAt, id }) => `${createdAt}:${id}`,
    read(text) {
      const match = /^(\d+):(.+)$/s.exec(text);
      const createdAt = Number(match?.[1]);
      return match && Number.isSafeInteger(createdAt) && GROUP_ID.test(match[2])
        ? { createdAt, id: match[2] }
        : undefined;
    },
  },
  'g1:',
);
