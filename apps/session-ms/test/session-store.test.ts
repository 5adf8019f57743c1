/** @expectedSeconds 45 */
import { setTimeout as sleep } from 'node:timers/promises';
import Redis from 'ioredis';
import { TcpFaultProxy, waitFor } from '@parley/test-kit';
import { randomUUID } from 'node:crypto';
import { Deliverable } from '@parley/contracts';
import { isTransient } from '@parley/service-kit';
import { MemorySessionStore } from '../src/store/memory-store';
import { REDIS_SOCKET_TIMEOUT_MS, RedisSessionStore } from '../src/store/redis-store';
import { Connection, Pending, SessionStore, STATE_CLOCK_MARGIN_MS } from '../src/store/session-store';
import { ownRedisServers, ownReplicaOf } from './support/own-redis';

const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

interface Target {
  name: string;
  open(forgetGatewayAfterMs?: number): SessionStore;
  dispose(): Promise<void>;
}

function redisTarget(): Target {
  const prefix = `test:${randomUUID()}:`;
  const clients: Redis[] = [];
  return {
    name: 'redis',
    open(forgetGatewayAfterMs) {
      // A store with its own forget horizon gets keys of its own: gwbeat and gwsince are store-wide.
      const keyPrefix = forgetGatewayAfterMs === undefined ? prefix : `${prefix}${randomUUID()}:`;
      const client = new Redis(REDIS_URL, { keyPrefix });
      clients.push(client);
      return new RedisSessionStore(client, forgetGatewayAfterMs);
    },
    async dispose() {
      const admin = new Redis(REDIS_URL);
      const keys = await admin.keys(`${prefix}*`);
      if (keys.length) await admin.del(...keys);
      await admin.quit();
      await Promise.all(clients.map((c) => c.quit()));
    },
  };
}

function memoryTarget(): Target {
  return {
    name: 'memory',
    // Date.now read at each call: a test may step this host's clock (jest.spyOn).
    open: (forgetGatewayAfterMs) => new MemorySessionStore(() => Date.now(), undefined, forgetGatewayAfterMs),
    dispose: async () => undefined,
  };
}

const frame = (mid: string): Deliverable => ({
  type: 'message',
  mid,
  id: mid.split(':')[1],
  from: 'alice',
  to: 'bob',
  chat: 'direct',
  body: { list: [], map: {} },
  sentAt: 1,
});
const pending = (mid: string, user = 'bob'): Pending => ({
  user,
  mid,
  frame: frame(mid),
  attempts: 1,
  stored: false,
});

const connection = (user: string, connId: string, gateway: string): Connection => ({
  user,
  connId,
  gateway,
  gatewayUrl: `http://${gateway}`,
  at: 1,
});
const connIdsOf = async (store: SessionStore, user: string) =>
  ((await store.connectionsOf([user])).get(user) ?? []).map((c) => c.connId);
/**
 * The forget horizon of the tests of gateways that died: well past their 500 ms of beats after the
 * death, so a loaded CI host running those beats late does not reach it first (at 600 ms it did).
 */
const FORGET_AFTER_MS = 1500;

/**
 * Heartbeats every 10 ms, each counted as read for 200 ms: with 50, a pause of the test process on a
 * loaded box (a full CI run with two workers beside the browser test) let them lapse before the
 * store was asked, and it judged no gateway (a flake seen twice, in these two tests).
 */
const beating =
  (store: SessionStore, ttlMs = 200) =>
  async (ms: number, ...gateways: string[]) => {
    for (const end = Date.now() + ms; Date.now() < end;) {
      for (const gateway of gateways) await store.gatewayAlive(gateway, ttlMs);
      await sleep(10);
    }
  };

