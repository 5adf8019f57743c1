import { Static, Type } from '@sinclair/typebox';
import { TopicSpec } from '@parley/contracts';
import { waitFor } from '@parley/test-kit';
import { BackgroundWork, Envelope, EventBus, sleep, TransientError } from '../../src';

const Note = Type.Object({
  kind: Type.Literal('test.note'),
  v: Type.Literal(1),
  id: Type.String(),
  n: Type.Integer(),
});
export type Note = Static<typeof Note>;
export const note = (n: number): Note => ({ kind: 'test.note', v: 1, id: `note-${n}`, n });

export interface BusUnderTest {
  bus: EventBus;
  /** A fresh topic, created (with one partition unless told) where the adapter needs that. */
  topic(partitions?: number): Promise<TopicSpec<Note>>;
  /** A consumer group id no other test uses. */
  groupId(): string;
}

export function noteTopic(name: string, partitions = 1): TopicSpec<Note> {
  return {
    name,
    schema: Note,
    key: (e) => e.id,
    description: 'bus contract test topic',
    partitions,
    retentionMs: 3600_000,
  };
}

/**
 * The EventBus port's contract, run against every adapter (MemoryBus, and the Kafka adapter on the
 * embedded broker and on a real Kafka): what the services rely on, whichever bus they are given.
 */
