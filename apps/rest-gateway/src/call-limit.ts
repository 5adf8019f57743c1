/** Why a call was not let through: the waiting line was full, or the call waited its longest. */
export type CallRefusal = 'queue_full' | 'wait_timeout';

export interface CallLimitSettings {
  maxInFlight: number;
  maxWaiting: number;
  maxWaitMs: number;
}

interface Waiter {
  admit(refusal?: CallRefusal): void;
  timer: NodeJS.Timeout;
}

/**
 * At most `maxInFlight` calls under way at once. The next ones wait their turn, in order, up to
 * `maxWaiting` of them and each for at most `maxWaitMs`; a call past either is refused.
 */
export class CallLimit {
  private running = 0;
  /** In arrival order (a Set keeps it), and a waiter that gives up leaves from the middle. */
  private readonly waiting = new Set<Waiter>();

  constructor(private readonly settings: CallLimitSettings) {}

  get inFlight(): number {
    return this.running;
  }

  get queued(): number {
    return this.waiting.size;
  }

  /** Runs `call` once a slot is free; refused, throws what `refused` makes of the reason. */
  async run<T>(call: () => Promise<T>, refused: (why: CallRefusal) => Error): Promise<T> {
    const refusal = await this.acquire();
    if (refusal) throw refused(refusal);
    try {
      return await call();
    } finally {
      this.release();
    }
  }

  private acquire(): Promise<CallRefusal | undefined> {
    if (this.running < this.settings.maxInFlight) {
      this.running++;
      return Promise.resolve(undefined);
    }
    if (this.waiting.size >= this.settings.maxWaiting) return Promise.resolve('queue_full');
    return new Promise((admit) => {
      const waiter: Waiter = {
        admit,
        timer: setTimeout(() => {
          this.waiting.delete(waiter);
          admit('wait_timeout');
        }, this.settings.maxWaitMs),
      };
      this.waiting.add(waiter);
    });
  }

  /** A call is done: its slot passes to the one waiting longest, if any. */
  private release(): void {
    const next = this.waiting.values().next();
    if (next.done) {
      this.running--;
      return;
    }
    this.waiting.delete(next.value);
    clearTimeout(next.value.timer);
    next.value.admit();
  }
}
