/** Counts handlers running, so stop() can wait for them before its last commit. */
export class InFlight {
  private active = 0;
  private waiters: Array<() => void> = [];

  enter(): void {
    this.active++;
  }

  leave(): void {
    if (--this.active > 0) return;
    for (const wake of this.waiters.splice(0)) wake();
  }

  settled(): Promise<void> {
    return this.active === 0 ? Promise.resolve() : new Promise((resolve) => this.waiters.push(resolve));
  }
}