export function busContract(label: string, open: () => Promise<BusUnderTest>) {
  describe(`EventBus contract: ${label}`, () => {
    let under: BusUnderTest;
    const stops: Array<() => Promise<void>> = [];
    beforeAll(async () => {
      under = await open();
    });
    afterEach(async () => {
      for (const stop of stops.splice(0)) await stop();
    });
    afterAll(() => under.bus.close());

    const subscribe = (topic: TopicSpec<Note>, handle: (batch: Envelope<Note>[]) => Promise<void>) => {
      const subscription = under.bus.subscribe({ groupId: under.groupId(), topic, handle });
      stops.push(() => subscription.stop());
      return subscription;
    };

    test('publishes and hands over events in order, decoded, with their keys', async () => {
      const topic = await under.topic();
      const got: Envelope<Note>[] = [];
      await subscribe(topic, async (batch) => void got.push(...batch)).start();
      await under.bus.publish(topic, [note(1), note(2), note(3)]);
      await waitFor(() => got.length === 3, 15_000, 'three events');
      expect(got.map((e) => [e.event.n, e.key])).toEqual([
        [1, 'note-1'],
        [2, 'note-2'],
        [3, 'note-3'],
      ]);
    });

    test('partitioner tells the partition each key is written to', async () => {
      const topic = await under.topic(4);
      const got: Envelope<Note>[] = [];
      await subscribe(topic, async (batch) => void got.push(...batch)).start();
      const partitionOf = await under.bus.partitioner(topic);
      if (!partitionOf) throw new Error('the topic exists: its partitions are known');
      const notes = Array.from({ length: 24 }, (_, i) => note(i));
      await under.bus.publish(topic, notes);
      await waitFor(() => got.length === notes.length, 15_000, 'every event');
      for (const envelope of got)
        expect([envelope.key, envelope.partition]).toEqual([envelope.key, partitionOf(envelope.key)]);
    });

    test('a batch whose handler throws is handed over again (at-least-once)', async () => {
      const topic = await under.topic();
      let calls = 0;
      const handled: number[] = [];
      await subscribe(topic, async (batch) => {
        if (++calls === 1) throw new Error('downstream unavailable');
        handled.push(...batch.map((e) => e.event.n));
      }).start();
      await under.bus.publish(topic, [note(1)]);
      await waitFor(() => handled.length === 1, 15_000, 'the retried event');
      expect(handled).toEqual([1]);
      expect(calls).toBe(2);
    });

    test('a record its handler keeps failing on is set aside: its neighbours and later records are handled', async () => {
      const topic = await under.topic();
      const handled: number[] = [];
      await subscribe(topic, async (batch) => {
        if (batch.some((e) => e.event.n === 2)) throw new Error('note 2 breaks an invariant');
        handled.push(...batch.map((e) => e.event.n));
      }).start();
      await under.bus.publish(topic, [note(1), note(2), note(3)]);
      await waitFor(() => handled.length === 2, 20_000, 'the neighbours');
      await under.bus.publish(topic, [note(4)]);
      await waitFor(() => handled.includes(4), 15_000, 'a later record');
      expect(handled).toEqual([1, 3, 4]);
    }, 45_000);

    test('a failure of a dependency (transient) is retried past any attempt limit, and nothing is set aside', async () => {
      const topic = await under.topic();
      let failures = 0;
      const handled: number[] = [];
      await subscribe(topic, async (batch) => {
        if (failures < 6) {
          failures++;
          throw new TransientError('the database is unreachable');
        }
        handled.push(...batch.map((e) => e.event.n));
      }).start();
      await under.bus.publish(topic, [note(1), note(2)]);
      await waitFor(() => handled.length === 2, 30_000, 'both events');
      expect(handled).toEqual([1, 2]);
    }, 45_000);

    test('handledUpTo stays before an unhandled record and catches up once all are handled', async () => {
      const topic = await under.topic();
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      let firstWrittenAt: number | undefined;
      let handled = 0;
      const subscription = subscribe(topic, async (batch) => {
        firstWrittenAt ??= batch[0].timestamp;
        await held;
        handled += batch.length;
      });
      await subscription.start();
      await under.bus.publish(topic, [note(1), note(2)]);
      await waitFor(() => firstWrittenAt !== undefined, 15_000, 'the handler to hold the batch');
      await sleep(300);
      expect(subscription.handledUpTo()).toBeLessThan(firstWrittenAt!);

      release();
      await waitFor(() => handled === 2, 15_000, 'both events');
      const afterHandled = Date.now();
      await waitFor(() => subscription.handledUpTo() >= afterHandled, 5000, 'the read position to catch up');
    });

    test('rereadFrom hands over again what was written from a time on, and only that', async () => {
      const topic = await under.topic();
      const got: number[] = [];
      const subscription = subscribe(topic, async (batch) => void got.push(...batch.map((e) => e.event.n)));
      expect(await subscription.rereadFrom(0)).toBe(false); // not started: it holds no partition
      await subscription.start();
      await under.bus.publish(topic, [note(1), note(2)]);
      await waitFor(() => got.length === 2, 15_000, 'the first two');
      await sleep(20);
      const from = Date.now();
      await sleep(20);
      await under.bus.publish(topic, [note(3), note(4)]);
      await waitFor(() => got.length === 4, 15_000, 'the next two');
      expect(await subscription.rereadFrom(from)).toBe(true);
      await waitFor(() => got.length === 6, 15_000, 'what was written since, again');
      await under.bus.publish(topic, [note(5)]);
      await waitFor(() => got.length === 7, 15_000, 'a later record');
      expect(got).toEqual([1, 2, 3, 4, 3, 4, 5]);
    });

    test('rereadFrom asked while a batch is under way holds when the member stops: the group reads again', async () => {
      const topic = await under.topic();
      const groupId = under.groupId();
      const got: number[] = [];
      let release = () => undefined as void;
      const held = new Promise<void>((resolve) => (release = resolve));
      const member = () =>
        under.bus.subscribe({
          groupId,
          topic,
          handle: async (batch) => {
            got.push(...batch.map((e) => e.event.n));
            if (batch.some((e) => e.event.n === 3)) await held; // a long push to the gateways
          },
        });
      const from = Date.now() - 1;
      const first = member();
      stops.push(() => first.stop());
      await first.start();
      await under.bus.publish(topic, [note(1), note(2)]);
      await waitFor(() => got.length === 2, 15_000, 'the first two');
      await under.bus.publish(topic, [note(3)]);
      await waitFor(() => got.length === 3, 15_000, 'the third, under way');
      await first.rereadFrom(from);
      release();
      await first.stop(); // a deploy, or a rebalance, before the records came again
      const next = member();
      stops.push(() => next.stop());
      await next.start();
      await waitFor(() => got.length === 6, 15_000, 'what was written since, again');
      expect(got).toEqual([1, 2, 3, 1, 2, 3]);
    });

    describe('background work holds the commit below its oldest unfinished record', () => {
      /** Members of one group whose handler starts work on notes 2 and up; `finish` does what `atStop` lets it. */
      const setUp = async (atStop: (unfinished: Map<number, number>) => void) => {
        const topic = await under.topic();
        const groupId = under.groupId();
        const got: number[] = [];
        const unfinished = new Map<number, number>(); // note -> its record's offset
        const background: BackgroundWork = {
          oldestUnfinished: () => (unfinished.size ? Math.min(...unfinished.values()) : undefined),
          finish: async () => atStop(unfinished),
        };
        const member = (withWork: boolean) => {
          const subscription = under.bus.subscribe({
            groupId,
            topic,
            handle: async (batch) => {
              for (const { event, offset } of batch) {
                got.push(event.n);
                if (withWork && event.n >= 2) unfinished.set(event.n, Number(offset));
              }
            },
            background: withWork ? background : undefined,
          });
          stops.push(() => subscription.stop());
          return subscription;
        };
        const first = member(true);
        await first.start();
        // One publish each: events published together share a record (and its offset).
        for (const n of [1, 2, 3, 4]) await under.bus.publish(topic, [note(n)]);
        await waitFor(() => got.length === 4, 15_000, 'the four notes');
        const nextMember = async () => {
          await first.stop(); // a deploy, or a crash that finish() stands for
          await member(false).start();
          await under.bus.publish(topic, [note(5)]);
        };
        return { got, unfinished, nextMember };
      };

      test('work abandoned at stop is read again by the next member, from its oldest record', async () => {
        const { got, unfinished, nextMember } = await setUp((work) => work.delete(2)); // 3 and 4 abandoned
        unfinished.delete(4); // finished early, but behind 3: read again with it
        await nextMember();
        await waitFor(() => got.length === 7, 15_000, 'notes 3, 4 and 5');
        expect(got).toEqual([1, 2, 3, 4, 3, 4, 5]);
      });

      test('work finished by finish() at stop is committed: the next member reads on', async () => {
        const { got, nextMember } = await setUp((work) => work.clear());
        await nextMember();
        await waitFor(() => got.length === 5, 15_000, 'note 5');
        await sleep(500);
        expect(got).toEqual([1, 2, 3, 4, 5]);
      });
    });

    test('pause() stops deliveries and resume() starts them again', async () => {
      const topic = await under.topic();
      const handled: number[] = [];
      const subscription = subscribe(
        topic,
        async (batch) => void handled.push(...batch.map((e) => e.event.n)),
      );
      await subscription.start();
      await under.bus.publish(topic, [note(1)]);
      await waitFor(() => handled.length === 1, 15_000, 'the first event');
      subscription.pause();
      await under.bus.publish(topic, [note(2), note(3)]);
      await sleep(1000); // several fetch waits of either adapter
      expect(handled).toEqual([1]);
      subscription.resume();
      await waitFor(() => handled.length === 3, 15_000, 'the events published while paused');
      expect(handled).toEqual([1, 2, 3]);
    });

    test('close() stops its subscriptions: the batch under way finishes, nothing after it is handled', async () => {
      const own = await open(); // a bus of this test's own, to close
      const topic = await own.topic();
      const handled: number[] = [];
      let started = false;
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      const subscription = own.bus.subscribe({
        groupId: own.groupId(),
        topic,
        handle: async (batch) => {
          started = true;
          await held;
          handled.push(...batch.map((e) => e.event.n));
        },
      });
      stops.push(() => subscription.stop());
      await subscription.start();
      await own.bus.publish(topic, [note(1)]);
      await waitFor(() => started, 15_000, 'the first batch under way');
      await own.bus.publish(topic, [note(2)]);
      const closed = own.bus.close();
      release();
      await closed;
      expect(handled).toEqual([1]);
      await sleep(1000); // a consumer still running would have fetched note 2 by now
      expect(handled).toEqual([1]);
    });

    test('rereadFrom never moves past what is not handled yet', async () => {
      const topic = await under.topic();
      const got: number[] = [];
      const subscription = subscribe(topic, async (batch) => void got.push(...batch.map((e) => e.event.n)));
      await subscription.start();
      await under.bus.publish(topic, [note(1)]);
      await waitFor(() => got.length === 1, 15_000, 'the first');
      subscription.pause();
      await under.bus.publish(topic, [note(2), note(3)]);
      await sleep(300);
      await subscription.rereadFrom(Date.now() + 60_000); // after every record: nothing to read again
      subscription.resume();
      await waitFor(() => got.length === 3, 15_000, 'the records written while paused');
      expect(got).toEqual([1, 2, 3]);
    });
  });
}
