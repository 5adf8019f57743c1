import type { BrokerContext, Handler } from '../context';
import type { PartitionLog, ReadResult } from '../log/partition-log';
import { ErrorCode } from '../protocol/errors';
import { Writer } from '../protocol/writer';

interface PartitionFetch {
  partition: number;
  offset: number;
  maxBytes: number;
  log: PartitionLog | undefined;
}

interface Collected {
  topics: { name: string; partitions: (PartitionFetch & { result: ReadResult })[] }[];
  bytes: number;
  error: boolean;
}

/**
 * Fetch v4 with real long-polling: when fewer than minBytes are available the request waits until
 * an append to one of its partitions brings enough, or maxWait passes. Honours the response and
 * per-partition byte limits, but always returns the first whole batch (so a large one gets through).
 */
export const fetch: Handler = async (_header, r, broker) => {
  r.int32(); // replica id
  const maxWait = Math.max(0, r.int32());
  const minBytes = r.int32();
  const maxBytes = r.int32();
  r.int8(); // isolation level: no transactions, so every offset below the high watermark is stable
  const topics = r.array((r) => {
    const name = r.string();
    return {
      name,
      partitions: r.array((r): PartitionFetch => {
        const partition = r.int32();
        return {
          partition,
          offset: r.int64(),
          maxBytes: r.int32(),
          log: broker.topics.partition(name, partition),
        };
      }),
    };
  });

  let collected = await collect(topics, maxBytes);
  if (!collected.error && collected.bytes < minBytes && maxWait > 0 && !broker.stopping) {
    collected = await waitForData(broker, topics, maxBytes, minBytes, maxWait, collected);
  }
  return encode(collected);
};

async function collect(
  topics: { name: string; partitions: PartitionFetch[] }[],
  maxBytes: number,
): Promise<Collected> {
  let bytes = 0;
  let error = false;
  const out: Collected['topics'] = [];
  for (const t of topics) {
    const partitions: Collected['topics'][number]['partitions'] = [];
    for (const p of t.partitions) {
      let result: ReadResult;
      if (!p.log) result = { errorCode: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, chunks: [], bytes: 0 };
      else {
        const limit = Math.min(p.maxBytes, maxBytes - bytes);
        result =
          limit <= 0 && bytes > 0
            ? { errorCode: ErrorCode.NONE, chunks: [], bytes: 0 }
            : await p.log.read(p.offset, Math.max(0, limit), bytes === 0);
      }
      if (result.errorCode !== ErrorCode.NONE) error = true;
      bytes += result.bytes;
      partitions.push({ ...p, result });
    }
    out.push({ name: t.name, partitions });
  }
  return { topics: out, bytes, error };
}

function waitForData(
  broker: BrokerContext,
  topics: { name: string; partitions: PartitionFetch[] }[],
  maxBytes: number,
  minBytes: number,
  maxWait: number,
  initial: Collected,
): Promise<Collected> {
  return new Promise((resolve) => {
    const logs = new Set(
      topics.flatMap((t) => t.partitions.map((p) => p.log)).filter((l): l is PartitionLog => !!l),
    );
    let done = false;
    let checking = false;
    let again = false;
    /** maxWait is up: the next check answers whatever it finds (the timer may fire mid-check). */
    let expired = false;
    const finish = (result: Collected) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      for (const log of logs) log.waiters.delete(wake);
      broker.pendingFetches.delete(cancel);
      resolve(result);
    };
    const recheck = async (final: boolean) => {
      expired ||= final;
      if (checking) {
        again = true;
        return;
      }
      checking = true;
      try {
        do {
          again = false;
          const result = await collect(topics, maxBytes);
          if (expired || result.error || result.bytes >= minBytes) return finish(result);
        } while (again && !done);
      } catch (err) {
        broker.logger.error({ err }, 'fetch failed');
        finish(initial);
      } finally {
        checking = false;
      }
    };
    const wake = () => void recheck(false);
    const cancel = () => finish(initial);
    const timer = setTimeout(() => void recheck(true), maxWait);
    for (const log of logs) log.waiters.add(wake);
    broker.pendingFetches.add(cancel);
  });
}

function encode(collected: Collected): Writer {
  const w = new Writer(256);
  w.int32(0); // throttle
  w.array(collected.topics, (w, t) => {
    w.string(t.name).array(t.partitions, (w, p) => {
      const hw = p.log ? p.log.nextOffset : -1;
      w.int32(p.partition).int16(p.result.errorCode).int64(hw).int64(hw).int32(0); // no aborted transactions
      w.int32(p.result.bytes);
      for (const chunk of p.result.chunks) w.raw(chunk);
    });
  });
  return w;
}

/** ListOffsets v1-2: -2 earliest, -1 latest, otherwise the first offset at or after a timestamp. */
export const listOffsets: Handler = ({ apiVersion }, r, broker) => {
  r.int32(); // replica id
  if (apiVersion >= 2) r.int8(); // isolation level
  const topics = r.array((r) => ({
    name: r.string(),
    partitions: r.array((r) => ({ partition: r.int32(), timestamp: r.int64() })),
  }));
  const w = new Writer();
  if (apiVersion >= 2) w.int32(0);
  w.array(topics, (w, t) => {
    w.string(t.name).array(t.partitions, (w, p) => {
      const log = broker.topics.partition(t.name, p.partition);
      if (!log)
        return void w.int32(p.partition).int16(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION).int64(-1).int64(-1);
      const offset =
        p.timestamp === -2
          ? log.logStartOffset
          : p.timestamp === -1
            ? log.nextOffset
            : log.offsetForTimestamp(p.timestamp);
      w.int32(p.partition)
        .int16(ErrorCode.NONE)
        .int64(p.timestamp < 0 ? -1 : offset < 0 ? -1 : p.timestamp)
        .int64(offset);
    });
  });
  return w;
};
