import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createRecentMap, createRecentSet } from '@parley/service-kit';
import { MemorySessionStore } from '../../../apps/session-ms/src/store/memory-store';
import type { Pending } from '../../../apps/session-ms/src/store/session-store';
import { MembershipCache } from '../../../apps/group-message-router/src/membership-cache';
import { Segment } from '../../../libs/kafka/src/broker/log/segment';

/**
 * `npm run bench:structures`: the in-process structures on hot paths, each at a small and a large
 * size. The cost of one operation should not grow with what the structure holds; a growth factor
 * well above 1 is a cliff that tests and quick runs never reach (docs/benchmarks.md, `npm run bench:structures`).
 */

interface Measure {
  name: string;
  small: number;
  large: number;
  /** Fills a structure of `size` and returns the per-operation times (ms) of the operation under test. */
  run(size: number): Promise<number[]>;
}

const OPS = 20_000;

const pending = (i: number): Pending => ({
  user: `u${i % 5000}`,
  mid: `s${i % 97}:m${i}`,
  frame: { type: 'receipt', mid: `r${i}`, status: 'delivered', mids: [`m${i}`], by: 'b', at: 0 },
  attempts: 1,
  stored: false,
});

/** Times `op` per call, in batches of 100 so the clock's cost stays out of it. */
async function timed(count: number, op: (i: number) => unknown): Promise<number[]> {
  const times: number[] = [];
  for (let start = 0; start < count; start += 100) {
    const t0 = performance.now();
    for (let i = start; i < start + 100; i++) await op(i);
    times.push((performance.now() - t0) / 100);
  }
  return times;
}

const measures: Measure[] = [
  {
    name: 'recent set: add, when full',
    small: 2_000,
    large: 200_000,
    async run(size) {
      const set = createRecentSet(3_600_000, size);
      for (let i = 0; i < size; i++) set.add(`fill${i}`);
      return timed(OPS, (i) => set.add(`k${i}`));
    },
  },
  {
    name: 'session memory store: track + complete, acked set full',
    small: 10_000,
    large: 1_000_000,
    async run(size) {
      const store = new MemorySessionStore(Date.now, size);
      for (let i = 0; i < size; i++) await store.complete('fill', [`f${i}`], 3_600_000);
      return timed(OPS, async (i) => {
        const p = pending(i);
        await store.track(p, 0);
        await store.complete(p.user, [p.mid], 3_600_000);
      });
    },
  },
  {
    name: 'session memory store: claimDue(500), all due, per item',
    small: 10_000,
    large: 300_000,
    async run(size) {
      const store = new MemorySessionStore();
      for (let i = 0; i < size; i++) await store.track(pending(i), i % 1000);
      const times: number[] = [];
      for (let round = 0; round < 20; round++) {
        const t0 = performance.now();
        const claimed = await store.claimDue(1000, 2_000_000, 1000, 500);
        times.push((performance.now() - t0) / claimed.length);
      }
      return times;
    },
  },
  {
    name: 'membership cache: a miss that evicts',
    small: 1_000,
    large: 100_000,
    async run(size) {
      const membership = { members: ['a', 'b'], has: (user: string) => user === 'a' || user === 'b' };
      const cache = new MembershipCache(
        { membersOf: async () => membership, versionsOf: async () => new Map() },
        { ttlMs: 3_600_000, maxGroups: size, maxMembers: 2 * size },
      );
      for (let i = 0; i < size; i++) await cache.membersOf(`fill${i}`);
      return timed(OPS, (i) => cache.membersOf(`g${i}`));
    },
  },
  {
    name: 'broker segment: newest timestamp (retention check)',
    small: 1_000,
    large: 1_000_000,
    async run(size) {
      const segment = Segment.memory(0);
      for (let i = 0; i < size; i++) segment.append(Buffer.alloc(61), i, 0, i);
      return timed(2_000, () => segment.maxTimestamp);
    },
  },
];

/**
 * What a RecentMap of session-ms's acked mids holds when full (the embedded store keeps a million),
 * and what a full GC costs with it: the keys stay out of the heap the GC walks (recent-set.ts).
 */
function recentMapFootprint(size: number): string {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
  gc();
  const before = process.memoryUsage();
  const acked = createRecentMap<string>(86_400_000, size);
  for (let i = 0; i < size; i++) acked.set(`u${i % 5000}\ns${i % 97}:m${i}`, i % 2 ? 'pushed' : 'stored');
  gc();
  const after = process.memoryUsage();
  const t0 = performance.now();
  gc();
  const gcMs = performance.now() - t0;
  return (
    `recent map, ${acked.size} keys: heap ${mib(after.heapUsed - before.heapUsed)}, ` +
    `array buffers ${mib(after.arrayBuffers - before.arrayBuffers)}, a full GC ${gcMs.toFixed(1)} ms`
  );
}

function summary(times: number[]) {
  const sorted = [...times].sort((a, b) => a - b);
  return { median: sorted[Math.floor(sorted.length / 2)]!, worst: sorted[sorted.length - 1]! };
}

async function main() {
  const us = (ms: number) => `${(ms * 1000).toFixed(2)} µs`;
  console.log('structure | small: median per op (worst) | large: median per op (worst) | growth');
  for (const measure of measures) {
    const small = summary(await measure.run(measure.small));
    const large = summary(await measure.run(measure.large));
    const growth = large.median / small.median;
    console.log(
      `${measure.name} | ${measure.small}: ${us(small.median)} (${us(small.worst)}) | ` +
        `${measure.large}: ${us(large.median)} (${us(large.worst)}) | ${growth.toFixed(1)}x${growth > 4 ? '  GROWS' : ''}`,
    );
  }
  console.log(recentMapFootprint(1_000_000));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
