import {
  AckEvent,
  ConnectionTopicEvent,
  Deliverable,
  deliveredReceipts,
  DeliverEvent,
  deliveriesIn,
  DeliveryTopicEvent,
  GatewayDelivery,
  GatewaySendResult,
  MAX_GATEWAY_BATCH,
  OfflineTopicEvent,
  PushedFrame,
  senderOfMid,
  TOPICS,
  TYPING_NOTICE_MAX_AGE_MS,
} from '@parley/contracts';
import { Envelope, EventBus } from '@parley/kafka';
import { DAY_MS } from '@parley/service-kit';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { GatewayCallError, GatewayClient } from './gateway-client';
import { Connection, Pending, SessionStore, userKey } from './store/session-store';

export interface DeliverySettings {
  /** How long to wait for an ack before pushing again. */
  ackTimeoutMs: number;
  /** Pushes before a deliverable goes offline. */
  maxAttempts: number;
  /** How long an acked mid is remembered, so a duplicate is not delivered again. */
  rememberAckedMs: number;
  /** A gateway that has not beaten for this long is considered gone. */
  gatewayTtlMs: number;
  /** How often `retryDue` runs (the read-position reports expire after a few ticks). */
  retryTickMs: number;
  /** A reader stalled this far behind no longer holds retries back (default 60 s). */
  maxAckReadLagMs?: number;
  /**
   * Acks of mids that completed nothing a user may leave remembered a minute, on this replica
   * (default UNKNOWN_ACKS_PER_MINUTE); past that, such acks leave no marker.
   */
  unknownAcksPerMinute?: number;
}

/** How long a replica's read position counts without a new report: about a consumer session timeout, and several retry ticks. */
const readReportTtlMs = (retryTickMs: number) => Math.max(10_000, 3 * retryTickMs);
/** A reader stalled this far behind no longer holds retries and the offline hand-over back. */
const MAX_ACK_READ_LAG_MS = 60_000;
const GATEWAY_SWEEP_INTERVAL_MS = 60_000;
/**
 * An app acks what it received, so an ack completes something but where a copy took another way
 * (synced from storage after its marks expired, re-read after Redis lost its data): a few. Anyone
 * may ack any mid, though, 500 to a frame and 200 frames a second a socket, and each ack of a mid
 * that completed nothing left a key in Redis for ACKED_TTL_MS (24 h): one user filled Redis.
 */
export const UNKNOWN_ACKS_PER_MINUTE = 1000;
/** A stopping replica this close to the present withdraws its read position; a lagging one lets it expire. */
const CAUGHT_UP_MS = 1000;
/**
 * How long a deliverable handed to storage is remembered as stored (`SessionStore.markStored`), so
 * that its ack reaches storage: the ack of a note to oneself, which looks like the ack of an
 * `accepted` frame, and the ack of a later copy of its mid pushed as new (a group message resent
 * after a membership change). A little longer than storage keeps it by default (persistence-ms's
 * RETENTION_DAYS, 30); the ack removes the mark.
 */
const STORED_MEMORY_MS = 31 * DAY_MS;

/**
 * Records written this much longer than a deliverable stays pending (its attempts' ack timeouts,
 * each on an ack clock up to MAX_ACK_READ_LAG_MS behind) before the store was found empty are read
 * again: room for retry ticks and gateway calls.
 */
const REREAD_SLACK_MS = 60_000;
/** How long a replica that holds no partition when the store is found empty keeps asking to re-read. */
const REREAD_WITHOUT_PARTITIONS_MS = 60_000;
/** Pushes to devices that connected under way at once, at most (see `startConnectPush`). */
const MAX_CONNECT_PUSHES = 8;

interface Push {
  user: string;
  frame: PushedFrame;
}

/** The events of a delivery-topic batch, less typing notices written too long ago to matter. */
export function withoutStaleNotices(
  batch: Envelope<DeliveryTopicEvent>[],
  now = Date.now(),
): DeliveryTopicEvent[] {
  const staleBefore = now - TYPING_NOTICE_MAX_AGE_MS;
  return batch
    .filter(({ event, timestamp }) => !(event.kind !== 'ack' && event.ephemeral && timestamp < staleBefore))
    .map((e) => e.event);
}

