import { Admin, Kafka, Partitioners, Producer } from 'kafkajs';
import { PARTITION_COUNT_TTL_MS } from '../packing';

export type Connection = ReturnType<typeof createConnection>;

/**
 * The bus's producer and admin client, connected together on first use. A failed connect or produce
 * request (`replaceProducer`) is forgotten; the next use connects again.
 */
export function createConnection(kafka: Kafka) {
  let producer: Producer = newProducer(kafka);
  const admin: Admin = kafka.admin();
  let connected: Promise<void> | undefined;
  return {
    admin,
    get producer(): Producer {
      return producer;
    },
    connect(): Promise<void> {
      if (connected) return connected;
      const attempt = Promise.all([producer.connect(), admin.connect()]).then(() => undefined);
      connected = attempt;
      // Not remembered when it fails (Kafka away): kept, it failed every later ping, and so the
      // readiness check, until a publish happened to fail and replace the producer.
      attempt.catch(() => {
        if (connected === attempt) connected = undefined;
      });
      return attempt;
    },
    replaceProducer(): void {
      connected = undefined;
      const failed = producer;
      producer = newProducer(kafka);
      void failed.disconnect().catch(() => undefined);
    },
    close: () => Promise.allSettled([producer.disconnect(), admin.disconnect()]),
  };
}

// A fresh producer (a new producer id) after a failed request: kafkajs rolls its sequence numbers
// back when a request fails, also for partitions the broker wrote, so the next, different batch
// would reuse them and be taken for a duplicate (answered, not written) or refused for good.
function newProducer(kafka: Kafka): Producer {
  return kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: true,
    metadataMaxAge: PARTITION_COUNT_TTL_MS, // packing groups by the partition count it reads itself
  });
}
