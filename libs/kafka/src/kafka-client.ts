import { Kafka, KafkaConfig, logLevel, LogEntry, SASLOptions } from 'kafkajs';
import { Type, TProperties } from '@sinclair/typebox';
import type { Logger } from 'pino';

export const KafkaSettingsSchema = {
  KAFKA_BROKERS: Type.String({ default: '127.0.0.1:9092', description: 'Comma-separated bootstrap brokers' }),
  KAFKA_SSL: Type.Boolean({ default: false }),
  KAFKA_SASL_MECHANISM: Type.Optional(
    Type.Union([Type.Literal('plain'), Type.Literal('scram-sha-256'), Type.Literal('scram-sha-512')]),
  ),
  KAFKA_SASL_USERNAME: Type.Optional(Type.String()),
  KAFKA_SASL_PASSWORD: Type.Optional(Type.String()),
  KAFKA_TOPIC_PARTITIONS: Type.Optional(
    Type.Integer({ minimum: 1, description: 'Overrides every topic’s default' }),
  ),
  KAFKA_REPLICATION_FACTOR: Type.Integer({ minimum: 1, default: 1 }),
  KAFKA_SESSION_TIMEOUT_MS: Type.Integer({
    minimum: 1000,
    default: 10_000,
    description: 'Consumer session timeout: how soon a dead consumer’s partitions move',
  }),
  KAFKA_HEARTBEAT_INTERVAL_MS: Type.Integer({ minimum: 100, default: 1000 }),
  KAFKA_COMMIT_INTERVAL_MS: Type.Integer({
    minimum: 10,
    default: 500,
    description:
      'How often consumers commit the offsets they handled (also at a rebalance and at shutdown): at most what a crash replays',
  }),
  KAFKA_CONSUMER_MIN_CYCLE_MS: Type.Integer({
    minimum: 0,
    maximum: 1000,
    default: 0,
    description:
      'A consumer fetches again no sooner than this after it began its previous batch: fewer, larger fetches and less CPU, for up to this much latency per hop (0: at once)',
  }),
  KAFKA_PACK_EVENTS: Type.Boolean({
    default: true,
    description:
      'Pack the events one flush sends to a partition into one record (a JSON array); readers accept both. Off: one event per record, for foreign consumers',
  }),
} satisfies TProperties;

export interface KafkaSettings {
  KAFKA_BROKERS: string;
  KAFKA_SSL: boolean;
  KAFKA_SASL_MECHANISM?: 'plain' | 'scram-sha-256' | 'scram-sha-512';
  KAFKA_SASL_USERNAME?: string;
  KAFKA_SASL_PASSWORD?: string;
  KAFKA_TOPIC_PARTITIONS?: number;
  KAFKA_REPLICATION_FACTOR: number;
  KAFKA_SESSION_TIMEOUT_MS?: number;
  KAFKA_HEARTBEAT_INTERVAL_MS?: number;
  KAFKA_COMMIT_INTERVAL_MS?: number;
  KAFKA_CONSUMER_MIN_CYCLE_MS?: number;
  KAFKA_PACK_EVENTS?: boolean;
}

/** A kafkajs client from the environment's settings, logging through pino. */
export function createKafkaClient(clientId: string, settings: KafkaSettings, logger: Logger): Kafka {
  const config: KafkaConfig = {
    clientId,
    brokers: settings.KAFKA_BROKERS.split(',')
      .map((b) => b.trim())
      .filter(Boolean),
    ssl: settings.KAFKA_SSL,
    logLevel: logLevel.WARN,
    logCreator: () => (entry: LogEntry) => logKafka(logger, entry),
    retry: { initialRetryTime: 100, retries: 8 },
  };
  if (settings.KAFKA_SASL_MECHANISM) {
    config.sasl = {
      mechanism: settings.KAFKA_SASL_MECHANISM,
      username: settings.KAFKA_SASL_USERNAME ?? '',
      password: settings.KAFKA_SASL_PASSWORD ?? '',
    } as SASLOptions;
  }
  return new Kafka(config);
}

function logKafka(logger: Logger, { level, log }: LogEntry) {
  const { message, ...extra } = log;
  const fields = { kafka: extra };
  // kafkajs reports an ordinary rebalance (REBALANCE_IN_PROGRESS) at ERROR; it is not one.
  if (level === logLevel.ERROR && /rebalanc/i.test(JSON.stringify(extra)))
    return logger.info(fields, message);
  // Bounded producer retries are deliberate: a gateway must answer `unavailable`, not hang.
  if (/Limiting retries for the idempotent producer/.test(message)) return logger.debug(fields, message);
  if (level === logLevel.ERROR) return logger.error(fields, message);
  if (level === logLevel.WARN) return logger.warn(fields, message);
  return logger.debug(fields, message);
}
