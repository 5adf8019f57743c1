import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { ConnectionTopicEvent, TOPICS } from '@parley/contracts';
import type { EventBus } from '@parley/kafka';
import { scrapedGauge } from '@parley/service-kit';
import { DEFAULT_ANNOUNCE_CHUNK, WsGatewaySettings } from './config';
import type { ClientConnection, ConnectionRegistry } from './connections';
import type { InFlight } from './in-flight';

type ConnectionDown = Extract<ConnectionTopicEvent, { kind: 'connection-down' }>;

export interface ConnectionPublisherDeps {
  bus: EventBus;
  settings: WsGatewaySettings;
  registry: ConnectionRegistry;
  inFlight: InFlight;
  logger: Logger;
  metrics: Registry;
  /** This process's start, named by every event: session-ms forgets what an earlier run registered. */
  startedAt: number;
  isDraining: () => boolean;
}

/**
 * What session-ms learns of this gateway's sockets, on the connections topic: each connect and
 * disconnect, a heartbeat naming the gateway, and every open connection again when it asks.
 */
export class ConnectionPublisher {
  /** Disconnects Kafka did not take: sent again with each heartbeat, and at stop, until it does. */
  private readonly unpublishedDowns = new Map<string, ConnectionDown>();
  private announcing: Promise<void> | undefined;
  private announceOwed = false;
  /** Asked again while announcing: the announce under way starts over at its next chunk. */
  private announceAgain = false;
  private beating: Promise<unknown> | undefined;

  constructor(private readonly deps: ConnectionPublisherDeps) {
    scrapedGauge(
      deps.metrics,
      {
        name: 'parley_ws_unpublished_disconnects',
        help: 'Disconnects Kafka refused, held to be published again with each heartbeat (at most MAX_CONNECTIONS)',
      },
      () => this.unpublishedDowns.size,
    );
  }

  /** True once Kafka took it. */
  up(conn: ClientConnection): Promise<boolean> {
    return this.publish('connection-up', conn);
  }

  down(conn: ClientConnection): Promise<boolean> {
    return this.publish('connection-down', conn);
  }

  /**
   * One heartbeat at a time: while Kafka hangs (answers nothing until kafkajs's retries run out,
   * minutes), a beat per interval queued one more copy of every disconnect held, up to
   * MAX_CONNECTIONS of them, for as long as it hung. A tick that finds one under way is skipped.
   */
  heartbeat(): Promise<unknown> {
    if (this.announceOwed) this.announce();
    this.beating ??= this.sendHeartbeat().finally(() => (this.beating = undefined));
    return this.beating;
  }

  /**
   * Every open connection goes out again as a connection-up: session-ms asked (POST /announce), as
   * it did not know this gateway (its store lost its state, or it had forgotten a gateway silent for
   * an hour). What Kafka refuses is tried again with the next heartbeat. Asked again meanwhile, its
   * store lost its state again: what this announce published so far is lost there, so it starts over.
   */
  announce(): void {
    if (this.announcing) this.announceAgain = true;
    else this.announcing = this.announceConnections().finally(() => (this.announcing = undefined));
  }

  /**
   * At stop, once every socket is closed: an announce under way publishes no more chunks, but the one
   * on its way may be followed by the disconnects of sockets it named that closed meanwhile: those go
   * out before the bus closes. The disconnects are still on their way: one Kafka refuses is then
   * among those sent again.
   */
  async finish(): Promise<void> {
    await this.announcing;
    await this.deps.inFlight.settled();
    if (this.unpublishedDowns.size > 0)
      await this.publishWithLostDowns([]).catch((err) =>
        this.deps.logger.error(
          { err, count: this.unpublishedDowns.size },
          'disconnects could not be published',
        ),
      );
  }

