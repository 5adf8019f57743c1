import { randomUUID } from 'node:crypto';
import Redis from 'ioredis';
import { RedisSessionStore } from '../../src/store/redis-store';

/**
 * A Redis session store under a prefix of its own; `wipe` empties it as a Redis restarted without
 * its data, `has` tells whether one of its keys exists.
 */
export function redisStore() {
  const url = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
  const prefix = `test:${randomUUID()}:`;
  const [client, admin] = [new Redis(url, { keyPrefix: prefix }), new Redis(url)];
  const wipe = async () => {
    const keys = await admin.keys(`${prefix}*`);
    if (keys.length > 0) await admin.del(...keys);
  };
  const has = async (key: string) => (await admin.exists(`${prefix}${key}`)) === 1;
  const close = async () => {
    await wipe();
    await Promise.all([client.quit(), admin.quit()]);
  };
  return { store: new RedisSessionStore(client), wipe, has, close };
}
