import type { Admin, Consumer, EachBatchPayload } from 'kafkajs';
import type { Envelope, SubscribeOptions, Subscription } from '../bus';
import type { EncodedRecord, TopicCodec } from '../codec';
import type { Counters } from '../counters';
import type { KafkaBusOptions } from '../kafka-bus-options';
import { ReadPosition } from '../read-position';
import { sleep } from '../retry';
import { heldForBackground } from './background';
import { createCommitter } from './committer';
import { consumerConfig } from './consumer-config';
import { followConsumerEvents } from './consumer-events';
import { createDeadLetter, parkedEvent } from './dead-letter';
import { decodeChunk } from './decode-chunk';
import { retriableForKafkajs } from './errors';
import { Beating, heartbeat, whileBeating } from './heartbeat';
import { InFlight } from './in-flight';
import { Membership } from './membership';
import { rewindPartitions } from './reread';
import { Retrying, withRetries } from './retries';

export interface SubscriptionOptions extends KafkaBusOptions {
  counters: Counters;
  sendRaw: (topic: string, messages: EncodedRecord[]) => Promise<void>;
  admin: () => Promise<Admin>;
}

/**
 * A consumer group member on kafkajs: it hands each partition's records to `handle` a chunk at a
 * time, parks what cannot be decoded or handled on the DLQ, and commits only what was handled.
 */
export function createSubscription<T>(
  { groupId, metricsGroup, topic, handle, background, mayCommit }: SubscribeOptions<T>,
  codec: TopicCodec<T>,
  options: SubscriptionOptions,
): Subscription {
  const logger = options.logger.child({ topic: topic.name, group: groupId });
  const maxAttempts = options.maxAttempts ?? 5;
  const maxBatchSize = options.maxBatchSize ?? 500;
  const labels = { topic: topic.name, group: metricsGroup ?? groupId };
  const heartbeatInterval = options.consumer?.heartbeatInterval ?? 1_000;
  const maxHandlerMs = options.maxHandlerMs ?? 5 * 60_000;
  const consumer: Consumer = options.kafka.consumer(
    consumerConfig(groupId, options.consumer, { heartbeatInterval, maxHandlerMs }),
  );
  let running = false;
  /** stop() was called since the last start(): a start still connecting must not go on to run. */
  let stopRequested = false;
  const position = new ReadPosition();
  const member = new Membership(topic.name);
  const committer = createCommitter(
    options.commitIntervalMs ?? 500,
    logger,
    (offsets) =>
      heldForBackground(member.committable(offsets), topic.name, background, (partition) =>
        member.firstRead(partition),
      ),
    mayCommit,
  );
  const inFlight = new InFlight();
  followConsumerEvents(consumer, topic.name, { member, position, committer });
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

  const beat = (payload: EachBatchPayload) => heartbeat(payload, member, committer.commit);
  /** Stopping, or kafkajs done with the batch (stopping too, or the batch stale after a rebalance). */
  const leaving = (payload: EachBatchPayload) => !running || !payload.isRunning() || payload.isStale();
  const retrying: Retrying = {
    logger,
    leaving,
    member,
    beat,
    retried: () => options.counters.retried.inc(labels),
  };
  const beating: Beating = { beat, intervalMs: heartbeatInterval, maxHandlerMs, logger };
  const deadLetter = createDeadLetter({
    topic: topic.name,
    groupId,
    logger,
    count: (parked) => options.counters.deadLettered.inc(labels, parked),
    send: options.sendRaw,
  });

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
      if (leaving(payload)) return;
      // The group moved on while another batch of this fetch ran (one queued behind it, with more
      // partitions than partitionsConsumedConcurrently): this one is left to the partition's next
      // owner, which may be handling it already if this member was dropped.
      if (member.groupMoved) throw member.groupMoved;
      const chunk = batch.messages.slice(start, start + maxBatchSize);
      member.reading(batch.partition, Number(chunk[0].offset));
      const { good, poison } = decodeChunk(codec, batch.partition, chunk);
      if (poison.length > 0) await deadLetter(poison);
      if (good.length > 0) await handleEvents(good, payload);
      options.counters.consumed.inc(labels, good.length + poison.length);
      chunkHandled(payload, start, chunk.length);
      await beat(payload); // commits what was handled if the partitions are about to move
      if (member.groupMoved) {
        // This chunk was handled after that commit; the old generation's commit still counts
        // while the group is preparing the rebalance.
        await committer.commit().catch(() => undefined);
        throw member.groupMoved;
      }
    }
  };

  /** The handler on a chunk's events, retried; if they keep failing, on each alone. */
  const handleEvents = async (envelopes: Envelope<T>[], payload: EachBatchPayload) => {
    const failure = await whileBeating(payload, beating, () =>
      withRetries(() => handle(envelopes), maxAttempts, payload, retrying),
    );
    if (failure) await whileBeating(payload, beating, () => isolate(envelopes, payload));
  };

  /** A batch kept failing: try each record alone so one poison record does not park its neighbours. */
  const isolate = async (envelopes: Envelope<T>[], payload: EachBatchPayload) => {
    for (const envelope of envelopes) {
      // The group moved on while the records before it were tried (one by one, this can outlast
      // the rebalance timeout): the rest are left to the partition's next owner, as a chunk is.
      if (member.groupMoved) throw member.groupMoved;
      const failure = await withRetries(() => handle([envelope]), maxAttempts, payload, retrying);
      if (failure) await deadLetter([parkedEvent(envelope)], failure);
    }
  };

  /** The `count` records from `start` of the batch are handled: where reading stands, what to commit. */
  const chunkHandled = (payload: EachBatchPayload, start: number, count: number) => {
    const { batch } = payload;
    const last = batch.messages[start + count - 1];
    const next = batch.messages[start + count];
    const moreInPartition = Number(last.offset) + 1 < Number(batch.highWatermark);
    position.chunkHandled(
      batch.partition,
      Number(last.timestamp),
      next === undefined ? undefined : Number(next.timestamp),
      moreInPartition,
    );
    payload.resolveOffset(last.offset);
    if (!payload.isStale()) member.handled(batch.partition, Number(last.offset) + 1);
    committer.handledIn(payload);
  };

  return {
    async start() {
      stopRequested = false;
      try {
        await consumer.connect();
        await consumer.subscribe({ topic: topic.name, fromBeginning: true });
      } catch (err) {
        if (!stopRequested) throw err;
      }
      // A stop() while this connected found nothing running and disconnected: started now, the
      // member would join its group and read on with nothing left to stop it.
      if (stopRequested) return void (await consumer.disconnect().catch(() => undefined));
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
      stopRequested = true;
      committer.stop();
      if (!running) {
        await consumer.disconnect().catch(() => undefined);
        return;
      }
      running = false;
      await inFlight.settled();
      await background
        ?.finish()
        .catch((err) => logger.warn({ err }, 'background work did not finish: the next owner does it again'));
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
      if (!running) return false;
      return rewindPartitions(time, {
        consumer,
        topic: topic.name,
        groupId,
        member,
        admin: options.admin,
        commit: committer.commit,
        logger,
      });
    },
  };
}
