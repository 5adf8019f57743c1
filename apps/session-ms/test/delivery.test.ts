import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  AckEvent,
  ConnectionTopicEvent,
  DeliverEvent,
  DeliveryTopicEvent,
  GatewayDelivery,
  MAX_GATEWAY_BATCH,
  TOPICS,
  TopicSpec,
  TYPING_NOTICE_MAX_AGE_MS,
} from '@parley/contracts';
import { Envelope, MemoryBus, Subscription } from '@parley/kafka';
import { waitFor } from '@parley/test-kit';
import { createLogger, createMetricsRegistry, silentLogger, TransientError } from '@parley/service-kit';
import { Delivery, MAX_SLICE_BYTES, withoutStaleNotices } from '../src/delivery';
import { coalescingSends, createHttpGatewayClient, GatewayClient } from '../src/gateway-client';
import { MemorySessionStore } from '../src/store/memory-store';
import type { ReplicaAnswer, SessionStore } from '../src/store/session-store';
import { redisStore } from './support/redis-store';

type MessageFrame = Extract<DeliverEvent['frame'], { type: 'message' }>;

/** A gateway stand-in that records what reached each of its sockets. */
class RecordingGateways implements GatewayClient {
  readonly received: Array<{ url: string } & GatewayDelivery> = [];
  down = new Set<string>();
  /** Connections the gateways no longer hold (their connection-down was lost). */
  gone = new Set<string>();
  async send(url: string, deliveries: GatewayDelivery[]) {
    if (this.down.has(url)) throw new Error('ECONNREFUSED');
    this.received.push(...deliveries.map((d) => ({ url, ...d })));
    return deliveries.map((d) => {
      const missing = (d.connIds ?? []).filter((id) => this.gone.has(id));
      return { written: (d.connIds?.length ?? 0) - missing.length, ...(missing.length > 0 && { missing }) };
    });
  }
  /** Gateways asked to announce their connections again. */
  readonly announced: string[] = [];
  async announce(url: string) {
    if (this.down.has(url)) throw new Error('ECONNREFUSED');
    this.announced.push(url);
  }
  mids(user: string) {
    return this.received
      .filter((d) => d.to === user)
      .map((d) => ('mid' in d.frame ? d.frame.mid : d.frame.type));
  }
}

/**
 * As a real gateway: a call's frames reach the sockets once its body has arrived and been parsed,
 * so of two calls in flight (on two kept-alive connections) the smaller lands first.
 */
class ParsingGateways extends RecordingGateways {
  private inFlight = 0;
  mostInFlight = 0;
  override async send(url: string, deliveries: GatewayDelivery[]) {
    this.mostInFlight = Math.max(this.mostInFlight, ++this.inFlight);
    await new Promise((resolve) => setTimeout(resolve, deliveries.length / 20));
    this.inFlight -= 1;
    return super.send(url, deliveries);
  }
}

const message = (id: string, to = 'bob', from = 'alice'): DeliverEvent => ({
  v: 1,
  kind: 'deliver',
  to,
  frame: {
    type: 'message',
    mid: `${from}:${id}`,
    id,
    from,
    to,
    chat: 'direct',
    body: { text: id },
    sentAt: 1,
  },
});

/**
 * A store where something happens after a deliverable was read for the hand-over, before it is
 * dropped (an ack arrives, a replay starts it again).
 */
class AckBeforeDropStore extends MemorySessionStore {
  beforeDrop?: () => Promise<void>;
  override async drop(user: string, mids: string[], asRead?: Parameters<MemorySessionStore['drop']>[2]) {
    const meanwhile = this.beforeDrop;
    this.beforeDrop = undefined;
    await meanwhile?.();
    return super.drop(user, mids, asRead);
  }
}

/** A store that reports a loss of its state (as Redis restarted empty) when the test sets `lost`. */
class LosingStore extends MemorySessionStore {
  lost: number | undefined;
  override async lostAt() {
    const at = this.lost;
    this.lost = undefined;
    return at;
  }
}

/** A Delivery on an in-memory store; a second replica passes the first one's store. */
function setup({
  readUpTo = Date.now,
  rereadFrom = async (_time: number): Promise<boolean> => true,
  store = new MemorySessionStore() as SessionStore,
  bus = new MemoryBus(),
  replica = 'r1',
  ackTimeoutMs = 20,
  maxAckReadLagMs = 60_000,
  gateways = new RecordingGateways(),
  unknownAcksPerMinute = undefined as number | undefined,
  logger = silentLogger(),
} = {}) {
  const settings = {
    ackTimeoutMs,
    maxAttempts: 3,
    rememberAckedMs: 60_000,
    gatewayTtlMs: 60_000,
    retryTickMs: 25,
    maxAckReadLagMs,
    unknownAcksPerMinute,
  };
  const registry = createMetricsRegistry('s', { collectDefaults: false });
  const delivery = new Delivery(store, gateways, bus, settings, logger, registry, {
    replica,
    readUpTo,
    rereadFrom,
  });
  /** A connection-up, and the push of what its user has pending (not awaited by the consumer). */
  const connect = async (user: string, connId: string, gateway = 'gw-1') => {
    await delivery.handleConnections([
      { v: 1, kind: 'connection-up', user, connId, gateway, gatewayUrl: `http://${gateway}`, at: Date.now() },
    ]);
    await delivery.connectPushesDone();
  };
  const disconnect = (user: string, connId: string, gateway = 'gw-1') =>
    delivery.handleConnections([
      {
        v: 1,
        kind: 'connection-down',
        user,
        connId,
        gateway,
        gatewayUrl: `http://${gateway}`,
        at: Date.now(),
      },
    ]);
  const heartbeat = (gateway = 'gw-1') =>
    delivery.handleConnections([
      {
        v: 1,
        kind: 'gateway-heartbeat',
        gateway,
        gatewayUrl: `http://${gateway}`,
        connections: 1,
        at: Date.now(),
      },
    ]);
  const retryUntilQuiet = async () => {
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 25));
      await delivery.retryDue();
    }
  };
  return { store, gateways, bus, delivery, registry, connect, disconnect, heartbeat, retryUntilQuiet };
}

