import type { EncodedRecord } from '../codec';
import { MAX_RECORDS_PER_REQUEST, MAX_REQUEST_BYTES } from './request-size';

/** A request-sized part of one publish, settled with the produce request that carries it. */
export interface PendingSend {
  topic: string;
  messages: EncodedRecord[];
  /** `recordBytes` of the messages. */
  bytes: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * The sends waiting for a produce request, in the order they were published.
 *
 * A FIFO read from `head`: slicing the rest off per request copied a whole backlog each time.
 * Taken slots are cleared, so what was sent does not stay in memory until the queue compacts.
 */
export class SendQueue {
  private queue: Array<PendingSend | undefined> = [];
  private head = 0;

  push(send: PendingSend): void {
    this.queue.push(send);
  }

  hasWaiting(): boolean {
    return this.head < this.queue.length;
  }

  /** The sends at the head that fit in one request (at least one), taken off the queue. */
  takeRequest(): PendingSend[] {
    const batch: PendingSend[] = [];
    let count = 0;
    let bytes = 0;
    while (this.head < this.queue.length) {
      const next = this.queue[this.head]!;
      const fits =
        count + next.messages.length <= MAX_RECORDS_PER_REQUEST && bytes + next.bytes <= MAX_REQUEST_BYTES;
      if (batch.length > 0 && !fits) break;
      batch.push(next);
      count += next.messages.length;
      bytes += next.bytes;
      this.queue[this.head++] = undefined;
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head); // once the cleared part is the larger one
      this.head = 0;
    }
    return batch;
  }

  /** Rejects every send still waiting with `err`, and empties the queue. */
  rejectAll(err: unknown): void {
    for (let i = this.head; i < this.queue.length; i++) this.queue[i]!.reject(err);
    this.queue = [];
    this.head = 0;
  }
}
