import type { Handler } from '../context';
import type { PartitionLog } from '../log/partition-log';
import { BatchError, splitBatches } from '../log/record-batch';
import { ErrorCode } from '../protocol/errors';
import { Writer } from '../protocol/writer';

const KAFKA_STORAGE_ERROR = 56;

/**
 * Produce v3: record batches (magic 2) are stored as written, with only their base offset
 * rewritten. acks=0 gets no response; with fsync "always" the answer waits for the disk.
 */
export const produce: Handler = async (_header, r, broker) => {
  r.nullableString(); // transactional id (transactions are not supported)
  const acks = r.int16();
  r.int32(); // timeout
  const topics = r.array((r) => ({
    name: r.string(),
    partitions: r.array((r) => ({ partition: r.int32(), records: r.bytes() })),
  }));
  const touched = new Set<PartitionLog>();
  const now = Date.now();
  const results = topics.map((t) => ({
    name: t.name,
    partitions: t.partitions.map(({ partition, records }) => {
      const answer = (errorCode: number, baseOffset = -1) => ({ partition, errorCode, baseOffset });
      if (acks !== 0 && acks !== 1 && acks !== -1) return answer(ErrorCode.INVALID_REQUIRED_ACKS);
      const log = broker.topics.partition(t.name, partition);
      if (!log) return answer(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION);
      if (!records || records.length === 0) return answer(ErrorCode.CORRUPT_MESSAGE);
      try {
        const res = log.append(splitBatches(records), now);
        // A duplicate too: its answer waits for its original's sync, if that is still under way.
        if (res.errorCode === ErrorCode.NONE) touched.add(log);
        return answer(res.errorCode, res.baseOffset);
      } catch (err) {
        if (err instanceof BatchError) return answer(err.code);
        broker.logger.error({ err, topic: t.name, partition }, 'append failed');
        return answer(KAFKA_STORAGE_ERROR);
      }
    }),
  }));
  if (acks === 0) return null;
  if (broker.topics.fsync === 'always' && touched.size > 0) await broker.topics.sync(touched);
  const w = new Writer();
  w.array(results, (w, t) => {
    w.string(t.name).array(t.partitions, (w, p) =>
      w.int32(p.partition).int16(p.errorCode).int64(p.baseOffset).int64(-1),
    );
  });
  return w.int32(0);
};
