import { createRecentSet } from '../src/recent-set';

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
