import { opaqueCursor } from '@parley/service-kit';

/** Sync cursors: a position in the user's stream of stored deliverables. */
const syncCursor = opaqueCursor<number>('p1:', {
  write: String,
  read(text) {
    const seq = Number(text);
    return Number.isSafeInteger(seq) && seq >= 0 ? seq : undefined;
  },
});

export const encodeCursor = syncCursor.encode;

/** The position after which to read; 0 when there is no cursor. Throws `invalid_request` for a forged one. */
export function decodeCursor(cursor: string | undefined): number {
  return syncCursor.decode(cursor) ?? 0;
}
