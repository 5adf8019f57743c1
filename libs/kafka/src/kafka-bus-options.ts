import type { Kafka } from 'kafkajs';
import type { Registry } from 'prom-client';
import type { Logger } from 'pino';

export interface KafkaBusOptions {
  kafka: Kafka;
  logger: Logger;
  metrics?: Registry;
  /** Attempts for a failing batch, then for each of its records alone, before the DLQ. */
  maxAttempts?: number;
  /** Records handed to a handler at once (a pack counts as one record). */
  maxBatchSize?: number;
  /**
   * Pack the events a flush sends to one partition into one record (default true): far fewer
   * records for kafkajs to encode and decode. Readers of this bus accept both forms; turn it off
   * only for foreign consumers that expect one event per record.
   */
  packEvents?: boolean;
  partitionsConsumedConcurrently?: number;
  /** How long a handler may run while the member keeps its partitions (default 5 min). */
  maxHandlerMs?: number;
  /** How often handled offsets are committed (KAFKA_COMMIT_INTERVAL_MS, default 500 ms); see `createCommitter`. */
  commitIntervalMs?: number;
  /**
   * A consumer fetches again no sooner than this after it began its previous batch
   * (KAFKA_CONSUMER_MIN_CYCLE_MS, default 0: at once). A busy consumer otherwise fetches as soon as
   * each small batch is handled, and pays the per-fetch cost each time. What arrives meanwhile
   * waits at most this long; a message to an idle consumer does not wait. At 5 ms the one-process
   * fleet used 12-17 % less CPU at 1,000 msg/s, but full bench runs gave no better p99 and a higher
   * p50 at half max, so it is off by default (docs/benchmarks.md, "Tried, not kept").
   */
  minCycleMs?: number;
  /**
   * A consumer kafkajs stopped and will not restart (a non-retriable error: the group held by
   * clients of another protocol, an authorization refused). Nothing more is read by it; the process
   * should be restarted (`connectKafkaBus` marks it broken). A failure during `start()` also
   * rejects the start.
   */
  onConsumerStopped?: (err: Error, consumer: { topic: string; groupId: string }) => void;
  consumer?: {
    sessionTimeout?: number;
    heartbeatInterval?: number;
    maxWaitTimeInMs?: number;
    rebalanceTimeout?: number;
  };
}
