import type { EncodedRecord } from '../codec';

export const MAX_RECORDS_PER_REQUEST = 2000;
/**
 * Kafka refuses a partition's batch over `message.max.bytes` (1,048,588 by default) with
 * MESSAGE_TOO_LARGE, which kafkajs does not retry: a consumer publishing such a burst would fail
 * the same way on every redelivery. A request stays under it in all, so every batch in it does.
 */
export const MAX_REQUEST_BYTES = 1_000_000;
/** Record framing (lengths, deltas, attributes) on top of key, value and headers; generous. */
const RECORD_OVERHEAD_BYTES = 32;

export function recordBytes(record: EncodedRecord): number {
  let bytes = RECORD_OVERHEAD_BYTES + record.value.length + Buffer.byteLength(record.key);
  for (const name in record.headers)
    bytes += Buffer.byteLength(name) + Buffer.byteLength(record.headers[name]!);
  return bytes;
}

/** Consecutive runs of `records`, each within one request's limits (a record over them alone). */
export function requestSized(records: EncodedRecord[]): { records: EncodedRecord[]; bytes: number }[] {
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
