import { Type } from '@sinclair/typebox';
import { TOPICS, InboundEvent, TopicSpec, TYPING_NOTICE_MAX_AGE_MS } from '@parley/contracts';
import { MemoryBus } from '@parley/kafka';
import { createMetricsRegistry, Readiness, silentLogger } from '@parley/service-kit';
import { createMessageRouter, MessageRouter } from '../src/app';
import { INBOUND_RECORDS } from '../src/route';
import { waitFor } from '@parley/test-kit';

const started: MessageRouter[] = [];
afterEach(() => Promise.all(started.splice(0).map((router) => router.stop())));

async function startRouter() {
  const bus = new MemoryBus();
  const readiness = new Readiness();
  readiness.register('kafka', () => bus.ping());
  const router = createMessageRouter({
    bus,
    logger: silentLogger(),
    metrics: createMetricsRegistry('message-router', { collectDefaults: false }),
    readiness,
    port: 0,
    host: '127.0.0.1',
  });
  await router.start();
  started.push(router);
  return { bus, readiness, router };
}

describe('message-router service', () => {
  it('consumes inbound frames and publishes the routed events, serving its probes', async () => {
    const { bus, readiness, router } = await startRouter();
    const inbound: InboundEvent = {
      v: 1,
      kind: 'inbound',
      from: 'alice',
      sentAt: 1,
      frame: { type: 'message', id: 'c1', to: 'bob', chat: 'direct', body: 'hi' },
    };
    await bus.publish(TOPICS.inbound, [
      inbound,
      { ...inbound, frame: { type: 'group', id: 'c2', op: 'leave', group: 'g1' } },
    ]);
    await waitFor(() => bus.events(TOPICS.delivery).length === 1 && bus.events(TOPICS.group).length === 1);
    expect(bus.events(TOPICS.delivery)[0]).toMatchObject({ to: 'bob', frame: { mid: 'alice:c1' } });
    expect((await router.http.inject('/readyz')).statusCode).toBe(200);
    expect((await router.http.inject('/metrics')).body).toContain(
      'parley_router_frames_total{type="message",service="message-router"} 1',
    );
    await router.stop();
    expect((await readiness.report()).ready).toBe(false);
  });

  it('sends a frame it cannot route back to its sender as an error deliverable, and routes the rest', async () => {
    const { bus, router } = await startRouter();
    const origin = { v: 1, kind: 'inbound', from: 'alice', sentAt: 1 } as const;
    // As a newer gateway writes them: a frame type and a group op this router does not know.
    await bus.publish(INBOUND_RECORDS, [
      { ...origin, frame: { type: 'reaction', id: 'r1', to: 'bob', emoji: '+1' } },
      { ...origin, frame: { type: 'group', id: 'c2', op: 'archive', group: 'g1' } },
      { ...origin, frame: { type: 'message', id: 'c3', to: 'bob', body: 'hi' } },
    ]);
    await waitFor(() => bus.events(TOPICS.delivery).length === 3);
    expect(bus.events(TOPICS.delivery)).toEqual([
      {
        v: 1,
        kind: 'deliver',
        to: 'alice',
        frame: {
          type: 'error',
          mid: '~err:alice:r1',
          id: 'r1',
          code: 'invalid_frame',
          message: 'cannot route this frame: type: must be one of message, ack, read, group, typing',
        },
      },
      {
        v: 1,
        kind: 'deliver',
        to: 'alice',
        frame: {
          type: 'error',
          mid: '~err:alice:c2',
          id: 'c2',
          code: 'invalid_frame',
          message: 'cannot route this frame: op: must be one of create, add, remove, leave, rename',
        },
      },
      expect.objectContaining({ to: 'bob', frame: expect.objectContaining({ mid: 'alice:c3' }) }),
    ]);
    expect(bus.events(TOPICS.group)).toEqual([]);
    const metrics = (await router.http.inject('/metrics')).body;
    expect(metrics).toContain('parley_router_refused_total{service="message-router"} 2');
    expect(metrics).toContain('parley_router_frames_total{type="message",service="message-router"} 1');
  });

  it('drops a typing notice written too long ago to matter (a backlog): it is about the moment', async () => {
    const { bus } = await startRouter();
    const typing = (from: string, sentAt: number): InboundEvent => ({
      v: 1,
      kind: 'inbound',
      from,
      sentAt,
      frame: { type: 'typing', to: 'bob', chat: 'direct' },
    });
    const now = Date.now();
    await bus.publish(TOPICS.inbound, [
      typing('stale', now - TYPING_NOTICE_MAX_AGE_MS - 1000),
      {
        ...typing('stale', now - TYPING_NOTICE_MAX_AGE_MS - 1000),
        frame: { type: 'typing', to: 'g1', chat: 'group' },
      },
      typing('fresh', now),
      {
        v: 1,
        kind: 'inbound',
        from: 'stale',
        sentAt: now - TYPING_NOTICE_MAX_AGE_MS - 1000,
        frame: { type: 'message', id: 'c1', to: 'bob', chat: 'direct', body: 'hi' },
      },
    ]);
    await waitFor(() => bus.events(TOPICS.delivery).length >= 2);
    // A message is no notice: however old, it is routed.
    expect(bus.events(TOPICS.delivery)).toEqual([
      expect.objectContaining({
        to: 'bob',
        ephemeral: true,
        frame: expect.objectContaining({ from: 'fresh' }),
      }),
      expect.objectContaining({ to: 'bob', frame: expect.objectContaining({ mid: 'stale:c1' }) }),
    ]);
    expect(bus.events(TOPICS.group)).toEqual([]);
  });

  it('parks a record of a newer contract version on the DLQ with the reason, and routes what follows it', async () => {
    const { bus, router } = await startRouter();
    // As a gateway of a later release writes it: an envelope version this router does not know.
    const anyRecord: TopicSpec<unknown> = { ...INBOUND_RECORDS, schema: Type.Unknown(), key: () => 'alice' };
    const newer = { v: 2, kind: 'inbound', from: 'alice', sentAt: 1, frame: { type: 'message', id: 'n1' } };
    await bus.publish(anyRecord, [newer]);
    await bus.publish(TOPICS.inbound, [
      {
        v: 1,
        kind: 'inbound',
        from: 'alice',
        sentAt: 2,
        frame: { type: 'message', id: 'c1', to: 'bob', chat: 'direct', body: 'hi' },
      },
    ]);
    await waitFor(() => bus.events(TOPICS.delivery).length === 1, 5000, 'the record behind it routed');
    expect(bus.events(TOPICS.delivery)[0]).toMatchObject({ to: 'bob', frame: { mid: 'alice:c1' } });
    expect(bus.deadLetters(anyRecord)).toEqual([
      { event: newer, error: expect.stringMatching(/^parley\.inbound\.v1: v: must be 1/) },
    ]);
    await router.stop(); // the consumer is still running, not broken
  });
});
