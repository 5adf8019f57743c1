import type { FastifyRateLimitStore } from '@fastify/rate-limit';
import { KeyedBudgets } from '@parley/service-kit';

/** A key's requests in its current window, which ends at `endsAt` on the monotonic clock. */
interface Window {
  count: number;
  endsAt: number;
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
    () => ({ count: 0, endsAt: 0 }),
    (window) => now() >= window.endsAt,
  );

  incr(
    key: string,
    callback: (error: Error | null, result?: { current: number; ttl: number }) => void,
    timeWindow = 60_000,
  ): void {
    const at = now();
    const window = this.windows.of(key);
    if (at >= window.endsAt) Object.assign(window, { count: 0, endsAt: at + timeWindow });
    window.count += 1;
    callback(null, { current: window.count, ttl: window.endsAt - at });
  }

  child(): FastifyRateLimitStore {
    return new MonotonicRateLimitStore();
  }
}
