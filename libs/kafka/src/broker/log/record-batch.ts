import { crc32c } from './crc32c';

/**
 * Record batch (magic 2) header layout. The broker stores batches as the producer wrote them and
 * only rewrites baseOffset; the CRC covers bytes 21.. so it stays valid.
 */
export const BATCH = {
  BASE_OFFSET: 0,
  LENGTH: 8, // int32: bytes after this field
  LEADER_EPOCH: 12,
  MAGIC: 16,
  CRC: 17,
  ATTRIBUTES: 21,
  LAST_OFFSET_DELTA: 23,
  FIRST_TIMESTAMP: 27,
  MAX_TIMESTAMP: 35,
  PRODUCER_ID: 43,
  PRODUCER_EPOCH: 51,
  BASE_SEQUENCE: 53,
  RECORD_COUNT: 57,
  HEADER_SIZE: 61,
  LOG_OVERHEAD: 12,
} as const;

const TWO_32 = 4294967296;

export function readInt64(buf: Buffer, at: number): number {
  return buf.readInt32BE(at) * TWO_32 + buf.readUInt32BE(at + 4);
}

export function writeInt64(buf: Buffer, at: number, v: number): void {
  const hi = Math.floor(v / TWO_32);
  buf.writeInt32BE(hi, at);
  buf.writeUInt32BE(v - hi * TWO_32, at + 4);
}

export interface BatchInfo {
  size: number;
  lastOffsetDelta: number;
  maxTimestamp: number;
  producerId: number;
  producerEpoch: number;
  baseSequence: number;
}

/** Why a batch was refused; `code` is the Kafka error code to answer with. */
export class BatchError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Size of the batch starting at `at`, or -1 when `buf` holds less than a whole header/batch.
 * Throws BatchError when the header is not a magic-2 batch.
 */
export function batchSizeAt(buf: Buffer, at: number, end = buf.length): number {
  if (end - at < BATCH.HEADER_SIZE) return -1;
  const length = buf.readInt32BE(at + BATCH.LENGTH);
  if (buf.readInt8(at + BATCH.MAGIC) !== 2)
    throw new BatchError(2, `unsupported magic ${buf.readInt8(at + BATCH.MAGIC)}`);
  if (length < BATCH.HEADER_SIZE - BATCH.LOG_OVERHEAD) throw new BatchError(2, `bad batch length ${length}`);
  const size = BATCH.LOG_OVERHEAD + length;
  return at + size <= end ? size : -1;
}

export function batchInfo(batch: Buffer): BatchInfo {
  return {
    size: batch.length,
    lastOffsetDelta: batch.readInt32BE(BATCH.LAST_OFFSET_DELTA),
    maxTimestamp: readInt64(batch, BATCH.MAX_TIMESTAMP),
    producerId: readInt64(batch, BATCH.PRODUCER_ID),
    producerEpoch: batch.readInt16BE(BATCH.PRODUCER_EPOCH),
    baseSequence: batch.readInt32BE(BATCH.BASE_SEQUENCE),
  };
}

export function crcValid(batch: Buffer): boolean {
  return batch.readUInt32BE(BATCH.CRC) === crc32c(batch, BATCH.ATTRIBUTES);
}

/** Splits a Produce request's records field into batches (views, no copy). */
export function splitBatches(records: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  while (at < records.length) {
    const size = batchSizeAt(records, at);
    if (size < 0) throw new BatchError(2, 'truncated record batch');
    out.push(records.subarray(at, at + size));
    at += size;
  }
  return out;
}
