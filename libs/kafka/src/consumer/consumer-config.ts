import type { ConsumerConfig } from 'kafkajs';
import type { KafkaBusOptions } from '../kafka-bus-options';

/** The settings of a subscription's kafkajs consumer. */
export function consumerConfig(
  groupId: string,
  settings: KafkaBusOptions['consumer'],
  { heartbeatInterval, maxHandlerMs }: { heartbeatInterval: number; maxHandlerMs: number },
): ConsumerConfig {
  return {
    groupId,
    sessionTimeout: settings?.sessionTimeout ?? 10_000,
    // A member rejoins only once its batch is handled: a shorter rebalance timeout would expel a
    // member busy with a long batch and hand that batch to another while it is still being handled.
    rebalanceTimeout: settings?.rebalanceTimeout ?? maxHandlerMs,
    heartbeatInterval,
    maxWaitTimeInMs: settings?.maxWaitTimeInMs ?? 250,
    // Never cut partitions off a fetch (the default caps it at 10 MiB): a partition left out of a
    // full fetch would count as read (ReadPosition). Each partition stays capped at 1 MiB.
    maxBytes: 2 ** 31 - 1,
    maxBytesPerPartition: 1024 * 1024,
    allowAutoTopicCreation: true,
  };
}