describe.each([memoryTarget(), redisTarget()])('SessionStore on $name', (target) => {
  let store: SessionStore;
  beforeEach(() => {
    store = target.open();
  });
  afterAll(() => target.dispose());

  it('forgets, at a start of a gateway not noted before (a restart under its id), the connections it registered before it', async () => {
    await store.gatewayAlive('gw-r1', 60_000);
    await store.gatewayAlive('gw-r2', 60_000);
    const add = (user: string, connId: string, gateway: string, at: number) =>
      store.addConnection({ ...connection(user, connId, gateway), at });
    await add('ra', 'old', 'gw-r1', 5_000);
    await add('ra', 'other', 'gw-r2', 5_000);
    await add('rb', 'old2', 'gw-r1', 8_000);
    expect(await store.gatewayStarted('gw-r1', 10_000)).toBe(2);
    await add('rb', 'new', 'gw-r1', 9_500); // a clock stepped back after the start: still a live socket
    expect(await store.gatewayStarted('gw-r1', 10_000)).toBe(0); // the same start again: nothing
    expect(await connIdsOf(store, 'ra')).toEqual(['other']);
    expect(await connIdsOf(store, 'rb')).toEqual(['new']);
    expect(await store.gatewayStarted('gw-r1', 20_000)).toBe(1); // restarted again
    expect(await connIdsOf(store, 'rb')).toEqual([]);
  });

  it("ignores a connection-up of a gateway's earlier process read after its restart was noted (the user's partition read behind the gateway's)", async () => {
    await store.gatewayAlive('gw-l1', 60_000);
    await store.gatewayStarted('gw-l1', 1_000);
    expect(await store.gatewayStarted('gw-l1', 10_000)).toBe(0); // restarted, nothing registered yet
    await store.addConnection({ ...connection('la', 'dead', 'gw-l1'), at: 5_000 }); // of the earlier process
    await store.addConnection({ ...connection('lb', 'live', 'gw-l1'), at: 9_500 }); // within the margin
    await store.addConnection({ ...connection('lb', 'new', 'gw-l1'), at: 12_000 });
    expect(await connIdsOf(store, 'la')).toEqual([]);
    expect((await connIdsOf(store, 'lb')).sort()).toEqual(['live', 'new']);
  });

  it('tracks connections per device and ignores gateways that stopped beating; forgets an erased user’s last seen', async () => {
    await store.gatewayAlive('gw-1', 60_000);
    await store.addConnection({
      user: 'u1',
      connId: 'a',
      deviceId: 'phone',
      gateway: 'gw-1',
      gatewayUrl: 'http://gw1',
      at: 10,
    });
    await store.addConnection({
      user: 'u1',
      connId: 'b',
      gateway: 'gw-dead',
      gatewayUrl: 'http://gw2',
      at: 11,
    });
    await store.addConnection({ user: 'u2', connId: 'c', gateway: 'gw-1', gatewayUrl: 'http://gw1', at: 12 });
    const live = await store.connectionsOf(['u1', 'u2', 'u3']);
    expect(live.get('u1')?.map((c) => c.connId)).toEqual(['a']);
    expect(live.get('u2')?.map((c) => c.connId)).toEqual(['c']);
    expect(live.has('u3')).toBe(false);
    await store.removeConnection('u2', 'c', 20);
    expect(await store.presence(['u1', 'u2', 'u3'])).toEqual([
      { user: 'u1', online: true, lastSeen: 11 },
      { user: 'u2', online: false, lastSeen: 20 },
      { user: 'u3', online: false, lastSeen: null },
    ]);
    // A connection-down or connect that arrives late, from another gateway, names an older time.
    await store.removeConnection('u2', 'old', 15);
    await store.addConnection({
      user: 'u2',
      connId: 'd',
      gateway: 'gw-dead',
      gatewayUrl: 'http://gw2',
      at: 14,
    });
    expect((await store.presence(['u2']))[0].lastSeen).toBe(20);
    // An erased account's last seen is forgotten, and its connections: a socket still open counts
    // as offline, and its disconnect notes nothing. Another user's stay.
    await store.addConnection({ user: 'u2', connId: 'e', gateway: 'gw-1', gatewayUrl: 'http://gw1', at: 21 });
    await store.forgetLastSeen('u2');
    expect(await store.presence(['u1', 'u2'])).toEqual([
      { user: 'u1', online: true, lastSeen: 11 },
      { user: 'u2', online: false, lastSeen: null },
    ]);
    await store.removeConnection('u2', 'e', 30);
    expect(await store.presence(['u2'])).toEqual([{ user: 'u2', online: false, lastSeen: null }]);
    await store.addConnection({ user: 'u2', connId: 'f', gateway: 'gw-1', gatewayUrl: 'http://gw1', at: 40 });
    expect(await store.presence(['u2'])).toEqual([{ user: 'u2', online: true, lastSeen: 40 }]);
  });

  it('notes last seen at the disconnect of a connection it never knew (open before the store lost its state), not of one an erasure forgot', async () => {
    await store.gatewayAlive('gw-1', 60_000);
    // Redis restarted empty (or session-ms with the memory store): the socket's connection-up is
    // gone, and the gateway's announcement has not come yet when it closes.
    await store.removeConnection('u7', 'before-loss', 50);
    expect(await store.presence(['u7'])).toEqual([{ user: 'u7', online: false, lastSeen: 50 }]);
    // A socket of an erased account closing after the erasure still notes nothing, also when its
    // connection-down is read again (a batch retried).
    await store.addConnection({ user: 'u8', connId: 'e', gateway: 'gw-1', gatewayUrl: 'http://gw1', at: 21 });
    await store.forgetLastSeen('u8');
    await store.removeConnection('u8', 'e', 30);
    await store.removeConnection('u8', 'e', 30);
    expect(await store.presence(['u8'])).toEqual([{ user: 'u8', online: false, lastSeen: null }]);
  });

  it('judges a silent gateway gone once heartbeats have been read for a ttl, and forgets it past the horizon', async () => {
    // A ttl of 600 ms: a pause of the test process (a busy box) longer than a ttl between the last
    // beat and a lookup would stop the heartbeats counting as flowing, and nothing would be judged.
    const forgetful = target.open(1200);
    const beat = beating(forgetful, 600);
    await beat(240, 'gw-paused', 'gw-crashed');
    await forgetful.addConnection(connection('walt', 'p', 'gw-paused'));
    await forgetful.addConnection(connection('walt', 'c', 'gw-crashed'));
    expect((await connIdsOf(forgetful, 'walt')).sort()).toEqual(['c', 'p']);
    await beat(900, 'gw-paused'); // gw-crashed silent for longer than a ttl while the other beats
    expect(await connIdsOf(forgetful, 'walt')).toEqual(['p']);
    await beat(1200, 'gw-paused'); // past the forget horizon
    expect(await connIdsOf(forgetful, 'walt')).toEqual(['p']); // and 'c' forgotten here
    // Were the id reused (GATEWAY_ID pinned), the crashed process's sockets are gone anyway.
    await forgetful.gatewayAlive('gw-crashed', 50);
    expect(await connIdsOf(forgetful, 'walt')).toEqual(['p']);
  });

  it('forgets the connections of a gateway gone past the horizon though nobody looks them up', async () => {
    // A ttl of 600 ms: a pause of the test process (a busy box) longer than a ttl between the last
    // beat and the sweep would stop the heartbeats counting as flowing, and nothing would be forgotten.
    // The horizon no shorter than the ttl: no pause makes gw-crashed gone before the first sweep.
    const forgetful = target.open(600);
    const beat = beating(forgetful, 600);
    await beat(80, 'gw-paused', 'gw-crashed');
    await forgetful.addConnection(connection('una', 'u1', 'gw-crashed'));
    await forgetful.addConnection(connection('una', 'u2', 'gw-crashed'));
    await forgetful.addConnection(connection('una', 'gone', 'gw-crashed'));
    await forgetful.removeConnection('una', 'gone', 2);
    await forgetful.addConnection(connection('vic', 'v', 'gw-paused'));
    expect(await forgetful.forgetGoneGateways()).toBe(0); // seen lately
    await beat(700, 'gw-paused'); // gw-crashed silent past the horizon
    expect(await forgetful.forgetGoneGateways()).toBe(2); // u1 and u2; 'gone' left before
    expect(await forgetful.forgetGoneGateways()).toBe(0);
    // Were the id reused (GATEWAY_ID pinned), the crashed process's sockets stay forgotten.
    await forgetful.gatewayAlive('gw-crashed', 50);
    expect(await connIdsOf(forgetful, 'una')).toEqual([]);
    expect(await connIdsOf(forgetful, 'vic')).toEqual(['v']);
  });

  it("gives a user whose socket died with its gateway (no connection-down) the gateway's last beat as lastSeen, also once it is forgotten", async () => {
    // As the tests above: ttls a pause of the test process (a busy box) does not outlast.
    const forgetful = target.open(FORGET_AFTER_MS);
    const beat = beating(forgetful, 200);
    await beat(80, 'gw-stays', 'gw-dies');
    await forgetful.addConnection({ ...connection('zed', 'z', 'gw-dies'), at: 5 });
    await beat(80, 'gw-stays', 'gw-dies');
    const lastBeat = Date.now();
    await forgetful.gatewayAlive('gw-dies', 200); // its last beat: it dies here, sockets and all
    await beat(500, 'gw-stays');
    // She was online until then: her last connect (5) is not when she was last seen.
    const [gone] = await forgetful.presence(['zed']);
    expect(gone.online).toBe(false);
    expect(gone.lastSeen).toBeGreaterThanOrEqual(lastBeat);
    expect(gone.lastSeen).toBeLessThanOrEqual(Date.now());
    await beat(FORGET_AFTER_MS + 100, 'gw-stays'); // past the horizon: her connection is forgotten
    await forgetful.forgetGoneGateways();
    await forgetful.connectionsOf(['zed']);
    expect(await forgetful.presence(['zed'])).toEqual([
      { user: 'zed', online: false, lastSeen: gone.lastSeen },
    ]);
  });

  it("forgets an erased user's last seen also where a socket that died with its gateway would tell it again", async () => {
    const forgetful = target.open(FORGET_AFTER_MS);
    const beat = beating(forgetful, 200);
    await beat(80, 'gw-lives', 'gw-ends');
    await forgetful.addConnection({ ...connection('xia', 'x', 'gw-ends'), at: 5 });
    await forgetful.addConnection({ ...connection('xia', 'x2', 'gw-lives'), at: 6 });
    await forgetful.removeConnection('xia', 'x2', 7);
    await forgetful.gatewayAlive('gw-ends', 200); // its last beat: it dies here, xia's socket with it
    await beat(500, 'gw-lives');
    expect((await forgetful.presence(['xia']))[0].lastSeen).toBeGreaterThan(7);
    await forgetful.forgetLastSeen('xia');
    expect(await forgetful.presence(['xia'])).toEqual([{ user: 'xia', online: false, lastSeen: null }]);
    await beat(FORGET_AFTER_MS + 100, 'gw-lives'); // past the horizon: what gw-ends held is forgotten
    await forgetful.forgetGoneGateways();
    expect(await forgetful.presence(['xia'])).toEqual([{ user: 'xia', online: false, lastSeen: null }]);
  });

  it("gives a user whose socket died with a gateway that restarted under its id the gateway's last beat before the restart as lastSeen", async () => {
    await store.gatewayStarted('gw-restarts', 1_000);
    await store.addConnection({ ...connection('yan', 'y', 'gw-restarts'), at: 5_000 });
    const lastBeat = Date.now();
    await store.gatewayAlive('gw-restarts', 60_000);
    expect(await store.gatewayStarted('gw-restarts', lastBeat + 60_000)).toBe(1);
    const [yan] = await store.presence(['yan']);
    expect(yan.lastSeen).toBeGreaterThanOrEqual(lastBeat);
  });

  it('says a gateway is new when it has not seen it beat within the horizon (its connections may be unknown)', async () => {
    // A horizon of 600 ms: a pause of the test process (a busy box) must not end it between the two
    // first beats.
    const forgetful = target.open(600);
    expect(await forgetful.gatewayAlive('gw-new', 50)).toBe(true);
    expect(await forgetful.gatewayAlive('gw-new', 50)).toBe(false);
    await sleep(700);
    expect(await forgetful.gatewayAlive('gw-new', 50)).toBe(true);
  });

  it('says a gateway is to be asked to announce while an ask is owed, whichever replica owes it', async () => {
    const store = target.open(60_000);
    expect(await store.gatewayAlive('gw-owed', 50)).toBe(true);
    await store.oweAnnouncement('gw-owed'); // the ask failed
    expect(await store.gatewayAlive('gw-owed', 50)).toBe(true);
    expect(await store.gatewayAlive('gw-owed', 50)).toBe(true);
    await store.announced('gw-owed');
    expect(await store.gatewayAlive('gw-owed', 50)).toBe(false);
  });

  it("says a gateway first seen is not new when its process started since the store's state began, within the horizon (every connection-up it sent came here), and new otherwise", async () => {
    const horizonMs = 3000;
    const storeStart = Date.now();
    const store = target.open(horizonMs);
    await store.gatewayAlive('gw-other', 50);
    // A rollout's new pod, started past the margin for clock skew after the state began: this
    // host's clock is moved on that much rather than waited for.
    const realNow = Date.now.bind(Date);
    const clock = jest.spyOn(Date, 'now').mockImplementation(() => realNow() + STATE_CLOCK_MARGIN_MS + 100);
    try {
      const startedAt = Date.now();
      expect(await store.gatewayAlive('gw-started-since', 50, startedAt)).toBe(false);
      expect(await store.gatewayAlive('gw-started-since', 50, startedAt)).toBe(false);
      // Its connection-ups may have gone to the store's state before, or says nothing of its start.
      expect(await store.gatewayAlive('gw-started-before', 50, storeStart - 1)).toBe(true);
      expect(await store.gatewayAlive('gw-older', 50)).toBe(true);
      // An ask owed is asked whatever the start.
      await store.oweAnnouncement('gw-owed');
      expect(await store.gatewayAlive('gw-owed', 50, startedAt)).toBe(true);
      // Silent past the horizon, its connections may be forgotten: it is new again when it beats.
      await sleep(horizonMs + 100);
      expect(await store.gatewayAlive('gw-started-since', 50, startedAt)).toBe(true);
    } finally {
      clock.mockRestore();
    }
  });

  it("asks a gateway that started before the store's state began to announce, though its clock runs a few seconds ahead and names a start after it (a Redis restarted empty just after the gateway came up)", async () => {
    const store = target.open(60_000); // keys of its own: its state begins here
    const stateSince = Date.now();
    await store.gatewayAlive('gw-other', 50);
    // Started 3 s before the state began, by a clock 5 s ahead of session-ms's.
    const startedAt = stateSince - 3000 + 5000;
    expect(await store.gatewayAlive('gw-skewed', 50, startedAt)).toBe(true);
  });

  it('counts the connections of a gateway seen lately while no heartbeat is read, and for a ttl after they come again (a Kafka outage)', async () => {
    // A ttl long enough that a pause of the test process (a busy box) does not end the grace below.
    const ttlMs = 400;
    const outage = target.open(60_000);
    await outage.gatewayAlive('gw-1', ttlMs);
    await outage.addConnection(connection('bob', 'phone', 'gw-1'));
    await sleep(ttlMs * 2); // no heartbeat read for over a ttl: every gateway is equally silent
    expect(await connIdsOf(outage, 'bob')).toEqual(['phone']);
    await outage.gatewayAlive('gw-2', ttlMs); // heartbeats come again; gw-1's is not read yet
    expect(await connIdsOf(outage, 'bob')).toEqual(['phone']);
  });

  it('forgets nothing while no heartbeat is processed, nor in the first horizon after the first one', async () => {
    const stalled = target.open(100);
    await stalled.gatewayAlive('gw-a', 20);
    await stalled.addConnection(connection('xena', 'x', 'gw-a'));
    await sleep(250); // past the horizon, but no gateway beats meanwhile
    expect(await connIdsOf(stalled, 'xena')).toEqual([]);
    await stalled.gatewayAlive('gw-a', 60_000);
    expect(await connIdsOf(stalled, 'xena')).toEqual(['x']);

    const upgraded = target.open(60_000);
    await upgraded.addConnection(connection('yves', 'y', 'gw-old'));
    await upgraded.gatewayAlive('gw-other', 60_000); // the first heartbeat this store records
    expect(await connIdsOf(upgraded, 'yves')).toEqual([]);
    await upgraded.gatewayAlive('gw-old', 60_000);
    expect(await connIdsOf(upgraded, 'yves')).toEqual(['y']);
  });

  it('tracks a deliverable once and refuses a duplicate while pending or after the ack', async () => {
    expect(await store.track(pending('alice:t1'), 1000)).toBe('tracked');
    expect(await store.track(pending('alice:t1'), 1000)).toBe('pending');
    const [done] = await store.complete('bob', ['alice:t1'], 60_000);
    expect(done).toBe('pushed');
    expect(await store.track(pending('alice:t1'), 1000)).toBe('acked');
    expect(await store.track(pending('alice:t1', 'carol'), 1000)).toBe('tracked');
  });

  it('marks a pending deliverable stored when its stored copy is replayed, and keeps it pending', async () => {
    expect(await store.track(pending('alice:s1', 'sam'), 1000)).toBe('tracked');
    expect(await store.track({ ...pending('alice:s1', 'sam'), stored: true }, 2000)).toBe('pending');
    expect(await store.track(pending('alice:s1', 'sam'), 3000)).toBe('pending'); // never unmarked
    expect((await store.pendingOf(['sam'])).get('sam')).toEqual([
      { ...pending('alice:s1', 'sam'), stored: true },
    ]);
    const [done] = await store.complete('sam', ['alice:s1'], 60_000);
    expect(done).toBe('stored');
  });

  it("starts a pending deliverable's attempts and due time again when its stored copy is replayed (a connect)", async () => {
    await store.track(pending('alice:s2', 'sue'), 1000);
    await store.claimDue(1000, 1000, 1000, 100); // pushed again: attempt 2, due at 2000
    await store.claimDue(2000, 2000, 1000, 100); // attempt 3, due at 3000
    expect(await store.track({ ...pending('alice:s2', 'sue'), stored: true }, 5000)).toBe('pending');
    const ofSue = async (dueBy: number) =>
      (await store.claimDue(dueBy, dueBy, 1000, 100)).filter((p) => p.user === 'sue');
    expect(await ofSue(4999)).toEqual([]); // not due at 3000 any more
    expect(await ofSue(5000)).toEqual([{ ...pending('alice:s2', 'sue'), stored: true, attempts: 2 }]);
  });

  it('drops what was read for a hand-off only if unchanged since: a replay that started it again keeps it', async () => {
    await store.track(pending('alice:h1', 'hal'), 1000);
    await store.track(pending('alice:h2', 'hal'), 1000);
    const read = (await store.claimDue(1000, 1000, 1000, 100)).filter((p) => p.user === 'hal');
    expect(read.map((p) => [p.mid, p.attempts])).toEqual([
      ['alice:h1', 2],
      ['alice:h2', 2],
    ]);
    // hal connects meanwhile: storage replays h1, which starts its attempts again.
    expect(await store.track({ ...pending('alice:h1', 'hal'), stored: true }, 5000)).toBe('pending');
    await store.drop(
      'hal',
      read.map((p) => p.mid),
      read,
    );
    expect((await store.pendingOf(['hal'])).get('hal')).toEqual([
      { ...pending('alice:h1', 'hal'), stored: true },
    ]);
    // Unchanged, or without what was read (an erasure), it goes.
    const [h1] = (await store.pendingOf(['hal'])).get('hal')!;
    await store.drop('hal', [h1.mid], [h1]);
    await store.track(pending('alice:h3', 'hal'), 1000);
    await store.drop('hal', ['alice:h3']);
    expect(await store.pendingOf(['hal'])).toEqual(new Map());
  });

  it('forgets an acked mid after rememberMs: it may then be tracked again', async () => {
    // 300 ms: a pause of the test process (a busy box) must not end it before the first track.
    await store.complete('bob', ['alice:e1'], 300);
    expect(await store.track(pending('alice:e1'), 1000)).toBe('acked');
    await sleep(400);
    expect(await store.track(pending('alice:e1'), 1000)).toBe('tracked');
  });

  it('reads the earliest position among live replicas; an expired report stops counting', async () => {
    expect(await store.readUpTo()).toBeUndefined();
    await store.reportReadUpTo('r1', 5000, 60_000);
    await store.reportReadUpTo('r2', 3000, 60_000);
    expect(await store.readUpTo()).toBe(3000);
    await store.reportReadUpTo('r2', 7000, 60_000);
    expect(await store.readUpTo()).toBe(5000);
    await store.reportReadUpTo('r3', 1000, 1);
    await sleep(10);
    expect(await store.readUpTo()).toBe(5000);
    await store.forgetReadUpTo('r1');
    expect(await store.readUpTo()).toBe(7000);
    await store.forgetReadUpTo('r2');
    expect(await store.readUpTo()).toBeUndefined();
  });

  it('reports an ack of something not pending as undefined, and still remembers it (the same message sent again is not delivered again)', async () => {
    expect(await store.complete('bob', ['alice:never'], 60_000)).toEqual([undefined]);
    expect(await store.track(pending('alice:never'), 1000)).toBe('acked');
    expect(await store.complete('bob', ['alice:never'], 60_000)).toEqual([undefined]);
  });

  it('leaves nothing for an ack that completed nothing when told not to remember such acks (a user past the quota), and still completes and remembers what was pending', async () => {
    await store.track(pending('alice:q1'), 1000);
    expect(await store.complete('bob', ['alice:q1', 'alice:made-up'], 60_000, false)).toEqual([
      'pushed',
      undefined,
    ]);
    expect(await store.track(pending('alice:made-up'), 1000)).toBe('tracked'); // not a duplicate
    expect(await store.track(pending('alice:q1'), 1000)).toBe('acked');
  });

  it("keeps nothing for an ack of one's own mid that completed nothing (the ack of an accepted frame, one per message sent)", async () => {
    expect(await store.complete('alice', ['alice:c1'], 60_000)).toEqual([undefined]);
    expect(await store.track(pending('alice:c1', 'alice'), 1000)).toBe('tracked'); // a note to oneself, replayed
    expect(await store.complete('alice', ['alice:c1'], 60_000)).toEqual(['pushed']);
    expect(await store.track(pending('alice:c1', 'alice'), 1000)).toBe('acked');
  });

  it('answers a completion again with what it completed (a batch retried after its receipts failed to go out)', async () => {
    await store.track(pending('alice:r1', 'rita'), 1000);
    await store.track({ ...pending('alice:r2', 'rita'), stored: true }, 1000);
    const first = await store.complete('rita', ['alice:r1', 'alice:r2', 'alice:r3'], 60_000);
    expect(first).toEqual(['pushed', 'stored', undefined]);
    expect(await store.complete('rita', ['alice:r3', 'alice:r2', 'alice:r1'], 60_000)).toEqual([
      undefined,
      'stored',
      'pushed',
    ]);
    expect(await store.complete('ruth', ['alice:r1'], 60_000)).toEqual([undefined]); // another user's ack: nothing
  });

  it('answers `stored` for a mid marked stored, untracked (a note to oneself in storage) or pending as pushed (a later copy), and the same again', async () => {
    await store.markStored('nina', ['nina:n1', 'nina:n2', 'alice:m1'], 60_000);
    await store.track(pending('nina:n2', 'nina'), 1000); // a later copy, pushed as new
    await store.track(pending('alice:m1', 'nina'), 1000);
    await store.track(pending('alice:m2', 'nina'), 1000); // never stored
    expect(
      await store.complete('nina', ['nina:n1', 'nina:n2', 'nina:n3', 'alice:m1', 'alice:m2'], 60_000),
    ).toEqual(['stored', 'stored', undefined, 'stored', 'pushed']);
    expect(await store.complete('nina', ['nina:n1'], 60_000)).toEqual(['stored']);
    expect(await store.complete('otto', ['nina:n1'], 60_000)).toEqual([undefined]); // another user's
  });

  it('forgets a stored mark with the ack: a copy tracked once the ack is forgotten completes `pushed`', async () => {
    await store.markStored('nora', ['alice:s1'], 60_000);
    await store.track(pending('alice:s1', 'nora'), 1000);
    expect(await store.complete('nora', ['alice:s1'], 50)).toEqual(['stored']);
    await sleep(80); // the ack is forgotten; storage dropped its copy with it
    // A later copy (a group message resent after a membership change), pushed as new: its ack is
    // the only one told of it, so it must complete `pushed` (session-ms sends the receipt).
    expect(await store.track(pending('alice:s1', 'nora'), 1000)).toBe('tracked');
    expect(await store.complete('nora', ['alice:s1'], 50)).toEqual(['pushed']);
  });

  it("marks nothing an ack completed before (an ack between the offline hand-over's read and its mark): no mark outlives it", async () => {
    // 400 ms: a pause of the test process (a busy box) must not end the ack before the mark and drop.
    await store.track(pending('alice:s2', 'nell'), 1000);
    expect(await store.complete('nell', ['alice:s2'], 400)).toEqual(['pushed']); // acked meanwhile
    await store.markStored('nell', ['alice:s2'], 60_000);
    expect(await store.drop('nell', ['alice:s2'])).toEqual(['alice:s2']); // storage told by the drop
    await sleep(500); // the ack is forgotten, storage dropped its copy
    expect(await store.track(pending('alice:s2', 'nell'), 1000)).toBe('tracked'); // a later copy
    expect(await store.complete('nell', ['alice:s2'], 50)).toEqual(['pushed']);
  });

  it('claims due entries once, incrementing attempts and leasing them', async () => {
    await store.track(pending('alice:d1', 'dave'), 100);
    await store.track(pending('alice:d2', 'dave'), 200);
    await store.track(pending('alice:d3', 'dave'), 10_000);
    const first = await store.claimDue(250, 250, 5000, 10);
    const mine = first.filter((p) => p.user === 'dave');
    expect(mine.map((p) => [p.mid, p.attempts])).toEqual([
      ['alice:d1', 2],
      ['alice:d2', 2],
    ]);
    expect(mine[0].frame).toEqual(frame('alice:d1'));
    expect((await store.claimDue(300, 300, 5000, 10)).filter((p) => p.user === 'dave')).toEqual([]);
    const again = (await store.claimDue(5300, 5300, 5000, 10)).filter((p) => p.user === 'dave');
    expect(again.map((p) => [p.mid, p.attempts])).toEqual([
      ['alice:d1', 3],
      ['alice:d2', 3],
    ]);
  });

  it('claims the earliest due first, up to the limit, skipping what was acked or dropped', async () => {
    await store.track(pending('alice:g3', 'gina'), 3);
    await store.track(pending('alice:g1', 'gina'), 1);
    await store.track(pending('alice:g5', 'gina'), 5);
    await store.track(pending('alice:g2', 'gina'), 2);
    await store.track(pending('alice:g4', 'gina'), 4);
    await store.complete('gina', ['alice:g2'], 60_000);
    await store.drop('gina', ['alice:g3']);
    const first = await store.claimDue(4.5, 1000, 1000, 2);
    expect(first.map((p) => p.mid)).toEqual(['alice:g1', 'alice:g4']);
    const rest = await store.claimDue(4.5, 1000, 1000, 2);
    expect(rest.map((p) => p.mid)).toEqual([]);
    expect((await store.claimDue(5, 1000, 1000, 10)).map((p) => p.mid)).toEqual(['alice:g5']);
  });

  it('returns what one claim takes in the order it was tracked, not by mid (what runs out of attempts is stored in that order)', async () => {
    for (const id of ['m8', 'm9', 'm10', 'm11']) await store.track(pending(`alice:${id}`, 'sam'), 100);
    await store.track(pending('alice:m12', 'sam'), 90); // due first, tracked last
    const claimed = (await store.claimDue(100, 100, 1000, 10)).filter((p) => p.user === 'sam');
    expect(claimed.map((p) => p.mid)).toEqual([
      'alice:m8',
      'alice:m9',
      'alice:m10',
      'alice:m11',
      'alice:m12',
    ]);
    // One lease made them all due together: the next claim keeps that order too.
    const again = (await store.claimDue(1100, 1100, 1000, 10)).filter((p) => p.user === 'sam');
    expect(again.map((p) => p.mid)).toEqual(claimed.map((p) => p.mid));
  });

  it('claims by the ack clock but leases from now: a retry pushed now waits a whole lease', async () => {
    await store.track(pending('alice:l1', 'lena'), 100);
    const claimed = (await store.claimDue(150, 10_000, 50, 10)).filter((p) => p.user === 'lena');
    expect(claimed.map((p) => p.mid)).toEqual(['alice:l1']);
    expect((await store.claimDue(10_049, 10_049, 50, 10)).filter((p) => p.user === 'lena')).toEqual([]);
    expect(
      (await store.claimDue(10_050, 10_050, 50, 10)).filter((p) => p.user === 'lena').map((p) => p.attempts),
    ).toEqual([3]);
  });

  it('lists what each user has pending in the order it was tracked, with its attempts', async () => {
    await store.track(pending('alice:o3', 'olga'), 300);
    await store.track(pending('alice:o1', 'olga'), 100);
    await store.track({ ...pending('alice:o2', 'olga'), stored: true }, 200);
    await store.track(pending('alice:p1', 'pete'), 100);
    await store.track(pending('alice:o4', 'olga'), 50);
    await store.complete('olga', ['alice:o4'], 60_000);
    await store.claimDue(150, 150, 10_000, 1000); // o1 (and p1) leased: due after the others now
    const held = await store.pendingOf(['olga', 'nobody']);
    expect([...held.keys()]).toEqual(['olga']);
    expect(held.get('olga')).toEqual([
      pending('alice:o3', 'olga'),
      { ...pending('alice:o1', 'olga'), attempts: 2 },
      { ...pending('alice:o2', 'olga'), stored: true },
    ]);
    await store.drop('olga', ['alice:o3', 'alice:o1', 'alice:o2']);
    expect(await store.pendingOf(['olga'])).toEqual(new Map());
  });

  it('says which of the mids it drops an ack completed as pushed meanwhile (those told storage nothing)', async () => {
    for (const mid of ['alice:q1', 'alice:q2', 'alice:q3', 'alice:q4'])
      await store.track(pending(mid, 'quinn'), 100);
    await store.markStored('quinn', ['alice:q3'], 60_000); // on its way to storage
    await store.track({ ...pending('alice:q4', 'quinn'), stored: true }, 100); // a stored copy replayed
    await store.complete('quinn', ['alice:q2', 'alice:q3', 'alice:q4'], 60_000);
    expect(await store.drop('quinn', ['alice:q1', 'alice:q2', 'alice:q3', 'alice:q4'])).toEqual(['alice:q2']);
  });

  it('drops pendings without marking them acked', async () => {
    await store.track(pending('alice:x1', 'erin'), 100);
    expect(await store.drop('erin', ['alice:x1'])).toEqual([]);
    expect((await store.claimDue(1e12, 1e12, 1, 100)).filter((p) => p.user === 'erin')).toEqual([]);
    expect(await store.track(pending('alice:x1', 'erin'), 100)).toBe('tracked');
  });

  it('keeps pending state across a new client (a restarted session-ms resumes)', async () => {
    await store.track({ ...pending('alice:r1', 'frank'), stored: true }, 100);
    const reopened = target.name === 'redis' ? target.open() : store;
    const claimed = (await reopened.claimDue(1e12, 1e12, 1000, 100)).filter((p) => p.user === 'frank');
    expect(claimed).toEqual([{ ...pending('alice:r1', 'frank'), stored: true, attempts: 2 }]);
  });
});

