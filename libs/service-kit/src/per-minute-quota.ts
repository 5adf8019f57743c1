/**
 * Per key, what was spent in the current minute against a limit (the count starts again each
 * minute, for every key at once: the map holds the keys of one minute at most). The minute is
 * measured on the monotonic clock: on the wall clock, a step back held every count for the step.
 */
export class PerMinuteQuota {
  private spent = new Map<string, number>();
  private minuteEndsAt = 0;

  constructor(
    private readonly perMinute: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  allows(key: string): boolean {
    this.turn();
    return (this.spent.get(key) ?? 0) < this.perMinute;
  }

  spend(key: string, n: number): void {
    if (n === 0) return;
    this.turn();
    this.spent.set(key, (this.spent.get(key) ?? 0) + n);
  }

  private turn(): void {
    const now = this.now();
    if (now < this.minuteEndsAt) return;
    this.spent = new Map();
    this.minuteEndsAt = now + 60_000;
  }
}
