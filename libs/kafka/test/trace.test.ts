import pino from 'pino';
import { Type } from '@sinclair/typebox';
import {
  InboundEvent,
  tracePointsOf,
  TOPICS,
  type DeliveryTopicEvent,
  type TopicSpec,
} from '@parley/contracts';
import { createMessageTrace, NO_TRACE } from '@parley/service-kit';
import { waitFor } from '@parley/test-kit';
import { EventBus, MemoryBus, tracingBus } from '../src';

const deliver = (to: string, mid: string): DeliveryTopicEvent => ({
  v: 1,
  kind: 'deliver',
  to,
  frame: {
    type: 'message',
    mid,
    id: 'c1',
    from: mid.split(':')[0]!,
    to,
    chat: 'direct',
    body: 'hi',
    sentAt: 1,
  },
});

function tracedBus(inner: EventBus) {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { bus: tracingBus(inner, createMessageTrace(['alice'], logger)), lines };
}

describe('tracingBus', () => {
  it("logs each traced user's event once published and once handed to a subscriber, and no one else's", async () => {
    const { bus, lines } = tracedBus(new MemoryBus());
    const handled: string[] = [];
    const sub = bus.subscribe({
      groupId: 'session-ms',
      topic: TOPICS.delivery,
      handle: async (batch) => void handled.push(...batch.map((e) => tracePointsOf(e.event)!.mids[0]!)),
    });
    await sub.start();
    await bus.publish(TOPICS.delivery, [deliver('bob', 'alice:c1'), deliver('carol', 'bob:c2')]);
    await waitFor(() => handled.length === 2, 5000, 'both handled');
    await sub.stop();
    expect(handled).toEqual(['alice:c1', 'bob:c2']);
    // The MemoryBus hands events over before publish() resolves: the order of the two lines is its own.
    const fields = ({ hop, topic, kind, to, mids, traced, group }: Record<string, unknown>) => ({
      hop,
      topic,
      kind,
      to,
      mids,
      traced,
      group,
    });
    const seen = {
      topic: 'parley.delivery.v1',
      kind: 'deliver',
      to: 'bob',
      mids: ['alice:c1'],
      traced: ['alice'],
    };
    expect(lines.map(fields)).toEqual(
      expect.arrayContaining([
        { hop: 'published', ...seen, group: undefined },
        { hop: 'consumed', ...seen, group: 'session-ms' },
      ]),
    );
    expect(lines).toHaveLength(2);
  });

  it('logs a publish that failed, and still fails it', async () => {
    class RefusingBus extends MemoryBus {
      override async publish(): Promise<void> {
        throw new Error('Kafka refused');
      }
    }
    const { bus, lines } = tracedBus(new RefusingBus());
    await expect(bus.publish(TOPICS.delivery, [deliver('bob', 'alice:c1')])).rejects.toThrow('Kafka refused');
    expect(lines).toEqual([expect.objectContaining({ hop: 'publish failed', mids: ['alice:c1'] })]);
  });

  it('publishes and hands over an event whose frame it cannot read, as the bus does: tracing never fails either', async () => {
    // message-router reads the inbound topic with any frame (one a newer gateway took) and
    // refuses it to its sender itself; nothing may fail such a record before its handler does.
    const anyFrame = Type.Object({ ...InboundEvent.properties, frame: Type.Unknown() });
    const loose: TopicSpec<unknown> = { ...TOPICS.inbound, schema: anyFrame } as TopicSpec<unknown>;
    const inner = new MemoryBus({ maxAttempts: 1 });
    const { bus, lines } = tracedBus(inner);
    const handled: unknown[] = [];
    const sub = bus.subscribe({
      groupId: 'message-router',
      topic: loose,
      handle: async (batch) => void handled.push(...batch.map((e) => e.event)),
    });
    await sub.start();
    const odd = [null, { type: 'ack' }, { type: 'group', op: 'add', members: 5 }].map((frame) => ({
      v: 1,
      kind: 'inbound',
      from: 'alice',
      sentAt: 1,
      frame,
    }));
    await bus.publish(loose, odd);
    await waitFor(() => handled.length === 3, 5000, 'all three handled');
    await sub.stop();
    expect(inner.deadLetters(loose)).toEqual([]);
    expect(lines).toEqual([]);
  });

  it('is the bus itself when nobody is traced', () => {
    const inner = new MemoryBus();
    expect(tracingBus(inner, NO_TRACE)).toBe(inner);
  });
});