describe('MemorySessionStore', () => {
  it('takes ties of due time in the order tracked across a claim limit too', async () => {
    const store = new MemorySessionStore();
    for (const id of ['t8', 't9', 't10', 't11']) await store.track(pending(`alice:${id}`, 'tess'), 50);
    const first = await store.claimDue(50, 50, 1000, 2);
    const rest = await store.claimDue(50, 50, 1000, 10);
    expect([...first, ...rest].map((p) => p.mid)).toEqual(['alice:t8', 'alice:t9', 'alice:t10', 'alice:t11']);
  });

  it('remembers at most maxAcked acked mids, forgetting the oldest first', async () => {
    const store = new MemorySessionStore(Date.now, 3);
    await store.complete('bob', ['alice:a1', 'alice:a2'], 60_000);
    await store.complete('bob', ['alice:a3', 'alice:a4', 'alice:a5'], 60_000);
    expect(await store.track(pending('alice:a1'), 1000)).toBe('tracked');
    expect(await store.track(pending('alice:a2'), 1000)).toBe('tracked');
    for (const mid of ['alice:a3', 'alice:a4', 'alice:a5'])
      expect(await store.track(pending(mid), 1000)).toBe('acked');
  });

  it('forgets the oldest acked mids in bulk past maxAcked and keeps the newest seven eighths', async () => {
    const store = new MemorySessionStore(Date.now, 800);
    const mids = Array.from({ length: 2000 }, (_, i) => `alice:b${i}`);
    for (const mid of mids) await store.complete('bob', [mid], 60_000);
    const remembered = [];
    for (const mid of mids) if ((await store.track(pending(mid), 1000)) === 'acked') remembered.push(mid);
    // Generations of 100: the newest 700 to 800 acks are remembered, all of them the newest ones.
    expect(remembered.length).toBeGreaterThanOrEqual(700);
    expect(remembered.length).toBeLessThanOrEqual(800);
    expect(remembered).toEqual(mids.slice(mids.length - remembered.length));
  });
});

