import { INTERNAL_SECRET_HEADER, INTERNAL_USER_HEADER, TOPICS } from '@parley/contracts';
import { MemoryBus, SubscribeOptions } from '@parley/kafka';
import { createMetricsRegistry, Readiness, silentLogger } from '@parley/service-kit';
import { waitFor } from '@parley/test-kit';
import { createSessionService } from '../src/app';
import { MemorySessionStore } from '../src/store/memory-store';
import { SessionStore } from '../src/store/session-store';
import { redisStore } from './support/redis-store';

function build(store: SessionStore, bus = new MemoryBus(), pushed: string[] = []) {
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
    metrics: createMetricsRegistry('session-ms', { collectDefaults: false }),
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
    await bus.publish(TOPICS.connections, [
      { v: 1, kind: 'connection-up', user: 'bob', connId: 'c1', gateway: 'gw', gatewayUrl: 'http://gw', at },
    ]);
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
      await bus.publish(TOPICS.connections, [
        {
          v: 1,
          kind: 'connection-up',
          user: 'bob',
          connId: 'c1',
          gateway: 'gw',
          gatewayUrl: 'http://gw',
          at,
        },
      ]);
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
