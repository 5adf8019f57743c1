import { PerMinuteQuota } from '../src/per-minute-quota';

describe('PerMinuteQuota', () => {
  it('allows a key until it has spent the limit in the current minute, each key on its own', () => {
    const quota = new PerMinuteQuota(3, () => 0);
    expect(quota.allows('a')).toBe(true);
    quota.spend('a', 2);
    expect(quota.allows('a')).toBe(true);
    quota.spend('a', 1);
    expect(quota.allows('a')).toBe(false);
    expect(quota.allows('b')).toBe(true);
  });

  it('starts every count again a minute after the minute began', () => {
    let now = 1_000;
    const quota = new PerMinuteQuota(1, () => now);
    quota.spend('a', 5);
    now += 59_999;
    expect(quota.allows('a')).toBe(false);
    now += 1;
    expect(quota.allows('a')).toBe(true);
  });

  it('starts no minute on spending nothing', () => {
    let now = 10_000;
    const quota = new PerMinuteQuota(1, () => now);
    quota.spend('a', 0);
    now = 30_000;
    quota.spend('a', 1); // the minute starts here
    now = 70_000;
    expect(quota.allows('a')).toBe(false); // begun at 10 s, it would have ended
    now = 90_000;
    expect(quota.allows('a')).toBe(true);
  });

  it("counts its minute on the monotonic clock: a wall clock set back (NTP, a VM's clock set) does not hold the count past it", () => {
    let monotonic = 1_000;
    let wall = Date.now();
    const clocks = [
      jest.spyOn(performance, 'now').mockImplementation(() => monotonic),
      jest.spyOn(Date, 'now').mockImplementation(() => wall),
    ];
    try {
      const quota = new PerMinuteQuota(1);
      quota.spend('a', 1);
      wall -= 3_600_000; // set back an hour
      monotonic += 60_000;
      wall += 60_000;
      expect(quota.allows('a')).toBe(true);
    } finally {
      for (const clock of clocks) clock.mockRestore();
    }
  });
});
