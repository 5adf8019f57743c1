import { ParleyError } from '@parley/contracts';
import { opaqueCursor } from '@parley/service-kit';

const numberCursor = (unboundPrefix?: string) =>
  opaqueCursor<number>(
    'n2:',
    {
      write: String,
      read: (text) => (/^\d+$/.test(text) ? Number(text) : undefined),
    },
    unboundPrefix,
  );
const base64url = (text: string) => Buffer.from(text).toString('base64url');

function refusal(decode: () => unknown): string {
  try {
    decode();
  } catch (err) {
    expect(err).toBeInstanceOf(ParleyError);
    expect((err as ParleyError).code).toBe('invalid_request');
    return (err as Error).message;
  }
  throw new Error('the cursor was read');
}

describe('opaqueCursor', () => {
  const cursor = numberCursor('n1:');

  it('reads back the position it wrote for the same user, and none without a cursor', () => {
    expect(cursor.decode(cursor.encode(42, 'bob'), 'bob')).toBe(42);
    expect(cursor.decode(undefined, 'bob')).toBeUndefined();
    expect(cursor.decode('', 'bob')).toBeUndefined();
  });

  it("refuses another user's cursor, saying so, and names no user inside it", () => {
    const bobs = cursor.encode(42, 'bob');
    expect(refusal(() => cursor.decode(bobs, 'carol'))).toBe(
      "query after: a cursor from another user's list; page again from the start (without after)",
    );
    expect(Buffer.from(bobs, 'base64url').toString()).not.toContain('bob');
  });

  it('refuses what it did not make: garbage, another prefix, an edited position, a non-canonical encoding', () => {
    const forged = 'query after: is not a cursor returned by this API';
    const made = Buffer.from(cursor.encode(42, 'bob'), 'base64url').toString();
    expect(refusal(() => cursor.decode('bogus', 'bob'))).toBe(forged);
    expect(refusal(() => cursor.decode(base64url(made.replace('n2:', 'x2:')), 'bob'))).toBe(forged);
    expect(refusal(() => cursor.decode(base64url(made.replace('.42', '.4x')), 'bob'))).toBe(forged);
    expect(refusal(() => cursor.decode(base64url(made.replace('.42', '.042')), 'bob'))).toBe(forged);
    expect(refusal(() => cursor.decode(base64url(made.replace('.42', '')), 'bob'))).toBe(forged);
    expect(refusal(() => cursor.decode(`${cursor.encode(42, 'bob')}=`, 'bob'))).toBe(forged);
  });

  it("still reads an older release's unbound cursor, for any user, and only in its canonical form", () => {
    expect(cursor.decode(base64url('n1:7'), 'bob')).toBe(7);
    expect(cursor.decode(base64url('n1:7'), 'carol')).toBe(7);
    expect(refusal(() => cursor.decode(base64url('n1:07'), 'bob'))).toContain('is not a cursor');
    expect(refusal(() => numberCursor().decode(base64url('n1:7'), 'bob'))).toContain('is not a cursor');
  });
});