/** This replica's reading of the delivery topic (its subscription there). */
export interface DeliveryReader {
  replica: string;
  /**
   * The time up to which it has read acks (`handledUpTo`). Ack timeouts run on the slowest live
   * replica's read position, so an ack still queued behind a backlog is not taken for a silent
   * client: under a burst, retries would only add to the backlog.
   */
  readUpTo(): number;
  /**
   * Reads its partitions again from that time on (`rereadFrom`), to rebuild a lost store; false
   * when it holds none now (joining, a rebalance under way).
   */
  rereadFrom(time: number): Promise<boolean>;
}

/**
 * Delivery: push deliverables through the gateways holding the user's devices, wait for the ack,
 * push again on timeout, then hand over to the offline topic. State lives in the SessionStore, so
 * another replica (or this one restarted) resumes where this one stopped.
 */
export class Delivery {
  private readonly metrics;
  /** Gateways this replica is asking to announce their connections (the ask in flight). */
  private readonly announcing = new Set<string>();
  /** Pushes to devices that connected, under way (`startConnectPush`). */
  private readonly connectPushes = new Set<Promise<void>>();
  private nextGatewaySweepAt = 0;
  /**
   * Where the delivery topic is to be read again from, until the re-read is set (while this
   * replica holds no partition, until `until`: it may hold none for good).
   */
  private rereadOwed: { from: number; until: number } | undefined;
  private rereading: Promise<void> | undefined;
  private readonly unknownAcks: PerMinuteQuota;

  constructor(
    private readonly store: SessionStore,
    private readonly gateways: GatewayClient,
    private readonly bus: EventBus,
    private readonly settings: DeliverySettings,
    private readonly logger: Logger,
    registry: Registry,
    private readonly reader: DeliveryReader,
  ) {
    const counter = (name: string, help: string, labelNames: string[] = []) =>
      new Counter({ name: `parley_session_${name}`, help, labelNames, registers: [registry] });
    this.unknownAcks = new PerMinuteQuota(settings.unknownAcksPerMinute ?? UNKNOWN_ACKS_PER_MINUTE);
    this.metrics = {
      pushed: counter('pushed_total', 'Deliverables pushed to gateways (each attempt)'),
      offline: counter('offline_total', 'Deliverables handed to the offline topic'),
      unknownAcksForgotten: counter(
        'unknown_acks_forgotten_total',
        'Acks of mids that completed nothing, left unremembered: their user passed the quota of such acks a minute (a client acking made-up mids)',
      ),
      acked: counter(
        'acked_total',
        "Acks that completed a deliverable pending here (pushed, or its stored copy replayed), or repeated such an ack (another device, a re-ack); not a sender's ack of its accepted frame, nor one of a mid nothing here awaited",
      ),
      duplicates: counter('duplicates_total', 'Deliverables skipped as already pending or acked'),
      firstPushLatency: new Histogram({
        name: 'parley_session_first_push_latency_seconds',
        help: "From a message's sentAt (stamped by the gateway that took it) to the first push's answer from the recipient's gateway (written to the sockets), by chat: direct or group",
        labelNames: ['chat'],
        buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
        registers: [registry],
      }),
      reconnectPushes: counter(
        'reconnect_pushes_total',
        'Pending deliverables pushed at once to a device that connected, a failed gateway call included (pushed_total counts those that went)',
      ),
      pushFailures: counter(
        'push_failures_total',
        'Failed calls to a gateway, by reason: unreachable, timeout, silent (not called: the gateway let a call time out in the last 5 s), http_<status> (503: the gateway is shutting down), bad_answer, other',
        ['reason'],
      ),
      staleConnections: counter(
        'stale_connections_total',
        'Connections found gone without their connection-down (the gateway said it does not hold them, or restarted), removed',
      ),
      announcements: counter(
        'announcements_total',
        'Gateways asked to announce their open connections again: the store may lack some (it lost its state since the gateway started, or forgot the gateway after a long silence; an older gateway names no start)',
      ),
      storeLost: counter(
        'store_lost_total',
        'Times the session store was found empty after holding state (Redis restarted without its data)',
      ),
      ackReadLag: new Gauge({
        name: 'parley_session_ack_read_lag_seconds',
        help: 'How far behind the wall clock the slowest replica has read acks; retries wait for it (up to 60 s)',
        registers: [registry],
      }),
    };
  }