describe('Delivery', () => {
  it('counts a failed push by why it failed in parley_session_push_failures_total{reason}', async () => {
    // A timeout a pause of the test process (a busy box) does not reach before the refusal is read.
    const gateways = createHttpGatewayClient('test-internal-secret', { timeoutMs: 2000 });
    // The real HTTP client (its errors name their reason); setup's other helpers are not used.
    const { delivery, registry, connect } = setup({ gateways: gateways as RecordingGateways });
    try {
      await connect('bob', 'phone', '127.0.0.1:1'); // a gateway that refuses connections
      await delivery.handle([message('m1')]);
      const text = await registry.getSingleMetricAsString('parley_session_push_failures_total');
      expect(text).toContain('parley_session_push_failures_total{reason="unreachable",service="s"} 1');
    } finally {
      gateways.close?.();
    }
  });

  it('calls a gateway that let a push time out (a lost node) once, not again in every batch that names its users', async () => {
    const calls: unknown[] = [];
    const silent = createServer((req) => void calls.push(req.url)); // takes the call, never answers
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const gateways = createHttpGatewayClient('test-internal-secret', { timeoutMs: 300 });
    const { delivery, registry, connect } = setup({ gateways: gateways as RecordingGateways });
    try {
      await connect('bob', 'phone', `127.0.0.1:${(silent.address() as AddressInfo).port}`);
      await delivery.handle([message('m1')]);
      await delivery.handle([message('m2')]);
      await delivery.handle([message('m3')]);
      expect(calls.filter((path) => path === '/send')).toEqual(['/send']); // (and the ask to announce)
      const text = await registry.getSingleMetricAsString('parley_session_push_failures_total');
      expect(text).toContain('{reason="timeout",service="s"} 1');
      expect(text).toContain('{reason="silent",service="s"} 2');
    } finally {
      gateways.close?.();
      silent.closeAllConnections();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it("remembers a user's acks of mids that completed nothing up to a quota a minute, and no more (made-up mids would fill Redis)", async () => {
    const { delivery, gateways, bus, registry, connect } = setup({ unknownAcksPerMinute: 3 });
    await connect('bob', 'phone');
    const ack = (mids: string[]): AckEvent => ({ v: 1, kind: 'ack', user: 'bob', mids, at: 2 });
    await delivery.handle([ack(['alice:x1', 'alice:x2'])]);
    await delivery.handle([ack(['alice:x3', 'alice:x4', 'bob:own'])]); // under the quota when issued
    await delivery.handle([ack(['alice:x5'])]); // past it
    await delivery.handle(['x1', 'x2', 'x3', 'x4', 'x5'].map((id) => message(id)));
    expect(gateways.mids('bob')).toEqual(['alice:x5']); // the four remembered are duplicates
    expect(await registry.getSingleMetricAsString('parley_session_unknown_acks_forgotten_total')).toMatch(
      / 1$/m,
    );
    // Storage hears of every ack; of the one past the quota as unknown: a tombstone only for what it holds.
    expect(bus.events(TOPICS.offline).filter((e) => e.kind === 'offline-ack')).toEqual([
      { v: 1, kind: 'offline-ack', user: 'bob', mids: ['alice:x1', 'alice:x2'], at: 2 },
      { v: 1, kind: 'offline-ack', user: 'bob', mids: ['alice:x3', 'alice:x4'], at: 2 },
      { v: 1, kind: 'offline-ack', user: 'bob', mids: ['alice:x5'], at: 2, unknown: true },
    ]);
  });

  it('counts a push whose gone connections the store could not forget as pushed, not failed', async () => {
    class ForgetfulStore extends MemorySessionStore {
      override async removeConnection(): Promise<void> {
        throw new Error('store unreachable');
      }
    }
    const { delivery, gateways, registry, connect } = setup({ store: new ForgetfulStore() });
    await connect('bob', 'phone');
    gateways.gone.add('phone');
    await delivery.handle([message('m1')]);
    expect(gateways.mids('bob')).toEqual(['alice:m1']);
    expect(await registry.getSingleMetricAsString('parley_session_pushed_total')).toMatch(/ 1$/m);
    expect(await registry.getSingleMetricAsString('parley_session_push_failures_total')).not.toMatch(
      / \d+$/m,
    );
  });

  it('pushes to every connected device of the recipient, once per gateway call', async () => {
    const { delivery, gateways, connect } = setup();
    await connect('bob', 'phone', 'gw-1');
    await connect('bob', 'laptop', 'gw-2');
    await delivery.handle([message('m1')]);
    expect(gateways.received.map((d) => [d.url, d.connIds])).toEqual([
      ['http://gw-1', ['phone']],
      ['http://gw-2', ['laptop']],
    ]);
  });

  it('delivers a deliver-many to each recipient as one deliver each: pushed, offline, acked, deduplicated', async () => {
    const { delivery, gateways, bus, connect, retryUntilQuiet } = setup();
    await connect('bob', 'phone');
    await connect('carol', 'laptop');
    const frame = { ...message('g1').frame, to: 'crew', chat: 'group' as const };
    const many = { v: 1 as const, kind: 'deliver-many' as const, to: ['bob', 'carol', 'dave'], frame };
    await delivery.handle([many, message('d1', 'bob')]);
    const pushedTo = (user: string) =>
      gateways.received.filter((d) => d.to === user).map((d) => [d.connIds, d.frame]);
    expect(pushedTo('bob')).toEqual([
      [['phone'], frame],
      [['phone'], message('d1', 'bob').frame],
    ]);
    expect(pushedTo('carol')).toEqual([[['laptop'], frame]]);
    expect(gateways.received).toHaveLength(3);
    expect(bus.events(TOPICS.offline)).toEqual([
      expect.objectContaining({ kind: 'offline', to: 'dave', frame }),
    ]);

    await delivery.handle([
      { v: 1, kind: 'ack', user: 'bob', mids: ['alice:g1', 'alice:d1'], at: 2 },
      { v: 1, kind: 'ack', user: 'carol', mids: ['alice:g1'], at: 2 },
      many, // replayed after the acks: nothing is pushed again
    ]);
    await retryUntilQuiet();
    expect(gateways.mids('bob')).toEqual(['alice:g1', 'alice:d1']);
    expect(gateways.mids('carol')).toEqual(['alice:g1']);
    // Only dave's goes offline, again on the replay (storage keeps one per mid).
    expect(bus.events(TOPICS.offline).map((e) => e.kind === 'offline' && e.to)).toEqual(['dave', 'dave']);
  });

  it("handles a batch of large fan-outs a slice at a time: 15 group messages of 64 KiB to a 1,024-member group's offline members took a pod past its heap", async () => {
    // Frames passed to the store's track() and not yet answered: with Redis each is a JSON string
    // sent at once, and the offline events published are each an encoded copy of the frame.
    class CountingStore extends MemorySessionStore {
      private tracking = 0;
      mostTrackedAtOnce = 0;
      override async track(...args: Parameters<MemorySessionStore['track']>) {
        const bytes = JSON.stringify(args[0].frame).length;
        this.mostTrackedAtOnce = Math.max(this.mostTrackedAtOnce, (this.tracking += bytes));
        try {
          return await super.track(...args);
        } finally {
          this.tracking -= bytes;
        }
      }
    }
    class LargestPublish extends MemoryBus {
      largest = 0;
      override async publish<T>(topic: TopicSpec<T>, events: T[], options?: { traceId?: string }) {
        const bytes = events.reduce((n, e) => n + JSON.stringify(e).length, 0);
        if (topic === (TOPICS.offline as TopicSpec<unknown>)) this.largest = Math.max(this.largest, bytes);
        return super.publish(topic, events, options);
      }
    }
    const store = new CountingStore();
    const bus = new LargestPublish();
    const { delivery } = setup({ store, bus });
    // A partition's share of the group (1,024 members over 12 partitions), and a 1 MiB fetch of them.
    const members = Array.from({ length: 85 }, (_, i) => `member${i}`);
    const body = 'x'.repeat(64 * 1024 - 300);
    const fanOuts: DeliveryTopicEvent[] = Array.from({ length: 15 }, (_, i) => ({
      v: 1,
      kind: 'deliver-many',
      to: members,
      frame: { ...message(`g${i}`).frame, to: 'crew', chat: 'group', body },
    }));
    await delivery.handle(fanOuts);
    const stored = bus.events(TOPICS.offline).map((e) => e.kind === 'offline' && `${e.to} ${e.frame.mid}`);
    expect(new Set(stored).size).toBe(15 * 85);
    // Each of the 15 messages went to storage for every member, in order.
    expect(stored.filter((s) => s && s.startsWith('member7 '))).toEqual(
      Array.from({ length: 15 }, (_, i) => `member7 alice:g${i}`),
    );
    expect(store.mostTrackedAtOnce).toBeLessThanOrEqual(MAX_SLICE_BYTES);
    expect(bus.largest).toBeLessThanOrEqual(MAX_SLICE_BYTES);
  });

  describe('a batch over MAX_GATEWAY_BATCH deliveries to one gateway', () => {
    const users = (n: number) => Array.from({ length: n }, (_, i) => `u${i}`);
    const connectAll = async (connect: (user: string, connId: string) => Promise<void>, all: string[]) => {
      for (const user of all) await connect(user, `c-${user}`);
    };

    it("keeps each user's deliveries in order across its calls", async () => {
      const gateways = new ParsingGateways();
      const { delivery, connect } = setup({ gateways });
      const others = users(MAX_GATEWAY_BATCH - 1);
      await connectAll(connect, ['bob', ...others]);
      await delivery.handle([
        message('m1'),
        ...others.map((user) => message(`x-${user}`, user)),
        message('m2'),
      ]);
      expect(gateways.mids('bob')).toEqual(['alice:m1', 'alice:m2']);
    });

    it("fans a group's messages out in calls at once, each member's in order", async () => {
      const gateways = new ParsingGateways();
      const { delivery, connect } = setup({ gateways });
      const members = users(1500);
      await connectAll(connect, members);
      const groupMessage = (id: string) => ({
        v: 1 as const,
        kind: 'deliver-many' as const,
        to: members,
        frame: { ...message(id).frame, to: 'crew', chat: 'group' as const },
      });
      await delivery.handle([groupMessage('g1'), groupMessage('g2'), groupMessage('g3')]);
      for (const member of members)
        expect(gateways.mids(member)).toEqual(['alice:g1', 'alice:g2', 'alice:g3']);
      expect(gateways.mostInFlight).toBeGreaterThan(1);
    });

    it('sends no later round to a gateway after a call of a round failed, so nothing overtakes it', async () => {
      const gateways = new ParsingGateways();
      const record = gateways.send.bind(gateways);
      let calls = 0;
      gateways.send = async (url, deliveries) => {
        if (++calls === 1) throw new Error('ECONNRESET');
        return record(url, deliveries);
      };
      const { delivery, connect } = setup({ gateways });
      await connect('bob', 'phone');
      await delivery.handle(Array.from({ length: MAX_GATEWAY_BATCH + 10 }, (_, i) => message(`m${i}`)));
      expect(calls).toBe(1);
      expect(gateways.mids('bob')).toEqual([]);
    });

    it('sends the deliveries of a user with more than fit one call in order, call after call', async () => {
      const gateways = new ParsingGateways();
      const { delivery, connect } = setup({ gateways });
      await connect('bob', 'phone');
      const ids = Array.from({ length: MAX_GATEWAY_BATCH + 10 }, (_, i) => `m${i}`);
      await delivery.handle(ids.map((id) => message(id)));
      expect(gateways.mids('bob')).toEqual(ids.map((id) => `alice:${id}`));
    });

    it('through coalescingSends, with devices on several gateways: each delivery once, in order, no user in two requests at once', async () => {
      const inner = new ParsingGateways();
      const biggest: number[] = [];
      const inFlight = new Map<string, number>(); // url + user -> requests in flight naming the user
      let overlaps = 0;
      const checking: GatewayClient = {
        async send(url, deliveries) {
          biggest.push(deliveries.length);
          const keys = [...new Set(deliveries.map((d) => `${url} ${d.to}`))];
          for (const key of keys) {
            if (inFlight.get(key)) overlaps++;
            inFlight.set(key, (inFlight.get(key) ?? 0) + 1);
          }
          try {
            return await inner.send(url, deliveries);
          } finally {
            for (const key of keys) inFlight.set(key, inFlight.get(key)! - 1);
          }
        },
        announce: (url) => inner.announce(url),
      };
      // As app.ts wires it; `setup` types its gateways as the recording stand-in, unused here.
      const { delivery, connect } = setup({
        gateways: coalescingSends(checking) as unknown as RecordingGateways,
      });
      // bob: two devices on gw-1, one on gw-2; carol on gw-2; others spread over both.
      await connect('bob', 'phone', 'gw-1');
      await connect('bob', 'tablet', 'gw-1');
      await connect('bob', 'laptop', 'gw-2');
      await connect('carol', 'phone', 'gw-2');
      const others = users(700);
      for (const [i, user] of others.entries())
        await connect(user, `c-${user}`, i % 3 === 0 ? 'gw-2' : 'gw-1');
      let state = 7;
      const next = (n: number) => ((state = (state * 1103515245 + 12345) % 2 ** 31), state % n);
      const groupMessage = (id: string): DeliveryTopicEvent => ({
        v: 1,
        kind: 'deliver-many',
        to: ['bob', ...others.slice(0, 100)],
        frame: { ...(message(id).frame as MessageFrame), to: 'crew', chat: 'group' },
      });
      const events: DeliveryTopicEvent[] = [];
      for (let i = 0; i < 2 * MAX_GATEWAY_BATCH + 300; i++) {
        const pick = next(20);
        if (pick < 10) events.push(message(`b${i}`, 'bob'));
        else if (pick < 12) events.push(message(`c${i}`, 'carol'));
        else if (pick < 13) events.push(groupMessage(`g${i}`));
        else events.push(message(`o${i}`, others[next(others.length)]));
      }
      await delivery.handle(events);
      const expected = new Map<string, string[]>(); // url user -> mids, as the events had them
      const expect_ = (url: string, user: string, mid: string) => {
        const key = `${url} ${user}`;
        expected.set(key, [...(expected.get(key) ?? []), mid]);
      };
      for (const event of events) {
        if (event.kind !== 'deliver' && event.kind !== 'deliver-many') continue;
        const mid = (event.frame as { mid: string }).mid;
        for (const user of typeof event.to === 'string' ? [event.to] : event.to)
          for (const url of user === 'bob'
            ? ['http://gw-1', 'http://gw-2']
            : user === 'carol' || others.indexOf(user) % 3 === 0
              ? ['http://gw-2']
              : ['http://gw-1'])
            expect_(url, user, mid);
      }
      const received = new Map<string, string[]>();
      for (const d of inner.received) {
        const key = `${d.url} ${d.to}`;
        received.set(key, [...(received.get(key) ?? []), (d.frame as { mid: string }).mid]);
      }
      expect(received).toEqual(expected);
      expect(inner.received.filter((d) => d.to === 'bob' && d.url === 'http://gw-1')[0]?.connIds).toEqual([
        'phone',
        'tablet',
      ]);
      expect(Math.max(...biggest)).toBeLessThanOrEqual(MAX_GATEWAY_BATCH);
      expect(overlaps).toBe(0);
    });
  });

  it('pushes an ephemeral deliver-many to the online recipients only, and tracks nothing', async () => {
    const { delivery, gateways, bus, connect, retryUntilQuiet } = setup();
    await connect('bob', 'phone');
    const frame = { type: 'typing' as const, from: 'alice', to: 'crew', chat: 'group' as const };
    await delivery.handle([{ v: 1, kind: 'deliver-many', to: ['bob', 'carol'], frame, ephemeral: true }]);
    await retryUntilQuiet();
    expect(gateways.received.map((d) => [d.to, d.frame])).toEqual([['bob', frame]]);
    expect(bus.events(TOPICS.offline)).toEqual([]);
  });

  it("issues a batch's connection calls to the store without waiting for each answer, in the batch's order", async () => {
    // A store whose connection calls answer only when released: a round trip to Redis.
    class SlowStore extends MemorySessionStore {
      readonly calls: string[] = [];
      private readonly waiting: Array<() => void> = [];
      release() {
        for (const answer of this.waiting.splice(0)) answer();
      }
      private async answered<T>(call: string, result: () => Promise<T>): Promise<T> {
        this.calls.push(call);
        const value = result(); // applied in the order issued, as Redis runs them
        await new Promise<void>((resolve) => this.waiting.push(resolve));
        return value;
      }
      override addConnection(c: Parameters<MemorySessionStore['addConnection']>[0]) {
        return this.answered(`up ${c.connId}`, () => super.addConnection(c));
      }
      override removeConnection(user: string, connId: string, at: number) {
        return this.answered(`down ${connId}`, () => super.removeConnection(user, connId, at));
      }
      override gatewayAlive(gateway: string, ttlMs: number) {
        return this.answered(`alive ${gateway}`, () => super.gatewayAlive(gateway, ttlMs));
      }
    }
    const store = new SlowStore();
    const { delivery } = setup({ store });
    const up = (user: string, connId: string, at: number) =>
      ({
        v: 1,
        kind: 'connection-up',
        user,
        connId,
        gateway: 'gw-1',
        gatewayUrl: 'http://gw-1',
        at,
      }) as const;
    const handled = delivery.handleConnections([
      up('ann', 'a1', 1),
      up('ben', 'b1', 2),
      {
        v: 1,
        kind: 'connection-down',
        user: 'ann',
        connId: 'a1',
        gateway: 'gw-1',
        gatewayUrl: 'http://gw-1',
        at: 3,
      },
      up('ann', 'a2', 4),
    ]);
    await waitFor(() => store.calls.length === 5, 5000, 'every call issued before any answer');
    expect(store.calls).toEqual(['alive gw-1', 'up a1', 'up b1', 'down a1', 'up a2']);
    store.release();
    await handled;
    const live = await store.connectionsOf(['ann', 'ben']);
    expect([live.get('ann')?.map((c) => c.connId), live.get('ben')?.map((c) => c.connId)]).toEqual([
      ['a2'],
      ['b1'],
    ]);
  });

  it('forgets a connection its gateway says it does not hold (a lost connection-down)', async () => {
    const { delivery, gateways, connect, store, retryUntilQuiet, bus } = setup();
    await connect('bob', 'phone', 'gw-1');
    await connect('bob', 'ghost', 'gw-1');
    gateways.gone.add('ghost');
    await delivery.handle([message('m1')]);
    expect((await store.connectionsOf(['bob'])).get('bob')?.map((c) => c.connId)).toEqual(['phone']);
    gateways.gone.add('phone');
    await retryUntilQuiet(); // the retry finds no connection left: offline at once
    expect((await store.presence(['bob']))[0].online).toBe(false);
    expect(bus.events(TOPICS.offline).map((e) => e.kind)).toEqual(['offline']);
  });

  it('forgets only connections it asked a gateway for: one named missing that another gateway holds, or never asked for, stays', async () => {
    // A buggy gateway (or one answering from a stale registry) names connections of the user that it
    // was never asked for: the laptop on gw-2, and an id nobody holds.
    class OverreachingGateways extends RecordingGateways {
      override async send(url: string, deliveries: GatewayDelivery[]) {
        const results = await super.send(url, deliveries);
        return url === 'http://gw-1'
          ? results.map((r) => ({ ...r, missing: ['laptop', 'nobody'] }))
          : results;
      }
    }
    const { delivery, gateways, connect, store, registry } = setup({ gateways: new OverreachingGateways() });
    await connect('bob', 'phone', 'gw-1');
    await connect('bob', 'laptop', 'gw-2');
    await delivery.handle([message('m1')]);
    expect(gateways.received.map((d) => [d.url, d.connIds])).toEqual([
      ['http://gw-1', ['phone']],
      ['http://gw-2', ['laptop']],
    ]);
    expect((await store.connectionsOf(['bob'])).get('bob')?.map((c) => c.connId)).toEqual([
      'phone',
      'laptop',
    ]);
    expect(await registry.getSingleMetricAsString('parley_session_stale_connections_total')).not.toMatch(
      / [1-9]\d*$/m,
    );
  });

  it('hands a deliverable for a user with no connection to the offline topic at once', async () => {
    const { delivery, gateways, bus } = setup();
    await delivery.handle([message('m1', 'carol')]);
    expect(gateways.received).toEqual([]);
    expect(bus.events(TOPICS.offline)).toEqual([
      expect.objectContaining({
        kind: 'offline',
        to: 'carol',
        frame: expect.objectContaining({ mid: 'alice:m1' }),
      }),
    ]);
  });

  it('sends what a user left unacked offline before a new deliverable once the user is gone, oldest first', async () => {
    const { delivery, gateways, bus, connect, disconnect, retryUntilQuiet } = setup({ ackTimeoutMs: 1000 });
    await connect('bob', 'phone');
    await delivery.handle([message('m1'), message('m2')]); // pushed, not acked
    await disconnect('bob', 'phone');
    await delivery.handle([message('m3'), message('c1', 'carol')]);
    const offline = () => bus.events(TOPICS.offline).map((e) => e.kind === 'offline' && [e.to, e.frame.mid]);
    expect(offline()).toEqual([
      ['bob', 'alice:m1'],
      ['bob', 'alice:m2'],
      ['bob', 'alice:m3'],
      ['carol', 'alice:c1'],
    ]);
    await new Promise((r) => setTimeout(r, 1000));
    await retryUntilQuiet(); // nothing is left to retry or to store again
    expect(gateways.mids('bob')).toEqual(['alice:m1', 'alice:m2']);
    expect(offline()).toHaveLength(4);
  });

  it('keeps a stored replay that outran its connect pending when a new message finds the user not yet connected', async () => {
    const { delivery, gateways, connect, retryUntilQuiet } = setup();
    await delivery.handle([{ ...message('r1'), replay: true }]); // before session-ms read the connection-up
    await delivery.handle([message('m1')]); // so bob looks gone
    await connect('bob', 'phone');
    await retryUntilQuiet();
    expect(gateways.mids('bob')).toContain('alice:r1');
  });

  it('tells storage of a late ack of a stored note to oneself after the user was found gone', async () => {
    const { delivery, bus, connect, disconnect } = setup({ ackTimeoutMs: 5000 });
    await connect('alice', 'tablet');
    await delivery.handle([{ ...message('note', 'alice', 'alice'), replay: true }]);
    await disconnect('alice', 'tablet'); // acked and closed the app; the ack is on its way
    await delivery.handle([message('m1', 'alice', 'bob')]);
    await delivery.handle([{ v: 1, kind: 'ack', user: 'alice', mids: ['alice:note'], at: 9 }]);
    expect(bus.events(TOPICS.offline).filter((e) => e.kind === 'offline-ack')).toEqual([
      expect.objectContaining({ user: 'alice', mids: ['alice:note'] }),
    ]);
  });

  it('hands what is pending to storage on stop in the order it was tracked, not the order it is due', async () => {
    const { delivery, bus, connect } = setup({ ackTimeoutMs: 200 });
    await connect('bob', 'phone');
    await delivery.handle([message('m1')]);
    await new Promise((r) => setTimeout(r, 100));
    await delivery.handle([message('m2')]);
    await new Promise((r) => setTimeout(r, 120));
    await delivery.retryDue(); // m1 pushed again: now due after m2
    expect(await delivery.handOffPending()).toBe(2);
    expect(bus.events(TOPICS.offline).map((e) => e.kind === 'offline' && e.frame.mid)).toEqual([
      'alice:m1',
      'alice:m2',
    ]);
  });

  it('tells storage of an ack that lands while a deliverable it is handing over is on its way there', async () => {
    const store = new AckBeforeDropStore();
    const { delivery, bus, connect, disconnect } = setup({ store, ackTimeoutMs: 1000 });
    await connect('bob', 'phone');
    await delivery.handle([message('m1')]);
    await disconnect('bob', 'phone');
    store.beforeDrop = () => delivery.handle([{ v: 1, kind: 'ack', user: 'bob', mids: ['alice:m1'], at: 7 }]);
    await delivery.handle([message('m2')]);
    expect(bus.events(TOPICS.offline).map((e) => (e.kind === 'offline' ? e.frame.mid : e.mids))).toEqual([
      'alice:m1',
      'alice:m2',
      ['alice:m1'], // the ack: storage deletes the copy it was just given
    ]);
  });

  it('tells storage of a late ack of a message to oneself too: what is handed over is no accepted frame', async () => {
    const store = new AckBeforeDropStore();
    const { delivery, bus, connect, disconnect } = setup({ store, ackTimeoutMs: 1000 });
    await connect('alice', 'tablet');
    await delivery.handle([message('n1', 'alice')]);
    await disconnect('alice', 'tablet');
    store.beforeDrop = () =>
      delivery.handle([{ v: 1, kind: 'ack', user: 'alice', mids: ['alice:n1'], at: 7 }]);
    await delivery.handle([message('n2', 'alice')]);
    expect(bus.events(TOPICS.offline).map((e) => (e.kind === 'offline' ? e.frame.mid : e.mids))).toEqual([
      'alice:n1',
      'alice:n2',
      ['alice:n1'],
    ]);
  });

  it('does not hand storage what the same batch acks further on when the user turns out gone', async () => {
    const { delivery, bus, connect, disconnect } = setup({ ackTimeoutMs: 1000 });
    await connect('bob', 'phone');
    await delivery.handle([message('m1')]);
    await disconnect('bob', 'phone');
    await delivery.handle([message('m2'), { v: 1, kind: 'ack', user: 'bob', mids: ['alice:m1'], at: 9 }]);
    expect(bus.events(TOPICS.offline).map((e) => (e.kind === 'offline' ? e.frame.mid : e.mids))).toEqual([
      'alice:m2',
    ]);
  });

  it('tells storage of an ack that met a copy pushed as new while the stored copy was being replayed', async () => {
    const { delivery, bus, connect } = setup({ ackTimeoutMs: 1000 });
    const storage = () =>
      bus.events(TOPICS.offline).map((e) => (e.kind === 'offline' ? e.frame.mid : e.mids));
    await delivery.handle([message('m1')]); // bob away: stored
    await connect('bob', 'phone');
    await delivery.handle([message('m1')]); // alice resent it (or a batch was read again): pushed as new
    await delivery.handle([{ ...message('m1'), replay: true }]); // storage's replay meets it pending
    await delivery.handle([{ v: 1, kind: 'ack', user: 'bob', mids: ['alice:m1'], at: 9 }]);
    expect(storage()).toEqual(['alice:m1', ['alice:m1']]);

    await delivery.handle([message('m2')]); // pushed, and acked before storage's copy comes back
    await delivery.handle([{ v: 1, kind: 'ack', user: 'bob', mids: ['alice:m2'], at: 9 }]);
    await delivery.handle([{ ...message('m2'), replay: true }]);
    expect(storage()).toEqual(['alice:m1', ['alice:m1'], ['alice:m2']]);
  });

  it('tells storage of an ack of a copy pushed as new after an earlier copy of its mid went to storage, and leaves the receipt to storage', async () => {
    const { delivery, bus, connect } = setup({ ackTimeoutMs: 1000 });
    const storage = () =>
      bus.events(TOPICS.offline).map((e) => (e.kind === 'offline' ? e.frame.mid : e.mids));
    const receipts = () => bus.events(TOPICS.delivery).filter((e) => e.kind === 'deliver');
    await delivery.handle([message('m1')]); // bob away: stored
    await connect('bob', 'phone');
    // A second copy (a group message resent after a membership change): nothing tracks the mid now.
    await delivery.handle([message('m1')]);
    await delivery.handle([{ v: 1, kind: 'ack', user: 'bob', mids: ['alice:m1'], at: 9 }]);
    // Storage must drop its copy, or sync serves it again; it sends the receipt for what it held.
    expect(storage()).toEqual(['alice:m1', ['alice:m1']]);
    expect(receipts()).toEqual([]);
  });

  it('redelivers an unacked deliverable with the same mid, then sends it offline after the last attempt', async () => {
    const { delivery, gateways, bus, connect, retryUntilQuiet } = setup();
    await connect('bob', 'phone');
    await delivery.handle([message('m1')]);
    await retryUntilQuiet();
    expect(gateways.mids('bob')).toEqual(['alice:m1', 'alice:m1', 'alice:m1']);
    expect(bus.events(TOPICS.offline).map((e) => e.kind)).toEqual(['offline']);
  });

  it('completes on ack: no redelivery, a delivered receipt to the sender, nothing for storage', async () => {
    const { delivery, gateways, bus, connect, retryUntilQuiet } = setup();
    await connect('bob', 'phone');
    await delivery.handle([message('m1')]);
    await delivery.handle([{ v: 1, kind: 'ack', user: 'bob', mids: ['alice:m1'], at: 5 }]);
    await retryUntilQuiet();
    expect(gateways.mids('bob')).toEqual(['alice:m1']);
    expect(bus.events(TOPICS.offline)).toEqual([]);
    const receipts = bus.events(TOPICS.delivery);
    expect(receipts).toEqual([
      expect.objectContaining({
        to: 'alice',
        frame: expect.objectContaining({
          type: 'receipt',
          status: 'delivered',
          mids: ['alice:m1'],
          by: 'bob',
          at: 5,
        }),
      }),
    ]);
  });

  it("sends a receipt only for what it pushed to the acking user: storage confirms a stored copy, and nobody a stranger's ack", async () => {
    const { delivery, gateways, bus, connect } = setup();
    await connect('bob', 'phone');
    await connect('carol', 'laptop');
    await delivery.handle([message('m1'), { ...message('m2'), replay: true }]);
    await delivery.handle([{ v: 1, kind: 'ack', user: 'carol', mids: ['alice:m1', 'alice:m2'], at: 4 }]);
    expect(bus.events(TOPICS.delivery)).toEqual([]); // carol got neither
    await delivery.handle([{ v: 1, kind: 'ack', user: 'bob', mids: ['alice:m1', 'alice:m2'], at: 5 }]);
    expect(bus.events(TOPICS.delivery).map((r) => r.kind === 'deliver' && [r.to, r.frame])).toEqual([
      [
        'alice',
        expect.objectContaining({ type: 'receipt', status: 'delivered', mids: ['alice:m1'], by: 'bob' }),
      ],
    ]);
    expect(bus.events(TOPICS.offline)).toEqual([
      expect.objectContaining({ kind: 'offline-ack', user: 'carol', mids: ['alice:m1', 'alice:m2'] }),
      expect.objectContaining({ kind: 'offline-ack', user: 'bob', mids: ['alice:m2'] }),
    ]);
    expect(gateways.mids('bob')).toEqual(['alice:m1', 'alice:m2']);
  });

  it('sends the receipt and the storage ack again when an ack batch is retried after they failed to publish', async () => {
    class KafkaAwayOnce extends MemoryBus {
      failing = new Set<string>();
      override async publish<T>(topic: TopicSpec<T>, events: T[], options?: { traceId?: string }) {
        if (events.length > 0 && this.failing.delete(topic.name)) throw new TransientError('broker away');
        return super.publish(topic, events, options);
      }
    }
    const bus = new KafkaAwayOnce();
    const { delivery, connect } = setup({ bus });
    await connect('bob', 'phone');
    await delivery.handle([message('m1'), { ...message('n1', 'bob', 'bob'), replay: true }]); // and a stored note to self
    bus.failing = new Set([TOPICS.delivery.name, TOPICS.offline.name]);
    const batch = [{ v: 1 as const, kind: 'ack' as const, user: 'bob', mids: ['alice:m1', 'bob:n1'], at: 5 }];
    await expect(delivery.handle(batch)).rejects.toThrow('broker away');
    await delivery.handle(batch); // the bus hands the batch over again
    expect(bus.events(TOPICS.delivery).map((e) => e.kind === 'deliver' && e.frame)).toEqual([
      expect.objectContaining({ type: 'receipt', status: 'delivered', mids: ['alice:m1'], by: 'bob' }),
    ]);
    expect(bus.events(TOPICS.offline)).toEqual([
      expect.objectContaining({ kind: 'offline-ack', user: 'bob', mids: ['bob:n1'] }),
    ]);
  });

  it('completes the acks of one batch in one round of store calls, with receipts as if in turn', async () => {
    /** A store whose `complete` answers only once every ack of the batch has asked: a Redis round trip each. */
    class RoundTripStore extends MemorySessionStore {
      waiting: Array<() => void> = [];
      expected = 0;
      override async complete(user: string, mids: string[], rememberMs: number) {
        await new Promise<void>((resolve) => {
          this.waiting.push(resolve);
          if (this.waiting.length === this.expected) this.waiting.splice(0).forEach((go) => go());
        });
        return super.complete(user, mids, rememberMs);
      }
    }
    const store = new RoundTripStore();
    const { delivery, bus, connect } = setup({ store });
    await connect('bob', 'phone');
    await connect('carol', 'laptop');
    await delivery.handle([message('m1'), message('m2', 'carol'), message('m3')]);
    store.expected = 3;
    const acks = [
      { v: 1 as const, kind: 'ack' as const, user: 'bob', mids: ['alice:m1'], at: 5 },
      { v: 1 as const, kind: 'ack' as const, user: 'carol', mids: ['alice:m2'], at: 6 },
      { v: 1 as const, kind: 'ack' as const, user: 'bob', mids: ['alice:m1', 'alice:m3'], at: 7 },
    ];
    await delivery.handle(acks); // one call at a time would wait forever for the other two
    expect(bus.events(TOPICS.delivery).map((r) => r.kind === 'deliver' && r.frame)).toEqual([
      expect.objectContaining({ type: 'receipt', mids: ['alice:m1'], by: 'bob', at: 5 }),
      expect.objectContaining({ type: 'receipt', mids: ['alice:m2'], by: 'carol', at: 6 }),
      expect.objectContaining({ type: 'receipt', mids: ['alice:m1', 'alice:m3'], by: 'bob', at: 7 }),
    ]);
    // The second ack of alice:m1 found it completed already, as it would have in turn, and answers
    // as the first did (pushed: a receipt again, harmless); nothing was stored, so nothing to storage.
    expect(bus.events(TOPICS.offline)).toEqual([]);
  });

  it('does not deliver a mid again once acked (idempotent send)', async () => {
    const { delivery, gateways, connect } = setup();
    await connect('bob', 'phone');
    await delivery.handle([message('m1')]);
    await delivery.handle([{ v: 1, kind: 'ack', user: 'bob', mids: ['alice:m1'], at: 5 }]);
    await delivery.handle([message('m1'), message('m1')]);
    expect(gateways.mids('bob')).toEqual(['alice:m1']);
  });

  it('sends what runs out of attempts to storage in the order it was sent, so sync serves it oldest first', async () => {
    const { delivery, gateways, bus, connect, retryUntilQuiet } = setup();
    await connect('bob', 'phone'); // connected, but never acks (a half-open socket)
    const ids = ['k8', 'k9', 'k10', 'k11', 'k12', 'k13', 'k14'];
    await delivery.handle(ids.map((id) => message(id)));
    await retryUntilQuiet();
    const sent = ids.map((id) => `alice:${id}`);
    expect(gateways.mids('bob')).toEqual([...sent, ...sent, ...sent]);
    expect(bus.events(TOPICS.offline).map((e) => (e.kind === 'offline' ? e.frame.mid : e.kind))).toEqual(
      sent,
    );
  });

  it('still pushes to a connected user right after a Kafka outage longer than the gateway ttl, before the next heartbeat is read', async () => {
    let clock = 1_700_000_000_000;
    const { delivery, gateways, bus } = setup({ store: new MemorySessionStore(() => clock) });
    const gw = { gateway: 'gw-1', gatewayUrl: 'http://gw-1' };
    await delivery.handleConnections([
      { v: 1, kind: 'gateway-heartbeat', ...gw, connections: 0, at: clock },
      { v: 1, kind: 'connection-up', user: 'bob', connId: 'phone', ...gw, at: clock },
    ]);
    clock += 120_000; // the brokers away for two minutes; on return the delivery consumer reads first
    await delivery.handle([message('m1')]);
    expect(gateways.received.map((d) => d.connIds)).toEqual([['phone']]);
    expect(bus.events(TOPICS.offline)).toEqual([]);
  });

  it('asks a gateway the store does not know to announce its connections, and again with each heartbeat while the ask fails', async () => {
    const { gateways, heartbeat } = setup();
    const settled = () => new Promise((resolve) => setImmediate(resolve));
    await heartbeat('gw-1');
    await heartbeat('gw-1');
    gateways.down.add('http://gw-2');
    await heartbeat('gw-2');
    await settled();
    await heartbeat('gw-2');
    await settled();
    expect(gateways.announced).toEqual(['http://gw-1']);
    gateways.down.clear();
    await heartbeat('gw-2');
    await settled();
    await heartbeat('gw-2');
    await settled();
    expect(gateways.announced).toEqual(['http://gw-1', 'http://gw-2']);
  });

  it("asks no gateway started since the store's state began to announce its connections, though its connection-ups are read before its heartbeat (a rollout's new pod in a reconnect storm)", async () => {
    let clock = 1_700_000_000_000;
    const storeStart = clock;
    const { delivery, gateways, registry } = setup({ store: new MemorySessionStore(() => clock) });
    clock += 60_000;
    const gateway = (name: string, startedAt?: number) => ({
      gateway: name,
      gatewayUrl: `http://${name}`,
      ...(startedAt !== undefined && { startedAt }),
    });
    const up = (user: string, from: ReturnType<typeof gateway>): ConnectionTopicEvent => ({
      v: 1,
      kind: 'connection-up',
      user,
      connId: `${user}-phone`,
      ...from,
      at: clock,
    });
    const fresh = gateway('gw-new', clock - 30_000);
    await delivery.handleConnections([up('bob', fresh), up('carol', fresh)]);
    await delivery.handleConnections([
      { v: 1, kind: 'gateway-heartbeat', ...fresh, connections: 2, at: clock },
    ]);
    // Asked: an older gateway, whose events name no start, and one that started before the store
    // did (they may hold sockets whose connection-ups went to a store since lost).
    await delivery.handleConnections([
      up('dan', gateway('gw-older')),
      up('erin', gateway('gw-before', storeStart - 5_000)),
    ]);
    await new Promise((resolve) => setImmediate(resolve));
    expect(gateways.announced).toEqual(['http://gw-older', 'http://gw-before']);
    const announcements = await registry.getSingleMetricAsString('parley_session_announcements_total');
    expect(announcements.split('\n').pop()).toMatch(/ 2$/);
  });

  it('asks again, with the next heartbeat, a gateway whose announce another replica asked for and failed', async () => {
    // Two replicas on one store: a connection-up (keyed by user) reaches one, the gateway's
    // heartbeats (keyed by gateway) the other.
    const a = setup({ replica: 'r1' });
    const b = setup({ replica: 'r2', store: a.store });
    const settled = () => new Promise((resolve) => setImmediate(resolve));
    b.gateways.down.add('http://gw-1');
    await b.connect('bob', 'phone', 'gw-1'); // the store does not know gw-1; the ask fails
    await settled();
    await a.heartbeat('gw-1');
    await settled();
    await a.heartbeat('gw-1');
    await settled();
    expect([...a.gateways.announced, ...b.gateways.announced]).toEqual(['http://gw-1']);
  });

  it('after the session store is found empty (Redis restarted without its data), reads the delivery topic again: what awaited an ack is delivered again, what was acked is not', async () => {
    const { store, wipe, close } = redisStore();
    const bus = new MemoryBus();
    let deliveries: Subscription | undefined;
    try {
      const { delivery, registry, gateways, heartbeat, connect } = setup({
        store,
        bus,
        ackTimeoutMs: 60_000,
        readUpTo: () => deliveries!.handledUpTo(),
        rereadFrom: (time) => deliveries!.rereadFrom(time),
      });
      deliveries = bus.subscribe({
        groupId: 'session-ms',
        topic: TOPICS.delivery,
        handle: (batch) => delivery.handle(withoutStaleNotices(batch)),
      });
      await deliveries.start();
      const lost = async () =>
        (await registry.getSingleMetricAsString('parley_session_store_lost_total')).split('\n').pop();
      await delivery.retryDue();
      await heartbeat();
      await connect('bob', 'phone');
      await bus.publish(TOPICS.delivery, [message('m1'), message('m2')]);
      await waitFor(() => gateways.mids('bob').length === 2, 5000, 'both pushed');
      await bus.publish(TOPICS.delivery, [
        { v: 1, kind: 'ack', user: 'bob', mids: ['alice:m2'], at: Date.now() },
      ]);
      await waitFor(
        async () => (await delivery.retryDue()) === 0 && deliveries!.handledUpTo() > Date.now() - 100,
        5000,
        'the ack read',
      );
      expect(await lost()).toMatch(/ 0$/);

      await wipe(); // Redis restarts empty: bob's phone and alice:m1, pushed and not acked, are gone
      await delivery.retryDue();
      // Read again: m1 is tracked again; bob counts as offline until his gateway announces his phone
      // again, so it goes to storage. m2 and its ack are read together: nothing happens to m2.
      await waitFor(
        () => bus.events(TOPICS.offline).some((e) => e.kind === 'offline' && e.to === 'bob'),
        5000,
        'm1 handed to storage',
      );
      await new Promise((resolve) => setTimeout(resolve, 200));
      // (alice's delivered receipts for m2, the first and the one its ack read again makes, go too)
      expect(bus.events(TOPICS.offline).filter((e) => e.kind === 'offline' && e.to === 'bob')).toEqual([
        expect.objectContaining({ kind: 'offline', to: 'bob', frame: message('m1').frame }),
      ]);
      expect(gateways.mids('bob')).toEqual(['alice:m1', 'alice:m2']);
      expect(await lost()).toMatch(/ 1$/);
      await heartbeat(); // its gateway is new to the emptied store: it announces bob's phone again
      await new Promise((resolve) => setImmediate(resolve));
      expect(gateways.announced).toEqual(['http://gw-1', 'http://gw-1']);
    } finally {
      await deliveries?.stop();
      await close();
    }
  });

  it('reads again from before anything still pending when the store is lost, also one whose retries a lagging replica held back at every attempt', async () => {
    let now = 1_700_000_000_000;
    const clock = jest.spyOn(Date, 'now').mockImplementation(() => now);
    try {
      const store = new LosingStore();
      const asked: number[] = [];
      const { delivery, bus, heartbeat, connect } = setup({
        store,
        ackTimeoutMs: 5000,
        rereadFrom: async (time) => {
          asked.push(time);
          return true;
        },
      });
      await heartbeat();
      await connect('bob', 'phone');
      const written = now;
      await delivery.handle([message('m1')]);
      // Another replica reads 59 s behind: each of m1's attempts waits for its ack that much longer.
      for (let s = 1; s <= 190; s++) {
        now += 1000;
        if (s % 10 === 0) await heartbeat();
        await store.reportReadUpTo('r2', now - 59_000, 10_000);
        await delivery.retryDue();
      }
      expect(bus.events(TOPICS.offline)).toEqual([]);
      expect((await store.pendingOf(['bob'])).get('bob')?.map((p) => p.mid)).toEqual(['alice:m1']);
      store.lost = now; // Redis restarts empty: m1, pushed three times and not acked, is gone
      await delivery.retryDue();
      expect(asked).toHaveLength(1);
      expect(asked[0]).toBeLessThanOrEqual(written); // m1's deliver event is read again
    } finally {
      clock.mockRestore();
    }
  });

  it('retries while a re-read hangs, and a loss seen again before the re-read is set keeps the earlier start', async () => {
    const store = new LosingStore();
    const asked: number[] = [];
    const answers: Array<(held: boolean) => void> = [];
    const { delivery, gateways, connect, heartbeat } = setup({
      store,
      rereadFrom: (time) => {
        asked.push(time);
        return new Promise((resolve) => answers.push(resolve));
      },
    });
    const rounds = async (n: number) => {
      for (let i = 0; i < n; i++) {
        await new Promise((resolve) => setTimeout(resolve, 25));
        await delivery.retryDue();
      }
    };
    await heartbeat();
    await connect('bob', 'phone');
    await delivery.handle([message('m1')]);
    store.lost = Date.now();
    await rounds(5); // the ask hangs (the broker slow to answer)
    expect(gateways.mids('bob').length).toBeGreaterThan(1); // m1 pushed again on its ack timeouts
    expect(asked).toHaveLength(1); // one ask at a time
    store.lost = Date.now() + 5000; // found lost again, later, before the first re-read was set
    await rounds(1);
    answers[0](true); // the first ask was for the earlier loss: the later one is still owed
    await rounds(2);
    expect(asked).toHaveLength(2);
    expect(asked[1]).toBe(asked[0]);
    answers[1](true);
  });

  it('still reads the delivery topic again after a store loss reported in a retry round that failed on another store call', async () => {
    class FlakyLosingStore extends LosingStore {
      failReport = false;
      override async reportReadUpTo(replica: string, at: number, ttlMs: number) {
        if (this.failReport) throw new Error('Connection is closed.');
        return super.reportReadUpTo(replica, at, ttlMs);
      }
    }
    const store = new FlakyLosingStore();
    const asked: number[] = [];
    const { delivery, registry } = setup({
      store,
      rereadFrom: async (time) => {
        asked.push(time);
        return true;
      },
    });
    await delivery.retryDue();
    // Redis restarted empty; in the round that hears of it, another of its calls fails.
    store.lost = Date.now();
    store.failReport = true;
    await expect(delivery.retryDue()).rejects.toThrow('Connection is closed.');
    store.failReport = false;
    await delivery.retryDue(); // the next round
    await new Promise((resolve) => setImmediate(resolve));
    expect(asked).toHaveLength(1);
    expect(await registry.getSingleMetricAsString('parley_session_store_lost_total')).toMatch(/ 1$/m);
  });

  it('with a store waiting for replicas, holds commits while they lack the writes, and after a failover that lost writes reads again from the last replicated position, committing only once the re-read is set', async () => {
    class ReplicatedStore extends MemorySessionStore {
      override readonly waitsForReplicas = true;
      answer: ReplicaAnswer = 'replicated';
      override async awaitReplicas() {
        return this.answer;
      }
    }
    const store = new ReplicatedStore();
    let position = 1_000_000;
    let answerReread!: (held: boolean) => void;
    const asked: number[] = [];
    const { delivery, registry } = setup({
      store,
      readUpTo: () => position,
      rereadFrom: (time) => {
        asked.push(time);
        return new Promise((resolve) => (answerReread = resolve));
      },
    });
    const mayCommit = delivery.mayCommit!;
    expect(await mayCommit()).toBe(true);
    const replicatedAt = position;
    position += 5000;
    store.answer = 'short';
    expect(await mayCommit()).toBe(false);
    position += 5000;
    store.answer = 'lost'; // a failover to a replica that lagged
    expect(await mayCommit()).toBe(false);
    store.answer = 'replicated';
    expect(await mayCommit()).toBe(false); // the re-read is owed, not set yet
    await delivery.retryDue();
    expect(asked).toHaveLength(1);
    expect(asked[0]).toBeLessThanOrEqual(replicatedAt);
    expect(await mayCommit()).toBe(true); // under way: its commit carries the rewind
    answerReread(true);
    await delivery.leave();
    expect(await mayCommit()).toBe(true);
    const held = await registry.getSingleMetricAsString('parley_session_commits_held_total');
    expect(held).toMatch(/because="short"[^\n]* 1$/m);
    expect(held).toMatch(/because="lost"[^\n]* 1$/m);
    expect(held).toMatch(/because="reread"[^\n]* 1$/m);
    expect(await registry.getSingleMetricAsString('parley_session_store_lost_total')).toMatch(/ 1$/m);
    expect(new MemorySessionStore().waitsForReplicas).toBe(false);
    expect(setup().delivery.mayCommit).toBeUndefined();
  });

  it('holds commits while Redis refuses the wait, and its warning says why (an ACL without INFO)', async () => {
    class RefusingStore extends MemorySessionStore {
      override readonly waitsForReplicas = true;
      override async awaitReplicas(): Promise<ReplicaAnswer> {
        throw new Error("NOPERM User parley has no permissions to run the 'info' command");
      }
    }
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger('session-ms', {}, { write: (line: string) => lines.push(JSON.parse(line)) });
    const { delivery, registry } = setup({ store: new RefusingStore(), logger });
    expect(await delivery.mayCommit!()).toBe(false);
    expect(await registry.getSingleMetricAsString('parley_session_commits_held_total')).toMatch(
      /because="error"[^\n]* 1$/m,
    );
    const warning = lines.find((l) => /delivery offsets not committed/.test(String(l.msg)));
    expect(warning).toMatchObject({ because: 'error', err: { message: expect.stringMatching(/^NOPERM/) } });
  });

  it("still pushes a round's retries when handing what ran out of attempts to storage fails", async () => {
    class OfflineRefusingBus extends MemoryBus {
      refuseOffline = false;
      override async publish<T>(topic: TopicSpec<T>, events: T[], options?: { traceId?: string }) {
        if (this.refuseOffline && topic.name === TOPICS.offline.name) throw new TransientError('broker away');
        return super.publish(topic, events, options);
      }
    }
    const bus = new OfflineRefusingBus();
    const { delivery, gateways, connect } = setup({ bus });
    const pushesOf = (mid: string) => gateways.mids('bob').filter((m) => m === mid).length;
    const tick = () => new Promise((resolve) => setTimeout(resolve, 30));
    await connect('bob', 'phone');
    await delivery.handle([message('m1')]);
    while (pushesOf('alice:m1') < 3) {
      await tick();
      await delivery.retryDue();
    }
    await delivery.handle([message('m2')]);
    await tick(); // m1 has run out of attempts, m2 is due for its second
    bus.refuseOffline = true;
    await expect(delivery.retryDue()).rejects.toThrow('broker away');
    expect(pushesOf('alice:m2')).toBe(2);
    bus.refuseOffline = false;
    await tick();
    await delivery.retryDue();
    expect(bus.events(TOPICS.offline).map((e) => e.kind === 'offline' && e.frame.mid)).toContain('alice:m1');
  });

  it('asks again to read the delivery topic while its replica holds no partition or the ask fails; retries go on meanwhile', async () => {
    const { store, wipe, close } = redisStore();
    try {
      const answers: Array<boolean | Error> = [false, new Error('the broker is away'), true];
      const asked: number[] = [];
      const { delivery, gateways, connect } = setup({
        store,
        rereadFrom: async (time) => {
          asked.push(time);
          const answer = answers.shift()!;
          if (answer instanceof Error) throw answer;
          return answer;
        },
      });
      await delivery.retryDue();
      await wipe();
      await connect('bob', 'phone');
      await delivery.handle([message('m1')]);
      for (let round = 0; round < 5; round++) {
        await new Promise((resolve) => setTimeout(resolve, 25));
        await delivery.retryDue();
      }
      expect(asked).toHaveLength(3); // joining, then failing, then done
      expect(new Set(asked).size).toBe(1);
      expect(gateways.mids('bob').length).toBeGreaterThan(1); // m1 pushed again on its ack timeouts
    } finally {
      await close();
    }
  });

  it('does not deliver again a message the user acked from storage (sync) when its sender sends it again', async () => {
    const { delivery, gateways, connect } = setup();
    await connect('bob', 'phone');
    await delivery.handle([{ v: 1, kind: 'ack', user: 'bob', mids: ['alice:s1'], at: 1 }]); // synced, acked
    await delivery.handle([message('s1')]); // alice's app sends it again (same id, same mid)
    expect(gateways.mids('bob')).toEqual([]);
  });

  it('forgets the connections of a gateway restarted under the same id: a message goes to storage, not to a dead socket', async () => {
    const { delivery, gateways, bus } = setup();
    const beat = (startedAt: number) =>
      delivery.handleConnections([
        {
          v: 1,
          kind: 'gateway-heartbeat',
          gateway: 'gw-1',
          gatewayUrl: 'http://gw-1',
          connections: 1,
          at: Date.now(),
          startedAt,
        },
      ]);
    await beat(Date.now() - 120_000);
    await delivery.handleConnections([
      {
        v: 1,
        kind: 'connection-up',
        user: 'bob',
        connId: 'phone',
        gateway: 'gw-1',
        gatewayUrl: 'http://gw-1',
        at: Date.now() - 60_000,
      },
    ]);
    await beat(Date.now()); // its process restarted: bob's socket died with the old one, unannounced
    await delivery.handle([message('m1')]);
    expect(gateways.received).toEqual([]);
    expect(bus.events(TOPICS.offline)).toEqual([expect.objectContaining({ kind: 'offline', to: 'bob' })]);
  });

  it('tells storage of an ack read before a copy of its mid in the same batch (acked from storage, then sent again), as when read in turn', async () => {
    const { delivery, gateways, bus, connect, retryUntilQuiet } = setup();
    await connect('bob', 'phone');
    await delivery.handle([
      { v: 1, kind: 'ack', user: 'bob', mids: ['alice:s1'], at: 1 }, // synced, acked
      message('s1'), // alice's app sends it again (same id, same mid)
    ]);
    await retryUntilQuiet();
    expect(gateways.mids('bob')).toEqual([]);
    // Storage still holds the copy bob acked: it must hear of the ack, or sync serves it again.
    expect(bus.events(TOPICS.offline)).toEqual([
      expect.objectContaining({ kind: 'offline-ack', user: 'bob', mids: ['alice:s1'] }),
    ]);
    // Nothing was pushed to bob here: session-ms has no receipt to send (storage sends its own).
    expect(bus.events(TOPICS.delivery)).toEqual([]);
  });

  it('pushes nothing that the same batch acks further on (a batch read again)', async () => {
    const { delivery, gateways, bus, connect, retryUntilQuiet } = setup();
    await connect('bob', 'phone');
    await delivery.handle([
      message('m1'),
      message('m2'),
      { v: 1, kind: 'ack', user: 'bob', mids: ['alice:m1'], at: 2 },
    ]);
    expect(gateways.mids('bob')).toEqual(['alice:m2']);
    await retryUntilQuiet(); // m2 is pushed again until it goes offline; m1 never
    expect(gateways.mids('bob')).not.toContain('alice:m1');
    expect(bus.events(TOPICS.offline).map((e) => e.kind === 'offline' && e.frame)).toEqual([
      message('m2').frame,
    ]);
  });

  it('pushes a note to oneself whose `accepted` frame the sending device acked in the same batch', async () => {
    // alice writes to herself from her phone; the phone acks the `accepted` frame (it carries the
    // mid) before session-ms reads the deliver: both land in one batch. That ack is no proof that
    // her tablet got the note, so the note is still pushed.
    const { delivery, gateways, connect } = setup({ ackTimeoutMs: 1000 });
    await connect('alice', 'tablet');
    await delivery.handle([
      message('n1', 'alice', 'alice'),
      { v: 1, kind: 'ack', user: 'alice', mids: ['alice:n1'], at: 2 },
    ]);
    expect(gateways.mids('alice')).toEqual(['alice:n1']);
  });

  it('drops typing notices written too long ago to matter (a backlog, a topic read again), and nothing else', () => {
    const now = Date.now();
    const typing: DeliveryTopicEvent = {
      v: 1,
      kind: 'deliver',
      to: 'bob',
      frame: { type: 'typing', from: 'alice', to: 'bob', chat: 'direct' },
      ephemeral: true,
    };
    const old = now - TYPING_NOTICE_MAX_AGE_MS - 1;
    const envelope = (event: DeliveryTopicEvent, timestamp: number): Envelope<DeliveryTopicEvent> => ({
      event,
      key: 'bob',
      partition: 0,
      offset: '0',
      timestamp,
    });
    const ack: DeliveryTopicEvent = { v: 1, kind: 'ack', user: 'bob', mids: ['alice:m0'], at: old };
    expect(
      withoutStaleNotices(
        [
          envelope(typing, old),
          envelope(message('m1'), old),
          envelope(ack, old),
          envelope(typing, now - 1000),
        ],
        now,
      ),
    ).toEqual([message('m1'), ack, typing]);
  });

  it('tells storage about an ack that arrives after the deliverable went offline', async () => {
    const { delivery, bus } = setup();
    await delivery.handle([message('m1', 'carol')]);
    await delivery.handle([{ v: 1, kind: 'ack', user: 'carol', mids: ['alice:m1'], at: 9 }]);
    expect(bus.events(TOPICS.offline).map((e) => e.kind)).toEqual(['offline', 'offline-ack']);
  });

  it('sends nothing to storage when a user acks the mid of their own send (the accepted frame)', async () => {
    const { delivery, bus } = setup();
    await delivery.handle([{ v: 1, kind: 'ack', user: 'alice', mids: ['alice:m1', 'bob:m9'], at: 9 }]);
    expect(bus.events(TOPICS.offline)).toEqual([
      expect.objectContaining({ kind: 'offline-ack', user: 'alice', mids: ['bob:m9'] }),
    ]);
  });

  it('tells storage when a user acks a stored note to themselves that nothing tracks any more (read through sync)', async () => {
    const { delivery, bus, connect, retryUntilQuiet } = setup();
    const storageAcks = () => bus.events(TOPICS.offline).filter((e) => e.kind === 'offline-ack');
    // Sent with no device connected: stored at once; acked after GET /v1/messages.
    await delivery.handle([message('n1', 'alice', 'alice')]);
    await delivery.handle([{ v: 1, kind: 'ack', user: 'alice', mids: ['alice:n1'], at: 9 }]);
    expect(storageAcks()).toEqual([expect.objectContaining({ user: 'alice', mids: ['alice:n1'] })]);
    // Replayed on connect, not acked over the socket: its retries run out, and the ack comes later.
    await connect('alice', 'tablet');
    await delivery.handle([{ ...message('n2', 'alice', 'alice'), replay: true }]);
    await retryUntilQuiet();
    await delivery.handle([{ v: 1, kind: 'ack', user: 'alice', mids: ['alice:n2', 'alice:sent1'], at: 10 }]);
    // alice:sent1 is only the mid of something she sent (its accepted frame): nothing for storage.
    expect(storageAcks()).toEqual([
      expect.objectContaining({ user: 'alice', mids: ['alice:n1'] }),
      expect.objectContaining({ user: 'alice', mids: ['alice:n2'] }),
    ]);
  });

  it('tells storage of an acked note to oneself when its stored copy is replayed, as of any acked mid (its hand-off failed to mark it stored)', async () => {
    /** A store that fails the first markStored, as Redis going away between the hand-off's steps. */
    class MarkStoredFailsOnce extends MemorySessionStore {
      failed = false;
      override async markStored(user: string, mids: string[], ttlMs: number) {
        if (!this.failed) {
          this.failed = true;
          throw new TransientError('redis away');
        }
        return super.markStored(user, mids, ttlMs);
      }
    }
    const { delivery, bus, connect } = setup({ store: new MarkStoredFailsOnce(), ackTimeoutMs: 5000 });
    const storageAcks = () => bus.events(TOPICS.offline).filter((e) => e.kind === 'offline-ack');
    const note = message('n1', 'alice', 'alice');
    // No device of alice's connected: the note goes to storage, and the store fails before it is
    // marked stored; the batch, handled again, finds it pending.
    await expect(delivery.handle([note])).rejects.toThrow('redis away');
    await delivery.handle([note]);
    await delivery.handle([{ v: 1, kind: 'ack', user: 'alice', mids: ['alice:n1'], at: 9 }]); // from sync
    expect(storageAcks()).toEqual([]); // it completed the copy pending as pushed
    await connect('alice', 'tablet');
    await delivery.handle([{ ...note, replay: true }]); // storage still holds it: replayed on connect
    expect(storageAcks()).toEqual([expect.objectContaining({ user: 'alice', mids: ['alice:n1'] })]);
  });

  it('tells storage when a user acks a stored message to themselves, replayed on connect', async () => {
    const { delivery, bus, connect } = setup();
    await connect('alice', 'tablet');
    await delivery.handle([{ ...message('m1', 'alice'), replay: true }]);
    await delivery.handle([{ v: 1, kind: 'ack', user: 'alice', mids: ['alice:m1'], at: 9 }]);
    expect(bus.events(TOPICS.offline)).toEqual([
      expect.objectContaining({ kind: 'offline-ack', user: 'alice', mids: ['alice:m1'] }),
    ]);
  });

  it('pushes a replay at once, in storage order, also one still pending from a connect that went away', async () => {
    const { delivery, gateways, connect, disconnect } = setup({ ackTimeoutMs: 5000 });
    const replay = (id: string) => ({ ...message(id), replay: true });
    await connect('bob', 'phone');
    await delivery.handle([replay('w1'), replay('w2')]); // stored while bob was away: pushed, not acked
    await disconnect('bob', 'phone');
    await delivery.handle([message('w3')]); // bob away: stored behind w1 and w2
    await connect('bob', 'phone');
    await delivery.handle([replay('w1'), replay('w2'), replay('w3')]); // storage's replay on this connect
    expect(gateways.mids('bob')).toEqual(['alice:w1', 'alice:w2', 'alice:w1', 'alice:w2', 'alice:w3']);
  });

  it('keeps a replay that outran the record of its connect, and pushes it once the connect is known', async () => {
    const { delivery, bus, connect, gateways, retryUntilQuiet } = setup();
    await delivery.handle([{ ...message('m1'), replay: true }]); // bob's connect not yet recorded
    expect(gateways.mids('bob')).toEqual([]);
    await connect('bob', 'phone');
    await retryUntilQuiet();
    expect(gateways.mids('bob')).toContain('alice:m1');
    expect(bus.events(TOPICS.offline)).toEqual([]); // stored already: never stored again
  });

  it("delivers a reconnect's replay that outran the record of the connect, also of a stored deliverable whose retries the earlier connect used up", async () => {
    // A reconnect storm: bob got m1 replayed on an earlier connect, did not ack it, and his socket
    // dropped; his retries ran with no socket to push to. Storage replays m1 on his reconnect
    // before session-ms has read that connect (the connections topic is behind).
    const { delivery, connect, disconnect, gateways } = setup();
    const retryOnce = async () => {
      await new Promise((r) => setTimeout(r, 25));
      await delivery.retryDue();
    };
    await connect('bob', 'phone');
    await delivery.handle([{ ...message('m1'), replay: true }]);
    await disconnect('bob', 'phone');
    await retryOnce();
    await retryOnce(); // both retries found no socket
    await delivery.handle([{ ...message('m1'), replay: true }]); // the reconnect's replay
    await connect('bob', 'tablet');
    for (let i = 0; i < 10 && gateways.received.length < 2; i++) await retryOnce();
    expect(gateways.received.map((d) => [d.connIds, 'mid' in d.frame && d.frame.mid])).toEqual([
      [['phone'], 'alice:m1'],
      [['tablet'], 'alice:m1'],
    ]);
  });

  it('pushes to the device that connected a deliverable its replay started again while its used-up retries handed it to storage', async () => {
    // bob's phone took m1 (replayed) and never acked it; its last retry is handing it to storage
    // when bob connects on his tablet, and the tablet's replay of m1 finds it still pending.
    const store = new AckBeforeDropStore();
    const { delivery, connect, gateways } = setup({ store });
    const retryOnce = async () => {
      await new Promise((r) => setTimeout(r, 25));
      await delivery.retryDue();
    };
    const toTablet = () => gateways.received.filter((d) => d.connIds?.includes('tablet'));
    await connect('bob', 'phone');
    await delivery.handle([{ ...message('m1'), replay: true }]);
    store.beforeDrop = async () => {
      await delivery.handle([{ ...message('m1'), replay: true }]); // before the tablet's connect is read
      await connect('bob', 'tablet');
    };
    for (let i = 0; i < 10 && toTablet().length === 0; i++) await retryOnce();
    expect(store.beforeDrop).toBeUndefined(); // the hand-off happened
    expect(toTablet().map((d) => 'mid' in d.frame && d.frame.mid)).toEqual(['alice:m1']);
  });

  it('sends a replayed (stored) deliverable again without storing it twice, and acks reach storage', async () => {
    const { delivery, bus, connect, gateways, retryUntilQuiet } = setup();
    await connect('bob', 'phone');
    await delivery.handle([{ ...message('m1'), replay: true }]);
    expect(gateways.mids('bob')).toEqual(['alice:m1']);
    await retryUntilQuiet();
    expect(bus.events(TOPICS.offline)).toEqual([]);
    await delivery.handle([{ ...message('m2'), replay: true }]);
    await delivery.handle([{ v: 1, kind: 'ack', user: 'bob', mids: ['alice:m2'], at: 9 }]);
    expect(bus.events(TOPICS.offline)).toEqual([
      expect.objectContaining({ kind: 'offline-ack', mids: ['alice:m2'] }),
    ]);
  });

  it('delivers typing only to connected users and never retries it', async () => {
    const { delivery, gateways, bus, connect, retryUntilQuiet } = setup();
    await connect('bob', 'phone');
    const typing = (to: string): DeliverEvent => ({
      v: 1,
      kind: 'deliver',
      to,
      ephemeral: true,
      frame: { type: 'typing', from: 'alice', to, chat: 'direct' },
    });
    await delivery.handle([typing('bob'), typing('carol')]);
    await retryUntilQuiet();
    expect(gateways.mids('bob')).toEqual(['typing']);
    expect(gateways.received).toHaveLength(1);
    expect(bus.events(TOPICS.offline)).toEqual([]);
  });

  it('pushes what a user has pending to a device that connects, at once and in order, not an ack timeout later', async () => {
    const { delivery, gateways, registry, connect } = setup({ ackTimeoutMs: 60_000 });
    await connect('bob', 'phone');
    await delivery.handle([message('m1'), message('m2'), { ...message('m3'), replay: true }]);
    // The phone's socket died unnoticed; it comes back on another network, through another gateway.
    await connect('bob', 'phone-again', 'gw-2');
    const toNewSocket = gateways.received
      .filter((d) => d.connIds?.includes('phone-again'))
      .map((d) => ('mid' in d.frame ? d.frame.mid : d.frame.type));
    // The stored copy (m3) is storage's to hand back on this connect.
    expect(toNewSocket).toEqual(['alice:m1', 'alice:m2']);
    expect(gateways.received.filter((d) => d.url === 'http://gw-2')).toHaveLength(2);
    expect(await registry.getSingleMetricAsString('parley_session_reconnect_pushes_total')).toMatch(/ 2$/m);
    await connect('carol', 'tablet'); // nothing pending: nothing pushed
    expect(gateways.received.filter((d) => d.to === 'carol')).toEqual([]);
  });

  it('does not hold the connections consumer on a gateway that does not answer a connect push', async () => {
    class HangingGateways extends RecordingGateways {
      hang = false;
      release = () => undefined as void;
      override async send(url: string, deliveries: GatewayDelivery[]) {
        if (this.hang) await new Promise<void>((resolve) => (this.release = resolve));
        return super.send(url, deliveries);
      }
    }
    const gateways = new HangingGateways();
    const { delivery, connect } = setup({ gateways, ackTimeoutMs: 60_000 });
    await connect('bob', 'phone');
    await delivery.handle([message('m1')]);
    gateways.hang = true;
    const up = (connId: string) =>
      delivery.handleConnections([
        {
          v: 1,
          kind: 'connection-up',
          user: 'bob',
          connId,
          gateway: 'gw-2',
          gatewayUrl: 'http://gw-2',
          at: Date.now(),
        },
      ]);
    await up('phone-again'); // resolves though its push hangs
    await delivery.handleConnections([
      {
        v: 1,
        kind: 'connection-down',
        user: 'bob',
        connId: 'phone',
        gateway: 'gw-1',
        gatewayUrl: 'http://gw-1',
        at: Date.now(),
      },
    ]);
    gateways.hang = false;
    gateways.release();
    await delivery.connectPushesDone();
    expect(gateways.received.filter((d) => d.connIds?.includes('phone-again')).length).toBe(1);
  });

  it('pushes nothing at a connect while acks are read behind a backlog: they may be on their way', async () => {
    const { delivery, gateways, connect } = setup({
      readUpTo: () => Date.now() - 10_000,
      ackTimeoutMs: 1000,
    });
    await connect('bob', 'phone');
    await delivery.handle([message('m1')]);
    await delivery.retryDue(); // reports the read position, 10 s behind
    await connect('bob', 'phone-again', 'gw-2');
    expect(gateways.received.filter((d) => d.connIds?.includes('phone-again'))).toEqual([]);
  });

  it('pushes nothing at a connect to a socket the store did not take (one of a gateway process that restarted since)', async () => {
    const { delivery, gateways, registry, connect } = setup({ ackTimeoutMs: 60_000 });
    await connect('bob', 'phone');
    await delivery.handle([message('m1')]);
    const startedAt = Date.now();
    const up = (connId: string, at: number) => ({
      v: 1 as const,
      kind: 'connection-up' as const,
      user: 'bob',
      connId,
      gateway: 'gw-2',
      gatewayUrl: 'http://gw-2',
      at,
    });
    const beat = (gateway: string) => ({
      v: 1 as const,
      kind: 'gateway-heartbeat' as const,
      gateway,
      gatewayUrl: `http://${gateway}`,
      connections: 0,
      at: startedAt,
      startedAt,
    });
    // Gateways restarted under their ids: connection-ups of their earlier processes, read late (a
    // lagging consumer, a replay), name sockets that died with them; a gateway answers them missing.
    gateways.gone.add('old-1').add('old-2');
    // Its restart noted first, the store does not take the connection.
    await delivery.handleConnections([beat('gw-2'), up('old-1', startedAt - 60_000)]);
    // The restart noted after it in the same batch: the store forgets it again (one stale connection).
    await delivery.handleConnections([
      { ...up('old-2', startedAt - 60_000), gateway: 'gw-3', gatewayUrl: 'http://gw-3' },
      beat('gw-3'),
    ]);
    expect(gateways.received.filter((d) => d.to === 'bob').map((d) => d.url)).toEqual(['http://gw-1']);
    expect(await registry.getSingleMetricAsString('parley_session_reconnect_pushes_total')).toMatch(/ 0$/m);
    expect(await registry.getSingleMetricAsString('parley_session_stale_connections_total')).toMatch(/ 1$/m);
  });

  it("keeps the order tracked at a connect where a stored copy awaits its ack: what follows it waits for storage's replay", async () => {
    const { delivery, gateways, connect, retryUntilQuiet } = setup();
    await connect('bob', 'phone');
    // The phone's connect had storage hand back s1; then m2 came live. Neither is acked: the socket died.
    await delivery.handle([{ ...message('s1'), replay: true }]);
    await delivery.handle([message('m2')]);
    await connect('bob', 'phone-again', 'gw-2');
    await delivery.handle([{ ...message('s1'), replay: true }]); // storage's replay on this connect
    await retryUntilQuiet();
    const firstArrivals = [
      ...new Set(
        gateways.received
          .filter((d) => d.connIds?.includes('phone-again'))
          .map((d) => ('mid' in d.frame ? d.frame.mid : d.frame.type)),
      ),
    ];
    expect(firstArrivals).toEqual(['alice:s1', 'alice:m2']);
  });

  it("measures a message's first push from its sentAt, not its retries, reconnect pushes or replays", async () => {
    const { delivery, registry, connect, retryUntilQuiet } = setup();
    await connect('bob', 'phone');
    const sentAgo = (ms: number, id: string): DeliverEvent => {
      const event = message(id);
      return { ...event, frame: { ...(event.frame as MessageFrame), sentAt: Date.now() - ms } };
    };
    await delivery.handle([sentAgo(300, 'm1'), { ...sentAgo(60_000, 'm2'), replay: true }]);
    await delivery.handle([sentAgo(300, 'm3')]);
    await delivery.handle([{ ...sentAgo(300, 'm4'), to: 'nobody-connected' }]);
    await connect('bob', 'tablet'); // m1 pushed to it at once (m2, a stored copy, holds m3 back)
    await retryUntilQuiet(); // m1 and m3 pushed twice more, then stored
    const histogram = await registry.getSingleMetricAsString('parley_session_first_push_latency_seconds');
    expect(histogram).toMatch(/_count\{service="s",chat="direct"\} 2$/m);
    const sum = Number(/_sum\{service="s",chat="direct"\} ([\d.]+)$/m.exec(histogram)?.[1]);
    expect(sum).toBeGreaterThanOrEqual(0.6);
    expect(sum).toBeLessThan(10);
  });

  it("times a message's first push once for a user on two gateways, also when the first of them fails", async () => {
    const { delivery, gateways, registry, connect } = setup();
    await connect('bob', 'phone', 'gw-1');
    await connect('bob', 'tablet', 'gw-2');
    const count = async () =>
      Number(
        /_count\{service="s",chat="direct"\} (\d+)$/m.exec(
          await registry.getSingleMetricAsString('parley_session_first_push_latency_seconds'),
        )?.[1] ?? 0,
      );
    await delivery.handle([message('m1')]); // both answer
    expect(await count()).toBe(1);
    gateways.down.add('http://gw-1');
    await delivery.handle([message('m2')]); // the tablet's gateway wrote it: still its first push
    expect(gateways.received.filter((d) => d.url === 'http://gw-2').map((d) => d.frame)).toEqual([
      expect.objectContaining({ mid: 'alice:m1' }),
      expect.objectContaining({ mid: 'alice:m2' }),
    ]);
    expect(await count()).toBe(2);
  });

  it('counts in parley_session_acked_total only acks that completed a deliverable, not those of accepted frames', async () => {
    const { delivery, registry, connect } = setup();
    await connect('bob', 'phone');
    await delivery.handle([message('m1')]);
    const ack = (user: string, mids: string[]) => ({
      v: 1 as const,
      kind: 'ack' as const,
      user,
      mids,
      at: Date.now(),
    });
    // alice acks the accepted frame of her own m1 and m2; bob acks m1, and a mid he never got.
    await delivery.handle([ack('alice', ['alice:m1', 'alice:m2']), ack('bob', ['alice:m1', 'carol:x'])]);
    expect(await registry.getSingleMetricAsString('parley_session_acked_total')).toMatch(/ 1$/m);
  });

  it('counts only deliverables in parley_session_pushed_total, not typing notices (nobody acks those)', async () => {
    const { delivery, gateways, registry, connect } = setup();
    await connect('bob', 'phone');
    await delivery.handle([
      message('m1'),
      {
        v: 1,
        kind: 'deliver',
        to: 'bob',
        ephemeral: true,
        frame: { type: 'typing', from: 'alice', to: 'bob', chat: 'direct' },
      },
    ]);
    expect(gateways.mids('bob')).toEqual(['alice:m1', 'typing']);
    expect(await registry.getSingleMetricAsString('parley_session_pushed_total')).toMatch(/ 1$/m);
  });

  it('retries when a gateway cannot be reached, and stops pushing to a disconnected device', async () => {
    const { delivery, gateways, connect, disconnect, retryUntilQuiet } = setup();
    await connect('bob', 'phone', 'gw-1');
    gateways.down.add('http://gw-1');
    await delivery.handle([message('m1')]);
    gateways.down.clear();
    await new Promise((r) => setTimeout(r, 25));
    await delivery.retryDue();
    expect(gateways.mids('bob')).toEqual(['alice:m1']);
    await disconnect('bob', 'phone');
    await retryUntilQuiet();
    expect(gateways.mids('bob')).toEqual(['alice:m1']);
  });

  it('measures the ack timeout against the time acks have been read up to: a backlog does not trigger retries', async () => {
    let acksReadUpTo = Date.now();
    const { delivery, gateways, bus, connect } = setup({ readUpTo: () => acksReadUpTo });
    await connect('bob', 'phone');
    await delivery.handle([message('m1')]);
    await new Promise((r) => setTimeout(r, 60)); // three ack timeouts of wall time
    for (let i = 0; i < 5; i++) await delivery.retryDue();
    expect(gateways.mids('bob')).toEqual(['alice:m1']);
    expect(bus.events(TOPICS.offline)).toEqual([]);

    acksReadUpTo = Date.now(); // the backlog is read, and no ack for m1 was in it
    await delivery.retryDue();
    expect(gateways.mids('bob')).toEqual(['alice:m1', 'alice:m1']);
  });

  it('times each push again from when it is sent: a lagging reader does not turn one retry into a burst', async () => {
    // The lag longer than the ack timeout: a retry timed on the reader's clock would be due at once.
    // Both long enough that a pause of the test process (a busy box) does not make the next one due.
    const lagMs = 300;
    const { delivery, gateways, bus, connect } = setup({
      readUpTo: () => Date.now() - lagMs,
      ackTimeoutMs: 200,
    });
    await connect('bob', 'phone');
    await delivery.handle([message('m1')]); // lost: no ack comes
    while (gateways.mids('bob').length < 2) {
      await new Promise((r) => setTimeout(r, 5));
      await delivery.retryDue();
    }
    // The client acks the second push at once; the reader gets to that ack lagMs later.
    const readAt = Date.now() + lagMs;
    while (Date.now() < readAt) {
      await new Promise((r) => setTimeout(r, 5));
      await delivery.retryDue();
    }
    await delivery.handle([{ v: 1, kind: 'ack', user: 'bob', mids: ['alice:m1'], at: Date.now() }]);
    expect(gateways.mids('bob')).toEqual(['alice:m1', 'alice:m1']);
    expect(bus.events(TOPICS.offline)).toEqual([]);
  });

  it('holds retries while another replica sharing the store is behind on its partitions', async () => {
    // An ack timeout of 500 ms: the push again is leased for that long, and a pause of the test
    // process (a busy box) between the two last claims must not make it due again.
    const ackTimeoutMs = 500;
    let laggingUpTo = Date.now();
    const caughtUp = setup({ replica: 'r1', ackTimeoutMs });
    const lagging = setup({
      replica: 'r2',
      store: caughtUp.store,
      readUpTo: () => laggingUpTo,
      ackTimeoutMs,
    });
    await caughtUp.connect('bob', 'phone');
    await caughtUp.delivery.handle([message('m1')]);
    await lagging.delivery.retryDue(); // r2 reports its read position: before m1's deadline
    await new Promise((r) => setTimeout(r, ackTimeoutMs + 100)); // past the ack timeout of wall time
    await caughtUp.delivery.retryDue();
    expect(caughtUp.gateways.mids('bob')).toEqual(['alice:m1']);

    laggingUpTo = Date.now(); // r2 has read its backlog, and no ack for m1 was in it
    await lagging.delivery.retryDue(); // either replica may push it again: the first to claim it
    await caughtUp.delivery.retryDue();
    expect([...caughtUp.gateways.mids('bob'), ...lagging.gateways.mids('bob')]).toEqual([
      'alice:m1',
      'alice:m1',
    ]);
  });

  it('stops holding retries back for a reader stalled past maxAckReadLagMs', async () => {
    const { delivery, gateways, connect } = setup({
      readUpTo: () => 0,
      ackTimeoutMs: 100,
      // Held back until 2.1 s after the push: the check at 150 ms holds through a stall of this
      // test's process of nearly 2 s (a loaded CI box), where 500 allowed 450 ms.
      maxAckReadLagMs: 2000,
    });
    await connect('bob', 'phone');
    await delivery.handle([message('m1')]);
    await new Promise((r) => setTimeout(r, 150)); // past the ack timeout, within the lag allowed
    await delivery.retryDue();
    expect(gateways.mids('bob')).toEqual(['alice:m1']);
    await new Promise((r) => setTimeout(r, 2100)); // past both
    await delivery.retryDue();
    expect(gateways.mids('bob')).toEqual(['alice:m1', 'alice:m1']);
  });

  it('a replica that leaves while behind keeps its read position until it expires', async () => {
    const lagging = setup({ readUpTo: () => Date.now() - 5000 });
    await lagging.delivery.retryDue();
    await lagging.delivery.leave();
    expect(await lagging.store.readUpTo()).toBeLessThan(Date.now() - 4000);
    const caughtUp = setup({ store: lagging.store, replica: 'r2' });
    await caughtUp.delivery.retryDue();
    await caughtUp.delivery.leave();
    expect(await lagging.store.readUpTo()).toBeLessThan(Date.now() - 4000);
  });
});