describe('the session store losing its state', () => {
  it('is never lost in memory (it dies with the process)', async () => {
    const store = new MemorySessionStore();
    expect([await store.lostAt(), await store.lostAt()]).toEqual([undefined, undefined]);
  });

  it('on Redis: found empty after it held state (a restart without its data), told once to every replica, with one time', async () => {
    const prefix = `test:${randomUUID()}:`;
    const [a, b] = [new Redis(REDIS_URL, { keyPrefix: prefix }), new Redis(REDIS_URL, { keyPrefix: prefix })];
    const admin = new Redis(REDIS_URL);
    try {
      const [one, two] = [new RedisSessionStore(a), new RedisSessionStore(b)];
      // A fresh Redis (the first start) is not a loss; nor a replica that starts after another.
      expect([await one.lostAt(), await two.lostAt(), await one.lostAt()]).toEqual([
        undefined,
        undefined,
        undefined,
      ]);
      const before = Date.now();
      await admin.del(...(await admin.keys(`${prefix}*`))); // Redis restarts empty
      const [seenByTwo, twoAgain, seenByOne, oneAgain] = [
        await two.lostAt(),
        await two.lostAt(),
        await one.lostAt(),
        await one.lostAt(),
      ];
      expect(seenByTwo).toBeGreaterThanOrEqual(before);
      expect([twoAgain, seenByOne, oneAgain]).toEqual([undefined, seenByTwo, undefined]);
    } finally {
      const keys = await admin.keys(`${prefix}*`);
      if (keys.length) await admin.del(...keys);
      await Promise.all([a.quit(), b.quit(), admin.quit()]);
    }
  });

  it('on Redis: asks a gateway to announce its connections once it lost its state, unless the gateway started after the loss', async () => {
    const prefix = `test:${randomUUID()}:`;
    const [client, admin] = [new Redis(REDIS_URL, { keyPrefix: prefix }), new Redis(REDIS_URL)];
    // Time passes past the margin for clock skew: this host's clock is moved on rather than waited for.
    let passed = 0;
    const realNow = Date.now.bind(Date);
    const clock = jest.spyOn(Date, 'now').mockImplementation(() => realNow() + passed);
    try {
      const store = new RedisSessionStore(client);
      await store.lostAt(); // the store's state begins
      passed += STATE_CLOCK_MARGIN_MS + 100;
      const startedBefore = Date.now();
      expect(await store.gatewayAlive('gw-a', 60_000, startedBefore)).toBe(false);
      passed += 100;
      await admin.del(...(await admin.keys(`${prefix}*`))); // Redis restarts empty
      expect(await store.gatewayAlive('gw-b', 60_000, startedBefore)).toBe(true); // the first write after it
      passed += STATE_CLOCK_MARGIN_MS + 100;
      // gw-a's connection-ups went to the state lost; gw-c's all came after the loss.
      expect(await store.gatewayAlive('gw-a', 60_000, startedBefore)).toBe(true);
      expect(await store.gatewayAlive('gw-c', 60_000, Date.now())).toBe(false);
      expect(await store.lostAt()).toBeGreaterThan(startedBefore); // the loss is told as before
    } finally {
      clock.mockRestore();
      const keys = await admin.keys(`${prefix}*`);
      if (keys.length) await admin.del(...keys);
      await Promise.all([client.quit(), admin.quit()]);
    }
  });
});

