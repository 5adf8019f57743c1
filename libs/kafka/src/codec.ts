import { compile, TopicSpec, Validator } from '@parley/contracts';

export const HEADER_KIND = 'parley-kind';
export const HEADER_VERSION = 'parley-v';
export const HEADER_TRACE = 'parley-trace';
/** On a record that packs several events of one partition: how many (its value is a JSON array). */
export const HEADER_PACK = 'parley-pack';
/** On a DLQ record of an event refused inside a pack: its place in the pack at `parley-source`. */
export const HEADER_PACK_INDEX = 'parley-pack-index';
/** On a DLQ record: why it was parked (its own decode error, or the handler's last error). */
export const HEADER_DLQ_ERROR = 'parley-error';
/** On a DLQ record: where it was read, `<topic>/<partition>/<offset>`. */
export const HEADER_DLQ_SOURCE = 'parley-source';
/** On a DLQ record: the consumer group that parked it. */
export const HEADER_DLQ_GROUP = 'parley-group';

export interface EncodedRecord {
  key: string;
  value: Buffer;
  headers: Record<string, string>;
}

/** One event of a consumed record: decoded, or refused with the bytes to park on the DLQ. */
export type DecodedEvent<T> =
  /** `key`, `index`: an event of a pack, its own key (the pack is keyed by its first event) and its place in the pack. */
  | { ok: true; event: T; key?: string; index?: number }
  /** `packed`: the refused event's place in its pack, and its own key where the key function could read one. */
  | { ok: false; error: DecodeError; value: Buffer; packed?: { index: number; key?: string } };

/** Why a record could not be decoded; such records go straight to the DLQ (retrying cannot help). */
export class DecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DecodeError';
  }
}

/**
 * JSON on the wire with the event kind, schema version and trace id as headers: readable with any
 * Kafka tool, and checked against the topic's schema on decode. No other encoding has been measured
 * (libs/kafka/bench times the broker and kafkajs with opaque payloads, not codecs).
 */
export class TopicCodec<T> {
  private readonly validate: Validator<T>;

  constructor(readonly topic: TopicSpec<T>) {
    this.validate = compile(topic.schema) as Validator<T>;
  }

  encode(event: T, traceId?: string): EncodedRecord {
    const { kind, v } = event as { kind?: string; v?: number };
    const headers: Record<string, string> = { [HEADER_KIND]: String(kind), [HEADER_VERSION]: String(v) };
    if (traceId) headers[HEADER_TRACE] = traceId;
    return { key: this.topic.key(event), value: Buffer.from(JSON.stringify(event)), headers };
  }

  decode(value: Buffer | null): T {
    return this.check(this.parse(value));
  }

  /**
   * The events of a consumed record: one, or each event of a pack (`packRecords`). A pack's events
   * are checked one by one, so one bad event is parked alone; a record that cannot be parsed at
   * all is refused whole.
   */
  decodeRecord(value: Buffer | null, headers?: Record<string, unknown>): DecodedEvent<T>[] {
    const whole = () => value ?? Buffer.alloc(0);
    if (headers?.[HEADER_PACK] === undefined) return [refusedOr(() => this.decode(value), whole)];
    const pack = refusedOr(() => {
      const events = this.parse(value);
      if (!Array.isArray(events)) throw new DecodeError(`${this.topic.name}: a pack that is not an array`);
      return events as unknown[];
    }, whole);
    if (!pack.ok) return [pack];
    // One object per event, no closures: a pack holds hundreds, and this runs for every one.
    return pack.event.map((parsed, index): DecodedEvent<T> => {
      const result = this.validate(parsed);
      if (result.ok) return { ok: true, event: result.value, key: this.topic.key(result.value), index };
      return {
        ok: false,
        error: this.invalid(result.errors),
        value: Buffer.from(JSON.stringify(parsed)),
        packed: { index, key: this.keyOf(parsed) },
      };
    });
  }

  /** The key of something that failed its schema, if the topic's key function can read one. */
  private keyOf(parsed: unknown): string | undefined {
    try {
      const key: unknown = this.topic.key(parsed as T);
      return typeof key === 'string' ? key : undefined;
    } catch {
      return undefined;
    }
  }

  private parse(value: Buffer | null): unknown {
    if (!value) throw new DecodeError(`${this.topic.name}: empty record`);
    try {
      return JSON.parse(value.toString('utf8'));
    } catch (err) {
      throw new DecodeError(`${this.topic.name}: not JSON (${(err as Error).message})`);
    }
  }

  private check(parsed: unknown): T {
    const result = this.validate(parsed);
    if (!result.ok) throw this.invalid(result.errors);
    return result.value;
  }

  private invalid(errors: string[]): DecodeError {
    return new DecodeError(`${this.topic.name}: ${errors.join('; ')}`);
  }
}

/**
 * One codec per topic spec, built on first use, so a bus does not build one per publish or
 * subscribe. By spec, not by name: a service may read a topic through a looser schema than its
 * writers use.
 */
export function createCodecCache(): <T>(topic: TopicSpec<T>) => TopicCodec<T> {
  const codecs = new WeakMap<TopicSpec<unknown>, TopicCodec<unknown>>();
  return <T>(topic: TopicSpec<T>) => {
    const spec = topic as TopicSpec<unknown>;
    let codec = codecs.get(spec);
    if (!codec) codecs.set(spec, (codec = new TopicCodec(spec)));
    return codec as TopicCodec<T>;
  };
}

/**
 * `decode()`'s result, or a refusal (only a DecodeError is one) with the bytes to park, worked out
 * only for a refusal.
 */
function refusedOr<R>(
  decode: () => R,
  refusedValue: () => Buffer,
): { ok: true; event: R } | Extract<DecodedEvent<never>, { ok: false }> {
  try {
    return { ok: true, event: decode() };
  } catch (err) {
    if (!(err instanceof DecodeError)) throw err;
    return { ok: false, error: err, value: refusedValue() };
  }
}

const OPEN = Buffer.from('[');
const COMMA = Buffer.from(',');
const CLOSE = Buffer.from(']');

/**
 * Several encoded events of one partition as one record: a JSON array of their values, keyed by the
 * first one's key (which puts the pack on that partition: `packByPartition`). The per-record
 * cost of kafkajs (encoding, CRC, decoding, a Buffer per key, value and header) is then paid once per
 * pack instead of once per event; order within the partition is kept. One event stays as it is.
 */
export function packRecords(records: EncodedRecord[]): EncodedRecord {
  if (records.length === 1) return records[0];
  const parts: Buffer[] = [OPEN];
  records.forEach((record, i) => {
    if (i > 0) parts.push(COMMA);
    parts.push(record.value);
  });
  parts.push(CLOSE);
  const headers: Record<string, string> = { [HEADER_PACK]: String(records.length) };
  const traceId = records[0].headers[HEADER_TRACE];
  if (traceId !== undefined) headers[HEADER_TRACE] = traceId;
  return { key: records[0].key, value: Buffer.concat(parts), headers };
}
