import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import Redis from 'ioredis';
import { Client } from 'pg';
import { TEST_DATABASE_URL } from '@parley/postgres/testing';
import { waitFor } from '@parley/test-kit';
import { fleetSuite } from './helpers';

const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
/** The fleet's session store keys (RedisSessionStore's default prefix): this suite's alone on the test Redis. */
const SESSION_KEYS = 'parley:session:';
const schema = `t_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
const withSearchPath = (url: string) =>
  `${url}${url.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${schema}`)}`;

/** Every row of every table of the fleet's schema whose text names `user`, by table. */
async function rowsNaming(user: string): Promise<Record<string, string[]>> {
  const db = new Client({ connectionString: withSearchPath(TEST_DATABASE_URL) });
  await db.connect();
  try {
    const tables = await db.query<{ name: string }>(
      'SELECT table_name AS name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1',
      [schema],
    );
    const found: Record<string, string[]> = {};
    for (const { name } of tables.rows) {
      const rows = await db.query<{ row: string }>(
        `SELECT t::text AS row FROM ${name} t WHERE strpos(t::text, $1) > 0`,
        [user],
      );
      if (rows.rows.length > 0) found[name] = rows.rows.map((r) => r.row);
    }
    return found;
  } finally {
    await db.end();
  }
}

/** Every session store key that names `user`, in its name or its value. */
async function keysNaming(redis: Redis, user: string): Promise<string[]> {
  const found: string[] = [];
  for (const key of await redis.keys(`${SESSION_KEYS}*`)) {
    const type = await redis.type(key);
    const value =
      type === 'hash'
        ? await redis.hgetall(key)
        : type === 'set'
          ? await redis.smembers(key)
          : type === 'zset'
            ? await redis.zrange(key, 0, -1)
            : await redis.get(key);
    if (key.includes(user) || JSON.stringify(value).includes(user))
      found.push(key.slice(SESSION_KEYS.length));
  }
  return found.sort();
}

/**
 * `DELETE /v1/account` on the production adapters (Postgres, Redis): the user's data made in every
 * service, then each store read whole for the user's id. What is left is what docs/operations.md
 * ("A user's data, and erasing it") says stays, and the purge takes the rest it promises.
 */
describe('fleet: an account erased leaves only what the docs say stays', () => {
  const redis = new Redis(REDIS_URL);
  beforeAll(async () => {
    const admin = new Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    await admin.query(`CREATE SCHEMA ${schema}`);
    await admin.end();
  });
  const { clients, fleet } = fleetSuite({
    databaseUrl: withSearchPath(TEST_DATABASE_URL),
    redisUrl: REDIS_URL,
  });
  afterAll(async () => {
    const keys = await redis.keys(`${SESSION_KEYS}*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
    const admin = new Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
  }, 60_000);

  it('erases memberships, the blocks, reports and mutes she made, devices, stored, acked and connects; the rest is named in the docs', async () => {
    const run = randomUUID().slice(0, 8);
    const [eve, bea, cyd, dan] = ['eve', 'bea', 'cyd', 'dan'].map((name) => `${name}-${run}`);
    const stored = async (user: string) =>
      ((await clients.rest(user, 'GET', '/v1/messages')).body.messages as Array<{ mid: string }>).map(
        (m) => m.mid,
      );

    // Stored for eve while away, then replayed and acked: an ack tombstone and a connect in storage.
    await clients.rest(dan, 'POST', '/v1/send', [{ type: 'message', id: 'd0', to: eve, body: 'first' }]);
    await waitFor(async () => (await stored(eve)).includes(`${dan}:d0`), 10_000, 'stored for eve');
    const device = await clients.connect(eve, { autoAck: true });
    await device.next((f) => f.mid === `${dan}:d0`);
    await waitFor(async () => (await stored(eve)).length === 0, 10_000, 'acked in storage');
    // The only admin of a group, a member of another; a message of hers stored for a member away.
    await clients.rest(eve, 'POST', '/v1/groups', { id: `g1-${run}`, name: 'hers', members: [bea, cyd] });
    await clients.rest(bea, 'POST', '/v1/groups', { id: `g2-${run}`, name: 'bea', members: [eve] });
    device.send({ type: 'message', id: 'e1', to: cyd, body: 'from eve' });
    await device.next((f) => f.type === 'accepted');
    await waitFor(async () => (await stored(cyd)).includes(`${eve}:e1`), 10_000, "eve's message stored");
    // And one to bea's group: group-message-router records it as routed.
    device.send({ type: 'message', id: 'e2', to: `g2-${run}`, chat: 'group', body: 'to the group' });
    await waitFor(
      async () => (await stored(bea)).includes(`${eve}:e2`),
      10_000,
      "eve's group message stored",
    );
    await device.close();
    for (const [user, method, path, body] of [
      [eve, 'PUT', '/v1/devices/phone', { token: `token-${run}`, platform: 'android' }],
      [eve, 'PUT', `/v1/blocks/${bea}`],
      [cyd, 'PUT', `/v1/blocks/${eve}`],
      [eve, 'POST', '/v1/reports', { user: bea, reason: 'spam' }],
      [bea, 'POST', '/v1/reports', { user: eve, reason: 'spam' }],
      [
        cyd,
        'POST',
        '/v1/reports',
        { user: bea, reason: 'spam', messages: [{ mid: `${eve}:e1`, body: 'from eve' }] },
      ],
      [eve, 'PUT', `/v1/mutes/group/g1-${run}`],
      [eve, 'PUT', `/v1/mutes/direct/${dan}`],
      [bea, 'PUT', `/v1/mutes/direct/${eve}`],
      [dan, 'POST', '/v1/send', [{ type: 'message', id: 'd1', to: eve, body: 'second' }]],
    ] as const)
      expect((await clients.rest(user, method, path, body)).status).toBeLessThan(300);
    await waitFor(async () => (await stored(eve)).includes(`${dan}:d1`), 10_000, 'stored for eve again');
    await waitFor(
      async () =>
        (await clients.rest(dan, 'GET', `/v1/presence?users=${eve}`)).body.presence[0].lastSeen !== null,
      10_000,
      'eve last seen',
    );

    expect(Object.keys(await rowsNaming(eve))).toContain('group_routed_messages');
    const erased = await clients.rest(eve, 'DELETE', '/v1/account');
    expect([erased.status, erased.body.erased]).toEqual([
      200,
      { groups: 2, devices: 1, pending: expect.any(Number), stored: 1 },
    ]);
    // Her group has an admin left, who may remove members.
    const hers = await clients.rest(bea, 'GET', `/v1/groups/g1-${run}`);
    expect([hers.body.members, hers.body.admins]).toEqual([[bea, cyd], [bea]]);
    expect((await clients.rest(bea, 'DELETE', `/v1/groups/g1-${run}/members/${cyd}`)).status).toBe(200);
    await sleep(500); // the notices of her leaves, stored for the others

    // Postgres: only these tables still name her, and only as documented.
    const left = await rowsNaming(eve);
    expect(Object.keys(left).sort()).toEqual([
      'group_ops', // the records of changes of groups she was in
      'groups', // created_by of the group she created, which still has members
      'offline_messages', // what others have not acked: her message, notices naming her
      'offline_sequences', // her position counter, until the next purge
      'push_mutes', // bea's mute of her 1:1 with her, bea's to lift
      'user_block_changes', // that her blocks changed
      'user_blocks', // cyd's block of her, cyd's to lift
      'user_reports', // bea's report of her, and cyd's report of bea quoting her message
    ]);
    expect(left.groups).toEqual([expect.stringMatching(new RegExp(`^\\(g1-${run},hers,${eve},`))]);
    for (const row of left.offline_messages) expect(row).not.toMatch(new RegExp(`^\\(${eve},`));
    expect(left.user_reports).toHaveLength(2);
    expect(left.user_reports).toEqual(
      expect.arrayContaining([
        expect.stringContaining(`,${bea},${eve},spam,`),
        expect.stringContaining(`,${cyd},${bea},spam,`),
      ]),
    );
    expect(left.user_blocks).toEqual([expect.stringMatching(new RegExp(`^\\(${cyd},${eve},`))]);
    expect(left.push_mutes).toEqual([expect.stringMatching(new RegExp(`^\\(${bea},direct,${eve},`))]);
    expect(left.user_block_changes).toEqual([expect.stringMatching(new RegExp(`^\\(${eve},`))]);
    // Redis: acked-mid markers, marks of mids handed to storage (hers and others' of her mids).
    const keys = await keysNaming(redis, eve);
    for (const key of keys) expect(key).toMatch(new RegExp(`^(ack:${eve}:|stored:[^:]+:)`));
    expect(keys).toEqual(expect.arrayContaining([expect.stringMatching(`^stored:${eve}:${dan}:d1$`)]));

    // The next purge takes her position counter.
    await (fleet().services['persistence-ms'] as unknown as { purgeNow(): Promise<unknown> }).purgeNow();
    expect((await rowsNaming(eve)).offline_sequences).toBeUndefined();
  }, 60_000);
});