/** redis-servers of these tests' own: the shared one is never demoted, filled or stalled. */
const ownRedisServer = ownRedisServers();
const ownRedis = async (): Promise<number> => (await ownRedisServer()).port;

// Every script went as EVAL with its whole text, which Redis hashed again on every call: a track
// and a complete sent 2,327 bytes to Redis, 925 by hash (apps/session-ms/bench/redis-store-bench.ts).
describe('RedisSessionStore scripts', () => {
  it('go by their hash once the connection has them, and in full again after Redis forgot them (a restart, SCRIPT FLUSH)', async () => {
    const port = await ownRedis();
    const admin = new Redis({ port });
    const store = RedisSessionStore.connect(`redis://127.0.0.1:${port}`, 'scripts:');
    const evals = async () => {
      const stats = await admin.info('commandstats');
      const calls = (command: string) =>
        Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(stats)?.[1] ?? 0);
      return { eval: calls('eval'), evalsha: calls('evalsha') };
    };
    try {
      for (let i = 0; i < 5; i++) expect(await store.track(pending(`alice:s${i}`), 1000)).toBe('tracked');
      expect(await evals()).toEqual({ eval: 1, evalsha: 4 });
      await admin.script('FLUSH');
      expect(await store.track(pending('alice:s5'), 1000)).toBe('tracked');
      expect(await store.complete('bob', ['alice:s5'], 60_000)).toEqual(['pushed']);
      expect(await evals()).toEqual({ eval: 3, evalsha: 5 });
    } finally {
      await Promise.all([admin.quit(), store.close()]);
    }
  });
});

