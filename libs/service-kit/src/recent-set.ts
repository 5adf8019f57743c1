/**
 * Keys seen recently, each forgotten after its ttl (the set's `ttlMs` unless `add` names another)
 * or, past `maxEntries`, oldest first. Bounded memory, no timers: expiry happens on use.
 *
 * Keys are kept in generations of up to an eighth of `maxEntries`, and a whole generation is
 * forgotten at once. Evicting one key at a time from the front of one large Map would leave a
 * growing run of deleted slots that every later eviction walks again: at 200,000 keys that cost
 * 150 µs per add. So a key is remembered for at least its ttl and at most an eighth longer, and the
 * set holds between seven eighths of `maxEntries` and `maxEntries` once full (a key added again
 * counts twice until its older copy's generation goes).
 */
export interface RecentSet {
  has(key: string): boolean;
  add(key: string, ttlMs?: number): void;
  readonly size: number;
}

interface Generation {
  keys: Set<string>;
  /** Every key of a generation has the same ttl. */
  ttl: number;
  /** When the last of its keys expires. */
  expires: number;
  /** After this it takes no more keys, so its first keys are not remembered much past their ttl. */
  closesAt: number;
}

export function createRecentSet(ttlMs: number, maxEntries: number, now: () => number = Date.now): RecentSet {
  const generationSize = Math.max(1, Math.floor(maxEntries / 8));
  const generations: Generation[] = [];
  let size = 0;

  const openGeneration = (at: number, ttl: number): Generation => {
    const generation = { keys: new Set<string>(), ttl, expires: at, closesAt: at + ttl / 8 };
    generations.push(generation);
    // Make room for a full new generation: drop the expired and, past maxEntries, the oldest.
    while (generations.length > 1) {
      const oldest = generations[0];
      if (oldest.expires > at && size + generationSize <= maxEntries) break;
      size -= oldest.keys.size;
      generations.shift();
    }
    return generation;
  };

  return {
    has(key) {
      const at = now();
      for (let i = generations.length - 1; i >= 0; i--) {
        if (generations[i].expires > at && generations[i].keys.has(key)) return true;
      }
      return false;
    },
    add(key, ttl = ttlMs) {
      const at = now();
      let newest = generations[generations.length - 1];
      if (!newest || newest.ttl !== ttl || newest.keys.size >= generationSize || at >= newest.closesAt) {
        newest = openGeneration(at, ttl);
      }
      if (!newest.keys.has(key)) size += 1;
      newest.keys.add(key);
      newest.expires = Math.max(newest.expires, at + ttl);
    },
    get size() {
      return size;
    },
  };
}
