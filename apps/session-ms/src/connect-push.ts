import { groupBy } from '@parley/service-kit';
import type { DeliveryDeps } from './delivery-deps';
import { pushToGateways } from './push';
import { Connection, userKey } from './store/session-store';

/** Pushes to devices that connected under way at once, at most (see `startConnectPush`). */
const MAX_CONNECT_PUSHES = 8;

type ConnectPushDeps = Pick<DeliveryDeps, 'store' | 'gateways' | 'settings' | 'logger' | 'metrics'>;

/** The pushes of what a user has pending to the devices that connected, at once. */
export class ConnectPushes {
  /** Pushes to devices that connected, under way (`startConnectPush`). */
  private readonly connectPushes = new Set<Promise<void>>();

  constructor(private readonly deps: ConnectPushDeps) {}

  /**
   * Not awaited: the connections consumer does not wait on a gateway (one that does not answer
   * would hold every connect, disconnect and heartbeat behind it). A few at once at most, as in a
   * gateway rollout's storm of connects: what is skipped goes at its retry, as it did before.
   */
  startConnectPush(connections: Connection[]): void {
    if (this.connectPushes.size >= MAX_CONNECT_PUSHES) return;
    const pushing = this.pushPendingTo(connections).catch((err: unknown) =>
      this.deps.logger.warn({ err }, 'could not push what was pending to devices that connected'),
    );
    this.connectPushes.add(pushing);
    void pushing.finally(() => this.connectPushes.delete(pushing));
  }

  /** Resolves once the pushes to devices that connected, started so far, are done. */
  async connectPushesDone(): Promise<void> {
    await Promise.all([...this.connectPushes]);
  }

  /**
   * A device that connects gets what its user has pending at once: pushed before to a socket that
   * died unnoticed (a phone changing networks), it would otherwise wait for its retry, an ack
   * timeout later. Stored copies are left to the replay storage sends on a connect, and so is what
   * was tracked after the first of them: pushed now, it would arrive before the older stored copy
   * (it goes at its retry, after the replay, as before). Retries stay due as they were (the device
   * dedups by mid).
   */
  private async pushPendingTo(connections: Connection[]): Promise<void> {
    const { store, settings, metrics } = this.deps;
    if (connections.length === 0) return;
    const held = await store.pendingOf([...new Set(connections.map((c) => c.user))]);
    const pending = [...held.values()].flatMap((ofUser) => {
      const firstStored = ofUser.findIndex((p) => p.stored);
      return firstStored < 0 ? ofUser : ofUser.slice(0, firstStored);
    });
    if (pending.length === 0) return;
    // Acks unread behind a backlog would be taken for none: pushed again, each would be acked again
    // into the same backlog. Retries wait for the ack clock; so does this.
    if (Date.now() - ((await store.readUpTo()) ?? Date.now()) > settings.ackTimeoutMs) return;
    // Only to sockets the store holds now: it refuses, or forgot within the batch, one of a gateway
    // process that restarted since (its socket died with it), and a gateway seen gone is left out.
    const live = await store.connectionsOf([...new Set(pending.map((p) => p.user))]);
    const liveIds = new Set([...live.values()].flat().map((c) => userKey(c.user, c.connId)));
    const targets = groupBy(
      connections.filter((c) => liveIds.has(userKey(c.user, c.connId))),
      (c) => c.user,
    );
    const pushes = pending.filter((p) => targets.has(p.user)).map((p) => ({ user: p.user, frame: p.frame }));
    if (pushes.length === 0) return;
    metrics.reconnectPushes.inc(pushes.length);
    await pushToGateways(this.deps, pushes, targets);
  }
}
