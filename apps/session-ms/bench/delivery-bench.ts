/**
 * session-ms's own cost per group delivery, without Kafka or sockets: deliveries per second.
 *
 *   npx tsx apps/session-ms/bench/delivery-bench.ts [messages=200] [members=1000] [acked=1000000]
 *
 * What a group fan-out costs session-ms in the fleet, on the in-process store: `deliver-many`
 * events for every member (over the delivery topic's 12 partitions), each member's acks (one ack
 * event per member for every 20 messages, as the bench's clients ack every 50 ms), and the receipts
 * these produce, with each gateway call
 * serialized as the HTTP client does and each published event encoded as the Kafka bus does.
 * The store first remembers `acked` acked mids, as after a long run (the full bench's ramp leaves
 * about a million). Run it under `node --trace-gc --import tsx` to count the collections.
 */
import { performance } from 'node:perf_hooks';
import {
  AckEvent,
  deliverToMany,
  DeliveryTopicEvent,
  GatewayDelivery,
  TopicSpec,
  TOPICS,
} from '@parley/contracts';
import { EventBus, MemoryBus, provisionedPartitioner, TopicCodec } from '@parley/kafka';
import { createMetricsRegistry, silentLogger } from '@parley/service-kit';
import { Delivery } from '../src/delivery';
import { GatewayClient, sharingFrames } from '../src/gateway-client';
import { MemorySessionStore } from '../src/store/memory-store';

const MESSAGES = Number(process.argv[2] ?? 200);
const MEMBERS = Number(process.argv[3] ?? 1000);
const ACKED = Number(process.argv[4] ?? 1_000_000);
const members = Array.from({ length: MEMBERS }, (_, i) => `user-${i}`);
const SENDERS = members.slice(0, 10);

/** Serializes each call's body as the HTTP client does; every socket takes the frame. */
const gateways: GatewayClient = {
  async send(_url: string, deliveries: GatewayDelivery[]) {
    Buffer.from(JSON.stringify(sharingFrames(deliveries)));
    return deliveries.map((d) => ({ written: d.connIds?.length ?? 0 }));
  },
  announce: async () => undefined,
};

/** Encodes what is published, as the Kafka bus does, and keeps nothing. */
function encodingBus(): EventBus {
  const inner = new MemoryBus();
  const codecs = new Map<string, TopicCodec<unknown>>();
  return {
    async publish<T>(topic: TopicSpec<T>, events: T[]) {
      let codec = codecs.get(topic.name);
      if (!codec) codecs.set(topic.name, (codec = new TopicCodec(topic as TopicSpec<unknown>)));
      for (const event of events) codec.encode(event);
    },
    subscribe: (options) => inner.subscribe(options),
    partitioner: () => inner.partitioner(),
    ping: () => inner.ping(),
    close: () => inner.close(),
  };
}

const partitionOf = provisionedPartitioner(TOPICS.delivery);

function groupMessage(i: number): DeliveryTopicEvent[] {
  const from = SENDERS[i % SENDERS.length]!;
  const frame = {
    type: 'message',
    mid: `${from}:m${i}`,
    id: `m${i}`,
    from,
    to: 'bench-group',
    chat: 'group',
    body: { text: `hello number ${i}` },
    sentAt: Date.now(),
  } as const;
  return deliverToMany(
    members.filter((m) => m !== from),
    frame,
    partitionOf,
  );
}

/** How many messages a member acks at once: the bench clients ack every 50 ms, about 20 mids at a time. */
const ACK_EVERY = 20;

/** Each member's ack of messages `from`..`to` (those not its own), as message-router publishes them. */
function acksOf(from: number, to: number): AckEvent[] {
  return members.map((user) => {
    const mids: string[] = [];
    for (let i = from; i < to; i++) {
      const sender = SENDERS[i % SENDERS.length]!;
      if (sender !== user) mids.push(`${sender}:m${i}`);
    }
    return { v: 1, kind: 'ack', user, mids, at: Date.now() };
  });
}

async function run(messages: number, delivery: Delivery, offset: number): Promise<number> {
  const start = performance.now();
  for (let i = offset; i < offset + messages; i++) {
    await delivery.handle(groupMessage(i));
    if ((i + 1 - offset) % ACK_EVERY !== 0 && i + 1 !== offset + messages) continue;
    const acks = acksOf(Math.max(offset, i + 1 - ACK_EVERY), i + 1).filter((a) => a.mids.length > 0);
    for (let a = 0; a < acks.length; a += 500) await delivery.handle(acks.slice(a, a + 500));
  }
  return (messages * (MEMBERS - 1)) / ((performance.now() - start) / 1000);
}

async function main() {
  console.log(
    `session-ms group delivery, ${MEMBERS} members, ${ACKED.toLocaleString('en-US')} acked mids remembered, node ${process.version}`,
  );
  const store = new MemorySessionStore();
  const filling = performance.now();
  for (let i = 0; i < ACKED; i++) await store.complete('filler', [`f:${i}`], 24 * 3600 * 1000);
  console.log(`  filling the acked set: ${Math.round(performance.now() - filling)} ms`);
  const delivery = new Delivery(
    store,
    gateways,
    encodingBus(),
    {
      ackTimeoutMs: 60_000,
      maxAttempts: 3,
      rememberAckedMs: 24 * 3600 * 1000,
      gatewayTtlMs: 3_600_000,
      retryTickMs: 200,
    },
    silentLogger(),
    createMetricsRegistry('bench', { collectDefaults: false }),
    { replica: 'bench', readUpTo: Date.now, rereadFrom: async () => true },
  );
  for (const user of members)
    await delivery.handleConnections([
      {
        v: 1,
        kind: 'connection-up',
        user,
        connId: `c-${user}`,
        gateway: 'gw',
        gatewayUrl: 'http://gw',
        at: Date.now(),
      },
    ]);
  await run(20, delivery, 0);
  console.log('  warmed up; measuring');
  const perS = await run(MESSAGES, delivery, 20);
  console.log(`  deliver-many + acks + receipts: ${Math.round(perS).toLocaleString('en-US')} deliveries/s`);
}

void main();
