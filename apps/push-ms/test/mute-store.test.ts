import type { SqlDatabase } from '@parley/postgres';
import { testDatabases } from '@parley/postgres/testing';
import { createSqlDeviceStore } from '../src/device-store';
import { createSqlMuteStore, muteKey, MuteStore } from '../src/mute-store';

describe.each(testDatabases())('mute store on $name', (target) => {
  let db: SqlDatabase;
  let now = 1_000_000;
  let store: MuteStore;
  beforeAll(async () => {
    db = await target.open();
    await createSqlDeviceStore(db).init(); // push-ms's migrations
    store = createSqlMuteStore(db, () => now);
  });
  afterAll(() => target.dispose());

  it('mutes a conversation until unmuted or until a time, lists those in force oldest first, and unmutes', async () => {
    expect(await store.mute('ann', { chat: 'group', id: 'team' }, null, 10)).toBe('muted');
    now += 1;
    expect(await store.mute('ann', { chat: 'direct', id: 'bob' }, now + 1000, 10)).toBe('muted');
    now += 1;
    expect(await store.mute('ann', { chat: 'direct', id: 'cy' }, now + 10, 10)).toBe('muted');
    // A 1:1 with a user is not the group of the same name, nor another user's mute.
    expect(await store.mute('ann', { chat: 'direct', id: 'team' }, null, 10)).toBe('muted');
    expect(await store.mutesOf('ann', now)).toEqual([
      { chat: 'group', id: 'team', until: null },
      { chat: 'direct', id: 'bob', until: now + 999 },
      { chat: 'direct', id: 'cy', until: now + 10 },
      { chat: 'direct', id: 'team', until: null },
    ]);
    expect(await store.mutesOf('bob', now)).toEqual([]);
    // Past its time, a mute is over.
    expect((await store.mutesOf('ann', now + 10)).map((m) => m.id)).toEqual(['team', 'bob', 'team']);
    await store.unmute('ann', { chat: 'direct', id: 'team' });
    await store.unmute('ann', { chat: 'direct', id: 'team' });
    await store.unmute('ann', { chat: 'group', id: 'never-muted' });
    expect((await store.mutesOf('ann', now)).map((m) => `${m.chat}:${m.id}`)).toEqual([
      'group:team',
      'direct:bob',
      'direct:cy',
    ]);
  });

  it('answers which of the recipients asked about muted the conversation, at a time', async () => {
    await store.mute('dee', { chat: 'direct', id: 'spam' }, null, 10);
    await store.mute('dee', { chat: 'group', id: 'loud' }, now + 100, 10);
    const asked = [
      { user: 'dee', chat: 'direct' as const, id: 'spam' },
      { user: 'dee', chat: 'group' as const, id: 'loud' },
      { user: 'dee', chat: 'group' as const, id: 'spam' },
      { user: 'eve', chat: 'direct' as const, id: 'spam' },
    ];
    expect(await store.mutedAmong(asked, now)).toEqual(
      new Set([
        muteKey('dee', { chat: 'direct', id: 'spam' }),
        muteKey('dee', { chat: 'group', id: 'loud' }),
      ]),
    );
    expect(await store.mutedAmong(asked, now + 100)).toEqual(
      new Set([muteKey('dee', { chat: 'direct', id: 'spam' })]),
    );
    expect(await store.mutedAmong([], now)).toEqual(new Set());
  });

  it('refuses a mute past the limit of those in force, takes a change of one already muted, and counts an ended mute out', async () => {
    expect(await store.mute('fay', { chat: 'direct', id: 'a' }, null, 2)).toBe('muted');
    expect(await store.mute('fay', { chat: 'direct', id: 'b' }, now + 5, 2)).toBe('muted');
    expect(await store.mute('fay', { chat: 'direct', id: 'c' }, null, 2)).toBe('too_many');
    expect(await store.mute('fay', { chat: 'direct', id: 'a' }, now + 50, 2)).toBe('muted');
    now += 5; // b's mute has ended: a place is free
    expect(await store.mute('fay', { chat: 'direct', id: 'c' }, null, 2)).toBe('muted');
    expect((await store.mutesOf('fay', now)).map((m) => m.id)).toEqual(['a', 'c']);
  });

  it('holds the limit when one user mutes many at once (over the pool on Postgres, one by one on PGlite)', async () => {
    const outcomes = await Promise.all(
      Array.from({ length: 8 }, (_, i) => store.mute('gus', { chat: 'direct', id: `u${i}` }, null, 5)),
    );
    expect(outcomes.filter((o) => o === 'muted')).toHaveLength(5);
    expect(await store.mutesOf('gus', now)).toHaveLength(5);
  });

  it("forgets on erasure the user's mutes, not others' of their 1:1 (theirs to lift, as their blocks)", async () => {
    await store.mute('hal', { chat: 'direct', id: 'x' }, null, 10);
    await store.mute('hal', { chat: 'group', id: 'y' }, null, 10);
    await store.mute('ivy', { chat: 'direct', id: 'hal' }, null, 10);
    // A group that happens to bear the user's id is not the user; nor is another user's 1:1.
    await store.mute('ivy', { chat: 'group', id: 'hal' }, null, 10);
    await store.mute('ivy', { chat: 'direct', id: 'x' }, null, 10);
    expect(await store.forgetMutesOf('hal')).toBe(2);
    expect(await store.mutesOf('hal', now)).toEqual([]);
    // Muted in the same ms: in the order of chat, then id.
    expect((await store.mutesOf('ivy', now)).map((m) => `${m.chat}:${m.id}`)).toEqual([
      'direct:hal',
      'direct:x',
      'group:hal',
    ]);
  });
});
