/**
 * Keys seen recently, forgotten after `ttlMs` or, past `maxEntries`, oldest first. Bounded
 * memory, no timers: expiry happens on use.
 */
export interface RecentSet {
  has(key: string): boolean;
  add(key: string): void;
  readonly size: number;
}

export function createRecentSet(ttlMs: number, maxEntries: number, now: () => number = Date.now): RecentSet {
  const expiries = new Map<string, number>(); // insertion order = expiry order (one ttl for all)
  const evict = () => {
    const at = now();
    for (const [key, expiresAt] of expiries) {
      if (expiresAt > at && expiries.size <= maxEntries) break;
      expiries.delete(key);
    }
  };
  return {
    has(key) {
      evict();
      return expiries.has(key);
    },
    add(key) {
      expiries.delete(key);
      expiries.set(key, now() + ttlMs);
      evict();
    },
    get size() {
      return expiries.size;
    },
  };
}
