/**
 * Fan-out of group messages to a 1,000-member group: deliveries per second.
 *
 *   npx tsx apps/group-message-router/bench/fanout-bench.ts [messages=200] [members=1000]
 *
 * Three measurements, each after a warm-up:
 *  1. fan-out only: `fanOutMessage` building the deliver-many events, over the delivery topic's 12
 *     default partitions (the routing cost).
 *  2. service path, encoded: the router service consuming group messages from a MemoryBus, the
 *     membership check (cache hit), fan-out, batched publish, and each deliverable encoded as the
 *     Kafka adapter does (TopicCodec: key + JSON); the delivery topic stops there (no broker).
 *  3. service path, MemoryBus: the same, publishing into MemoryBus, which also validates every
 *     event against its schema on publish (a test double's cost, not Kafka's).
 * No Kafka broker and no database are involved: membership comes from an in-memory reader.
 */
import { performance } from 'node:perf_hooks';
import { DeliveryTopicEvent, GroupMessageEvent, recipientCount, TopicSpec, TOPICS } from '@parley/contracts';
import {
  provisionedPartitioner,
  EventBus,
  MemoryBus,
  SubscribeOptions,
  Subscription,
  TopicCodec,
} from '@parley/kafka';
import { createMetricsRegistry, Readiness, silentLogger } from '@parley/service-kit';
import { createGroupMessageRouter } from '../src/app';
import { createMemoryRoutedLog } from '../src/routed-log';
import { fanOutMessage } from '../src/fanout';
import { membershipOf, MembershipReader } from '../src/membership';

const MESSAGES = Number(process.argv[2] ?? 200);
const MEMBERS = Number(process.argv[3] ?? 1000);
const GROUP = 'bench-group';
const members = Array.from({ length: MEMBERS }, (_, i) => `user-${i}`);
const membership = membershipOf(members, 0);
const reader: MembershipReader = {
  membersOf: async () => membership,
  versionsOf: async (groups) => new Map(groups.map((group) => [group, 0])),
};
const partitionOf = provisionedPartitioner(TOPICS.delivery);
const deliveryCount = (events: unknown[]) =>
  (events as DeliveryTopicEvent[]).reduce((sum, e) => sum + recipientCount(e), 0);

const message = (i: number): GroupMessageEvent => ({
  v: 1,
  kind: 'group-message',
  from: members[0],
  sentAt: Date.now(),
  frame: { type: 'message', id: `m${i}`, to: GROUP, chat: 'group', body: { text: `hello number ${i}` } },
});

/** Delegates to a MemoryBus, but counts (and encodes, as the Kafka adapter would) deliveries instead of storing them. */
class CountingDeliveryBus implements EventBus {
  delivered = 0;
  private readonly codec = new TopicCodec(TOPICS.delivery);
  constructor(private readonly inner: MemoryBus) {}
  async publish<T>(topic: TopicSpec<T>, events: T[]): Promise<void> {
    if (topic.name !== TOPICS.delivery.name) return this.inner.publish(topic, events);
    for (const event of events) this.codec.encode(event as DeliveryTopicEvent);
    this.delivered += deliveryCount(events);
  }
  subscribe<T>(options: SubscribeOptions<T>): Subscription {
    return this.inner.subscribe(options);
  }
  partitioner = async () => partitionOf;
  ping = () => this.inner.ping();
  close = () => this.inner.close();
}

function benchFanOutOnly(messages: number): number {
  const start = performance.now();
  let count = 0;
  for (let i = 0; i < messages; i++)
    count += deliveryCount(fanOutMessage(message(i), membership, partitionOf));
  return count / ((performance.now() - start) / 1000);
}

async function benchService(messages: number, mode: 'encoded' | 'memorybus'): Promise<number> {
  const memory = new MemoryBus();
  const counting = new CountingDeliveryBus(memory);
  const bus: EventBus = mode === 'encoded' ? counting : memory;
  const router = createGroupMessageRouter({
    bus,
    membership: reader,
    routed: createMemoryRoutedLog(),
    groupCommands: {
      apply: () => Promise.reject(new Error('the fan-out bench sends no group ops')),
    },
    logger: silentLogger(),
    metrics: createMetricsRegistry('bench', { collectDefaults: false }),
    readiness: new Readiness(),
    port: 0,
    host: '127.0.0.1',
  });
  const expected = messages * (MEMBERS - 1);
  let memoryCount = 0;
  const deliveredSoFar = () => (mode === 'encoded' ? counting.delivered : memoryCount);
  if (mode === 'memorybus') {
    const publish = memory.publish.bind(memory);
    memory.publish = async (topic, events) => {
      await publish(topic, events);
      if (topic.name === TOPICS.delivery.name) memoryCount += deliveryCount(events);
    };
  }
  await router.start();
  await memory.publish(TOPICS.group, [message(-1)]); // warm the cache and the code paths
  while (deliveredSoFar() < MEMBERS - 1) await new Promise((r) => setTimeout(r, 1));
  const before = deliveredSoFar();
  const events = Array.from({ length: messages }, (_, i) => message(i));
  const start = performance.now();
  await memory.publish(TOPICS.group, events);
  while (deliveredSoFar() - before < expected) await new Promise((r) => setImmediate(r));
  const seconds = (performance.now() - start) / 1000;
  await router.stop();
  return expected / seconds;
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

async function main() {
  benchFanOutOnly(50); // warm-up
  const fanOut = benchFanOutOnly(MESSAGES * 5);
  await benchService(20, 'encoded');
  const encoded = await benchService(MESSAGES, 'encoded');
  const viaMemoryBus = await benchService(Math.max(20, Math.floor(MESSAGES / 4)), 'memorybus');
  console.log(
    `group fan-out, ${MEMBERS} members (${MEMBERS - 1} deliveries per message), node ${process.version}`,
  );
  console.log(`  fan-out only (build deliver-many events):           ${fmt(fanOut)} deliveries/s`);
  console.log(
    `  service path, encoded as for Kafka (no broker):     ${fmt(encoded)} deliveries/s  (${fmt(encoded / (MEMBERS - 1))} messages/s)`,
  );
  console.log(`  service path into MemoryBus (validates each event): ${fmt(viaMemoryBus)} deliveries/s`);
}

void main();
