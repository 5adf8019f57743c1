/**
 * The Redis session store's cost per delivered message on a real Redis: a track and its complete
 * (what a pushed-and-acked deliverable costs the store), per second, and per message the Redis
 * CPU and the bytes sent to Redis (from INFO, so run it on a Redis nothing else is using).
 *
 *   npx tsx apps/session-ms/bench/redis-store-bench.ts [redis-url=redis://127.0.0.1:6379] [messages=20000]
 */
import { performance } from 'node:perf_hooks';
import Redis from 'ioredis';
import type { Deliverable } from '@parley/contracts';
import { RedisSessionStore } from '../src/store/redis-store';

const [url = 'redis://127.0.0.1:6379', messagesArg = '20000'] = process.argv.slice(2);
const messages = Number(messagesArg);
const CONCURRENCY = 200;
const USERS = 500;

async function redisTotals(admin: Redis): Promise<{ cpuS: number; inputBytes: number }> {
  const info = await admin.info();
  const number = (field: string) => Number(new RegExp(`^${field}:([\\d.]+)`, 'm').exec(info)?.[1] ?? NaN);
  return {
    cpuS: number('used_cpu_user') + number('used_cpu_sys'),
    inputBytes: number('total_net_input_bytes'),
  };
}

function deliverable(mid: string, to: string): Deliverable {
  return {
    type: 'message',
    mid,
    id: mid,
    from: 'alice',
    to,
    chat: 'direct',
    body: { text: 'hello' },
    sentAt: 1,
  };
}

async function round(store: RedisSessionStore, admin: Redis, name: string): Promise<void> {
  const before = await redisTotals(admin);
  const started = performance.now();
  for (let first = 0; first < messages; first += CONCURRENCY) {
    const batch = Array.from({ length: Math.min(CONCURRENCY, messages - first) }, (_, i) => first + i);
    const userOf = (n: number) => `u${n % USERS}`;
    const midOf = (n: number) => `alice:${name}-${n}`;
    await Promise.all(
      batch.map((n) =>
        store.track(
          {
            user: userOf(n),
            mid: midOf(n),
            frame: deliverable(midOf(n), userOf(n)),
            attempts: 1,
            stored: false,
          },
          Date.now() + 5000,
        ),
      ),
    );
    await Promise.all(batch.map((n) => store.complete(userOf(n), [midOf(n)], 60_000)));
  }
  const seconds = (performance.now() - started) / 1000;
  const after = await redisTotals(admin);
  console.log(
    `${name}: ${Math.round(messages / seconds)} track+complete/s, Redis CPU ${(((after.cpuS - before.cpuS) * 1e6) / messages).toFixed(1)} µs and ${Math.round((after.inputBytes - before.inputBytes) / messages)} bytes sent to Redis per message`,
  );
}

async function main(): Promise<void> {
  const prefix = `parley-bench:${Date.now()}:`;
  const admin = new Redis(url);
  const store = RedisSessionStore.connect(url, prefix);
  try {
    for (const name of ['warm-up', 'run 1', 'run 2']) await round(store, admin, name);
  } finally {
    // SCAN, not KEYS: an ACL user as docs/operations.md sets up (-@dangerous) may not run KEYS.
    for await (const keys of admin.scanStream({ match: `${prefix}*`, count: 1000 }))
      if ((keys as string[]).length > 0) await admin.del(...(keys as string[]));
    await store.close();
    admin.disconnect();
  }
}

void main();
