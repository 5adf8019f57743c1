import { MembershipCache } from '../src/membership-cache';
import { MapMembership } from './support/map-membership';

describe('MembershipCache', () => {
  let now = 0;
  let reader: MapMembership;
  let cache: MembershipCache;
  beforeEach(() => {
    now = 0;
    reader = new MapMembership();
    reader.groups.set('g1', ['alice', 'bob']);
    cache = new MembershipCache(reader, { ttlMs: 1000, maxGroups: 2, maxMembers: 1000, clock: () => now });
  });

  it('serves repeated lookups from memory until the TTL passes', async () => {
    expect((await cache.membersOf('g1')).members).toEqual(['alice', 'bob']);
    reader.groups.set('g1', ['alice']);
    expect((await cache.membersOf('g1')).has('bob')).toBe(true);
    expect(reader.reads).toBe(1);
    now = 1001;
    expect((await cache.membersOf('g1')).has('bob')).toBe(false);
    expect(reader.reads).toBe(2);
  });

  it('drops a group on invalidate', async () => {
    await cache.membersOf('g1');
    reader.groups.set('g1', ['alice']);
    cache.invalidate('g1');
    expect((await cache.membersOf('g1')).members).toEqual(['alice']);
  });

  it('shares one read between concurrent misses', async () => {
    const [a, b] = await Promise.all([cache.membersOf('g1'), cache.membersOf('g1')]);
    expect(a).toBe(b);
    expect(reader.reads).toBe(1);
  });

  it('does not cache a read that was in flight when the group was invalidated', async () => {
    reader.hold();
    const stale = cache.membersOf('g1');
    reader.groups.set('g1', ['alice']);
    cache.invalidate('g1');
    reader.release();
    expect((await stale).has('bob')).toBe(true);
    expect((await cache.membersOf('g1')).has('bob')).toBe(false);
    expect(reader.reads).toBe(2);
  });

  it('keeps at most maxGroups, evicting the oldest', async () => {
    await cache.membersOf('g1');
    await cache.membersOf('g2');
    await cache.membersOf('g3');
    expect(cache.size).toBe(2);
    await cache.membersOf('g1');
    expect(reader.reads).toBe(4);
  });

  it('when full, evicts the oldest eighth at once', async () => {
    const big = new MembershipCache(reader, {
      ttlMs: 1000,
      maxGroups: 16,
      maxMembers: 1000,
      clock: () => now,
    });
    for (let i = 1; i <= 17; i++) await big.membersOf(`g${i}`);
    expect(big.size).toBe(15);
    const reads = reader.reads;
    await big.membersOf('g3');
    expect(reader.reads).toBe(reads);
    await big.membersOf('g2');
    expect(reader.reads).toBe(reads + 1);
  });

  it('keeps at most maxMembers members across its groups, evicting the oldest groups until an eighth is free', async () => {
    const members = (n: number, group: string) => Array.from({ length: n }, (_, i) => `${group}-u${i}`);
    const byMembers = new MembershipCache(reader, {
      ttlMs: 1000,
      maxGroups: 100,
      maxMembers: 80,
      clock: () => now,
    });
    for (const [group, n] of [
      ['a', 30],
      ['b', 30],
      ['c', 10],
      ['d', 20],
    ] as const) {
      reader.groups.set(group, members(n, group));
      await byMembers.membersOf(group);
    }
    // 90 > 80: the oldest go until at most 70 (80 less an eighth) are left: a goes, b, c and d stay.
    expect(byMembers.memberCount).toBe(60);
    expect(byMembers.size).toBe(3);
    const reads = reader.reads;
    for (const group of ['b', 'c', 'd']) await byMembers.membersOf(group);
    expect(reader.reads).toBe(reads);
    await byMembers.membersOf('a'); // read again; b, now the oldest, makes room
    expect(reader.reads).toBe(reads + 1);
    expect(byMembers.memberCount).toBe(60);
    await byMembers.membersOf('c');
    expect(reader.reads).toBe(reads + 1);
    await byMembers.membersOf('b');
    expect(reader.reads).toBe(reads + 2);
  });

  it('keeps a group larger than maxMembers until the next one, and counts members out on invalidation', async () => {
    const small = new MembershipCache(reader, {
      ttlMs: 1000,
      maxGroups: 100,
      maxMembers: 4,
      clock: () => now,
    });
    reader.groups.set('huge', ['a', 'b', 'c', 'd', 'e', 'f']);
    await small.membersOf('g1');
    await small.membersOf('huge');
    expect(small.size).toBe(1);
    expect(small.memberCount).toBe(6);
    small.invalidate('huge');
    expect(small.memberCount).toBe(0);
    await small.membersOf('g1');
    await small.membersOf('g1');
    expect(small.memberCount).toBe(2);
  });

  it('refresh drops the groups whose version moved since they were read, with one read of versions', async () => {
    reader.versions.set('g1', 1);
    reader.groups.set('g2', ['carol']);
    reader.versions.set('g2', 4);
    await cache.membersOf('g1');
    await cache.membersOf('g2');
    reader.groups.set('g1', ['alice']); // changed elsewhere; no change event yet
    reader.versions.set('g1', 2);
    const versionsOf = jest.spyOn(reader, 'versionsOf');
    await cache.refresh(['g1', 'g2', 'never-read']);
    expect(versionsOf.mock.calls).toEqual([[['g1', 'g2']]]);
    const reads = reader.reads;
    expect((await cache.membersOf('g1')).members).toEqual(['alice']);
    expect((await cache.membersOf('g2')).members).toEqual(['carol']);
    expect(reader.reads).toBe(reads + 1); // g1 read again, g2 still cached
  });

  it('does not cache failures', async () => {
    reader.failNext(new Error('db down'));
    await expect(cache.membersOf('g1')).rejects.toThrow('db down');
    expect((await cache.membersOf('g1')).members).toEqual(['alice', 'bob']);
    expect(reader.reads).toBe(2);
  });
});
