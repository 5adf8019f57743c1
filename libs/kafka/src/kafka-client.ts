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
      'How often consumers commit the offsets they handled (also at a rebalance and at shutdown): at most what a crash replays (push-ms: from its oldest push not done)',
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

/**
 * A kafkajs client from the environment's settings, logging through pino. kafkajs logs two lines at
 * ERROR for each try to reach a broker that is away (dozens a minute per client, and again after
 * each consumer restart): those are folded into one warning when Kafka is lost, a reminder each
 * minute, and an info line once a request is answered again.
 */
export function createKafkaClient(
  clientId: string,
  settings: KafkaSettings,
  logger: Logger,
  reachability = new KafkaReachability(logger, settings.KAFKA_BROKERS),
): Kafka {
  const config: KafkaConfig = {
    clientId,
    brokers: settings.KAFKA_BROKERS.split(',')
      .map((b) => b.trim())
      .filter(Boolean),
    ssl: settings.KAFKA_SSL,
    logLevel: logLevel.WARN,
    logCreator: () => (entry: LogEntry) => reachability.log(entry),
    retry: { initialRetryTime: 100, retries: 8 },
  };
  if (settings.KAFKA_SASL_MECHANISM) {
    config.sasl = {
      mechanism: settings.KAFKA_SASL_MECHANISM,
      username: settings.KAFKA_SASL_USERNAME ?? '',
      password: settings.KAFKA_SASL_PASSWORD ?? '',
    } as SASLOptions;
  }
  const kafka = new Kafka(config);
  // Any answered request (a fetch, a produce, a connect's ApiVersions) means Kafka is reachable.
  const reached = () => reachability.reached();
  const producer = kafka.producer.bind(kafka);
  const consumer = kafka.consumer.bind(kafka);
  const admin = kafka.admin.bind(kafka);
  kafka.producer = (...args) => watched(producer(...args), reached);
  kafka.consumer = (...args) => watched(consumer(...args), reached);
  kafka.admin = (...args) => watched(admin(...args), reached);
  return kafka;
}

function watched<C extends { on(event: string, listener: () => void): unknown; events: { REQUEST: string } }>(
  client: C,
  reached: () => void,
): C {
  client.on(client.events.REQUEST, reached);
  return client;
}

/** What kafkajs logs on each try to reach a broker that is away (and the consumer restart after it). */
const UNREACHABLE =
  /Connection error|Failed to connect to seed broker|No broker available|Connection timeout|ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|Closed connection/i;
/** While Kafka stays away, how often that is said again. */
const STILL_UNREACHABLE_EVERY_MS = 60_000;

/** kafkajs's log through pino, one warning per Kafka outage instead of two errors per retry. */
export class KafkaReachability {
  private lostAt: number | undefined;
  private lastError = '';
  private remindedAt = 0;
  /** Connection errors logged at debug since the last warning. */
  private folded = 0;

  constructor(
    private readonly logger: Logger,
    private readonly brokers: string,
    private readonly now: () => number = Date.now,
  ) {}

  log({ level, log }: LogEntry): void {
    const { message, ...extra } = log;
    const fields = { kafka: extra };
    const logger = this.logger;
    // kafkajs reports an ordinary rebalance (REBALANCE_IN_PROGRESS) at ERROR; it is not one.
    if (level === logLevel.ERROR && /rebalanc/i.test(JSON.stringify(extra)))
      return logger.info(fields, message);
    // Bounded producer retries are deliberate: a gateway must answer `unavailable`, not hang.
    if (/Limiting retries for the idempotent producer/.test(message)) return logger.debug(fields, message);
    if (level <= logLevel.WARN && this.isUnreachable(message)) return this.unreachable(message, fields);
    if (level === logLevel.ERROR) return logger.error(fields, message);
    if (level === logLevel.WARN) return logger.warn(fields, message);
    return logger.debug(fields, message);
  }

  /** While Kafka is away: for how long, and the last error a try met (for a readiness check). */
  outage(): string | undefined {
    if (this.lostAt === undefined) return undefined;
    const seconds = Math.round((this.now() - this.lostAt) / 1000);
    return `kafka unreachable for ${seconds} s (${this.lastError})`;
  }

  /** A request was answered: Kafka is back, if it was away. */
  reached(): void {
    if (this.lostAt === undefined) return;
    this.logger.info(
      { brokers: this.brokers, unreachableForMs: this.now() - this.lostAt, retriesNotLogged: this.folded },
      'kafka reachable again',
    );
    this.lostAt = undefined;
    this.folded = 0;
  }

  private isUnreachable(message: string): boolean {
    // The consumer restart kafkajs schedules after a connection crash belongs to the same outage.
    return (
      UNREACHABLE.test(message) || (this.lostAt !== undefined && /^Restarting the consumer/.test(message))
    );
  }

  private unreachable(message: string, fields: { kafka: Record<string, unknown> }): void {
    const now = this.now();
    this.lastError = message;
    if (this.lostAt === undefined) {
      this.lostAt = this.remindedAt = now;
      this.folded = 0;
      return void this.logger.warn(
        { brokers: this.brokers, error: message },
        'kafka unreachable; retrying (each retry is logged at debug until a broker answers)',
      );
    }
    if (now - this.remindedAt >= STILL_UNREACHABLE_EVERY_MS) {
      this.remindedAt = now;
      this.logger.warn(
        {
          brokers: this.brokers,
          error: message,
          unreachableForMs: now - this.lostAt,
          retriesNotLogged: this.folded,
        },
        'kafka still unreachable; retrying',
      );
      this.folded = 0;
      return;
    }
    this.folded++;
    this.logger.debug(fields, message);
  }
}