describe('RedisSessionStore through a failover (the old primary demoted, the name moved to the new one)', () => {
  it('reconnects on READONLY and writes to the new primary, instead of failing every write for good', async () => {
    const [oldPrimary, newPrimary] = [await ownRedis(), await ownRedis()];
    const proxy = await TcpFaultProxy.start({ host: '127.0.0.1', port: oldPrimary });
    const store = RedisSessionStore.connect(`redis://127.0.0.1:${proxy.port}`, 'failover:');
    try {
      expect(await store.track(pending('alice:f1'), 1000)).toBe('tracked');
      proxy.retarget({ host: '127.0.0.1', port: newPrimary });
      const admin = new Redis({ port: oldPrimary });
      await admin.replicaof('127.0.0.1', String(newPrimary));
      admin.disconnect();
      expect(await store.track(pending('alice:f2'), 1000)).toBe('tracked');
    } finally {
      await store.close();
      await proxy.close();
    }
  }, 15_000);
});

// Writes in a MULTI that Redis refuses one by one (maxmemory with noeviction: OOM; a demoted primary:
// READONLY) fail as a whole with EXECABORT, the reasons only in `previousErrors`: that was taken for
// a poison record, and after its attempts the consumer parked the heartbeat, connection-up or
// delivery batch on the DLQ, where a retry once Redis had room (or the new primary) would have passed.
describe('RedisSessionStore on a Redis that refuses writes', () => {
  const writesInMulti = (store: SessionStore): Array<[string, () => Promise<unknown>]> => [
    ['gatewayAlive', () => store.gatewayAlive('gw-w', 10_000)],
    ['gatewayStarted', () => store.gatewayStarted('gw-w', 5_000)],
    ['drop', () => store.drop('bob', ['alice:w1'])],
    ['reportReadUpTo', () => store.reportReadUpTo('replica-w', 1, 10_000)],
    ['forgetReadUpTo', () => store.forgetReadUpTo('replica-w')],
    ['lostAt', () => store.lostAt()],
  ];
  const notWaitedOut = async (store: SessionStore) => {
    const poison: string[] = [];
    for (const [name, write] of writesInMulti(store)) {
      const err = await write().then(
        () => new Error('no error'),
        (e: unknown) => e,
      );
      if (!isTransient(err)) poison.push(`${name}: ${(err as Error).message}`);
    }
    return poison;
  };

  it('fails them with an error to wait out at maxmemory with noeviction (OOM), not a poison', async () => {
    const port = await ownRedis();
    const admin = new Redis({ port });
    const store = RedisSessionStore.connect(`redis://127.0.0.1:${port}`, 'full:');
    try {
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      await admin.config('SET', 'maxmemory', '1');
      expect(await notWaitedOut(store)).toEqual([]);
    } finally {
      await Promise.all([admin.quit(), store.close()]);
    }
  });

  it('fails them with an error to wait out on a replica (READONLY), not a poison', async () => {
    const [primary, replica] = [await ownRedis(), await ownRedis()];
    const admin = new Redis({ port: replica });
    await admin.replicaof('127.0.0.1', String(primary));
    const store = RedisSessionStore.connect(`redis://127.0.0.1:${replica}`, 'replica:');
    try {
      expect(await notWaitedOut(store)).toEqual([]);
    } finally {
      await Promise.all([admin.quit(), store.close()]);
    }
  });
});

