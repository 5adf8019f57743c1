import type { EncodedRecord } from '../codec';
import type { Counters } from '../counters';
import { sleep, TransientError } from '../retry';
import type { Connection } from './connection';
import { requestSized } from './request-size';
import { PendingSend, SendQueue } from './send-queue';

export interface SenderOptions {
  connection: Connection;
  counters: Counters;
  /** Forgotten when a request fails: a topic may have gained partitions. */
  partitionCounts: { forget(): void };
  /** The records written for `messages`, packed by partition where the bus packs events. */
  pack(topic: string, messages: EncodedRecord[]): Promise<EncodedRecord[]>;
}

export type Sender = ReturnType<typeof createSender>;

/**
 * Writes what is published with the connection's idempotent producer (acks=all), one request at a
 * time: what is queued while a request is in flight goes out together in the next.
 */
export function createSender({ connection, counters, partitionCounts, pack }: SenderOptions) {
  const queue = new SendQueue();
  let flushing = false;
  const flush = async () => {
    if (flushing) return;
    flushing = true;
    try {
      while (queue.hasWaiting()) {
        const sending = queue.takeRequest();
        try {
          await connection.connect();
          const topicMessages = await Promise.all(
            groupByTopic(sending).map(async ({ topic, messages }) => ({
              topic,
              messages: await pack(topic, messages),
            })),
          );
          await connection.producer.sendBatch({ acks: -1, topicMessages });
          for (const send of sending) send.resolve();
          for (const send of sending) counters.published.inc({ topic: send.topic }, send.messages.length);
          for (const { topic, messages } of topicMessages) counters.records.inc({ topic }, messages.length);
        } catch (err) {
          connection.replaceProducer();
          partitionCounts.forget(); // a topic may have gained partitions
          for (const send of sending) send.reject(err);
          // What is queued behind fails too: written ahead of the failed part's retry, it would
          // overtake events of the same key (the rest of a publish split over requests, say). It was
          // not refused itself, so its publishers may retry it as they would a lost connection.
          const behind = new TransientError('an earlier produce request failed; publish again', {
            cause: err,
          });
          queue.rejectAll(behind);
        }
      }
    } finally {
      flushing = false;
    }
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

  return {
    // A publish larger than one request goes out in several, in order: requests leave one at a time.
    async send(topic: string, messages: EncodedRecord[]): Promise<void> {
      const parts = requestSized(messages).map(
        ({ records, bytes }) =>
          new Promise<void>((resolve, reject) =>
            queue.push({ topic, messages: records, bytes, resolve, reject }),
          ),
      );
      scheduleFlush();
      await Promise.all(parts);
    },
    /** Waits until what was published so far has gone out (or failed). */
    async drained(): Promise<void> {
      while (scheduled || flushing) await sleep(5);
    },
  };
}

function groupByTopic(sends: PendingSend[]) {
  const byTopic = new Map<string, EncodedRecord[]>();
  for (const send of sends) {
    const list = byTopic.get(send.topic);
    if (list) list.push(...send.messages);
    else byTopic.set(send.topic, [...send.messages]);
  }
  return [...byTopic].map(([topic, messages]) => ({ topic, messages }));
}
