import { INTERNAL_SECRET_HEADER, INTERNAL_USER_HEADER, TOPICS, TopicSpec } from '@parley/contracts';
import {
  createKafkaBus,
  EventBus,
  MemoryBus,
  provisionTopics,
  startBroker,
  SubscribeOptions,
} from '@parley/kafka';
import { Kafka, logLevel } from 'kafkajs';
import { createMetricsRegistry, Readiness, silentLogger } from '@parley/service-kit';
import { waitFor } from '@parley/test-kit';
import { createSessionService } from '../src/app';
import { MemorySessionStore } from '../src/store/memory-store';
import { SessionStore } from '../src/store/session-store';
import { RedisSessionStore } from '../src/store/redis-store';
import { ownRedisServers, ownReplicaOf } from './support/own-redis';
import { redisStore } from './support/redis-store';

/** Bob's phone connected through gateway `gw`, as the connections topic carries it. */
const bobsPhoneUp = (at = Date.now()) => ({
  v: 1 as const,
  kind: 'connection-up' as const,
  user: 'bob',
  connId: 'c1',
  gateway: 'gw',
  gatewayUrl: 'http://gw',
  at,
});

function build(
  store: SessionStore,
  bus: EventBus = new MemoryBus(),
  pushed: string[] = [],
  metrics = createMetricsRegistry('session-ms', { collectDefaults: false }),
) {
  return createSessionService({
    bus,
    store,
    gateways: {
      send: async (_url, deliveries) => {
        pushed.push(...deliveries.map((d) => d.to));
        return deliveries.map(() => ({ written: 1 }));
      },
      announce: async () => undefined,
    },
    settings: {
      ackTimeoutMs: 60_000,
      maxAttempts: 3,
      rememberAckedMs: 60_000,
      gatewayTtlMs: 60_000,
      retryTickMs: 10,
    },
    internalSecret: 'secret',
    port: 0,
    host: '127.0.0.1',
    logger: silentLogger(),
    metrics,
    readiness: new Readiness(),
  });
}

