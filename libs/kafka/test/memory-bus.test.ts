import { MemoryBus } from '../src';
import { busContract, note, Note, noteTopic } from './support/bus-contract';

let n = 0;
busContract('MemoryBus', async () => {
  const bus = new MemoryBus();
  return { bus, topic: async () => noteTopic(`memory-${++n}`), groupId: () => `group-${++n}` };
});

describe('MemoryBus as a test double', () => {
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
