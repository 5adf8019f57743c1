import {
  Admin,
  Consumer,
  EachBatchPayload,
  Kafka,
  OffsetsByTopicPartition,
  Partitioners,
  Producer,
} from 'kafkajs';
import { Counter, Registry } from 'prom-client';
import { dlqTopic, TopicSpec } from '@parley/contracts';
import type { Logger } from 'pino';
import { Envelope, EventBus, SubscribeOptions, Subscription } from './bus';
import { DecodeError, EncodedRecord, HEADER_PACK_INDEX, HEADER_TRACE, TopicCodec } from './codec';
import {
  createKeyPartitioner,
  createPartitionCounts,
  packByPartition,
  PARTITION_COUNT_TTL_MS,
} from './packing';
import { ReadPosition } from './read-position';
import { backoffMs, isTransient, sleep, TransientError } from './retry';

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

interface PendingSend {
  topic: string;
  messages: EncodedRecord[];
  /** `recordBytes` of the messages. */
  bytes: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

const MAX_RECORDS_PER_REQUEST = 2000;
/**
 * Kafka refuses a partition's batch over `message.max.bytes` (1,048,588 by default) with
 * MESSAGE_TOO_LARGE, which kafkajs does not retry: a consumer publishing such a burst would fail
 * the same way on every redelivery. A request stays under it in all, so every batch in it does.
 */
const MAX_REQUEST_BYTES = 1_000_000;
/** Record framing (lengths, deltas, attributes) on top of key, value and headers; generous. */
const RECORD_OVERHEAD_BYTES = 32;

function recordBytes(record: EncodedRecord): number {
  let bytes = RECORD_OVERHEAD_BYTES + record.value.length + Buffer.byteLength(record.key);
  for (const name in record.headers)
    bytes += Buffer.byteLength(name) + Buffer.byteLength(record.headers[name]!);
  return bytes;
}

/** Consecutive runs of `records`, each within one request's limits (a record over them alone). */
function requestSized(records: EncodedRecord[]): { records: EncodedRecord[]; bytes: number }[] {
  const parts: { records: EncodedRecord[]; bytes: number }[] = [];
  let part = { records: [] as EncodedRecord[], bytes: 0 };
  for (const record of records) {
    const size = recordBytes(record);
    const full = part.records.length >= MAX_RECORDS_PER_REQUEST || part.bytes + size > MAX_REQUEST_BYTES;
    if (part.records.length > 0 && full) {
      parts.push(part);
      part = { records: [], bytes: 0 };
    }
    part.records.push(record);
    part.bytes += size;
  }
  if (part.records.length > 0) parts.push(part);
  return parts;
}

/**
 * The event bus on kafkajs: an idempotent producer (acks=all) that batches whatever is queued while
 * a request is in flight, and consumers that commit only after the work is done.
 */
export function createKafkaBus(options: KafkaBusOptions): EventBus {
  const { kafka } = options;
  // By spec, not by name: a service may read a topic through a looser schema than its writers use.
  const codecs = new WeakMap<TopicSpec<unknown>, TopicCodec<unknown>>();
  const codecFor = <T>(topic: TopicSpec<T>) => {
    const spec = topic as TopicSpec<unknown>;
    let codec = codecs.get(spec);
    if (!codec) codecs.set(spec, (codec = new TopicCodec(spec)));
    return codec as TopicCodec<T>;
  };
  const counters = createCounters(options.metrics);
  // A fresh producer (a new producer id) after a failed request: kafkajs rolls its sequence numbers
  // back when a request fails, also for partitions the broker wrote, so the next, different batch
  // would reuse them and be taken for a duplicate (answered, not written) or refused for good.
  const newProducer = (): Producer =>
    kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      createPartitioner: Partitioners.DefaultPartitioner,
      allowAutoTopicCreation: true,
      metadataMaxAge: PARTITION_COUNT_TTL_MS, // packing groups by the partition count it reads itself
    });
  let producer: Producer = newProducer();
  const admin: Admin = kafka.admin();
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
  const subscriptions = new Set<Subscription>();
  let connected: Promise<void> | undefined;
  const connect = () =>
    (connected ??= Promise.all([producer.connect(), admin.connect()]).then(() => undefined));

  // A FIFO read from `head`: slicing the rest off per request copied a whole backlog each time.
  // Taken slots are cleared, so what was sent does not stay in memory until the queue compacts.
  let queue: Array<PendingSend | undefined> = [];
  let head = 0;
  let flushing = false;
  const flush = async () => {
    if (flushing) return;
    flushing = true;
    try {
      while (head < queue.length) {
        const sending = takeBatch();
        try {
          await connect();
          const topicMessages = await Promise.all(
            groupByTopic(sending).map(async ({ topic, messages }) => ({
              topic,
              messages: await packed(topic, messages),
            })),
          );
          await producer.sendBatch({ acks: -1, topicMessages });
          for (const send of sending) send.resolve();
          for (const send of sending) counters.published.inc({ topic: send.topic }, send.messages.length);
          for (const { topic, messages } of topicMessages) counters.records.inc({ topic }, messages.length);
        } catch (err) {
          connected = undefined;
          const failed = producer;
          producer = newProducer();
          void failed.disconnect().catch(() => undefined);
          partitionCounts.forget(); // a topic may have gained partitions
          for (const send of sending) send.reject(err);
          // What is queued behind fails too: written ahead of the failed part's retry, it would
          // overtake events of the same key (the rest of a publish split over requests, say). It was
          // not refused itself, so its publishers may retry it as they would a lost connection.
          const behind = new TransientError('an earlier produce request failed; publish again', {
            cause: err,
          });
          for (let i = head; i < queue.length; i++) queue[i]!.reject(behind);
          queue = [];
          head = 0;
        }
      }
    } finally {
      flushing = false;
    }
  };
  const takeBatch = () => {
    const batch: PendingSend[] = [];
    let count = 0;
    let bytes = 0;
    while (head < queue.length) {
      const next = queue[head]!;
      const fits =
        count + next.messages.length <= MAX_RECORDS_PER_REQUEST && bytes + next.bytes <= MAX_REQUEST_BYTES;
      if (batch.length > 0 && !fits) break;
      batch.push(next);
      count += next.messages.length;
      bytes += next.bytes;
      queue[head++] = undefined;
    }
    if (head === queue.length) {
      queue = [];
      head = 0;
    } else if (head > 1024 && head * 2 > queue.length) {
      queue = queue.slice(head); // once the cleared part is the larger one
      head = 0;
    }
    return batch;
  };

  // The first record waits for the end of this turn of the event loop, so that what the same turn
  // publishes (a consumer batch's output, frames from one socket read) shares one produce request.
  let scheduled = false;
  const scheduleFlush = () => {
    if (scheduled || flushing) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      void flush();
    });
  };
  // A publish larger than one request goes out in several, in order: requests leave one at a time.
  const sendRaw = async (topic: string, messages: PendingSend['messages']) => {
    const parts = requestSized(messages).map(
      ({ records, bytes }) =>
        new Promise<void>((resolve, reject) =>
          queue.push({ topic, messages: records, bytes, resolve, reject }),
        ),
    );
    scheduleFlush();
    await Promise.all(parts);
  };

  const bus: EventBus = {
    async publish(topic, events, publishOptions) {
      if (events.length === 0) return;
      const codec = codecFor(topic);
      await sendRaw(
        topic.name,
        events.map((e) => codec.encode(e, publishOptions?.traceId)),
      );
    },
    subscribe<T>(subscribeOptions: SubscribeOptions<T>): Subscription {
      const subscription = createSubscription(subscribeOptions, codecFor(subscribeOptions.topic), {
        ...options,
        counters,
        sendRaw,
        admin: async () => {
          await connect();
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
      await connect();
      const count = await partitionCounts.get(topic.name);
      return count === undefined ? undefined : (key) => partitionOf(topic.name, key, count);
    },
    async ping() {
      await connect();
      await admin.describeCluster();
    },
    async close() {
      await Promise.all([...subscriptions].map((s) => s.stop()));
      while (scheduled || flushing) await sleep(5); // what was published before close() goes out
      await Promise.allSettled([producer.disconnect(), admin.disconnect()]);
    },
  };
  return bus;
}

function groupByTopic(sends: PendingSend[]) {
  const byTopic = new Map<string, PendingSend['messages']>();
  for (const send of sends) {
    const list = byTopic.get(send.topic);
    if (list) list.push(...send.messages);
    else byTopic.set(send.topic, [...send.messages]);
  }
  return [...byTopic].map(([topic, messages]) => ({ topic, messages }));
}

function createCounters(registry?: Registry) {
  const registers = registry ? [registry] : [];
  return {
    published: new Counter({
      name: 'parley_kafka_published_total',
      help: 'Events published',
      labelNames: ['topic'],
      registers,
    }),
    records: new Counter({
      name: 'parley_kafka_records_produced_total',
      help: 'Kafka records written; fewer than events published where events are packed',
      labelNames: ['topic'],
      registers,
    }),
    consumed: new Counter({
      name: 'parley_kafka_consumed_total',
      help: 'Events handled',
      labelNames: ['topic', 'group'],
      registers,
    }),
    retried: new Counter({
      name: 'parley_kafka_retries_total',
      help: 'Handler retries',
      labelNames: ['topic', 'group'],
      registers,
    }),
    deadLettered: new Counter({
      name: 'parley_kafka_dead_lettered_total',
      help: 'Records parked on the DLQ',
      labelNames: ['topic', 'group'],
      registers,
    }),
  };
}

type Counters = ReturnType<typeof createCounters>;

/** A record (or an event of a pack) bound for the DLQ, and where it came from. */
interface Parked {
  value: Buffer | null;
  key: string;
  partition: number;
  offset: string;
  packIndex?: number;
}

/**
 * Commits what a member has handled every `intervalMs`, at a rebalance and at stop. kafkajs's own
 * autoCommit sends an OffsetCommit after every partition batch, as many requests as fetches: at
 * 1,000 msg/s half of all the fleet's Kafka requests. A crash replays at most the last interval,
 * which consumers idempotent by mid absorb.
 */
function createCommitter(
  intervalMs: number,
  logger: Logger,
  adjust: (offsets: OffsetsByTopicPartition) => OffsetsByTopicPartition = (offsets) => offsets,
) {
  // The latest batch's payload: its closures reach the member's current offsets, whatever batch.
  let member: Pick<EachBatchPayload, 'uncommittedOffsets' | 'commitOffsetsIfNecessary'> | undefined;
  let committing: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  const commitNow = async () => {
    const offsets = member && adjust(member.uncommittedOffsets());
    if (offsets && offsets.topics.length > 0) await member!.commitOffsetsIfNecessary(offsets);
  };
  /** Waits for a commit under way, then commits what was handled since it read the offsets. */
  const commit = async (): Promise<void> => {
    while (committing) await committing.catch(() => undefined);
    committing = commitNow().finally(() => (committing = undefined));
    return committing;
  };
  return {
    handledIn(payload: EachBatchPayload) {
      member = payload;
    },
    commit,
    start() {
      timer = setInterval(() => {
        if (committing) return; // a slow broker: no queue of commits behind it
        commit().catch((err) => logger.debug({ err }, 'commit failed; the next one retries'));
      }, intervalMs).unref();
    },
    stop() {
      clearInterval(timer);
    },
  };
}

/** Counts handlers running, so stop() can wait for them before its last commit. */
class InFlight {
  private active = 0;
  private waiters: Array<() => void> = [];

  enter(): void {
    this.active++;
  }

  leave(): void {
    if (--this.active > 0) return;
    for (const wake of this.waiters.splice(0)) wake();
  }

  settled(): Promise<void> {
    return this.active === 0 ? Promise.resolve() : new Promise((resolve) => this.waiters.push(resolve));
  }
}

/**
 * An event as the DLQ keeps it. JSON.parse reads any depth but JSON.stringify overflows the stack a
 * few thousand levels down: such an event (only a foreign producer writes one) is parked as a note,
 * its headers naming where the original lies, rather than failing the batch for good.
 */
function parkedValue(event: unknown): Buffer {
  try {
    return Buffer.from(JSON.stringify(event));
  } catch (err) {
    return Buffer.from(JSON.stringify({ unserializable: String((err as Error)?.message ?? err) }));
  }
}

/** Heartbeat errors that mean the group is rebalancing or no longer counts this member. */
const GROUP_MOVING = new Set(['REBALANCE_IN_PROGRESS', 'UNKNOWN_MEMBER_ID', 'ILLEGAL_GENERATION']);

/**
 * What a batch throws, as kafkajs must take it. The group moving on stays as it is: kafkajs rejoins.
 * Anything else (a DLQ refusing a record, a handler's error while stopping) becomes retriable:
 * kafkajs stops a consumer for good on an error it takes for non-retriable, every partition it
 * held with it, where a retriable one has it fetch the batch again from the last handled offset
 * and, past its retries, restart the consumer.
 */
function retriableForKafkajs(err: unknown): unknown {
  const type = (err as { type?: string } | undefined)?.type;
  return type && GROUP_MOVING.has(type) ? err : new BatchFailed(err);
}

class BatchFailed extends Error {
  readonly retriable = true;

  constructor(cause: unknown) {
    super(`batch failed: ${String((cause as Error)?.message ?? cause)}`, { cause });
    this.name = 'BatchFailed';
  }
}

function createSubscription<T>(
  { groupId, metricsGroup, topic, handle }: SubscribeOptions<T>,
  codec: TopicCodec<T>,
  options: KafkaBusOptions & {
    counters: Counters;
    sendRaw: (topic: string, messages: PendingSend['messages']) => Promise<void>;
    admin: () => Promise<Admin>;
  },
): Subscription {
  const logger = options.logger.child({ topic: topic.name, group: groupId });
  const maxAttempts = options.maxAttempts ?? 5;
  const maxBatchSize = options.maxBatchSize ?? 500;
  const labels = { topic: topic.name, group: metricsGroup ?? groupId };
  const heartbeatInterval = options.consumer?.heartbeatInterval ?? 1_000;
  const maxHandlerMs = options.maxHandlerMs ?? 5 * 60_000;
  const consumer: Consumer = options.kafka.consumer({
    groupId,
    sessionTimeout: options.consumer?.sessionTimeout ?? 10_000,
    // A member rejoins only once its batch is handled: a shorter rebalance timeout would expel a
    // member busy with a long batch and hand that batch to another while it is still being handled.
    rebalanceTimeout: options.consumer?.rebalanceTimeout ?? maxHandlerMs,
    heartbeatInterval,
    maxWaitTimeInMs: options.consumer?.maxWaitTimeInMs ?? 250,
    // Never cut partitions off a fetch (the default caps it at 10 MiB): a partition left out of a
    // full fetch would count as read (ReadPosition). Each partition stays capped at 1 MiB.
    maxBytes: 2 ** 31 - 1,
    maxBytesPerPartition: 1024 * 1024,
    allowAutoTopicCreation: true,
  });
  let running = false;
  const position = new ReadPosition();
  /**
   * Partitions rereadFrom moved back, and where to, until kafkajs applies the seek (at its next
   * fetch, after any batch under way): commits carry the rewound offset meanwhile, so a stop or a
   * rebalance before then does not commit past the re-read.
   */
  const rewinding = new Map<number, number>();
  const committer = createCommitter(options.commitIntervalMs ?? 500, logger, (offsets) => {
    if (rewinding.size === 0) return offsets;
    const others = offsets.topics.filter((t) => t.topic !== topic.name);
    const mine = (offsets.topics.find((t) => t.topic === topic.name)?.partitions ?? []).filter(
      (p) => !rewinding.has(Number(p.partition)),
    );
    const rewound = [...rewinding].map(([partition, offset]) => ({ partition, offset: String(offset) }));
    return { topics: [...others, { topic: topic.name, partitions: [...mine, ...rewound] }] };
  });
  const inFlight = new InFlight();
  /** Set when a heartbeat learns the group is moving on without this member; cleared at the next join. */
  let groupMoved: Error | undefined;
  let assigned: number[] = [];
  /** The next offset to read in each partition handled since the member joined (for rereadFrom). */
  const handledTo = new Map<number, number>();
  consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
    groupMoved = undefined;
    assigned = payload.memberAssignment[topic.name] ?? [];
    handledTo.clear();
    // One moved away was committed rewound before it went (the commit at REBALANCING).
    for (const partition of rewinding.keys()) if (!assigned.includes(partition)) rewinding.delete(partition);
    position.joined(assigned);
  });

  /**
   * Heartbeats while a batch is being handled. When the group is rebalancing (or has dropped this
   * member), commits what was handled and remembers it: the batch is then left for the partition's
   * next owner, since this member rejoins only once its batch returns. A beat that fails otherwise
   * (the broker away) is tried again at the next one.
   */
  const heartbeat = async (payload: EachBatchPayload) => {
    try {
      await payload.heartbeat();
    } catch (err) {
      const type = (err as { type?: string }).type;
      if (!type || !GROUP_MOVING.has(type)) return;
      if (!groupMoved && type === 'REBALANCE_IN_PROGRESS') await committer.commit().catch(() => undefined);
      groupMoved ??= err as Error;
    }
  };
  // kafkajs's own heartbeats (between batches, after an empty fetch) may be the ones to learn of a
  // rebalance: what was handled is committed before the partitions move, whichever beat saw it.
  consumer.on(consumer.events.REBALANCING, () => void committer.commit().catch(() => undefined));
  consumer.on(consumer.events.FETCH_START, ({ payload }) => position.fetchStarted(payload.nodeId));
  /** Set when kafkajs stopped this consumer for good (a crash it does not restart from). */
  let stoppedForGood: Error | undefined;
  consumer.on(consumer.events.CRASH, ({ payload }) => {
    if (payload.restart || !running) return;
    stoppedForGood = new Error(
      `the consumer of ${topic.name} (group ${groupId}) stopped for good: ${payload.error.message}`,
      { cause: payload.error },
    );
    logger.fatal({ err: payload.error }, 'consumer stopped for good: nothing more is read until a restart');
    options.onConsumerStopped?.(stoppedForGood, { topic: topic.name, groupId });
  });
  consumer.on(consumer.events.REQUEST, ({ payload }) => {
    if (payload.apiName === 'Fetch') position.fetchAnswered();
  });

  const deadLetter = async (envelopes: Parked[], err: unknown) => {
    options.counters.deadLettered.inc(labels, envelopes.length);
    logger.error(
      { err, offsets: envelopes.map((e) => `${e.partition}:${e.offset}`) },
      'parking records on the DLQ',
    );
    await options.sendRaw(
      dlqTopic(topic.name),
      envelopes.map((e) => ({
        key: e.key,
        value: e.value ?? Buffer.alloc(0),
        headers: {
          'parley-error': String((err as Error)?.message ?? err).slice(0, 1000),
          'parley-source': `${topic.name}/${e.partition}/${e.offset}`,
          'parley-group': groupId,
          ...(e.packIndex === undefined ? {} : { [HEADER_PACK_INDEX]: String(e.packIndex) }),
        },
      })),
    );
  };

  /** Runs `work` until it succeeds, a non-transient failure outlasts `attempts`, or the consumer stops. */
  const withRetries = async (work: () => Promise<void>, attempts: number, payload: EachBatchPayload) => {
    for (let attempt = 0; ; attempt++) {
      try {
        await work();
        // The failures were logged one by one: say that they ended, or the log leaves it open.
        if (attempt > 0) logger.info({ retries: attempt }, 'handler succeeded after retrying');
        return undefined;
      } catch (err) {
        // Stopping, or the group moving on: leave the batch unhandled (the partition's next owner
        // replays it) rather than hold stop() or the rebalance up, or handle it beside that owner.
        if (!running || !payload.isRunning() || payload.isStale()) throw err;
        if (groupMoved) throw groupMoved;
        if (attempt + 1 >= attempts && !isTransient(err)) return err;
        options.counters.retried.inc(labels);
        logger.warn({ err, attempt }, 'handler failed, retrying');
        await sleep(backoffMs(attempt));
        await heartbeat(payload);
        if (groupMoved) throw groupMoved;
      }
    }
  };

  const minCycleMs = options.minCycleMs ?? 0;
  const eachBatch = async (payload: EachBatchPayload) => {
    const { batch } = payload;
    if (batch.messages.length === 0 || !running) return;
    // A duration: on the wall clock, a step back while the batch ran held the next fetch for the
    // step (a minute of NTP's correction was a minute of nothing read), also with no minimum cycle.
    const startedAt = performance.now();
    position.batchStarted(batch.partition, Number(batch.messages[0].timestamp));
    inFlight.enter();
    try {
      await handleBatch(payload);
    } catch (err) {
      throw retriableForKafkajs(err);
    } finally {
      inFlight.leave();
      position.batchEnded(batch.partition);
    }
    // kafkajs fetches again once every batch of the fetch is handled: holding this one paces it.
    if (minCycleMs === 0) return;
    const rest = startedAt + minCycleMs - performance.now();
    if (rest > 0 && running) await sleep(rest);
  };

  const handleBatch = async (payload: EachBatchPayload) => {
    const { batch } = payload;
    for (let start = 0; start < batch.messages.length; start += maxBatchSize) {
      if (!running || !payload.isRunning() || payload.isStale()) return;
      // The group moved on while another batch of this fetch ran (one queued behind it, with more
      // partitions than partitionsConsumedConcurrently): this one is left to the partition's next
      // owner, which may be handling it already if this member was dropped.
      if (groupMoved) throw groupMoved;
      const chunk = batch.messages.slice(start, start + maxBatchSize);
      const good: Envelope<T>[] = [];
      const poison: Parked[] = [];
      let decodeError: DecodeError | undefined;
      for (const message of chunk) {
        const recordKey = message.key?.toString() ?? '';
        const timestamp = Number(message.timestamp);
        const traceId = message.headers?.[HEADER_TRACE]?.toString();
        for (const decoded of codec.decodeRecord(message.value, message.headers)) {
          if (!decoded.ok) {
            decodeError = decoded.error;
            poison.push({
              value: decoded.value,
              key: decoded.packed?.key ?? recordKey,
              partition: batch.partition,
              offset: message.offset,
              packIndex: decoded.packed?.index,
            });
            continue;
          }
          good.push({
            event: decoded.event,
            key: decoded.key ?? recordKey,
            partition: batch.partition,
            offset: message.offset,
            index: decoded.index,
            timestamp,
            traceId,
          });
        }
      }
      if (poison.length > 0) await deadLetter(poison, decodeError);
      if (good.length > 0) {
        const failure = await whileBeating(payload, () =>
          withRetries(() => handle(good), maxAttempts, payload),
        );
        if (failure) await whileBeating(payload, () => isolate(good, payload));
      }
      options.counters.consumed.inc(labels, good.length + poison.length);
      const last = chunk[chunk.length - 1];
      const next = batch.messages[start + chunk.length];
      const moreInPartition = Number(last.offset) + 1 < Number(batch.highWatermark);
      position.chunkHandled(
        batch.partition,
        Number(last.timestamp),
        next === undefined ? undefined : Number(next.timestamp),
        moreInPartition,
      );
      payload.resolveOffset(last.offset);
      if (!payload.isStale()) {
        handledTo.set(batch.partition, Number(last.offset) + 1);
        rewinding.delete(batch.partition); // read from the seek on: its offsets are the re-read's
      }
      committer.handledIn(payload);
      await heartbeat(payload); // commits what was handled if the partitions are about to move
      if (groupMoved) {
        // This chunk was handled after that commit; the old generation's commit still counts
        // while the group is preparing the rebalance.
        await committer.commit().catch(() => undefined);
        throw groupMoved;
      }
    }
  };

  /**
   * kafkajs heartbeats only between batches; a handler that outlasts the session timeout (a large
   * fan-out under load) would be expelled from the group and its uncommitted records handled again
   * by the next member. So the member keeps beating while the handler runs, up to `maxHandlerMs`
   * (as Kafka's max.poll.interval.ms): a handler hung past that lets its partitions move.
   */
  const whileBeating = async <R>(payload: EachBatchPayload, work: () => Promise<R>): Promise<R> => {
    // A duration, on the monotonic clock: a wall-clock step forward must not end the beats early.
    const giveUpAt = performance.now() + maxHandlerMs;
    const beat = setInterval(() => {
      if (performance.now() < giveUpAt) return void heartbeat(payload);
      clearInterval(beat);
      logger.error(
        { maxHandlerMs },
        // A handler retrying a failure (a dependency down) still beats between its tries.
        'handler still running: heartbeats now come only between its retries; if it is stuck in one call, its partitions will move',
      );
    }, heartbeatInterval);
    try {
      return await work();
    } finally {
      clearInterval(beat);
    }
  };

  /** A batch kept failing: try each record alone so one poison record does not park its neighbours. */
  const isolate = async (envelopes: Envelope<T>[], payload: EachBatchPayload) => {
    for (const envelope of envelopes) {
      const failure = await withRetries(() => handle([envelope]), maxAttempts, payload);
      if (failure) {
        await deadLetter(
          [
            {
              value: parkedValue(envelope.event),
              key: envelope.key,
              partition: envelope.partition,
              offset: envelope.offset,
              packIndex: envelope.index,
            },
          ],
          failure,
        );
      }
    }
  };

  return {
    async start() {
      await consumer.connect();
      await consumer.subscribe({ topic: topic.name, fromBeginning: true });
      running = true;
      committer.start();
      await consumer.run({
        eachBatchAutoResolve: false,
        autoCommit: false,
        partitionsConsumedConcurrently: options.partitionsConsumedConcurrently ?? 4,
        eachBatch,
      });
      // kafkajs's run() resolves even when joining the group failed for good: fail the start.
      if (stoppedForGood) throw stoppedForGood;
    },
    async stop() {
      committer.stop();
      if (!running) {
        await consumer.disconnect().catch(() => undefined);
        return;
      }
      running = false;
      await inFlight.settled();
      await committer
        .commit()
        .catch((err) => logger.warn({ err }, 'last commit failed: the next owner replays the last interval'));
      await consumer.disconnect();
    },
    pause: () => {
      position.paused();
      consumer.pause([{ topic: topic.name }]);
    },
    resume: () => {
      position.resumed();
      consumer.resume([{ topic: topic.name }]);
    },
    handledUpTo: () => position.upTo(),
    async rereadFrom(time) {
      const held = [...assigned];
      if (!running || held.length === 0) return false;
      const admin = await options.admin();
      const [fromTime, [committed]] = await Promise.all([
        admin.fetchTopicOffsetsByTimestamp(topic.name, time),
        admin.fetchOffsets({ groupId, topics: [topic.name] }),
      ]);
      const offsetIn = (list: Array<{ partition: number; offset: string }> | undefined, partition: number) =>
        Number(list?.find((p) => p.partition === partition)?.offset ?? -1);
      const rewound: Array<{ partition: number; from: number; to: number }> = [];
      for (const partition of held) {
        if (!assigned.includes(partition)) continue; // moved meanwhile: its next owner decides
        const target = offsetIn(fromTime, partition);
        const current = handledTo.get(partition) ?? offsetIn(committed?.partitions, partition);
        if (target < 0 || current < 0 || target >= current) continue;
        consumer.seek({ topic: topic.name, partition, offset: String(target) });
        handledTo.set(partition, target);
        rewinding.set(partition, target);
        rewound.push({ partition, from: current, to: target });
      }
      if (rewound.length > 0) logger.warn({ rewound, since: new Date(time).toISOString() }, 'reading again');
      return true;
    },
  };
}