  /** Records of the delivery topic, in partition order. */
  async handle(events: DeliveryTopicEvent[]): Promise<void> {
    const acks = events.filter((e): e is AckEvent => e.kind === 'ack');
    // A copy of a mid that the same batch acked before it (a user who acked a stored copy, and its
    // sender sending it again) is a duplicate, as when read in turn: the ack, completed below,
    // tells storage. Tracked, it would be completed by that ack as pushed, storage unaware.
    const ackedBefore = new Set<string>();
    let duplicates = 0;
    const delivers = events.flatMap((event) => {
      if (event.kind === 'ack')
        for (const mid of event.mids)
          if (senderOfMid(mid) !== event.user) ackedBefore.add(userKey(event.user, mid));
      if (ackedBefore.size === 0) return deliveriesIn(event);
      return deliveriesIn(event).filter((d) => {
        const acked =
          !d.ephemeral && !d.replay && ackedBefore.has(userKey(d.to, (d.frame as Deliverable).mid));
        if (acked) duplicates++;
        return !acked;
      });
    });
    const now = Date.now();
    const durable: Pending[] = delivers
      .filter((d) => !d.ephemeral)
      .map((d) => ({
        user: d.to,
        mid: (d.frame as Deliverable).mid,
        frame: d.frame as Deliverable,
        attempts: 1,
        stored: d.replay === true,
      }));
    const dueAt = now + this.settings.ackTimeoutMs;
    const outcomes = await Promise.all(durable.map((pending) => this.store.track(pending, dueAt)));
    // A replay means a device just connected: one still pending (pushed to a device that left) goes
    // now, in storage's order, not at its retry, after what was stored behind it.
    const fresh = durable.filter(
      (p, i) => outcomes[i] === 'tracked' || (outcomes[i] === 'pending' && p.stored),
    );
    this.metrics.duplicates.inc(duplicates + durable.length - fresh.length);
    const ephemeral = delivers.filter((d) => d.ephemeral).map((d) => ({ user: d.to, frame: d.frame }));
    // What this batch acks further on (a batch read again) is neither pushed nor handed to storage
    // here: it is completed right after.
    const ackedHere = new Set(acks.flatMap((ack) => ack.mids.map((mid) => userKey(ack.user, mid))));
    // Except that one's own mid acked is usually the ack of its `accepted` frame: a note to oneself
    // still goes to the user's other devices.
    const unacked = fresh.filter(
      (p) => senderOfMid(p.mid) === p.user || !ackedHere.has(userKey(p.user, p.mid)),
    );
    await Promise.all([
      this.pushOrOffline(unacked, ephemeral, ackedHere),
      // A stored copy replayed after its mid was acked: that ack met a copy pushed as new and told
      // storage nothing (one's own mids aside, see handleAcks), so storage hears of it now.
      this.tellStorageAcked(durable.filter((p, i) => outcomes[i] === 'acked' && p.stored)),
    ]);
    if (acks.length > 0) await this.handleAcks(acks);
  }

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
    const connected = new Map<string, Connection>();
    const issued: Array<Promise<unknown>> = [];
    const noted = new Set<string>();
    for (const event of events) {
      if (event.kind === 'connection-down') {
        issued.push(this.store.removeConnection(event.user, event.connId, event.at));
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
          this.store
            .gatewayAlive(event.gateway, this.settings.gatewayTtlMs, event.startedAt)
            .then((toAnnounce) => (toAnnounce ? this.askToAnnounce(event) : undefined)),
        );
      }
      if (event.kind === 'connection-up') {
        issued.push(this.store.addConnection(event));
        connected.set(event.connId, event);
      }
    }
    await Promise.all(issued);
    if (connected.size > 0) this.startConnectPush([...connected.values()]);
  }

  /**
   * Not awaited: the connections consumer does not wait on a gateway (one that does not answer
   * would hold every connect, disconnect and heartbeat behind it). A few at once at most, as in a
   * gateway rollout's storm of connects: what is skipped goes at its retry, as it did before.
   */
  private startConnectPush(connections: Connection[]): void {
    if (this.connectPushes.size >= MAX_CONNECT_PUSHES) return;
    const pushing = this.pushPendingTo(connections).catch((err: unknown) =>
      this.logger.warn({ err }, 'could not push what was pending to devices that connected'),
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
    if (connections.length === 0) return;
    const held = await this.store.pendingOf([...new Set(connections.map((c) => c.user))]);
    const pending = [...held.values()].flatMap((ofUser) => {
      const firstStored = ofUser.findIndex((p) => p.stored);
      return firstStored < 0 ? ofUser : ofUser.slice(0, firstStored);
    });
    if (pending.length === 0) return;
    // Acks unread behind a backlog would be taken for none: pushed again, each would be acked again
    // into the same backlog. Retries wait for the ack clock; so does this.
    if (Date.now() - ((await this.store.readUpTo()) ?? Date.now()) > this.settings.ackTimeoutMs) return;
    // Only to sockets the store holds now: it refuses, or forgot within the batch, one of a gateway
    // process that restarted since (its socket died with it), and a gateway seen gone is left out.
    const live = await this.store.connectionsOf([...new Set(pending.map((p) => p.user))]);
    const liveIds = new Set([...live.values()].flat().map((c) => userKey(c.user, c.connId)));
    const targets = groupBy(
      connections.filter((c) => liveIds.has(userKey(c.user, c.connId))),
      (c) => c.user,
    );
    const pushes = pending.filter((p) => targets.has(p.user)).map((p) => ({ user: p.user, frame: p.frame }));
    if (pushes.length === 0) return;
    this.metrics.reconnectPushes.inc(pushes.length);
    await this.push(pushes, targets);
  }

  /** A gateway restarted under the same id: the sockets of its earlier process are gone. */
  private async gatewayStarted(gateway: string, startedAt: number): Promise<void> {
    const forgotten = await this.store.gatewayStarted(gateway, startedAt);
    if (forgotten === 0) return;
    this.metrics.staleConnections.inc(forgotten);
    this.logger.info({ gateway, forgotten }, 'forgot the connections of a gateway that restarted');
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
    if (this.announcing.has(gateway)) return;
    this.announcing.add(gateway);
    try {
      await this.store.oweAnnouncement(gateway);
    } catch (err) {
      this.announcing.delete(gateway);
      throw err;
    }
    this.gateways
      .announce(gatewayUrl)
      .then(async () => {
        this.metrics.announcements.inc();
        await this.store.announced(gateway);
      })
      .catch((err: unknown) =>
        this.logger.warn({ err, gateway }, 'could not ask a gateway to announce its connections'),
      )
      .finally(() => this.announcing.delete(gateway));
  }

  /**
   * The store lost what was pending (pushed, not acked): its deliver events were committed, so
   * this replica reads its partitions of the delivery topic again from before anything pending
   * then was written. Delivers and acks replayed in order track again what was not acked; what was
   * acked meanwhile may be pushed twice (apps dedup by mid). Connections come back as the gateways
   * announce them (askToAnnounce).
   */
  private storeFoundEmpty(lostAt: number): void {
    this.metrics.storeLost.inc();
    // Each attempt's ack timeout runs on the ack clock, which may lag the wall clock by up to
    // MAX_ACK_READ_LAG_MS at every attempt (each push is timed again from when it is sent).
    const pendingAtMostMs =
      this.settings.maxAttempts *
        (this.settings.ackTimeoutMs + (this.settings.maxAckReadLagMs ?? MAX_ACK_READ_LAG_MS)) +
      REREAD_SLACK_MS;
    // A loss seen again before the first re-read was set keeps the earlier start.
    const from = Math.min(
      Math.min(lostAt, this.reader.readUpTo()) - pendingAtMostMs,
      this.rereadOwed?.from ?? Infinity,
    );
    this.rereadOwed = { from, until: Date.now() + REREAD_WITHOUT_PARTITIONS_MS };
    this.logger.error(
      { rereadFrom: new Date(from).toISOString() },
      'the session store lost its state (Redis restarted empty?): the delivery topic is read again to track what awaited an ack, and the ws-gateways are asked to announce their open connections with their next heartbeat',
    );
  }

  /**
   * Not awaited by the retry round: retries go on while the bus answers slowly. A failure is tried
   * again at the next tick.
   */
  private async rereadLost(): Promise<void> {
    const owed = this.rereadOwed!;
    try {
      const held = await this.reader.rereadFrom(owed.from);
      if (this.rereadOwed === owed && (held || Date.now() > owed.until)) this.rereadOwed = undefined;
    } catch (err) {
      this.logger.warn({ err }, 'could not read the delivery topic again; trying again');
    }
  }

  /** Once a minute: connections of gateways gone for good, also of users nobody looks up. */
  private async forgetGoneGateways(now: number): Promise<void> {
    if (now < this.nextGatewaySweepAt) return;
    this.nextGatewaySweepAt = now + GATEWAY_SWEEP_INTERVAL_MS;
    const forgotten = await this.store.forgetGoneGateways();
    if (forgotten > 0) this.logger.info({ forgotten }, 'forgot the connections of gateways gone for an hour');
  }

  /** Pushes again what is due; what ran out of attempts goes offline. Returns how many were due. */
  async retryDue(limit = 500): Promise<number> {
    const now = Date.now();
    await Promise.all([
      this.store.reportReadUpTo(
        this.reader.replica,
        Math.min(now, this.reader.readUpTo()),
        readReportTtlMs(this.settings.retryTickMs),
      ),
      // A loss is told once: it is noted even when another of these calls fails the round.
      this.store.lostAt().then((lostAt) => {
        if (lostAt !== undefined) this.storeFoundEmpty(lostAt);
      }),
      this.forgetGoneGateways(now),
    ]);
    if (this.rereadOwed && !this.rereading)
      this.rereading = this.rereadLost().finally(() => (this.rereading = undefined));
    const readUpTo = Math.min(now, (await this.store.readUpTo()) ?? now);
    const dueBy = Math.max(readUpTo, now - (this.settings.maxAckReadLagMs ?? MAX_ACK_READ_LAG_MS));
    this.metrics.ackReadLag.set((now - dueBy) / 1000);
    const due = await this.store.claimDue(dueBy, now, this.settings.ackTimeoutMs, limit);
    const exhausted = due.filter((p) => p.attempts > this.settings.maxAttempts);
    const retry = due.filter((p) => p.attempts <= this.settings.maxAttempts);
    // Their attempts are counted already: a failed hand-off (Kafka away) must not cost these a push.
    const handOff = await this.goOffline(exhausted).then(
      () => undefined,
      (err: unknown) => ({ err }),
    );
    await this.pushOrOffline(retry, [], new Set());
    if (handOff) throw handOff.err;
    return due.length;
  }

  /**
   * The user's account is erased: what awaits their ack is dropped, not stored, and their
   * connections and when they were last seen are forgotten. Returns how many deliverables were
   * dropped.
   */
  async erase(user: string): Promise<number> {
    const pending = (await this.store.pendingOf([user])).get(user) ?? [];
    await this.store.drop(
      user,
      pending.map((p) => p.mid),
    );
    await this.store.forgetLastSeen(user);
    return pending.length;
  }

  /**
   * With a store that dies with this process, what still awaits an ack goes to storage before the
   * process ends: its deliver events were committed, so nothing else would deliver it. Call it once
   * nothing new is tracked (the delivery consumer has stopped). Returns how many went.
   */
  async handOffPending(): Promise<number> {
    if (this.store.outlivesProcess) return 0;
    let handed = 0;
    for (;;) {
      const claimed = await this.store.claimDue(Number.MAX_SAFE_INTEGER, Date.now(), 0, 500);
      if (claimed.length === 0) return handed;
      // Each user's in the order it was tracked, as storage will serve it.
      const held = await this.store.pendingOf([...new Set(claimed.map((p) => p.user))]);
      const all = [...held.values()].flat();
      await this.goOffline(all); // drops them from the store
      handed += all.length;
    }
  }

  /** This replica stops retrying: if it is caught up, the others no longer wait for its read position. */
  async leave(): Promise<void> {
    // A re-read being asked for ends first: the delivery consumer stops after this, and its last
    // commit carries the rewind only once the re-read is set (later, it would find none to rewind).
    await this.rereading;
    // A lagging replica's report must outlive it: until the partitions' next owner has fetched,
    // its unread acks would otherwise be taken for silence by every other replica.
    if (Date.now() - this.reader.readUpTo() > CAUGHT_UP_MS) return;
    await this.store.forgetReadUpTo(this.reader.replica);
  }

  private async pushOrOffline(durable: Pending[], ephemeral: Push[], ackedHere: Set<string>): Promise<void> {
    if (durable.length === 0 && ephemeral.length === 0) return;
    const users = [...new Set([...durable.map((p) => p.user), ...ephemeral.map((p) => p.user)])];
    const connections = await this.store.connectionsOf(users);
    // A replayed deliverable is stored already. Its user not seen connected means, as often as not,
    // that the replay outran this service's record of the connect: it stays for its retries.
    const unreachable = new Set(
      durable.filter((p) => !connections.has(p.user) && !p.stored).map((p) => p.user),
    );
    const pushes = [
      ...durable.filter((p) => connections.has(p.user)),
      ...ephemeral.filter((p) => connections.has(p.user)),
    ];
    await Promise.all([this.allOffline([...unreachable], ackedHere), this.push(pushes, connections)]);
  }

  /**
   * Users found unreachable: everything they have pending and not stored goes offline, in the
   * order it was tracked, so storage serves it oldest first. One at a time, a new deliverable
   * would be stored at once and an older one, pushed before the user left, only once its
   * retries ran out.
   */
  private async allOffline(users: string[], ackedHere: Set<string>): Promise<void> {
    if (users.length === 0) return;
    const held = await this.store.pendingOf(users);
    await this.goOffline(
      [...held.values()].flat().filter((p) => !p.stored && !ackedHere.has(userKey(p.user, p.mid))),
    );
  }

  private async tellStorageAcked(replays: Pending[]): Promise<void> {
    const events: OfflineTopicEvent[] = [...groupBy(replays, (p) => p.user)].flatMap(([user, ofUser]) => {
      return offlineAck(
        user,
        ofUser.map((p) => p.mid).filter((mid) => senderOfMid(mid) !== user),
        Date.now(),
      );
    });
    await this.bus.publish(TOPICS.offline, events);
  }

  /** One batched call per gateway; a failed call is retried by the retry loop (durable ones). */
  private async push(pushes: Array<Push | Pending>, connections: Map<string, Connection[]>): Promise<void> {
    const byGateway = new Map<string, GatewayDelivery[]>();
    /** The deliveries of messages pushed for the first time: their latency is measured. */
    const firstPushes = new Set<GatewayDelivery>();
    const add = (url: string, delivery: GatewayDelivery, push: Push | Pending) => {
      const list = byGateway.get(url);
      if (list) list.push(delivery);
      else byGateway.set(url, [delivery]);
      if ('attempts' in push && push.attempts === 1 && !push.stored) firstPushes.add(delivery);
    };
    for (const push of pushes) {
      const { user, frame } = push;
      const devices = connections.get(user) ?? [];
      if (devices.length === 1) {
        add(devices[0]!.gatewayUrl, { to: user, connIds: [devices[0]!.connId], frame }, push);
        continue;
      }
      for (const [url, ofUser] of groupBy(devices, (c) => c.gatewayUrl))
        add(url, { to: user, connIds: ofUser.map((c) => c.connId), frame }, push);
    }
    await Promise.all(
      [...byGateway].map(async ([url, deliveries]) => {
        for (const calls of callRounds(deliveries, MAX_GATEWAY_BATCH)) {
          const sent = await Promise.all(calls.map((call) => this.pushToGateway(url, call)));
          calls.forEach((call, i) => sent[i] && this.observeFirstPushes(call, firstPushes));
          // The next round must not overtake what a failed call carried (retries push that again).
          if (sent.includes(false)) break;
        }
      }),
    );
  }

  /**
   * Send-to-socket latency of messages pushed for the first time: from the `sentAt` the edge
   * stamped to the gateway's answer, once the frame is written to the sockets (two hosts' clocks).
   */
  private observeFirstPushes(call: GatewayDelivery[], firstPushes: Set<GatewayDelivery>): void {
    if (firstPushes.size === 0) return;
    const now = Date.now();
    for (const { frame } of call.filter((delivery) => firstPushes.has(delivery)))
      if (frame.type === 'message')
        this.metrics.firstPushLatency.observe({ chat: frame.chat }, Math.max(0, now - frame.sentAt) / 1000);
  }

  /** One call to a gateway; false when it failed. */
  private async pushToGateway(url: string, deliveries: GatewayDelivery[]): Promise<boolean> {
    let results: GatewaySendResult[];
    try {
      results = await this.gateways.send(url, deliveries);
    } catch (err) {
      this.metrics.pushFailures.inc({ reason: err instanceof GatewayCallError ? err.reason : 'other' });
      this.logger.warn({ err, gateway: url, count: deliveries.length }, 'push to gateway failed');
      return false;
    }
    // Deliverables only: a typing notice is never acked, and the ack/push ratio is watched.
    this.metrics.pushed.inc(deliveries.filter((d) => 'mid' in d.frame).length);
    // The push went out: a store that cannot forget the connections it named as gone now is no
    // failed push (they are found missing again on the next one).
    await this.forgetMissing(deliveries, results).catch((err: unknown) =>
      this.logger.warn({ err, gateway: url }, 'could not forget the connections a gateway no longer holds'),
    );
    return true;
  }

  /**
   * Connections the gateway does not hold any more: their connection-down was lost (a crash, or a
   * restart under a pinned GATEWAY_ID). Removed, so presence and later pushes stop counting them.
   * Only those the call asked that gateway for: one it names besides (a connection of the user on
   * another gateway) is not its to disown.
   */
  private async forgetMissing(deliveries: GatewayDelivery[], results: GatewaySendResult[]): Promise<void> {
    const at = Date.now();
    const stale = new Map<string, string>(); // connId -> user; a user's deliveries may name it twice
    results.forEach((result, i) => {
      const asked = deliveries[i]?.connIds;
      for (const connId of result.missing ?? [])
        if (asked?.includes(connId)) stale.set(connId, deliveries[i].to);
    });
    if (stale.size === 0) return;
    this.metrics.staleConnections.inc(stale.size);
    await Promise.all([...stale].map(([connId, user]) => this.store.removeConnection(user, connId, at)));
  }

  private async goOffline(pendings: Pending[]): Promise<void> {
    if (pendings.length === 0) return;
    const at = Date.now();
    // A replayed deliverable is stored already: going offline again must not store or push it twice.
    const events: OfflineTopicEvent[] = pendings
      .filter((p) => !p.stored)
      .map((p) => ({ v: 1, kind: 'offline', to: p.user, frame: p.frame, at }));
    await this.bus.publish(TOPICS.offline, events);
    const byUser = [...groupBy(pendings, (p) => p.user)];
    await Promise.all(
      byUser.map(([user, ofUser]) =>
        this.store.markStored(
          user,
          ofUser.map((p) => p.mid),
          STORED_MEMORY_MS,
        ),
      ),
    );
    const ackedMeanwhile = await Promise.all(
      byUser.map(([user, ofUser]) =>
        this.store.drop(
          user,
          ofUser.map((p) => p.mid),
          ofUser,
        ),
      ),
    );
    // An ack that completed one of these after it was read here, before it was marked stored, told
    // storage nothing: storage hears of it now.
    const lateAcks: OfflineTopicEvent[] = byUser.flatMap(([user], i) =>
      offlineAck(user, ackedMeanwhile[i], Date.now()),
    );
    await this.bus.publish(TOPICS.offline, lateAcks);
    this.metrics.offline.inc(events.length);
  }

  private async handleAcks(acks: AckEvent[]): Promise<void> {
    const receipts: DeliverEvent[] = [];
    const offlineAcks: OfflineTopicEvent[] = [];
    // One store call per ack, all at once: with Redis, one round trip for the batch instead of one
    // per ack. Redis runs them in the order sent, so the outcome is that of running them in turn.
    const remembering = acks.map((ack) => this.unknownAcks.allows(ack.user));
    const completed = await Promise.all(
      acks.map((ack, i) =>
        this.store.complete(ack.user, ack.mids, this.settings.rememberAckedMs, remembering[i]),
      ),
    );
    for (const [i, ack] of acks.entries()) {
      const found = completed[i];
      this.metrics.acked.inc(found.filter((outcome) => outcome !== undefined).length);
      // Acking one's own mid (the `accepted` frame carries it) concerns no stored deliverable,
      // unless it is a message to oneself that was stored: then it completed `stored`.
      const completedNothing = (mid: string, j: number) =>
        found[j] === undefined && senderOfMid(mid) !== ack.user;
      const unknown = ack.mids.filter(completedNothing);
      if (remembering[i]) this.unknownAcks.spend(ack.user, unknown.length);
      else this.metrics.unknownAcksForgotten.inc(unknown.length);
      const told = ack.mids.filter(
        (mid, j) => found[j] === 'stored' || (remembering[i] && completedNothing(mid, j)),
      );
      offlineAcks.push(...offlineAck(ack.user, told, ack.at));
      // Past the quota, storage still drops what it holds of them (a copy synced after Redis lost its
      // data), and keeps a tombstone only for that.
      if (!remembering[i]) offlineAcks.push(...offlineAck(ack.user, unknown, ack.at, true));
      // A receipt only for what was pushed to this user and is in no storage: storage sends those of
      // what it held (a mid that is neither is no proof of delivery: anyone can ack any mid).
      const pushedOnly = ack.mids.filter((_, i) => found[i] === 'pushed');
      receipts.push(...deliveredReceipts(ack.user, pushedOnly, ack.at));
    }
    await Promise.all([
      this.bus.publish(TOPICS.delivery, receipts),
      this.bus.publish(TOPICS.offline, offlineAcks),
    ]);
  }
}

