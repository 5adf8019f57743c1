import { MemoryBus, sleep } from '../src';
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

  test('close() stops its subscriptions, as the Kafka adapter does: the batch under way finishes, nothing after it is handled', async () => {
    const bus = new MemoryBus();
    const topic = noteTopic('closing');
    const handled: number[] = [];
    let started = false;
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const sub = bus.subscribe({
      groupId: 'g',
      topic,
      handle: async (batch) => {
        started = true;
        await held;
        handled.push(...batch.map((e) => e.event.n));
      },
    });
    await sub.start();
    await bus.publish(topic, [note(1)]);
    await waitFor(() => started, 5000, 'the first batch under way');
    await bus.publish(topic, [note(2)]);
    const closed = bus.close();
    release();
    await closed;
    expect(handled).toEqual([1]);
    await sleep(200); // a loop still running would take note 2 by now
    expect(handled).toEqual([1]);
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
