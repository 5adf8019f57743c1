import { maxAckReadLagMs } from './ack-clock';
import type { DeliveryDeps } from './delivery-deps';

/**
 * Records written this much longer than a deliverable stays pending (its attempts' ack timeouts,
 * each on an ack clock up to MAX_ACK_READ_LAG_MS behind) before the store was found empty are read
 * again: room for retry ticks and gateway calls.
 */
const REREAD_SLACK_MS = 60_000;
/** How long a replica that holds no partition when the store is found empty keeps asking to re-read. */
const REREAD_WITHOUT_PARTITIONS_MS = 60_000;

/**
 * Recovery from a session store that lost its state (Redis restarted without its data): this
 * replica reads its partitions of the delivery topic again (`storeFoundEmpty`, `rereadIfOwed`).
 */
export class StoreLoss {
  /**
   * Where the delivery topic is to be read again from, until the re-read is set (while this
   * replica holds no partition, until `until`: it may hold none for good).
   */
  private rereadOwed: { from: number; until: number } | undefined;
  private rereading: Promise<void> | undefined;

  constructor(private readonly deps: Pick<DeliveryDeps, 'reader' | 'settings' | 'logger' | 'metrics'>) {}

  /**
   * The store lost what was pending (pushed, not acked): its deliver events were committed, so
   * this replica reads its partitions of the delivery topic again from before anything pending
   * then was written. Delivers and acks replayed in order track again what was not acked; what was
   * acked meanwhile may be pushed twice (apps dedup by mid). Connections come back as the gateways
   * announce them (`ConnectionTracker.askToAnnounce`).
   */
  storeFoundEmpty(lostAt: number): void {
    const { reader, settings, logger, metrics } = this.deps;
    metrics.storeLost.inc();
    // Each attempt's ack timeout runs on the ack clock, which may lag the wall clock by up to
    // MAX_ACK_READ_LAG_MS at every attempt (each push is timed again from when it is sent).
    const pendingAtMostMs =
      settings.maxAttempts * (settings.ackTimeoutMs + maxAckReadLagMs(settings)) + REREAD_SLACK_MS;
    const from = this.oweReread(Math.min(lostAt, reader.readUpTo()) - pendingAtMostMs);
    logger.error(
      { rereadFrom: new Date(from).toISOString() },
      'the session store lost its state (Redis restarted empty?): the delivery topic is read again to track what awaited an ack, and the ws-gateways are asked to announce their open connections with their next heartbeat',
    );
  }

  /**
   * The store lacks writes of this replica made since its read position was `since` (Redis's last
   * `replicated` answer): a failover to a replica that lagged. Commits held back since then, this
   * replica reads its partitions again from there.
   */
  writesLost(since: number): void {
    this.deps.metrics.storeLost.inc();
    const from = this.oweReread(since - REREAD_SLACK_MS);
    this.deps.logger.error(
      { rereadFrom: new Date(from).toISOString() },
      'the session store lacks writes made since they were last seen on its replicas (a failover to a replica that lagged): the delivery topic is read again from there',
    );
  }

  /** Whether a re-read is owed and not under way yet: commits now would not carry it. */
  get rereadWaiting(): boolean {
    return this.rereadOwed !== undefined && this.rereading === undefined;
  }

  /** Owes a re-read from `from`, or from an earlier start owed already; returns where it starts. */
  private oweReread(from: number): number {
    // A loss seen again before the first re-read was set keeps the earlier start.
    const start = Math.min(from, this.rereadOwed?.from ?? Infinity);
    this.rereadOwed = { from: start, until: Date.now() + REREAD_WITHOUT_PARTITIONS_MS };
    return start;
  }

  /** Starts the re-read owed, unless none is or one is under way. */
  rereadIfOwed(): void {
    if (this.rereadOwed && !this.rereading)
      this.rereading = this.rereadLost().finally(() => (this.rereading = undefined));
  }

  /** Resolves once the re-read under way, if any, has ended. */
  async rereadEnded(): Promise<void> {
    await this.rereading;
  }

  /**
   * Not awaited by the retry round: retries go on while the bus answers slowly. A failure is tried
   * again at the next tick.
   */
  private async rereadLost(): Promise<void> {
    const owed = this.rereadOwed!;
    try {
      const held = await this.deps.reader.rereadFrom(owed.from);
      if (this.rereadOwed === owed && (held || Date.now() > owed.until)) this.rereadOwed = undefined;
    } catch (err) {
      this.deps.logger.warn({ err }, 'could not read the delivery topic again; trying again');
    }
  }
}
