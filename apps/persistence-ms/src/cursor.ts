import { opaqueCursor } from '@parley/service-kit';

/** Sync cursors: a position in the user's stream of stored deliverables (`p1:` was the unbound form). */
const syncCursor = opaqueCursor<number>(
  'p2:',
  {
    write: String,
    read(text) {
      const seq = Number(text);
      return Number.isSafeInteger(seq) && seq >= 0 ? seq : undefined;
    },
  },
  'p1:',
);

export const encodeCursor = syncCursor.encode;

/**
 * The position in `user`'s stream after which to read; 0 when there is no cursor. Throws
 * `invalid_request` for a forged one or another user's.
 */
export function decodeCursor(cursor: string | undefined, user: string): number {
  return syncCursor.decode(cursor, user) ?? 0;
}
