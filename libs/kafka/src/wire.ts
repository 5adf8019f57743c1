import type { Runtime } from '@parley/service-kit';
import { tracingBus } from './trace';
import { EventBus } from './bus';
import { createKafkaBus, KafkaBusOptions } from './kafka-bus';
import { createKafkaClient, KafkaReachability, KafkaSettings } from './kafka-client';
import { provisionTopics } from './topics';

/**
 * For `main.ts`: a Kafka event bus from the environment's settings, with the project's topics
 * provisioned, a `kafka` readiness check, and closing on shutdown.
 */
export async function connectKafkaBus(
  clientId: string,
  settings: KafkaSettings,
  runtime: Runtime,
  options: Partial<KafkaBusOptions> = {},
): Promise<EventBus> {
  const reachability = new KafkaReachability(runtime.logger, settings.KAFKA_BROKERS);
  const kafka = createKafkaClient(clientId, settings, runtime.logger, reachability);
  await provisionTopics(kafka, {
    partitions: settings.KAFKA_TOPIC_PARTITIONS,
    replicationFactor: settings.KAFKA_REPLICATION_FACTOR,
  });
  // The rebalance timeout is the bus's default: as long as a handler may run (maxHandlerMs).
  const consumer = {
    sessionTimeout: settings.KAFKA_SESSION_TIMEOUT_MS,
    heartbeatInterval: settings.KAFKA_HEARTBEAT_INTERVAL_MS,
  };
  const bus = createKafkaBus({
    kafka,
    logger: runtime.logger,
    metrics: runtime.metrics,
    packEvents: settings.KAFKA_PACK_EVENTS,
    commitIntervalMs: settings.KAFKA_COMMIT_INTERVAL_MS,
    minCycleMs: settings.KAFKA_CONSUMER_MIN_CYCLE_MS,
    onConsumerStopped: (err) => runtime.readiness.markBroken(err.message),
    ...options,
    consumer: { ...consumer, ...options.consumer },
  });
  runtime.readiness.register(
    'kafka',
    () => bus.ping(),
    () => reachability.outage(),
  );
  runtime.closer.add('kafka', () => bus.close());
  return runtime.trace ? tracingBus(bus, runtime.trace) : bus;
}
