import type { DeliveryDeps } from './delivery-deps';
import type { StoreLoss } from './store-loss';
import type { ReplicaAnswer } from './store/session-store';

/** While commits are held back, one warning this often at most. */
const HELD_WARNING_EVERY_MS = 60_000;

/** Why a commit was held back: the store's answer, it failed to answer, or a re-read is owed. */
type HeldBecause = Exclude<ReplicaAnswer, 'replicated'> | 'error' | 'reread';

/**
 * The delivery consumer's `mayCommit` where the store waits for replicas (REDIS_WAIT_REPLICAS):
 * offsets go to Kafka only once what their events wrote to Redis is on its replicas, so a failover
 * to a replica cannot lose the tracking of events that would never be read again. Writes found
 * lost after all (a failover to a replica that lagged) are read again (`StoreLoss.writesLost`).
 */
export class ReplicaWait {
  /** The read position at the last `replicated` answer (else at the first ask): what came before is on the replicas. */
  private replicatedUpTo: number | undefined;
  private held = { since: 0, lastWarned: -Infinity };

  constructor(
    private readonly deps: Pick<DeliveryDeps, 'store' | 'reader' | 'logger' | 'metrics'>,
    private readonly storeLoss: StoreLoss,
  ) {}

  async mayCommit(): Promise<boolean> {
    const { store, reader, metrics } = this.deps;
    // Read before the wait, which covers every write made before it: a record handled later was
    // written at or after this.
    const readUpTo = reader.readUpTo();
    this.replicatedUpTo ??= readUpTo;
    // Committed now, the offsets would move past what the re-read is to bring back.
    if (this.storeLoss.rereadWaiting) return this.holdBack('reread');
    const timer = metrics.redisWait.startTimer();
    let failure: unknown;
    const answer = await store.awaitReplicas().catch((err): HeldBecause => ((failure = err), 'error'));
    timer();
    if (answer === 'replicated') {
      this.replicatedUpTo = readUpTo;
      this.held.since = 0;
      return true;
    }
    if (answer === 'lost') this.storeLoss.writesLost(this.replicatedUpTo);
    return this.holdBack(answer, failure);
  }

  /** `err`: why Redis did not answer (a connection lost, an ACL without WAIT or INFO). */
  private holdBack(because: HeldBecause, err?: unknown): false {
    const { metrics, logger } = this.deps;
    metrics.commitsHeld.inc({ because });
    const now = Date.now();
    if (this.held.since === 0) this.held.since = now;
    if (now - this.held.lastWarned >= HELD_WARNING_EVERY_MS) {
      this.held.lastWarned = now;
      logger.warn(
        { because, heldSince: new Date(this.held.since).toISOString(), ...(err !== undefined && { err }) },
        'delivery offsets not committed: Redis has not shown its replicas have what was written (REDIS_WAIT_REPLICAS); tried again every commit interval',
      );
    }
    return false;
  }
}
