import type { FastifyRateLimitStore } from '@fastify/rate-limit';
import { KeyedBudgets } from '@parley/service-kit';

/** A key's requests in its current window, which began at `startedAt` on the monotonic clock. */
interface Window {
  count: number;
  startedAt: number;
  length: number;
}

const now = () => performance.now();

/**
 * @fastify/rate-limit's fixed windows (a key's requests counted for `timeWindow` from its first),
 * timed on the monotonic clock. The plugin's own store reads the wall clock: set back an hour (NTP
 * correcting a fast clock, a VM's clock set), it held every window open for the hour, so a user who
 * had reached the limit was refused for the hour (`Retry-After: 3659`), and every other user got a
 * minute's requests for the hour. Ended windows are dropped as the map grows (KeyedBudgets).
 */
export class MonotonicRateLimitStore implements FastifyRateLimitStore {
  private readonly windows = new KeyedBudgets<Window>(
    () => ({ count: 0, startedAt: -Infinity, length: 0 }),
    (window) => now() - window.startedAt >= window.length,
  );

  incr(
    key: string,
    callback: (error: Error | null, result?: { current: number; ttl: number }) => void,
    timeWindow = 60_000,
  ): void {
    const at = now();
    const window = this.windows.of(key);
    if (at - window.startedAt >= window.length)
      Object.assign(window, { count: 0, startedAt: at, length: timeWindow });
    window.count += 1;
    // From the start, not to a stored end: (at + 60000) - at can come out as 60000.00000000001, and
    // the plugin's Retry-After (rounded up) then said 61 s.
    callback(null, { current: window.count, ttl: window.length - (at - window.startedAt) });
  }

  child(): FastifyRateLimitStore {
    return new MonotonicRateLimitStore();
  }
}
