import { TOPICS } from '@parley/contracts';
import { MemoryBus } from '@parley/kafka';
import { createMetricsRegistry, Readiness, silentLogger } from '@parley/service-kit';
import { waitFor } from '@parley/test-kit';
import { createSessionService } from '../src/app';
import { MemorySessionStore } from '../src/store/memory-store';

function build(store: MemorySessionStore, bus = new MemoryBus(), pushed: string[] = []) {
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
});