describe('createSessionService', () => {
  it('reports its read position while running and withdraws it when it stops', async () => {
    const store = new MemorySessionStore();
    const service = build(store);
    await service.start();
    try {
      let reported: number | undefined;
      await waitFor(async () => (reported = await store.readUpTo()) !== undefined, 5000, 'a read position');
      expect(reported).toBeGreaterThan(Date.now() - 5000);
    } finally {
      await service.stop();
    }
    expect(await store.readUpTo()).toBeUndefined();
  });

  it('hands what awaits an ack to storage when it stops, its store being in memory', async () => {
    const bus = new MemoryBus();
    const pushed: string[] = [];
    const service = build(new MemorySessionStore(), bus, pushed);
    await service.start();
    const at = Date.now();
    await bus.publish(TOPICS.connections, [bobsPhoneUp(at)]);
    const frame = (id: string) => ({
      type: 'message' as const,
      mid: `alice:${id}`,
      id,
      from: 'alice',
      to: 'bob',
      chat: 'direct' as const,
      body: id,
      sentAt: at,
    });
    await bus.publish(TOPICS.delivery, [
      { v: 1, kind: 'deliver', to: 'bob', frame: frame('m1') },
      { v: 1, kind: 'deliver', to: 'bob', frame: frame('m2') },
    ]);
    await waitFor(() => pushed.length >= 2, 5000, 'both pushed');
    await bus.publish(TOPICS.delivery, [{ v: 1, kind: 'ack', user: 'bob', mids: ['alice:m2'], at }]);
    const receipts = () =>
      bus.events(TOPICS.delivery).filter((e) => e.kind === 'deliver' && e.to === 'alice');
    await waitFor(() => receipts().length === 1, 5000, 'm2 acked');
    const bobsStored = () => bus.events(TOPICS.offline).filter((e) => e.kind === 'offline' && e.to === 'bob');
    expect(bobsStored()).toEqual([]);
    await service.stop();
    expect(bobsStored()).toEqual([
      expect.objectContaining({
        kind: 'offline',
        to: 'bob',
        frame: expect.objectContaining({ mid: 'alice:m1' }),
      }),
    ]);
  });

  it('drops what awaits the ack of a user whose account is erased, unstored, and forgets when they were last seen', async () => {
    const bus = new MemoryBus();
    const pushed: string[] = [];
    const store = new MemorySessionStore();
    const service = build(store, bus, pushed);
    await service.start();
    const at = Date.now();
    const up = { v: 1 as const, user: 'dora', connId: 'c1', gateway: 'gw', gatewayUrl: 'http://gw', at };
    await bus.publish(TOPICS.connections, [{ ...up, kind: 'connection-up' }]);
    await bus.publish(
      TOPICS.delivery,
      ['m1', 'm2'].map((id) => ({
        v: 1 as const,
        kind: 'deliver' as const,
        to: 'dora',
        frame: {
          type: 'message' as const,
          mid: `alice:${id}`,
          id,
          from: 'alice',
          to: 'dora',
          chat: 'direct' as const,
          body: id,
          sentAt: at,
        },
      })),
    );
    await waitFor(() => pushed.length >= 2, 5000, 'both pushed');
    await bus.publish(TOPICS.connections, [{ ...up, kind: 'connection-down', at: at + 1 }]);
    await waitFor(async () => (await store.presence(['dora']))[0].lastSeen !== null, 5000, 'dora seen');
    const erase = () =>
      service.http.inject({
        method: 'DELETE',
        url: '/internal/account',
        headers: { [INTERNAL_SECRET_HEADER]: 'secret', [INTERNAL_USER_HEADER]: 'dora' },
      });
    try {
      expect((await erase()).json()).toEqual({ erased: 2 });
      expect(await store.presence(['dora'])).toEqual([{ user: 'dora', online: false, lastSeen: null }]);
      expect((await erase()).json()).toEqual({ erased: 0 });
    } finally {
      await service.stop();
    }
    expect(bus.events(TOPICS.offline).filter((e) => e.kind === 'offline' && e.to === 'dora')).toEqual([]);
  });

  it('lets a re-read being asked for finish before its consumer stops: the next reader of the partitions reads again what awaited an ack', async () => {
    const { store, wipe, has, close } = redisStore();
    // The delivery subscription's re-read answers once the test lets it (a broker slow to answer).
    const bus = new MemoryBus();
    const subscribe = bus.subscribe.bind(bus);
    let answer!: () => void;
    const answered = new Promise<void>((resolve) => (answer = resolve));
    let asked = false;
    bus.subscribe = <T>(options: SubscribeOptions<T>) => {
      const subscription = subscribe(options);
      if (options.topic !== TOPICS.delivery) return subscription;
      return {
        ...subscription,
        rereadFrom: async (time: number) => {
          asked = true;
          await answered;
          return subscription.rereadFrom(time);
        },
      };
    };
    const pushed: string[] = [];
    const first = build(store, bus, pushed);
    let second: ReturnType<typeof build> | undefined;
    try {
      await first.start();
      await waitFor(() => has('epoch'), 5000, 'a retry round');
      const at = Date.now();
      await bus.publish(TOPICS.connections, [bobsPhoneUp(at)]);
      await waitFor(async () => (await store.connectionsOf(['bob'])).has('bob'), 5000, "bob's phone");
      const frame = { type: 'message' as const, mid: 'alice:m1', id: 'm1', from: 'alice', to: 'bob' };
      await bus.publish(TOPICS.delivery, [
        { v: 1, kind: 'deliver', to: 'bob', frame: { ...frame, chat: 'direct', body: 'm1', sentAt: at } },
      ]);
      // Once, or twice: the push to a device that connects may find m1 pending too (a deliver read
      // while the connect's store calls were answered; the device dedups by mid).
      await waitFor(() => pushed.length >= 1, 5000, 'm1 pushed');
      await new Promise((resolve) => setTimeout(resolve, 100)); // m1's deliver event committed
      await wipe(); // Redis restarts empty: m1, pushed and not acked, is gone
      await waitFor(() => asked, 5000, 'the re-read asked');
      const stopping = first.stop(); // a rollout stops the replica while the ask is under way
      await new Promise((resolve) => setTimeout(resolve, 100));
      answer();
      await stopping;
      second = build(store, bus, pushed);
      await second.start();
      // The store lost bob's phone too (his gateway has not announced it): m1 goes to storage.
      await waitFor(
        () => bus.events(TOPICS.offline).some((e) => e.kind === 'offline' && e.to === 'bob'),
        5000,
        'm1 read again by the next reader',
      );
    } finally {
      answer();
      await first.stop();
      await second?.stop();
      await close();
    }
  });
});

