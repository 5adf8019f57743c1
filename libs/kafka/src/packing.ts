import { PartitionMetadata, Partitioners } from 'kafkajs';
import { EncodedRecord, HEADER_KIND, HEADER_TRACE, HEADER_VERSION, packRecords } from './codec';

export interface OutgoingRecord extends EncodedRecord {
  partition?: number;
}

/** A pack stays well under Kafka's default 1 MiB `message.max.bytes`. */
export const MAX_PACK_BYTES = 256 * 1024;

/**
 * Packs the records bound for one topic: those of one partition (and trace) become one record
 * (`packRecords`), in their order, up to `maxBytes` each. The partition is the one kafkajs's
 * default partitioner picks for the key (murmur2 over the partition count), so a key lands where it
 * did before packing and where an unpacked record of another producer lands. A record with headers
 * of its own (a DLQ record's error and source) is sent alone, as a pack keeps only the trace.
 */
export function packByPartition(
  topic: string,
  records: EncodedRecord[],
  partitionCount: number,
  partitionOf: KeyPartitioner = createKeyPartitioner(),
  maxBytes = MAX_PACK_BYTES,
): OutgoingRecord[] {
  const groups = new Map<string, { partition: number; records: EncodedRecord[]; bytes: number }[]>();
  let alone = 0;
  for (const record of records) {
    const partition = partitionOf(topic, record.key, partitionCount);
    const group = packable(record)
      ? `${partition}/${record.headers[HEADER_TRACE] ?? ''}`
      : `alone ${alone++}`;
    const packs = groups.get(group) ?? [];
    if (packs.length === 0) groups.set(group, packs);
    let current = packs[packs.length - 1];
    if (!current || (current.bytes + record.value.length > maxBytes && current.records.length > 0)) {
      current = { partition, records: [], bytes: 0 };
      packs.push(current);
    }
    current.records.push(record);
    current.bytes += record.value.length + 1;
  }
  return [...groups.values()].flat().map(({ partition, records: packed }) => ({
    ...packRecords(packed),
    partition,
  }));
}

const PACKED_HEADERS = new Set([HEADER_KIND, HEADER_VERSION, HEADER_TRACE]);
const packable = (record: EncodedRecord) => Object.keys(record.headers).every((h) => PACKED_HEADERS.has(h));

export type KeyPartitioner = (topic: string, key: string, partitionCount: number) => number;

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
 * Each topic's partition count, fetched on first use and kept for `ttlMs` (as kafkajs keeps its
 * metadata), so partitions added to a topic are picked up. A topic whose count cannot be read
 * (it does not exist yet) is sent unpacked, leaving kafkajs to partition it, and asked again later.
 */
export function createPartitionCounts(
  fetchCount: (topic: string) => Promise<number>,
  ttlMs = 5 * 60_000,
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
