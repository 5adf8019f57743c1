/**
 * mulberry32, a small deterministic generator, with the draws randomized tests make: a run that
 * fails is run again from its seed.
 */
export function seededRandom(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    /** In [0, 1). */
    next,
    chance: (p: number) => next() < p,
    /** In [0, n). */
    int,
    /** In [lo, hi]. */
    between: (lo: number, hi: number) => lo + int(hi - lo + 1),
    pick: <T>(items: readonly T[]): T => items[int(items.length)],
  };
}

export type SeededRandom = ReturnType<typeof seededRandom>;