// Redis replicates asynchronously: a failover to a replica that lagged lost the tracking written
// just before it, while the offsets of the delivery events that wrote it were committed already:
// those deliverables were never pushed again nor stored.
describe('createSessionService committing delivery offsets, Redis with a replica', () => {
  const ownRedisServer = ownRedisServers();

  /**
   * session-ms on a broker of its own and a Redis with one replica, waiting for `waitReplicas`:
   * bob connected, one deliverable tracked per `deliver`.
   */
  const started = async (waitReplicas: number) => {
    const broker = await startBroker({ logger: silentLogger() });
    const kafka = new Kafka({ brokers: [broker.address], logLevel: logLevel.NOTHING });
    await provisionTopics(kafka, { topics: [TOPICS.delivery, TOPICS.connections] as TopicSpec<never>[] });
    const primary = (await ownRedisServer()).port;
    const replica = await ownReplicaOf(ownRedisServer, primary);
    const store = RedisSessionStore.connect(`redis://127.0.0.1:${primary}`, 'wait:', {
      replicaWait: { replicas: waitReplicas, timeoutMs: 100 },
    });
    const bus = createKafkaBus({ kafka, logger: silentLogger(), packEvents: false });
    const metrics = createMetricsRegistry('session-ms', { collectDefaults: false });
    const service = build(store, bus, [], metrics);
    const admin = kafka.admin();
    await admin.connect();
    const stop = async () => {
      replica.server.kill('SIGCONT');
      await service.stop();
      await Promise.all([admin.disconnect(), bus.close(), store.close()]);
      await broker.stop();
    };
    try {
      await service.start();
      await bus.publish(TOPICS.connections, [bobsPhoneUp()]);
      await waitFor(async () => (await store.connectionsOf(['bob'])).has('bob'), 15_000, "bob's phone");
    } catch (err) {
      await stop();
      throw err;
    }
    const deliver = async (id: string) => {
      const frame = { type: 'message' as const, mid: `alice:${id}`, id, from: 'alice', to: 'bob' };
      await bus.publish(TOPICS.delivery, [
        {
          v: 1,
          kind: 'deliver',
          to: 'bob',
          frame: { ...frame, chat: 'direct', body: id, sentAt: Date.now() },
        },
      ]);
      await waitFor(
        async () =>
          (await store.pendingOf(['bob'])).get('bob')?.some((p) => p.mid === `alice:${id}`) === true,
        10_000,
        `${id} tracked`,
      );
    };
    /** The delivery records session-ms has committed (one a deliver). */
    const committed = async () => {
      const [{ partitions }] = await admin.fetchOffsets({
        groupId: 'session-ms',
        topics: [TOPICS.delivery.name],
      });
      return partitions.reduce((sum, p) => sum + Math.max(0, Number(p.offset)), 0);
    };
    const held = async () =>
      (await metrics.getSingleMetric('parley_session_commits_held_total')!.get()).values.reduce(
        (sum, v) => sum + v.value,
        0,
      );
    return { replica: replica.server, deliver, committed, held, stop };
  };

  it('commits no offset past writes its replica lacks (stopped), and commits them once it has them', async () => {
    const { replica, deliver, committed, held, stop } = await started(1);
    try {
      await deliver('m1');
      await waitFor(async () => (await committed()) === 1, 10_000, 'm1 committed');
      replica.kill('SIGSTOP'); // it gets nothing more
      await deliver('m2');
      await deliver('m3');
      await new Promise((resolve) => setTimeout(resolve, 1500)); // three commit intervals
      expect(await committed()).toBe(1);
      expect(await held()).toBeGreaterThan(0);
      replica.kill('SIGCONT');
      await waitFor(async () => (await committed()) === 3, 10_000, 'm2 and m3 committed');
    } finally {
      await stop();
    }
  }, 60_000);

  it('commits as before without REDIS_WAIT_REPLICAS, the replica stopped', async () => {
    const { replica, deliver, committed, held, stop } = await started(0);
    try {
      replica.kill('SIGSTOP');
      await deliver('m1');
      await deliver('m2');
      await waitFor(async () => (await committed()) === 2, 10_000, 'm1 and m2 committed');
      expect(await held()).toBe(0);
    } finally {
      await stop();
    }
  }, 60_000);
});
