import { compile, TopicSpec, Validator } from '@parley/contracts';

export const HEADER_KIND = 'parley-kind';
export const HEADER_VERSION = 'parley-v';
export const HEADER_TRACE = 'parley-trace';

export interface EncodedRecord {
  key: string;
  value: Buffer;
  headers: Record<string, string>;
}

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
    if (!value) throw new DecodeError(`${this.topic.name}: empty record`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(value.toString('utf8'));
    } catch (err) {
      throw new DecodeError(`${this.topic.name}: not JSON (${(err as Error).message})`);
    }
    const result = this.validate(parsed);
    if (!result.ok) throw new DecodeError(`${this.topic.name}: ${result.errors.join('; ')}`);
    return result.value;
  }
}
