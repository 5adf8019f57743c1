import { ParleyError } from '@parley/contracts';

/**
 * Paging cursors opaque to clients: a versioned prefix and a position, base64url-encoded. Only the
 * service that makes them knows what is inside; one it did not make is refused, not misread.
 */
export function opaqueCursor<T>(
  prefix: string,
  position: { write(value: T): string; read(text: string): T | undefined },
) {
  const encode = (value: T) => Buffer.from(`${prefix}${position.write(value)}`).toString('base64url');
  return {
    encode,
    /** The position in `cursor`; undefined when there is none. Throws `invalid_request` for a forged one. */
    decode(cursor: string | undefined): T | undefined {
      if (cursor === undefined || cursor === '') return undefined;
      const text = Buffer.from(cursor, 'base64url').toString('utf8');
      const value = text.startsWith(prefix) ? position.read(text.slice(prefix.length)) : undefined;
      if (value === undefined || encode(value) !== cursor)
        throw new ParleyError('invalid_request', 'query after: is not a cursor returned by this API');
      return value;
    },
  };
}
