import type { KafkaMessage } from 'kafkajs';
import type { Envelope } from '../bus';
import { HEADER_TRACE, TopicCodec } from '../codec';
import type { Parked } from './dead-letter';

/** A chunk of one partition's records, decoded: the events to handle and those to park. */
export interface DecodedChunk<T> {
  good: Envelope<T>[];
  /** Records (or events of a pack) that could not be decoded, each with why: straight to the DLQ. */
  poison: Parked[];
}

/** Decodes `messages` of `partition`, each into its event or, for a pack, its events. */
export function decodeChunk<T>(
  codec: TopicCodec<T>,
  partition: number,
  messages: KafkaMessage[],
): DecodedChunk<T> {
  const good: Envelope<T>[] = [];
  const poison: Parked[] = [];
  for (const message of messages) {
    const recordKey = message.key?.toString() ?? '';
    const timestamp = Number(message.timestamp);
    const traceId = message.headers?.[HEADER_TRACE]?.toString();
    for (const decoded of codec.decodeRecord(message.value, message.headers)) {
      if (!decoded.ok) {
        poison.push({
          value: decoded.value,
          key: decoded.packed?.key ?? recordKey,
          partition,
          offset: message.offset,
          packIndex: decoded.packed?.index,
          reason: decoded.error,
        });
        continue;
      }
      good.push({
        event: decoded.event,
        key: decoded.key ?? recordKey,
        partition,
        offset: message.offset,
        index: decoded.index,
        timestamp,
        traceId,
      });
    }
  }
  return { good, poison };
}
