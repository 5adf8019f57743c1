import { PartitionMetadata, Partitioners } from 'kafkajs';
import { EncodedRecord, HEADER_KIND, HEADER_TRACE, HEADER_VERSION, packRecords } from './codec';
import type { TopicSpec } from '@parley/contracts';

/** A pack stays well under Kafka's default 1 MiB `message.max.bytes`. */
export const MAX_PACK_BYTES = 256 * 1024;

/** How long a topic's partition count is trusted; the bus's producer refreshes its metadata as often. */
export const PARTITION_COUNT_TTL_MS = 60_000;

/**
 * Packs the records bound for one topic: consecutive records of one partition with the same trace
 * become one record (`packRecords`), up to `maxBytes` each, in their order. The partition of a key
 * is the one kafkajs's default partitioner picks (murmur2 over `partitionCount`). A pack is keyed
 * by its first record's key and partitioned by kafkajs like any record, so it lands where each of
 * its records would have landed alone, as long as `partitionCount` is the count the producer
 * knows. Just after partitions are added the two can differ for up to a minute: some events then
 * land on a partition other than their key's new one (keys re-map anyway when partitions are
 * added), and nothing is lost. A record with headers of its own (a DLQ record's error and source)
 * is sent alone, as a pack keeps only the trace.
 */
export function packByPartition(
  topic: string,
  records: EncodedRecord[],
  partitionCount: number,
  partitionOf: KeyPartitioner = createKeyPartitioner(),
  maxBytes = MAX_PACK_BYTES,
): EncodedRecord[] {
  const packs: EncodedRecord[][] = [];
  const open = new Map<number, { records: EncodedRecord[]; bytes: number; trace?: string }>();
  for (const record of records) {
    const partition = partitionOf(topic, record.key, partitionCount);
    const trace = record.headers[HEADER_TRACE];
    const joinable = packable(record);
    let current = open.get(partition);
    if (!current || !joinable || current.trace !== trace || current.bytes + record.value.length > maxBytes) {
      current = { records: [], bytes: 0, trace };
      packs.push(current.records);
      if (joinable) open.set(partition, current);
      else open.delete(partition);
    }
    current.records.push(record);
    current.bytes += record.value.length + 1;
  }
  return packs.map(packRecords);
}

const PACKED_HEADERS = new Set([HEADER_KIND, HEADER_VERSION, HEADER_TRACE]);
const packable = (record: EncodedRecord) => Object.keys(record.headers).every((h) => PACKED_HEADERS.has(h));

export type KeyPartitioner = (topic: string, key: string, partitionCount: number) => number;

/**
 * Where a key lands when the topic has the partition count the project provisions it with: what
 * `EventBus.partitioner` answers on such a topic, for code that runs without a broker (benches).
 */
export function provisionedPartitioner<T>(topic: TopicSpec<T>): (key: string) => number {
  const partitionOf = createKeyPartitioner();
  return (key) => partitionOf(topic.name, key, topic.partitions);
}

/**
 * kafkajs's default partitioner for keyed records, remembering the answers: its murmur2 is costly
 * next to a map lookup, and a chat's keys (user ids) recur. Forgets everything past `maxKeys`.
 */
export function createKeyPartitioner(maxKeys = 100_000): KeyPartitioner {
  const choose = Partitioners.DefaultPartitioner();
  const known = new Map<string, number>();
  return (topic, key, partitionCount) => {
    const cacheKey = `${partitionCount}/${key}`;
    let partition = known.get(cacheKey);
    if (partition === undefined) {
      if (known.size >= maxKeys) known.clear();
      partition = choose({
        topic,
        partitionMetadata: metadataOf(partitionCount),
        message: { key, value: null },
      });
      known.set(cacheKey, partition);
    }
    return partition;
  };
}

/** The shape the partitioner reads: only the count matters for keyed records. */
function metadataOf(count: number): PartitionMetadata[] {
  return Array.from({ length: count }, (_, partitionId) => ({
    partitionId,
    leader: 0,
    replicas: [0],
    isr: [0],
    partitionErrorCode: 0,
  }));
}

/**
 * Each topic's partition count, fetched on first use and kept for `ttlMs` (as long as the bus's
 * producer keeps its metadata), so partitions added to a topic are picked up. A topic whose count
 * cannot be read (it does not exist yet) is sent unpacked, leaving kafkajs to partition it, and
 * asked again after `retryMs`.
 */
export function createPartitionCounts(
  fetchCount: (topic: string) => Promise<number>,
  ttlMs = PARTITION_COUNT_TTL_MS,
  retryMs = 5_000,
) {
  const cache = new Map<string, { count: Promise<number | undefined>; until: number }>();
  return {
    get(topic: string): Promise<number | undefined> {
      const now = Date.now();
      const cached = cache.get(topic);
      if (cached && cached.until > now) return cached.count;
      const entry = { count: fetchCount(topic).catch(() => undefined), until: now + ttlMs };
      cache.set(topic, entry);
      void entry.count.then((count) => {
        if (count === undefined) entry.until = Date.now() + retryMs;
      });
      return entry.count;
    },
    forget(): void {
      cache.clear();
    },
  };
}
