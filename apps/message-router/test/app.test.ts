import { TOPICS, InboundEvent } from '@parley/contracts';
import { MemoryBus } from '@parley/kafka';
import { createMetricsRegistry, Readiness, silentLogger } from '@parley/service-kit';
import { createMessageRouter } from '../src/app';
import { waitFor } from '@parley/test-kit';


describe('message-router service', () => {
  it('consumes inbound frames and publishes the routed events, serving its probes', async () => {
    const bus = new MemoryBus();
    const readiness = new Readiness();
    readiness.register('kafka', () => bus.ping());
    const router = createMessageRouter({ bus, logger: silentLogger(), metrics: createMetricsRegistry('message-router', { collectDefaults: false }), readiness, port: 0, host: '127.0.0.1' });
    await router.start();
    const inbound: InboundEvent = { v: 1, kind: 'inbound', from: 'alice', sentAt: 1, frame: { type: 'message', id: 'c1', to: 'bob', chat: 'direct', body: 'hi' } };
    await bus.publish(TOPICS.inbound, [inbound, { ...inbound, frame: { type: 'group', id: 'c2', op: 'leave', group: 'g1' } }]);
    await waitFor(() => bus.events(TOPICS.delivery).length === 1 && bus.events(TOPICS.group).length === 1);
    expect(bus.events(TOPICS.delivery)[0]).toMatchObject({ to: 'bob', frame: { mid: 'alice:c1' } });
    expect((await router.http.inject('/readyz')).statusCode).toBe(200);
    expect((await router.http.inject('/metrics')).body).toContain('parley_router_frames_total{type="message",service="message-router"} 1');
    await router.stop();
    expect((await readiness.report()).ready).toBe(false);
  });
});
