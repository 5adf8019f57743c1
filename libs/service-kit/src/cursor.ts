import { createHash } from 'node:crypto';
import { ParleyError } from '@parley/contracts';

/**
 * Paging cursors opaque to clients: a versioned prefix, a tag of the user the list belongs to and a
 * position in it, base64url-encoded. Only the service that makes them knows what is inside; one it
 * did not make is refused, not misread, and so is one made for another user: its position means
 * nothing in this user's list (an app keeping it across an account switch would skip what lies
 * before it). A cursor of `unboundPrefix` (an older release's, without the tag) is still read.
 */
export function opaqueCursor<T>(
  prefix: string,
  position: { write(value: T): string; read(text: string): T | undefined },
  unboundPrefix?: string,
) {
  const encode = (value: T, owner: string) =>
    Buffer.from(`${prefix}${ownerTag(prefix, owner)}.${position.write(value)}`).toString('base64url');
  const read = (text: string, owner: string): { value?: T; otherOwner?: boolean } => {
    if (unboundPrefix !== undefined && text.startsWith(unboundPrefix)) {
      const value = position.read(text.slice(unboundPrefix.length));
      return value !== undefined && `${unboundPrefix}${position.write(value)}` === text ? { value } : {};
    }
    if (!text.startsWith(prefix)) return {};
    const dot = text.indexOf('.', prefix.length);
    const value = dot < 0 ? undefined : position.read(text.slice(dot + 1));
    if (value === undefined || `${text.slice(0, dot + 1)}${position.write(value)}` !== text) return {};
    return text.slice(prefix.length, dot) === ownerTag(prefix, owner) ? { value } : { otherOwner: true };
  };
  return {
    encode,
    /**
     * The position in `owner`'s list that `cursor` names; undefined when there is none. Throws
     * `invalid_request` for a forged cursor and for one made for another user.
     */
    decode(cursor: string | undefined, owner: string): T | undefined {
      if (cursor === undefined || cursor === '') return undefined;
      const text = Buffer.from(cursor, 'base64url').toString('utf8');
      const { value, otherOwner } =
        Buffer.from(text).toString('base64url') === cursor ? read(text, owner) : {};
      if (otherOwner)
        throw new ParleyError(
          'invalid_request',
          "query after: a cursor from another user's list; page again from the start (without after)",
        );
      if (value === undefined)
        throw new ParleyError('invalid_request', 'query after: is not a cursor returned by this API');
      return value;
    },
  };
}

/** 64 bits of a hash of the user: enough to tell users apart, and no user id in the cursor. */
function ownerTag(prefix: string, owner: string): string {
  return createHash('sha256').update(`${prefix}${owner}`).digest('base64url').slice(0, 11);
}
