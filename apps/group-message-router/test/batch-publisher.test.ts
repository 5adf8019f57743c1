import { DeliverEvent, TOPICS } from '@parley/contracts';
import { MemoryBus } from '@parley/kafka';
import { BatchPublisher } from '../src/batch-publisher';

const deliver = (to: string): DeliverEvent => ({
  v: 1,
  kind: 'deliver',
  to,
  ephemeral: true,
  frame: { type: 'typing', from: 'a', to: 'g', chat: 'group' },
});

/** A MemoryBus that records the size of each publish call. */
function recordingBus() {
  const bus = new MemoryBus();
  const sizes: number[] = [];
  const publish = bus.publish.bind(bus);
  bus.publish = async (topic, events) => {
    sizes.push(events.length);
    return publish(topic, events);
  };
  return { bus, sizes };
}

describe('BatchPublisher', () => {
  it('publishes in batches of the configured size, in order, and the rest on flush', async () => {
    const { bus, sizes } = recordingBus();
    const publisher = new BatchPublisher(bus, TOPICS.delivery, { batchSize: 3 });
    await publisher.add(['u1', 'u2', 'u3', 'u4'].map(deliver));
    await publisher.add(['u5', 'u6', 'u7'].map(deliver));
    await publisher.flush();
    expect(sizes).toEqual([3, 3, 1]);
    expect(bus.events(TOPICS.delivery).map((e) => (e.kind === 'deliver' ? e.to : ''))).toEqual([
      'u1',
      'u2',
      'u3',
      'u4',
      'u5',
      'u6',
      'u7',
    ]);
  });

  it('counts each event for its weight: a batch goes once the weights reach the size', async () => {
    const { bus, sizes } = recordingBus();
    const weights = new Map([
      ['u1', 3],
      ['u2', 1],
      ['u3', 1],
      ['u4', 5],
    ]);
    const publisher = new BatchPublisher(bus, TOPICS.delivery, {
      batchSize: 4,
      weigh: (e) => (e.kind === 'deliver' ? weights.get(e.to)! : 1),
    });
    await publisher.add(['u1', 'u2', 'u3', 'u4'].map(deliver));
    await publisher.flush();
    expect(sizes).toEqual([2, 2]);
  });

  it('rejects flush when a batch could not be written', async () => {
    const failing = new MemoryBus();
    failing.publish = async () => {
      throw new Error('broker down');
    };
    const publisher = new BatchPublisher(failing, TOPICS.delivery, { batchSize: 2 });
    await publisher.add([deliver('u1'), deliver('u2')]);
    await expect(publisher.flush()).rejects.toThrow('broker down');
  });

  it('sends nothing more once a batch failed, so no later batch is written ahead of its retry', async () => {
    const bus = new MemoryBus();
    const publish = bus.publish.bind(bus);
    let calls = 0;
    bus.publish = async (topic, events) => {
      if (++calls === 1) throw new Error('refused');
      return publish(topic, events);
    };
    const publisher = new BatchPublisher(bus, TOPICS.delivery, { batchSize: 2 });
    await publisher.add([deliver('u1'), deliver('u2')]); // in flight, then refused
    await new Promise((resolve) => setImmediate(resolve));
    await expect(publisher.add([deliver('u3'), deliver('u4')])).rejects.toThrow('refused');
    await expect(publisher.flush()).rejects.toThrow('refused');
    expect(bus.events(TOPICS.delivery)).toEqual([]);
  });
});
