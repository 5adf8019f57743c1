import net from 'node:net';
import path from 'node:path';
import { createLogger, lockDataDir } from '@parley/service-kit';
import type { Logger } from 'pino';
import type { BrokerContext } from './context';
import { GroupCoordinator } from './group/coordinator';
import { OffsetStore } from './log/offset-store';
import type { FsyncPolicy } from './log/partition-log';
import { TopicStore } from './log/topic-store';
import { Connection } from './server';

/** Kafka's own default `message.max.bytes`. */
export const KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588;

export interface BrokerOptions {
  /** 0 (the default) picks a free port. */
  port?: number;
  host?: string;
  /** Host put in Metadata/FindCoordinator answers; defaults to `host` (127.0.0.1 for a wildcard). */
  advertisedHost?: string;
  /** Where the log and committed offsets live; without one everything stays in memory. */
  dataDir?: string;
  /** `never`: leave it to the OS; `interval`: every fsyncIntervalMs; `always`: before acknowledging. */
  fsync?: FsyncPolicy;
  fsyncIntervalMs?: number;
  /** Default retention; topics override with `retention.ms` / `retention.bytes`. -1 keeps forever. */
  retentionMs?: number;
  retentionBytes?: number;
  /** How often topic retention and offsets retention are applied (default a minute). */
  retentionCheckIntervalMs?: number;
  /**
   * Kafka's `offsets.retention.minutes` (default 7 days; -1 keeps forever): a consumer group that
   * has had no members this long (and committed nothing since) loses its committed offsets and is
   * forgotten. A group with members keeps them.
   */
  offsetsRetentionMs?: number;
  segmentBytes?: number;
  segmentMs?: number;
  /** Bytes of each partition's newest batches kept in memory (default 4 MiB); older ones are read from disk. */
  cacheBytesPerPartition?: number;
  /** A batch's limit, as Kafka's `message.max.bytes` (and its default, 1,048,588); `max.message.bytes` per topic. */
  maxMessageBytes?: number;
  maxRequestBytes?: number;
  verifyCrc?: boolean;
  autoCreateTopics?: boolean;
  /** Partitions of auto-created topics and of CreateTopics asking for -1. */
  defaultPartitions?: number;
  minSessionTimeoutMs?: number;
  maxSessionTimeoutMs?: number;
  logger?: Logger;
}

export interface Broker {
  port: number;
  host: string;
  /** "host:port", for KAFKA_BROKERS. */
  address: string;
  stop(): Promise<void>;
}

const DAY = 24 * 3600 * 1000;