  private event(kind: 'connection-up' | 'connection-down', conn: ClientConnection): ConnectionTopicEvent {
    const { settings, startedAt } = this.deps;
    return {
      v: 1,
      kind,
      user: conn.user,
      connId: conn.id,
      deviceId: conn.deviceId,
      gateway: settings.gatewayId,
      gatewayUrl: settings.internalUrl,
      // Never before this process's start: session-ms drops a connection stamped earlier than the
      // start its heartbeats name (less RESTART_CLOCK_MARGIN_MS) as one of a process gone, so a clock
      // stepped back since the start (NTP correcting a clock that booted fast) made every socket
      // opened until it caught up unknown there: counted offline, its messages sent to storage.
      at: Math.max(Date.now(), startedAt),
      startedAt,
    };
  }

  private publish(kind: 'connection-up' | 'connection-down', conn: ClientConnection): Promise<boolean> {
    const event = this.event(kind, conn);
    return this.deps.inFlight.track(this.deps.bus.publish(TOPICS.connections, [event])).then(
      () => {
        if (kind === 'connection-up') conn.announced = true;
        return true;
      },
      (err: unknown) => {
        this.deps.logger.error({ err, kind, user: conn.user }, 'publishing a connection event failed');
        // Lost, session-ms would count the device connected for as long as this gateway beats. A
        // connect Kafka never took needs none: while Kafka is away every reconnect is such a one,
        // and keeping a disconnect for each grew the gateway for as long as the outage lasted.
        if (event.kind === 'connection-down' && conn.announced) this.keepLostDown(event);
        return false;
      },
    );
  }

  /**
   * At most one per socket the gateway may hold; past that the oldest goes (session-ms still drops
   * such a connection when this gateway's /send answer names it missing).
   */
  private keepLostDown(event: ConnectionDown): void {
    const downs = this.unpublishedDowns;
    if (downs.size >= this.deps.settings.maxConnections && !downs.has(event.connId))
      downs.delete(downs.keys().next().value!);
    downs.set(event.connId, event);
  }

  private publishWithLostDowns(events: ConnectionTopicEvent[]): Promise<void> {
    const downs = [...this.unpublishedDowns.values()];
    return this.deps.inFlight
      .track(this.deps.bus.publish(TOPICS.connections, [...downs, ...events]))
      .then(() => {
        for (const down of downs) this.unpublishedDowns.delete(down.connId);
      });
  }

  private sendHeartbeat(): Promise<unknown> {
    const { settings, registry, startedAt, logger } = this.deps;
    return this.publishWithLostDowns([
      {
        v: 1,
        kind: 'gateway-heartbeat',
        gateway: settings.gatewayId,
        gatewayUrl: settings.internalUrl,
        connections: registry.size,
        at: Date.now(),
        startedAt,
      },
    ]).catch((err) => logger.warn({ err }, 'gateway heartbeat failed'));
  }

  private async announceConnections(): Promise<void> {
    const { bus, settings, registry, inFlight, logger } = this.deps;
    this.announceOwed = false;
    const chunkSize = settings.announceChunk ?? DEFAULT_ANNOUNCE_CHUNK;
    // Draining closes every socket: the rest need no announcing, and stop() waits for this.
    const going = () => !this.deps.isDraining() && !this.announceAgain;
    try {
      let open: ClientConnection[];
      do {
        this.announceAgain = false;
        open = [...registry.all()];
        for (let i = 0; i < open.length && going(); i += chunkSize) {
          const chunk = open.slice(i, i + chunkSize);
          await inFlight.track(
            bus.publish(
              TOPICS.connections,
              chunk.map((conn) => this.event('connection-up', conn)),
            ),
          );
          for (const conn of chunk) {
            conn.announced = true;
            // One that closed meanwhile may have had its connection-down written before this up: again.
            if (registry.of(conn.user, [conn.id]).length === 0) void this.down(conn);
          }
        }
      } while (this.announceAgain && !this.deps.isDraining());
      logger.info({ connections: open.length }, 'open connections announced again to session-ms');
    } catch (err) {
      this.announceOwed = true;
      logger.warn({ err }, 'announcing the open connections failed; trying again with the next heartbeat');
    }
  }
}
