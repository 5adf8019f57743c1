/** Promises under way (publishes to Kafka), so that stop() can wait for them to settle. */
export class InFlight {
  private readonly pending = new Set<Promise<unknown>>();

  track<T>(promise: Promise<T>): Promise<T> {
    this.pending.add(promise);
    void promise.finally(() => this.pending.delete(promise)).catch(() => undefined);
    return promise;
  }

  async settled(): Promise<void> {
    await Promise.allSettled([...this.pending]);
  }
}
