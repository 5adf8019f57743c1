import { ParleyError } from '@parley/contracts';

/**
 * Sync cursors are opaque to clients: a versioned, base64url-encoded position in the user's
 * stream. Only this module knows what is inside.
 */
const PREFIX = 'p1:';

export function encodeCursor(seq: number): string {
  return Buffer.from(`${PREFIX}${seq}`).toString('base64url');
}

/** The position after which to read; 0 when there is no cursor. Throws `invalid_request` for a forged one. */
export function decodeCursor(cursor: string | undefined): number {
  if (cursor === undefined || cursor === '') return 0;
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const seq = text.startsWith(PREFIX) ? Number(text.slice(PREFIX.length)) : NaN;
  if (!Number.isSafeInteger(seq) || seq < 0 || encodeCursor(seq) !== cursor) {
    throw new ParleyError('invalid_request', 'query after: is not a cursor returned by this API');
  }
  return seq;
}
