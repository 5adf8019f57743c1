import { createRecentMap, MAX_RECENT_MAP_VALUES } from '../src/recent-set';

/** The implementation before keys went into typed arrays (strings in Maps): the reference model. */
function createModel<V>(ttlMs: number, maxEntries: number, now: () => number) {
  const generationSize = Math.max(1, Math.floor(maxEntries / 8));
  const generations: Array<{ keys: Map<string, V>; expires: number; closesAt: number }> = [];
  let size = 0;
  const openGeneration = (at: number) => {
    const generation = { keys: new Map<string, V>(), expires: at, closesAt: at + ttlMs / 8 };
    generations.push(generation);
    while (generations.length > 1) {
      const oldest = generations[0];
      if (oldest.expires > at && size + generationSize <= maxEntries) break;
      size -= oldest.keys.size;
      generations.shift();
    }
    return generation;
  };
  const holding = (key: string) => {
    for (let i = generations.length - 1; i >= 0; i--) if (generations[i].keys.has(key)) return generations[i];
    return undefined;
  };
  return {
    has(key: string) {
      const generation = holding(key);
      return generation !== undefined && generation.expires > now();
    },
    get(key: string) {
      const generation = holding(key);
      return generation && generation.expires > now() ? generation.keys.get(key) : undefined;
    },
    set(key: string, value: V) {
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

/** A small deterministic generator, so a failure can be replayed from its seed. */
function prng(seed: number) {
  let state = seed >>> 0 || 1;
  return (n: number) => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state % n;
  };
}

const UNITS = [
  'a',
  'b',
  '\n',
  '\0',
  'é',
  '\uFFFD',
  '\uD800',
  '\uDBFF',
  '\uDC00',
  '\uDFFF',
  '\uD83D',
  '\uDE00',
  'ÿ',
  '\u00FF',
  '\u0100',
  '😀',
  '€',
  ':',
  '1',
];

describe('createRecentMap against the Map-based implementation it replaced', () => {
  it('answers every get, has and size alike over random keys, clocks and bounds', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const next = prng(seed);
      let clock = 1000;
      const ttl = [0, 1, 7, 80, 1000][next(5)];
      const maxEntries = [0, 1, 2, 7, 8, 9, 16, 50, 200][next(9)];
      const actual = createRecentMap<number>(ttl, maxEntries, () => clock);
      const model = createModel<number>(ttl, maxEntries, () => clock);
      const pool = Array.from({ length: 1 + next(60) }, () =>
        Array.from({ length: next(6) }, () => UNITS[next(UNITS.length)]).join(''),
      );
      for (let step = 0; step < 400; step++) {
        const op = next(10);
        if (op < 2) clock += next(3) === 0 ? -next(20) : next(ttl + 2);
        const key =
          next(8) === 0 ? pool[next(pool.length)] + UNITS[next(UNITS.length)] : pool[next(pool.length)];
        if (op < 6) {
          const value = next(MAX_RECENT_MAP_VALUES);
          actual.set(key, value);
          model.set(key, value);
        }
        const probe = pool[next(pool.length)];
        const got = [actual.get(probe), actual.has(probe), actual.size];
        const want = [model.get(probe), model.has(probe), model.size];
        if (got.some((answer, i) => answer !== want[i]))
          expect({ seed, step, probe, got }).toEqual({ seed, step, probe, got: want });
      }
    }
  });
});
