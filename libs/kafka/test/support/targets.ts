import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { Broker, startBroker } from '../../src/broker';

/** A Kafka to run the shared suite against. */
export interface KafkaTarget {
  name: string;
  brokers: string[];
  /** Stops and starts the broker on the same address and data (the embedded broker only). */
  restart?: () => Promise<void>;
  stop(): Promise<void>;
}

/** How to start a target, and what it can do: known before it starts, so the suite can skip tests. */
export interface KafkaTargetKind {
  start(): Promise<KafkaTarget>;
  /** Whether the started target has `restart`. */
  canRestart: boolean;
}

export const embeddedTarget: KafkaTargetKind = { start: startEmbedded, canRestart: true };
export const containerTarget: KafkaTargetKind = { start: startContainer, canRestart: false };

async function startEmbedded(): Promise<KafkaTarget> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-broker-test-'));
  const logger = pino({ level: process.env.BROKER_LOG_LEVEL ?? 'silent' });
  let broker: Broker = await startBroker({ dataDir, logger, fsync: 'interval', fsyncIntervalMs: 200 });
  const port = broker.port;
  return {
    name: 'embedded broker',
    brokers: [broker.address],
    restart: async () => {
      await broker.stop();
      broker = await startBroker({ dataDir, port, logger, fsync: 'interval' });
    },
    stop: async () => {
      await broker.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

async function startContainer(): Promise<KafkaTarget> {
  const { KafkaContainer } = await import('@testcontainers/kafka');
  const container = await new KafkaContainer('confluentinc/cp-kafka:7.7.1')
    .withKraft()
    // The suite uses short session timeouts and wants a second member to join without delay.
    .withEnvironment({
      KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS: '100',
      KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: '0',
      KAFKA_MESSAGE_MAX_BYTES: '8388608',
    })
    .start();
  return {
    name: 'Kafka (testcontainers)',
    brokers: [`${container.getHost()}:${container.getMappedPort(9093)}`],
    stop: async () => {
      await container.stop();
    },
  };
}
