import { EventBus, SubscribeOptions, Subscription } from './bus';
import { createCodecCache, EncodedRecord } from './codec';
import { createSubscription } from './consumer/subscription';
import { createCounters } from './counters';
import type { KafkaBusOptions } from './kafka-bus-options';
import { createKeyPartitioner, createPartitionCounts, packByPartition } from './packing';
import { createConnection } from './producer/connection';
import { createSender } from './producer/sender';

export type { KafkaBusOptions } from './kafka-bus-options';

/**
 * The event bus on kafkajs: an idempotent producer (acks=all) that batches whatever is queued while
 * a request is in flight, and consumers that commit only after the work is done.
 */
export function createKafkaBus(options: KafkaBusOptions): EventBus {
  const { kafka } = options;
  const codecFor = createCodecCache();
  const counters = createCounters(options.metrics);
  const connection = createConnection(kafka);
  const { admin } = connection;
  const packEvents = options.packEvents ?? true;
  const partitionCounts = createPartitionCounts(async (topic) => {
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
    return topics[0].partitions.length;
  });
  const partitionOf = createKeyPartitioner();
  const packed = async (topic: string, messages: EncodedRecord[]) => {
    if (!packEvents || messages.length < 2) return messages;
    const count = await partitionCounts.get(topic);
    return count === undefined ? messages : packByPartition(topic, messages, count, partitionOf);
  };
  const sender = createSender({ connection, counters, partitionCounts, pack: packed });
  const subscriptions = new Set<Subscription>();

  const bus: EventBus = {
    async publish(topic, events, publishOptions) {
      if (events.length === 0) return;
      const codec = codecFor(topic);
      await sender.send(
        topic.name,
        events.map((e) => codec.encode(e, publishOptions?.traceId)),
      );
    },
    subscribe<T>(subscribeOptions: SubscribeOptions<T>): Subscription {
      const subscription = createSubscription(subscribeOptions, codecFor(subscribeOptions.topic), {
        ...options,
        counters,
        sendRaw: sender.send,
        admin: async () => {
          await connection.connect();
          return admin;
        },
      });
      subscriptions.add(subscription);
      return {
        ...subscription,
        stop: async () => {
          subscriptions.delete(subscription);
          await subscription.stop();
        },
      };
    },
    async partitioner(topic) {
      await connection.connect();
      const count = await partitionCounts.get(topic.name);
      return count === undefined ? undefined : (key) => partitionOf(topic.name, key, count);
    },
    async ping() {
      await connection.connect();
      await admin.describeCluster();
    },
    async close() {
      await Promise.all([...subscriptions].map((s) => s.stop()));
      await sender.drained(); // what was published before close() goes out
      await connection.close();
    },
  };
  return bus;
}
