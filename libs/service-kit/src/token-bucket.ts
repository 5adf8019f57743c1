/**
 * A token bucket: `ratePerSecond` sustained, bursts up to `burst`. It measures durations, so it runs
 * on the monotonic clock: on the wall clock, a step back (NTP correcting a fast clock, a VM's clock
 * set) drained every bucket by the step times its rate, and every socket of the gateway was refused
 * `rate_limited`, and closed 4029, for as long as the step.
 */
export class TokenBucket {
  private tokens: number;
  private updatedAt: number;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = burst;
    this.updatedAt = now();
  }

  take(): boolean {
    this.refill();
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Returns tokens taken for what was not done after all (up to the burst). */
  giveBack(tokens = 1): void {
    this.refill();
    this.tokens = Math.min(this.burst, this.tokens + tokens);
  }

  /** Seconds until the next token. */
  retryAfterSeconds(): number {
    return Math.max(0, (1 - this.tokens) / this.ratePerSecond);
  }

  /** Refilled to its burst: as good as a new one. */
  isFull(): boolean {
    this.refill();
    return this.tokens >= this.burst;
  }

  private refill(): void {
    const now = this.now();
    // A clock that went back (an injected one) refills nothing rather than taking tokens away.
    const elapsedMs = Math.max(0, now - this.updatedAt);
    this.tokens = Math.min(this.burst, this.tokens + (elapsedMs / 1000) * this.ratePerSecond);
    this.updatedAt = now;
  }
}

/** What a frame refused for want of a token says: when a token comes, in ms, and in its message in s. */
export function rateLimitedRefusal(bucket: TokenBucket): { message: string; retryAfterMs: number } {
  const retryAfterMs = Math.ceil(bucket.retryAfterSeconds() * 1000);
  return { message: `too many frames: retry after ${(retryAfterMs / 1000).toFixed(3)} s`, retryAfterMs };
}

/** Acks get this many times the frame budget: throttling them would only cause redeliveries. */
export const ACK_BUDGET_FACTOR = 10;

/** A frame budget and a larger one for acks. */
export interface FrameBudgets {
  frames: TokenBucket;
  acks: TokenBucket;
}

export function frameBudgets(ratePerSecond: number, burst: number): FrameBudgets {
  return {
    frames: new TokenBucket(ratePerSecond, burst),
    acks: new TokenBucket(ratePerSecond * ACK_BUDGET_FACTOR, burst * ACK_BUDGET_FACTOR),
  };
}

const MIN_SWEEP_SIZE = 1024;

/**
 * Budgets per key (a user), made on first use (`of`) or kept from elsewhere (`keep`). Those
 * `refilled` to their burst are as good as new and are dropped, in a sweep each time the map has
 * doubled since the last, so the map holds about the keys active lately.
 */
export class KeyedBudgets<T> {
  private readonly byKey = new Map<string, T>();
  private sweepAt = MIN_SWEEP_SIZE;

  constructor(
    private readonly create: () => T,
    private readonly refilled: (budgets: T) => boolean,
  ) {}

  of(key: string): T {
    let budgets = this.byKey.get(key);
    if (budgets) return budgets;
    this.put(key, (budgets = this.create()));
    return budgets;
  }

  /** Keeps budgets made elsewhere until they have refilled (refilled ones are not kept). */
  keep(key: string, budgets: T): void {
    if (!this.refilled(budgets)) this.put(key, budgets);
  }

  /** The key's budgets, no longer kept here; undefined where none are. */
  take(key: string): T | undefined {
    const budgets = this.byKey.get(key);
    this.byKey.delete(key);
    return budgets;
  }

  get size(): number {
    return this.byKey.size;
  }

  private put(key: string, budgets: T): void {
    if (this.byKey.size >= this.sweepAt) this.sweep();
    this.byKey.set(key, budgets);
  }

  private sweep(): void {
    for (const [key, budgets] of this.byKey) if (this.refilled(budgets)) this.byKey.delete(key);
    this.sweepAt = Math.max(MIN_SWEEP_SIZE, 2 * this.byKey.size);
  }
}

/** Frame budgets per key: a pair is dropped once both of its buckets have refilled. */
export class KeyedFrameBudgets extends KeyedBudgets<FrameBudgets> {
  constructor(create: () => FrameBudgets) {
    super(create, (budgets) => budgets.frames.isFull() && budgets.acks.isFull());
  }
}