// Redis away logged 'redis connection failed; retrying' once, and nothing when it came back: the
// log left the outage open (found running the fleet as processes and stopping its Redis).
describe('RedisSessionStore on a Redis that goes away and comes back', () => {
  it('tells of the error once, and of the connection ready again once', async () => {
    const port = await ownRedis();
    const proxy = await TcpFaultProxy.start({ host: '127.0.0.1', port });
    const events: string[] = [];
    const store = RedisSessionStore.connect(`redis://127.0.0.1:${proxy.port}`, 'back:', {
      onError: (err) => events.push(`error ${err.message}`),
      onRecovered: (lastError) => events.push(`recovered after ${lastError.message}`),
    });
    try {
      await store.ping();
      proxy.cut();
      await waitFor(() => events.length > 0, 5000, 'the error');
      await sleep(1000); // ioredis reconnects several times meanwhile
      proxy.restore();
      await waitFor(
        async () =>
          (await store.ping().then(
            () => true,
            () => false,
          )) && events.some((e) => e.startsWith('recovered')),
        10_000,
        'the connection back',
      );
      // An error is told again only when its message changes (read, then connect ECONNRESET).
      expect(events.slice(0, -1).every((e) => /^error (read|connect) ECONN(RESET|REFUSED)/.test(e))).toBe(
        true,
      );
      expect(events.at(-1)).toMatch(/^recovered after (read|connect) ECONN(RESET|REFUSED)/);
      expect(events.filter((e) => e.startsWith('recovered'))).toHaveLength(1);
    } finally {
      await store.close();
      await proxy.close();
    }
  }, 20_000);
});

// A Redis host gone without a reset (a node lost, packets dropped) left every command waiting for
// TCP to give up: about 15 minutes with a request unanswered, forever here. Deliveries, acks and
// connection events all stalled behind it, also once the name had moved to a new primary.
describe('RedisSessionStore on a Redis that stops answering (its host gone without a reset)', () => {
  it('drops the silent connection and carries on with the server now behind the name, instead of waiting without end', async () => {
    const [lost, promoted] = [await ownRedis(), await ownRedis()];
    const proxy = await TcpFaultProxy.start({ host: '127.0.0.1', port: lost });
    const errors: string[] = [];
    const store = RedisSessionStore.connect(`redis://127.0.0.1:${proxy.port}`, 'silent:', {
      onError: (err) => errors.push(err.message),
    });
    try {
      expect(await store.track(pending('alice:s1'), 1000)).toBe('tracked');
      proxy.stall(); // the open connection stays silent for good
      proxy.retarget({ host: '127.0.0.1', port: promoted });
      proxy.restore(); // new connections reach the new primary
      const began = Date.now();
      expect(await store.track(pending('alice:s2'), 1000)).toBe('tracked');
      expect(Date.now() - began).toBeLessThan(REDIS_SOCKET_TIMEOUT_MS + 3000);
      expect(errors).toEqual([expect.stringMatching(/^Socket timeout/)]);
    } finally {
      await store.close();
      await proxy.close();
    }
  }, 30_000);

  it('waits out a Redis that stalls for 2 s on the same connection, without reconnecting', async () => {
    const port = await ownRedis();
    const admin = new Redis({ port });
    const errors: string[] = [];
    const store = RedisSessionStore.connect(`redis://127.0.0.1:${port}`, 'slow:', {
      onError: (err) => errors.push(err.message),
    });
    try {
      await store.ping();
      const clientsBefore = await admin.info('stats');
      await admin.call('CLIENT', 'PAUSE', '2000', 'ALL'); // Redis answers no one for 2 s
      const began = Date.now();
      expect(await store.track(pending('alice:z1'), 1000)).toBe('tracked');
      // Well below the 2 s: a pause of the test process (a busy box) between the PAUSE and `began`
      // shortens the wait seen here, not the one Redis makes.
      expect(Date.now() - began).toBeGreaterThan(1000);
      const connections = (info: string) => Number(/total_connections_received:(\d+)/.exec(info)![1]);
      expect(connections(await admin.info('stats'))).toBe(connections(clientsBefore));
      expect(errors).toEqual([]);
    } finally {
      await Promise.all([admin.quit(), store.close()]);
    }
  }, 15_000);
});

// Reconnecting on READONLY and sending the command again never ended while the name still pointed
// at a replica (REDIS_URL naming a replica or a reader endpoint, a failover whose DNS had not moved
// yet): about 19 reconnects a second, every write waiting without end, nothing logged, and /readyz
// green (PING works on a replica).
describe('RedisSessionStore on a server that stays a replica', () => {
  const connectionsReceived = async (admin: Redis) =>
    Number(/total_connections_received:(\d+)/.exec(await admin.info('stats'))![1]);
  const within = <T>(ms: number, promise: Promise<T>) =>
    Promise.race([promise, sleep(ms).then(() => Promise.reject(new Error(`still waiting after ${ms} ms`)))]);

  it('fails writes to be retried, reconnects about once a second, says why once and is not ready; carries on once promoted', async () => {
    const [primary, replica] = [await ownRedis(), await ownRedis()];
    const admin = new Redis({ port: replica });
    await admin.replicaof('127.0.0.1', String(primary));
    const errors: string[] = [];
    const store = RedisSessionStore.connect(`redis://127.0.0.1:${replica}`, 'stuck:', {
      onError: (err) => errors.push(err.message),
    });
    try {
      await store.ping();
      const before = await connectionsReceived(admin);
      const refused = await within(3000, store.track(pending('alice:k1'), 1000)).then(
        () => new Error('tracked'),
        (err: Error) => err,
      );
      expect(refused.message).toMatch(/^READONLY/);
      expect(isTransient(refused)).toBe(true);
      await expect(store.ping()).rejects.toThrow(/READONLY/);
      // Writes go on as the retry loop makes them (every 200 ms), for 3 s.
      for (const end = Date.now() + 3000; Date.now() < end; await sleep(200))
        await store.reportReadUpTo('replica-k', 1, 10_000).catch(() => undefined);
      expect(await connectionsReceived(admin)).toBeLessThanOrEqual(before + 6);
      expect(errors.filter((e) => e.startsWith('READONLY'))).toHaveLength(1);
      await admin.replicaof('NO', 'ONE'); // promoted
      const began = Date.now();
      let outcome: string | undefined;
      while (outcome === undefined && Date.now() - began < 3000)
        outcome = await store.track(pending('alice:k1'), 1000).catch(() => sleep(100).then(() => undefined));
      expect(outcome).toBe('tracked');
    } finally {
      await Promise.all([admin.quit(), store.close()]);
    }
  }, 20_000);
});