/**
 * Per key, what was spent in the current minute against a limit (the count starts again each
 * minute, for every key at once: the map holds the keys of one minute at most).
 */
class PerMinuteQuota {
  private spent = new Map<string, number>();
  private minuteEndsAt = 0;

  constructor(
    private readonly perMinute: number,
    private readonly now: () => number = Date.now,
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

/**
 * The event telling storage that `user` acked these mids; none when there are none. `unknown`: they
 * completed nothing here, past the user's quota (storage keeps no tombstone for what it lacks).
 */
function offlineAck(user: string, mids: string[], at: number, unknown?: true): OfflineTopicEvent[] {
  return mids.length > 0 ? [{ v: 1, kind: 'offline-ack', user, mids, at, ...(unknown && { unknown }) }] : [];
}

function groupBy<T, K>(items: T[], keyOf: (item: T) => K): Map<K, T[]> {
  const groups = new Map<K, T[]>();
  for (const item of items) {
    const key = keyOf(item);
    const list = groups.get(key);
    if (list) list.push(item);
    else groups.set(key, [item]);
  }
  return groups;
}

/**
 * One gateway's deliveries as calls of at most `max`, in rounds: the calls of a round go at once,
 * and a round waits for the one before. Two calls in flight to one gateway may reach its sockets in
 * either order (the smaller is parsed first), so a user's deliveries stay in one call, in order; only
 * a user with more than `max` of them spreads over rounds. Cutting by user rather than by frame keeps
 * a group's fan-out in parallel calls: cut by frame, its next message would go to the same members.
 */
function callRounds(deliveries: GatewayDelivery[], max: number): GatewayDelivery[][][] {
  const rounds: GatewayDelivery[][][] = [];
  for (const ofUser of groupBy(deliveries, (delivery) => delivery.to).values())
    chunk(ofUser, max).forEach((part, round) => {
      const calls = (rounds[round] ??= [[]]);
      if (calls[calls.length - 1]!.length + part.length > max) calls.push([]);
      calls[calls.length - 1]!.push(...part);
    });
  return rounds;
}

function chunk<T>(items: T[], size: number): T[][] {
  const chunks: T[][] = [];
  for (let i = 0; i < items.length; i += size) chunks.push(items.slice(i, i + size));
  return chunks;
}
