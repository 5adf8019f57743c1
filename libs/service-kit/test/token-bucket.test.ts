import { KeyedFrameBudgets, TokenBucket } from '../src/token-bucket';

describe('TokenBucket', () => {
  it('gives its burst at once, then tokens at its rate, and says when the next comes', () => {
    let now = 0;
    const bucket = new TokenBucket(2, 3, () => now);
    expect([bucket.take(), bucket.take(), bucket.take(), bucket.take()]).toEqual([true, true, true, false]);
    expect(bucket.retryAfterSeconds()).toBeCloseTo(0.5);
    now = 500;
    expect(bucket.take()).toBe(true);
    expect(bucket.isFull()).toBe(false);
    now = 2000;
    expect(bucket.isFull()).toBe(true);
  });

  it('is not drained by a wall-clock step back (NTP, a VM clock set): it measures time on the monotonic clock', () => {
    let wall = Date.now();
    const spy = jest.spyOn(Date, 'now').mockImplementation(() => wall);
    try {
      const bucket = new TokenBucket(10, 20);
      expect(bucket.take()).toBe(true);
      wall -= 60_000;
      expect(bucket.take()).toBe(true);
      expect(bucket.retryAfterSeconds()).toBe(0);
    } finally {
      spy.mockRestore();
    }
  });

  it('refills nothing, and takes nothing away, when an injected clock goes back', () => {
    let now = 10_000;
    const bucket = new TokenBucket(10, 20, () => now);
    expect(bucket.take()).toBe(true);
    now -= 60_000;
    expect(bucket.take()).toBe(true);
    now += 100;
    expect(bucket.isFull()).toBe(false);
  });

  it('takes back tokens given back, up to its burst', () => {
    const now = 0;
    const bucket = new TokenBucket(1, 2, () => now);
    expect([bucket.take(), bucket.take(), bucket.take()]).toEqual([true, true, false]);
    bucket.giveBack();
    expect([bucket.take(), bucket.take()]).toEqual([true, false]);
    bucket.giveBack(5);
    expect(bucket.isFull()).toBe(true);
    expect([bucket.take(), bucket.take(), bucket.take()]).toEqual([true, true, false]);
  });
});

describe('KeyedFrameBudgets', () => {
  it('keeps one budget per key, and drops those refilled to their burst once the map has doubled', () => {
    let now = 0;
    const budgets = new KeyedFrameBudgets(() => ({
      frames: new TokenBucket(1, 2, () => now),
      acks: new TokenBucket(10, 20, () => now),
    }));
    const busy = budgets.of('busy');
    busy.frames.take();
    expect(budgets.of('busy')).toBe(busy);
    for (let i = 0; i < 1023; i++) budgets.of(`idle-${i}`);
    expect(budgets.size).toBe(1024);
    budgets.of('new'); // the map is full: a sweep drops every budget that is as good as new
    expect(budgets.size).toBe(2);
    expect(budgets.of('busy')).toBe(busy); // its spent token is still spent
    expect(busy.frames.isFull()).toBe(false);
    now = 10_000;
    expect(busy.frames.isFull()).toBe(true);
  });
});
