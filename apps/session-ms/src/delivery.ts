import type { ConnectionTopicEvent, DeliveryTopicEvent } from '@parley/contracts';
import type { EventBus } from '@parley/kafka';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { reportReadPosition, withdrawReadPosition } from './ack-clock';
import { AckHandler } from './acks';
import { ConnectPushes } from './connect-push';
import { ConnectionTracker } from './connections';
import type { DeliveryDeps, DeliveryReader, DeliverySettings } from './delivery-deps';
import { createDeliveryMetrics } from './delivery-metrics';
import { deliverySlices, handleDeliveryEvents } from './delivery-topic';
import type { GatewayClient } from './gateway-client';
import { handOffPending } from './offline';
import { ReplicaWait } from './replica-wait';
import { retryDue } from './retries';
import { StoreLoss } from './store-loss';
import type { SessionStore } from './store/session-store';

export { UNKNOWN_ACKS_PER_MINUTE } from './acks';
export type { DeliveryReader, DeliverySettings } from './delivery-deps';
export { MAX_SLICE_BYTES, withoutStaleNotices } from './delivery-topic';

/**
 * Delivery: push deliverables through the gateways holding the user's devices, wait for the ack,
 * push again on timeout, then hand over to the offline topic. State lives in the SessionStore, so
 * another replica (or this one restarted) resumes where this one stopped.
 */
export class Delivery {
  private readonly deps: DeliveryDeps;
  private readonly acks: AckHandler;
  private readonly connectPushes: ConnectPushes;
  private readonly connections: ConnectionTracker;
  private readonly storeLoss: StoreLoss;
  private readonly replicaWait: ReplicaWait;

  constructor(
    store: SessionStore,
    gateways: GatewayClient,
    bus: EventBus,
    settings: DeliverySettings,
    logger: Logger,
    registry: Registry,
    reader: DeliveryReader,
  ) {
    const metrics = createDeliveryMetrics(registry);
    this.deps = { store, gateways, bus, settings, logger, metrics, reader };
    this.acks = new AckHandler(this.deps);
    this.connectPushes = new ConnectPushes(this.deps);
    this.connections = new ConnectionTracker(this.deps, this.connectPushes);
    this.storeLoss = new StoreLoss(this.deps);
    this.replicaWait = new ReplicaWait(this.deps, this.storeLoss);
  }

  /**
   * The delivery consumer's `mayCommit`, where the store waits for replicas (`ReplicaWait`);
   * undefined where it does not: every commit goes.
   */
  get mayCommit(): (() => Promise<boolean>) | undefined {
    return this.deps.store.waitsForReplicas ? () => this.replicaWait.mayCommit() : undefined;
  }

  /** Records of the delivery topic, in partition order, a slice at a time (`deliverySlices`). */
  async handle(events: DeliveryTopicEvent[]): Promise<void> {
    for (const slice of deliverySlices(events)) await handleDeliveryEvents(this.deps, this.acks, slice);
  }

  /** Records of the connections topic (`ConnectionTracker.handleConnections`). */
  async handleConnections(events: ConnectionTopicEvent[]): Promise<void> {
    await this.connections.handleConnections(events);
  }

  /** Resolves once the pushes to devices that connected, started so far, are done. */
  async connectPushesDone(): Promise<void> {
    await this.connectPushes.connectPushesDone();
  }

  /** Pushes again what is due; what ran out of attempts goes offline. Returns how many were due. */
  async retryDue(limit = 500): Promise<number> {
    const now = Date.now();
    await Promise.all([
      reportReadPosition(this.deps, now),
      // A loss is told once: it is noted even when another of these calls fails the round.
      this.deps.store.lostAt().then((lostAt) => {
        if (lostAt !== undefined) this.storeLoss.storeFoundEmpty(lostAt);
      }),
      this.connections.forgetGoneGateways(now),
    ]);
    this.storeLoss.rereadIfOwed();
    return retryDue(this.deps, now, limit);
  }

  /**
   * The user's account is erased: what awaits their ack is dropped, not stored, and their
   * connections and when they were last seen are forgotten. Returns how many deliverables were
   * dropped.
   */
  async erase(user: string): Promise<number> {
    const { store } = this.deps;
    const pending = (await store.pendingOf([user])).get(user) ?? [];
    await store.drop(
      user,
      pending.map((p) => p.mid),
    );
    await store.forgetLastSeen(user);
    return pending.length;
  }

  /**
   * With a store that dies with this process, what still awaits an ack goes to storage before the
   * process ends (`handOffPending`). Returns how many went.
   */
  async handOffPending(): Promise<number> {
    return handOffPending(this.deps);
  }

  /** This replica stops retrying: if it is caught up, the others no longer wait for its read position. */
  async leave(): Promise<void> {
    // A re-read being asked for ends first: the delivery consumer stops after this, and its last
    // commit carries the rewind only once the re-read is set (later, it would find none to rewind).
    await this.storeLoss.rereadEnded();
    await withdrawReadPosition(this.deps);
  }
}
