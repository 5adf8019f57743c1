import { opaqueCursor } from '@parley/service-kit';

/** Where a page of a member's groups ends: the last group's creation time and id (the list's order). */
export interface GroupPosition {
  createdAt: number;
  id: string;
}

export const groupCursor = opaqueCursor<GroupPosition>('g1:', {
  write: ({ createdAt, id }) => `${createdAt}:${id}`,
  read(text) {
    const match = /^(\d+):(.+)$/s.exec(text);
    const createdAt = Number(match?.[1]);
    return match && Number.isSafeInteger(createdAt) ? { createdAt, id: match[2] } : undefined;
  },
});
