import { createRecentMap, createRecentSet, MAX_RECENT_MAP_VALUES } from '../src/recent-set';

describe('createRecentSet', () => {
  it('forgets keys after the ttl and beyond its size, oldest first', () => {
    let clock = 0;
    const recent = createRecentSet(1000, 2, () => clock);
    recent.add('a');
    clock = 500;
    recent.add('b');
    expect(recent.has('a') && recent.has('b')).toBe(true);
    clock = 1000;
    expect(recent.has('a')).toBe(false);
    expect(recent.has('b')).toBe(true);
    recent.add('c');
    recent.add('d');
    expect([recent.has('b'), recent.has('c'), recent.has('d')]).toEqual([false, true, true]);
    expect(recent.size).toBe(2);
  });

  it('remembers a key added again for the ttl from its last add', () => {
    let clock = 0;
    const recent = createRecentSet(1000, 100, () => clock);
    recent.add('a');
    clock = 900;
    recent.add('a');
    clock = 1500;
    expect(recent.has('a')).toBe(true);
  });

  it('past maxEntries forgets whole generations of the oldest, keeping seven eighths at least', () => {
    const recent = createRecentSet(60_000, 800, () => 0);
    const keys = Array.from({ length: 2000 }, (_, i) => `k${i}`);
    for (const key of keys) recent.add(key);
    const kept = keys.filter((key) => recent.has(key));
    expect(kept.length).toBeGreaterThanOrEqual(700);
    expect(kept.length).toBeLessThanOrEqual(800);
    expect(kept).toEqual(keys.slice(keys.length - kept.length));
    expect(recent.size).toBe(kept.length);
  });

  it('forgets a first key no later than an eighth of the ttl after it, however slow the adds', () => {
    let clock = 0;
    const recent = createRecentSet(800, 1_000_000, () => clock);
    recent.add('first');
    for (clock = 10; clock <= 100; clock += 10) recent.add(`k${clock}`);
    // A new generation opened at 100 (800 / 8 after the first), so the first one, with 'first' in
    // it, expired at 890, the ttl after its last key.
    clock = 895;
    expect(recent.has('first')).toBe(false);
    expect(recent.has('k100')).toBe(true);
  });
});

describe('createRecentMap', () => {
  it('tells every key it holds by its exact text, with its last value', () => {
    const recent = createRecentMap<string>(60_000, 800_000, () => 0);
    const keys = Array.from({ length: 10_000 }, (_, i) => `bob\nalice:c${i}`);
    keys.forEach((key, i) => recent.set(key, i % 3 === 0 ? 'stored' : 'pushed'));
    recent.set(keys[1], 'stored');
    expect(keys.map((key) => recent.get(key))).toEqual(
      keys.map((_, i) => (i % 3 === 0 || i === 1 ? 'stored' : 'pushed')),
    );
    expect(recent.size).toBe(10_000);
    // Prefixes, extensions and near misses of held keys are not held.
    for (const absent of ['', 'bob', 'bob\nalice:c', 'bob\nalice:c10000', 'bob\nalice:c1 ', 'Bob\nalice:c1'])
      expect([absent, recent.has(absent)]).toEqual([absent, false]);
  });

  it('keeps apart keys that UTF-8 would write alike (lone surrogates) and long keys', () => {
    const recent = createRecentMap<number>(60_000, 800, () => 0);
    const keys = [
      'a\uD800',
      'a\uD801',
      'a\uFFFD',
      '\uD83D\uDE00',
      '\uDE00\uD83D',
      'x'.repeat(5000),
      'x'.repeat(5001),
    ];
    keys.forEach((key, i) => recent.set(key, i));
    expect(keys.map((key) => recent.get(key))).toEqual(keys.map((_, i) => i));
    expect(recent.get('a\uD802')).toBeUndefined();
  });

  it(`refuses more than ${MAX_RECENT_MAP_VALUES} distinct values`, () => {
    const recent = createRecentMap<number>(60_000, 1000, () => 0);
    for (let i = 0; i < MAX_RECENT_MAP_VALUES; i++) recent.set(`k${i}`, i);
    expect(() => recent.set('one more', MAX_RECENT_MAP_VALUES)).toThrow(RangeError);
    expect(recent.get(`k${MAX_RECENT_MAP_VALUES - 1}`)).toBe(MAX_RECENT_MAP_VALUES - 1);
  });

  it('a value refused leaves the map as it was: nothing evicted, no generation opened', () => {
    const recent = createRecentMap<number>(60_000, 16, () => 0);
    const keys = Array.from({ length: MAX_RECENT_MAP_VALUES }, (_, i) => `k${i}`);
    keys.forEach((key, i) => recent.set(key, i));
    const held = keys.filter((key) => recent.has(key));
    const size = recent.size;
    expect(() => recent.set('one more', MAX_RECENT_MAP_VALUES)).toThrow(RangeError);
    expect(keys.filter((key) => recent.has(key))).toEqual(held);
    expect(recent.size).toBe(size);
  });
});
