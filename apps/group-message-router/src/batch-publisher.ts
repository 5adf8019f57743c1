import { TopicSpec } from '@parley/contracts';
import { EventBus } from '@parley/kafka';

export interface BatchPublisherOptions<T> {
  /** A batch goes out once its events weigh this much. */
  batchSize: number;
  /** What an event counts for (1 by default): a `deliver-many` counts its recipients. */
  weigh?: (event: T) => number;
  /** Batches unconfirmed at once; `add` waits beyond that. */
  maxInFlight?: number;
}

/**
 * Publishes events in batches as they accumulate, with at most `maxInFlight` batches unconfirmed at
 * once (bounded memory for large fan-outs). `flush` resolves when all are written and rejects if any
 * failed; after a failure `add` rejects too and sends nothing more.
 */
export class BatchPublisher<T> {
  private buffer: T[] = [];
  private weight = 0;
  private inFlight: Promise<void>[] = [];
  /** Set once a batch failed: nothing more is sent, or it could be written ahead of that batch's retry. */
  private failure?: { error: unknown };

  constructor(
    private readonly bus: EventBus,
    private readonly topic: TopicSpec<T>,
    private readonly options: BatchPublisherOptions<T>,
  ) {}

  async add(events: T[]): Promise<void> {
    for (const event of events) {
      this.buffer.push(event);
      this.weight += this.options.weigh?.(event) ?? 1;
      if (this.weight >= this.options.batchSize) await this.send();
    }
  }

  async flush(): Promise<void> {
    if (this.buffer.length > 0) await this.send();
    const pending = this.inFlight;
    this.inFlight = [];
    await Promise.all(pending);
  }

  private async send(): Promise<void> {
    if (this.failure) throw this.failure.error;
    const batch = this.buffer;
    this.buffer = [];
    this.weight = 0;
    const sending = this.bus.publish(this.topic, batch);
    sending.catch((error) => void (this.failure ??= { error })); // also observed in flush
    this.inFlight.push(sending);
    if (this.inFlight.length >= (this.options.maxInFlight ?? 4)) await this.inFlight.shift();
  }
}
