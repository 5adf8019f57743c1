import { dlqTopic } from '@parley/contracts';
import type { Logger } from 'pino';
import type { Envelope } from '../bus';
import {
  EncodedRecord,
  HEADER_DLQ_ERROR,
  HEADER_DLQ_GROUP,
  HEADER_DLQ_SOURCE,
  HEADER_PACK_INDEX,
} from '../codec';

/** A record (or an event of a pack) bound for the DLQ, and where it came from. */
export interface Parked {
  value: Buffer | null;
  key: string;
  partition: number;
  offset: string;
  packIndex?: number;
  /** Why it alone was refused (a record that could not be decoded), over the batch's reason. */
  reason?: unknown;
}

/** Parks records, saying why: each its own `reason`, else `err`. */
export type DeadLetter = (parked: Parked[], err?: unknown) => Promise<void>;

export interface DeadLetterOptions {
  /** The topic the records were read from; they go to its DLQ. */
  topic: string;
  groupId: string;
  logger: Logger;
  /** Counts records parked. */
  count(parked: number): void;
  send(topic: string, records: EncodedRecord[]): Promise<void>;
}

/** Parks records on the DLQ of the topic they were read from, saying why (`err`). */
export function createDeadLetter({ topic, groupId, logger, count, send }: DeadLetterOptions): DeadLetter {
  return async (parked, err) => {
    count(parked.length);
    logger.error(
      { err: err ?? parked[0]?.reason, offsets: parked.map((e) => `${e.partition}:${e.offset}`) },
      'parking records on the DLQ',
    );
    await send(dlqTopic(topic), dlqRecords(parked, err, { topic, groupId }));
  };
}

/**
 * The DLQ records of `parked`: their headers say why (each its own `reason`, else `err`), where
 * each came from and who read it.
 */
export function dlqRecords(
  parked: Parked[],
  err: unknown,
  { topic, groupId }: { topic: string; groupId: string },
): EncodedRecord[] {
  return parked.map((e) => ({
    key: e.key,
    value: e.value ?? Buffer.alloc(0),
    headers: {
      [HEADER_DLQ_ERROR]: reasonText(e.reason ?? err),
      [HEADER_DLQ_SOURCE]: `${topic}/${e.partition}/${e.offset}`,
      [HEADER_DLQ_GROUP]: groupId,
      ...(e.packIndex === undefined ? {} : { [HEADER_PACK_INDEX]: String(e.packIndex) }),
    },
  }));
}

function reasonText(reason: unknown): string {
  return String((reason as Error)?.message ?? reason).slice(0, 1000);
}

/** An event its handler kept refusing, as the DLQ keeps it. */
export function parkedEvent(envelope: Envelope<unknown>): Parked {
  return {
    value: parkedValue(envelope.event),
    key: envelope.key,
    partition: envelope.partition,
    offset: envelope.offset,
    packIndex: envelope.index,
  };
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
