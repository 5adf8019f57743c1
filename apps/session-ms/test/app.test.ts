import { MemoryBus } from '@parley/kafka';
import { createMetricsRegistry, Readiness, silentLogger } from '@parley/service-kit';
import { waitFor } from '@parley/test-kit';
import { createSessionService } from '../src/app';
import { MemorySessionStore } from '../src/store/memory-store';

describe('createSessionService', () => {
  it('reports its read position while running and withdraws it when it stops', async () => {
    const store = new MemorySessionStore();
    const service = createSessionService({
      bus: new MemoryBus(),
      store,
      gateways: { send: async (_url, deliveries) => deliveries.map(() => ({ written: 1 })) },
      settings: {
        ackTimeoutMs: 1000,
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
});