/** Starts the embedded single-node broker that speaks the Kafka protocol (for kafkajs 2.x). */
export async function startBroker(options: BrokerOptions = {}): Promise<Broker> {
  const logger = options.logger ?? createLogger('kafka-broker');
  const host = options.host ?? '127.0.0.1';
  const dataDir = options.dataDir ? path.resolve(options.dataDir) : null;
  const fsyncPolicy = options.fsync ?? 'interval';
  const releaseLock = dataDir ? lockDataDir(dataDir, 'broker') : () => undefined;
  const offsetsRetentionMs = options.offsetsRetentionMs ?? 7 * DAY;
  const logExpired = (expired: string[]) => {
    if (expired.length > 0)
      logger.info(
        { groups: expired.length, examples: expired.slice(0, 5) },
        'consumer groups empty past the offsets retention forgotten with their offsets',
      );
  };
  let topics: TopicStore;
  let offsets: OffsetStore;
  try {
    topics = new TopicStore(
      dataDir,
      {
        segmentBytes: options.segmentBytes ?? 64 * 1024 * 1024,
        segmentMs: options.segmentMs ?? DAY,
        retentionMs: options.retentionMs ?? 7 * DAY,
        retentionBytes: options.retentionBytes ?? -1,
        maxMessageBytes: options.maxMessageBytes ?? KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
        verifyCrc: options.verifyCrc ?? true,
        cacheBytes: options.cacheBytesPerPartition ?? 4 * 1024 * 1024,
      },
      fsyncPolicy,
      logger,
    );
    offsets = new OffsetStore(dataDir, logger);
    const moved = offsets.clampTo((topic, partition) => topics.partition(topic, partition)?.nextOffset);
    if (moved > 0)
      logger.warn(
        { moved },
        'committed offsets past the end of their logs (a power loss?) moved back to the end',
      );
    // Those left empty past the retention while the broker was down (no group has members yet).
    logExpired(offsets.expire(offsetsRetentionMs, () => false));
  } catch (err) {
    releaseLock();
    throw err;
  }
  const groups = new GroupCoordinator(
    {
      minSessionTimeoutMs: options.minSessionTimeoutMs ?? 100,
      maxSessionTimeoutMs: options.maxSessionTimeoutMs ?? 30 * 60 * 1000,
      // Called from the coordinator's timers too (a session running out): a write that fails there
      // (a full disk) would throw out of the timer and end the process. Applied in memory all the same.
      onEmptyChange: (groupId, empty) => {
        try {
          offsets.setEmpty(groupId, empty);
        } catch (err) {
          logger.error({ err, groupId }, 'could not record that a consumer group emptied or filled');
        }
      },
    },
    logger,
  );
  const expireGroups = () => {
    try {
      logExpired(offsets.expire(offsetsRetentionMs, (id) => groups.hasMembers(id)));
    } catch (err) {
      // Run by the retention timer: a failed write (a full disk) thrown from there ends the process.
      logger.error({ err }, 'offsets retention failed');
    }
    groups.forgetEmpty((id) => offsets.list(id).length > 0);
  };
  let producerIds = Date.now() * 16;
  const context: BrokerContext = {
    nodeId: 0,
    advertisedHost: options.advertisedHost ?? (host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host),
    port: 0,
    clusterId: 'parley-embedded',
    topics,
    offsets,
    groups,
    logger,
    autoCreateTopics: options.autoCreateTopics ?? true,
    defaultPartitions: options.defaultPartitions ?? 1,
    nextProducerId: () => producerIds++,
    pendingFetches: new Set(),
    stopping: false,
  };

  const connections = new Set<Connection>();
  const maxRequestBytes = options.maxRequestBytes ?? 100 * 1024 * 1024;
  const server = net.createServer((socket) => {
    const conn = new Connection(socket, context, maxRequestBytes, logger);
    connections.add(conn);
    socket.on('close', () => connections.delete(conn));
  });
  server.on('error', (err) => logger.error({ err }, 'broker server error'));
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    topics.close();
    offsets.close();
    releaseLock();
    throw err;
  }
  const port = (server.address() as net.AddressInfo).port;
  context.port = port;

  const timers: NodeJS.Timeout[] = [];
  timers.push(
    setInterval(() => {
      topics.applyRetention();
      expireGroups();
    }, options.retentionCheckIntervalMs ?? 60_000),
  );
  let syncing: Promise<void> = Promise.resolve();
  if (dataDir && fsyncPolicy === 'interval') {
    timers.push(
      setInterval(() => {
        syncing = Promise.all([topics.sync(), offsets.sync()]).then(
          () => undefined,
          (err) => logger.error({ err }, 'fsync failed'),
        );
      }, options.fsyncIntervalMs ?? 1000),
    );
  }
  topics.applyRetention();
  logger.info(
    { address: `${context.advertisedHost}:${port}`, dataDir, fsync: fsyncPolicy },
    'kafka broker listening',
  );

  let stopped: Promise<void> | undefined;
  return {
    port,
    host: context.advertisedHost,
    address: `${context.advertisedHost}:${port}`,
    stop: () =>
      (stopped ??= (async () => {
        context.stopping = true;
        for (const t of timers) clearInterval(t);
        for (const cancel of [...context.pendingFetches]) cancel();
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const conn of connections) conn.destroy();
        await closed;
        groups.close();
        await syncing;
        if (dataDir && fsyncPolicy !== 'never') await Promise.all([topics.sync(), offsets.sync()]);
        topics.close();
        offsets.close();
        releaseLock();
        logger.info('kafka broker stopped');
      })()),
  };
}