// Redis replicates asynchronously: a failover to a replica that lagged lost the last writes while
// `epoch` (taken for Redis found empty) survived, and the delivery events that made them had their
// offsets committed: what they tracked was never pushed again nor stored (REDIS_WAIT_REPLICAS).
describe('RedisSessionStore waiting for replicas (awaitReplicas)', () => {
  const replicaOf = (primary: number) => ownReplicaOf(ownRedisServer, primary);
  /** Points the store's connection at the replica (the failover), then asks until Redis answers. */
  const failOverAndAsk = async (store: RedisSessionStore, proxy: TcpFaultProxy, replicaPort: number) => {
    proxy.retarget({ host: '127.0.0.1', port: replicaPort });
    proxy.cut();
    proxy.restore();
    let answer: string | undefined;
    for (const end = Date.now() + 5000; answer === undefined && Date.now() < end;)
      answer = await store.awaitReplicas().catch(() => sleep(100).then(() => undefined));
    return answer;
  };

  it('answers replicated while the replica keeps up, short while it is stopped (without holding the other commands up), replicated again once it resumes', async () => {
    const primary = await ownRedis();
    const replica = await replicaOf(primary);
    const store = RedisSessionStore.connect(`redis://127.0.0.1:${primary}`, 'wait:', {
      replicaWait: { replicas: 1, timeoutMs: 1000 },
    });
    try {
      expect(store.waitsForReplicas).toBe(true);
      expect(await store.track(pending('alice:w1'), 1000)).toBe('tracked');
      expect(await store.awaitReplicas()).toBe('replicated');
      replica.server.kill('SIGSTOP');
      expect(await store.track(pending('alice:w2'), 1000)).toBe('tracked');
      const waiting = store.awaitReplicas();
      const began = Date.now();
      expect(await store.track(pending('alice:w3'), 1000)).toBe('tracked');
      expect(Date.now() - began).toBeLessThan(500); // WAIT blocks a connection of its own
      expect(await waiting).toBe('short');
      replica.server.kill('SIGCONT');
      expect(await store.awaitReplicas()).toBe('replicated');
    } finally {
      replica.server.kill('SIGCONT');
      await store.close();
    }
  }, 20_000);

  it('answers lost after a failover to a replica that lacks writes made before the last answer', async () => {
    const primary = await ownRedis();
    const replica = await replicaOf(primary);
    const proxy = await TcpFaultProxy.start({ host: '127.0.0.1', port: primary });
    const store = RedisSessionStore.connect(`redis://127.0.0.1:${proxy.port}`, 'lagged:', {
      replicaWait: { replicas: 1, timeoutMs: 1000 },
    });
    const admin = new Redis({ port: replica.port });
    try {
      expect(await store.track(pending('alice:l1'), 1000)).toBe('tracked');
      expect(await store.awaitReplicas()).toBe('replicated');
      await admin.replicaof('NO', 'ONE'); // it stops following: what comes next it never gets
      expect(await store.track(pending('alice:l2'), 1000)).toBe('tracked');
      expect(await store.awaitReplicas()).toBe('short');
      expect(await failOverAndAsk(store, proxy, replica.port)).toBe('lost');
      expect((await store.pendingOf(['bob'])).get('bob')?.map((p) => p.mid)).toEqual(['alice:l1']);
    } finally {
      admin.disconnect();
      await store.close();
      await proxy.close();
    }
  }, 20_000);

  // The mark tells only of writes before it: a replica that had the last one (answered replicated)
  // but not the writes made since lost those without a trace in the mark.
  it('answers lost after a failover to a replica that had the last mark but not the writes made since', async () => {
    const primary = await ownRedis();
    const replica = await replicaOf(primary);
    const proxy = await TcpFaultProxy.start({ host: '127.0.0.1', port: primary });
    const store = RedisSessionStore.connect(`redis://127.0.0.1:${proxy.port}`, 'lagged-after:', {
      replicaWait: { replicas: 1, timeoutMs: 1000 },
    });
    const admin = new Redis({ port: replica.port });
    try {
      expect(await store.track(pending('alice:m1'), 1000)).toBe('tracked');
      expect(await store.awaitReplicas()).toBe('replicated');
      await admin.replicaof('NO', 'ONE'); // it stops following: what comes next it never gets
      expect(await store.track(pending('alice:m2'), 1000)).toBe('tracked');
      // The failover, before the next ask.
      expect(await failOverAndAsk(store, proxy, replica.port)).toBe('lost');
      expect((await store.pendingOf(['bob'])).get('bob')?.map((p) => p.mid)).toEqual(['alice:m1']);
    } finally {
      admin.disconnect();
      await store.close();
      await proxy.close();
    }
  }, 20_000);

  it('waits for nothing without replicas to wait for', async () => {
    const primary = await ownRedis();
    const store = RedisSessionStore.connect(`redis://127.0.0.1:${primary}`, 'nowait:');
    try {
      expect(store.waitsForReplicas).toBe(false);
      expect(await store.awaitReplicas()).toBe('replicated');
      expect(new MemorySessionStore().waitsForReplicas).toBe(false);
    } finally {
      await store.close();
    }
  });
});

describe("RedisSessionStore checking Redis's setup", () => {
  it('warns of a maxmemory-policy that evicts (the managed services default to volatile-lru), not of noeviction or no maxmemory', async () => {
    const port = await ownRedis();
    const admin = new Redis({ port });
    const store = RedisSessionStore.connect(`redis://127.0.0.1:${port}`, 'setup:');
    try {
      await admin.config('SET', 'maxmemory-policy', 'volatile-lru');
      expect(await store.setupWarnings()).toEqual([]); // no maxmemory: it never evicts
      await admin.config('SET', 'maxmemory', '100mb');
      expect(await store.setupWarnings()).toEqual([
        expect.stringMatching(/maxmemory-policy is volatile-lru.*noeviction/),
      ]);
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      expect(await store.setupWarnings()).toEqual([]);
    } finally {
      await Promise.all([admin.quit(), store.close()]);
    }
  });
});

describe('RedisSessionStore noting a gateway restart', () => {
  it('forgets the connections of the earlier process when the heartbeat is handled again after a failure part way (the batch retried)', async () => {
    const prefix = `test:${randomUUID()}:`;
    const client = new Redis(REDIS_URL, { keyPrefix: prefix });
    const admin = new Redis(REDIS_URL);
    try {
      const store = new RedisSessionStore(client);
      await store.gatewayAlive('gw-f', 60_000);
      await store.addConnection({ ...connection('fa', 'old', 'gw-f'), at: 5_000 });
      // Redis fails the forgetting (a timeout, a failover): handleConnections throws, and the
      // consumer hands the same heartbeat again.
      // The forgetting script, as the store defines it on its client (redis-store.ts, defineScripts).
      const scripts = client as unknown as Record<'parleyForgetStartedBefore', () => Promise<unknown>>;
      const failing = jest
        .spyOn(scripts, 'parleyForgetStartedBefore')
        .mockRejectedValueOnce(new Error('Command timed out'));
      await expect(store.gatewayStarted('gw-f', 10_000)).rejects.toThrow('Command timed out');
      failing.mockRestore();
      expect(await store.gatewayStarted('gw-f', 10_000)).toBe(1);
      expect(await connIdsOf(store, 'fa')).toEqual([]);
    } finally {
      const keys = await admin.keys(`${prefix}*`);
      if (keys.length) await admin.del(...keys);
      await Promise.all([client.quit(), admin.quit()]);
    }
  });
});

// With Redis down at start, ioredis printed "[ioredis] Unhandled error event" to stderr about
// twice a second, and /readyz said only "store: timed out after 2000 ms".
describe('RedisSessionStore while Redis refuses connections', () => {
  it('reports each new connection error once, and readiness says why at once', async () => {
    const errors: string[] = [];
    const store = RedisSessionStore.connect('redis://127.0.0.1:1', 'down:', {
      onError: (err) => errors.push(err.message),
    });
    try {
      await new Promise((resolve) => setTimeout(resolve, 1500)); // a few reconnects
      expect(errors).toEqual([expect.stringMatching(/ECONNREFUSED 127\.0\.0\.1:1$/)]);
      const began = Date.now();
      await expect(store.ping()).rejects.toThrow(/^redis (connecting|reconnecting): .*ECONNREFUSED/);
      expect(Date.now() - began).toBeLessThan(1000); // not the probe's 2 s timeout behind the reconnects
    } finally {
      await store.close();
    }
  });
});
