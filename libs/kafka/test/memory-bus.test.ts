import { BackgroundWork, isTransient, MemoryBus, sleep } from '../src';
import { waitFor } from '@parley/test-kit';
import { busContract, note, Note, noteTopic } from './support/bus-contract';

let n = 0;
busContract('MemoryBus', async () => {
  const bus = new MemoryBus();
  return { bus, topic: async () => noteTopic(`memory-${++n}`), groupId: () => `group-${++n}` };
});

describe('MemoryBus as a test double', () => {
  test('sets a record its handler keeps failing on aside on the DLQ, with the error, after maxAttempts', async () => {
    const bus = new MemoryBus({ maxAttempts: 3 });
    const topic = noteTopic('poison');
    let failures = 0;
    const sub = bus.subscribe({
      groupId: 'g',
      topic,
      handle: async (batch) => {
        if (!batch.some((e) => e.event.n === 2)) return;
        failures++;
        throw new Error('note 2 breaks an invariant');
      },
    });
    await sub.start();
    await bus.publish(topic, [note(1), note(2), note(3)]);
    await waitFor(() => bus.deadLetters(topic).length === 1, 5000, 'the parked record');
    await sub.stop();
    expect(bus.deadLetters(topic)).toEqual([{ event: note(2), error: 'note 2 breaks an invariant' }]);
    expect(failures).toBe(6); // 3 for the batch, 3 for the record alone
  });

  // Its members share its one partition; a Kafka group hands a leaving member's partitions on from
  // the group's committed offset, which the leaving member's last commit held below what it abandoned.
  test('a member that stops leaves the work it abandons to the members of its group still running', async () => {
    const bus = new MemoryBus();
    const topic = noteTopic('handover');
    const got: string[] = [];
    const unfinished = new Map<number, number>(); // the first member's work: note -> its offset
    const background: BackgroundWork = {
      oldestUnfinished: () => (unfinished.size ? Math.min(...unfinished.values()) : undefined),
      finish: async () => void unfinished.delete(1), // 2 abandoned
    };
    const first = bus.subscribe({
      groupId: 'g',
      topic,
      background,
      handle: async (batch) => {
        for (const { event, offset } of batch) {
          got.push(`first ${event.n}`);
          unfinished.set(event.n, Number(offset));
        }
      },
    });
    const second = bus.subscribe({
      groupId: 'g',
      topic,
      handle: async (batch) => void got.push(...batch.map(({ event }) => `second ${event.n}`)),
    });
    await first.start();
    await second.start();
    second.pause(); // the first member handles 1 and 2
    await bus.publish(topic, [note(1), note(2)]);
    await waitFor(() => got.length === 2, 5000, 'notes 1 and 2');
    second.resume();
    await first.stop(); // a deploy: the second member goes on alone
    await bus.publish(topic, [note(3)]);
    await waitFor(() => got.includes('second 3'), 5000, 'note 3');
    await sleep(200);
    await second.stop();
    expect(got).toEqual(['first 1', 'first 2', 'second 2', 'second 3']);
  });

  test('fails the publishes refusePublish picks as an unreachable Kafka does, and writes nothing of them', async () => {
    const bus = new MemoryBus();
    const topic = noteTopic('outage');
    bus.refusePublish = (events) => events.some((e) => (e as Note).n === 2);
    await bus.publish(topic, [note(1)]);
    const refused = bus.publish(topic, [note(2), note(3)]);
    await expect(refused).rejects.toThrow('kafka is unreachable');
    expect(isTransient(await refused.catch((err: unknown) => err))).toBe(true);
    bus.refusePublish = () => false;
    await bus.publish(topic, [note(4)]);
    expect(bus.events(topic)).toEqual([note(1), note(4)]);
  });

  // Stricter than the Kafka adapter, which leaves the check to consumers (a DLQ there): a unit test
  // learns at the publish call that a service wrote what its consumers would refuse.
  test('refuses a publish that breaks the topic schema and writes nothing of it', async () => {
    const bus = new MemoryBus();
    const topic = noteTopic('strict');
    await expect(bus.publish(topic, [note(1), { ...note(2), n: 'two' } as unknown as Note])).rejects.toThrow(
      'strict: n: must be integer',
    );
    expect(bus.events(topic)).toEqual([]);
  });
});
