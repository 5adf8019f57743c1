import type { ConnectionTopicEvent } from '@parley/contracts';
import type { ConnectPushes } from './connect-push';
import type { DeliveryDeps } from './delivery-deps';
import type { Connection } from './store/session-store';

const GATEWAY_SWEEP_INTERVAL_MS = 60_000;

type ConnectionDeps = Pick<DeliveryDeps, 'store' | 'gateways' | 'settings' | 'logger' | 'metrics'>;

/**
 * Who is connected where: the connections topic's connects, disconnects and gateway heartbeats
 * kept in the store, gateways that restarted or may hold sockets the store does not know, and
 * gateways gone for good.
 */
export class ConnectionTracker {
  /** Gateways this replica is asking to announce their connections (the ask in flight). */
  private readonly announcing = new Set<string>();
  private nextGatewaySweepAt = 0;

  constructor(
    private readonly deps: ConnectionDeps,
    private readonly connectPushes: ConnectPushes,
  ) {}

  /**
   * Records of the connections topic. Store calls are issued in the batch's order without waiting
   * for each answer: Redis runs one client's commands in the order sent, and each of these is one
   * command (a script, a MULTI), in about one round trip for the batch instead of two per connect
   * (in a reconnect storm the connects fell behind the replays storage sent, and those went to no
   * socket). The scripts (addConnection, removeConnection) go in the batch's order; gatewayAlive's
   * MULTI is not auto-pipelined by ioredis and may run before scripts issued ahead of it, which
   * touch none of its keys. A gateway is noted alive once a batch.
   */
  async handleConnections(events: ConnectionTopicEvent[]): Promise<void> {
    const { store, settings } = this.deps;
    const connected = new Map<string, Connection>();
    const issued: Array<Promise<unknown>> = [];
    const noted = new Set<string>();
    for (const event of events) {
      if (event.kind === 'connection-down') {
        issued.push(store.removeConnection(event.user, event.connId, event.at));
        connected.delete(event.connId);
        continue;
      }
      if (event.kind === 'gateway-heartbeat' && event.startedAt !== undefined) {
        // Several round trips: what came before it in the batch goes first, what follows waits.
        await Promise.all(issued.splice(0));
        await this.gatewayStarted(event.gateway, event.startedAt);
      }
      if (!noted.has(event.gateway)) {
        noted.add(event.gateway);
        issued.push(
          store
            .gatewayAlive(event.gateway, settings.gatewayTtlMs, event.startedAt)
            .then((toAnnounce) => (toAnnounce ? this.askToAnnounce(event) : undefined)),
        );
      }
      if (event.kind === 'connection-up') {
        issued.push(store.addConnection(event));
        connected.set(event.connId, event);
      }
    }
    await Promise.all(issued);
    if (connected.size > 0) this.connectPushes.startConnectPush([...connected.values()]);
  }

  /** Once a minute: connections of gateways gone for good, also of users nobody looks up. */
  async forgetGoneGateways(now: number): Promise<void> {
    if (now < this.nextGatewaySweepAt) return;
    this.nextGatewaySweepAt = now + GATEWAY_SWEEP_INTERVAL_MS;
    const forgotten = await this.deps.store.forgetGoneGateways();
    if (forgotten > 0)
      this.deps.logger.info({ forgotten }, 'forgot the connections of gateways gone for an hour');
  }

  /** A gateway restarted under the same id: the sockets of its earlier process are gone. */
  private async gatewayStarted(gateway: string, startedAt: number): Promise<void> {
    const forgotten = await this.deps.store.gatewayStarted(gateway, startedAt);
    if (forgotten === 0) return;
    this.deps.metrics.staleConnections.inc(forgotten);
    this.deps.logger.info({ gateway, forgotten }, 'forgot the connections of a gateway that restarted');
  }

  /**
   * A gateway the store did not know (it lost its state, or forgot the gateway after a long
   * silence) may hold sockets it has no record of, which would count as offline: their messages
   * would go to storage and push instead of the open socket. The gateway announces them again. A
   * gateway that started since the store's state began is not asked (`gatewayAlive`): its
   * connection-ups are all in the topic, and announced again each would replay storage again.
   * The ask is owed in the store until the gateway takes it, so that whichever replica reads the
   * gateway's next event asks again. The call is not awaited: the connections consumer does not
   * wait on a gateway.
   */
  private async askToAnnounce({
    gateway,
    gatewayUrl,
  }: {
    gateway: string;
    gatewayUrl: string;
  }): Promise<void> {
    const { store, gateways, logger, metrics } = this.deps;
    if (this.announcing.has(gateway)) return;
    this.announcing.add(gateway);
    try {
      await store.oweAnnouncement(gateway);
    } catch (err) {
      this.announcing.delete(gateway);
      throw err;
    }
    gateways
      .announce(gatewayUrl)
      .then(async () => {
        metrics.announcements.inc();
        await store.announced(gateway);
      })
      .catch((err: unknown) =>
        logger.warn({ err, gateway }, 'could not ask a gateway to announce its connections'),
      )
      .finally(() => this.announcing.delete(gateway));
  }
}
