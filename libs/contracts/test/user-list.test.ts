import { MAX_PRESENCE_USERS, ParleyError, parseUserList } from '../src';

const many = (n: number) => Array.from({ length: n }, (_, i) => `u${i}`).join(',');

describe("a users query (GET /v1/presence, a user's blockers)", () => {
  it('takes up to the limit, trimmed and without repeats', () => {
    expect(parseUserList(' a, b,a,,c ')).toEqual(['a', 'b', 'c']);
    expect(parseUserList(many(MAX_PRESENCE_USERS))).toHaveLength(MAX_PRESENCE_USERS);
  });

  it('refuses too many users, naming the field', () => {
    expect(() => parseUserList(many(MAX_PRESENCE_USERS + 1))).toThrow(
      new ParleyError('invalid_request', `users: at most ${MAX_PRESENCE_USERS} users`),
    );
  });

  it('refuses a bad user id, naming the field and the id', () => {
    expect(() => parseUserList('alice,b b')).toThrow('users: "b b" must match');
  });
});
