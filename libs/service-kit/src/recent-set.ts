/**
 * Keys seen recently (with a value each, in a RecentMap), each forgotten after `ttlMs` or, past `maxEntries`, oldest first. Bounded
 * memory, no timers: expiry happens on use.
 *
 * Keys are kept in generations of up to an eighth of `maxEntries`, and a whole generation is
 * forgotten at once. Evicting one key at a time from the front of one large Map would leave a
 * growing run of deleted slots that every later eviction walks again: at 200,000 keys that cost
 * 150 µs per add. So a key is remembered for at least the ttl and at most an eighth longer, and the
 * set holds from about seven eighths of `maxEntries` (exactly, for a multiple of 8) up to
 * `maxEntries` once full; a key added again counts twice until its older copy's generation goes.
 */
export interface RecentSet {
  has(key: string): boolean;
  add(key: string): void;
  readonly size: number;
}

/** A RecentSet whose keys carry a value: what is known of each (the last value set wins). */
export interface RecentMap<V> {
  get(key: string): V | undefined;
  has(key: string): boolean;
  set(key: string, value: V): void;
  readonly size: number;
}

interface Generation<V> {
  keys: Map<string, V>;
  /** When the last of its keys expires. */
  expires: number;
  /** After this it takes no more keys, so its first keys are not remembered much past their ttl. */
  closesAt: number;
}

export function createRecentSet(ttlMs: number, maxEntries: number, now: () => number = Date.now): RecentSet {
  const map = createRecentMap<true>(ttlMs, maxEntries, now);
  return {
    has: (key) => map.has(key),
    add: (key) => map.set(key, true),
    get size() {
      return map.size;
    },
  };
}

export function createRecentMap<V>(
  ttlMs: number,
  maxEntries: number,
  now: () => number = Date.now,
): RecentMap<V> {
  const generationSize = Math.max(1, Math.floor(maxEntries / 8));
  const generations: Generation<V>[] = [];
  let size = 0;

  const openGeneration = (at: number): Generation<V> => {
    const generation = { keys: new Map<string, V>(), expires: at, closesAt: at + ttlMs / 8 };
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

  /** The generation that decides for `key`: newer generations expire later, so the newest holding it. */
  const holding = (key: string): Generation<V> | undefined => {
    for (let i = generations.length - 1; i >= 0; i--) if (generations[i].keys.has(key)) return generations[i];
    return undefined;
  };
  return {
    has(key) {
      const generation = holding(key);
      return generation !== undefined && generation.expires > now();
    },
    get(key) {
      const generation = holding(key);
      return generation && generation.expires > now() ? generation.keys.get(key) : undefined;
    },
    set(key, value) {
      const at = now();
      let newest = generations[generations.length - 1];
      if (!newest || newest.keys.size >= generationSize || at >= newest.closesAt) newest = openGeneration(at);
      if (!newest.keys.has(key)) size += 1;
      newest.keys.set(key, value);
      newest.expires = at + ttlMs;
    },
    get size() {
      return size;
    },
  };
}
