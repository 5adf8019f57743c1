import { createRecentMap, RecentMap } from '@parley/service-kit';
import { senderOfMid } from '@parley/contracts';
import {
  Completed,
  Connection,
  ERASED_CONNECTIONS_MS,
  FORGET_GATEWAY_AFTER_MS,
  RESTART_CLOCK_MARGIN_MS,
  Pending,
  ReplicaAnswer,
  SessionStore,
  startedSinceState,
  TrackOutcome,
  userKey,
} from './session-store';

/** Acked, completing nothing (a mid never pending here). */
const NOTHING = 'acked';

/**
 * Acked mids remembered for dedup at most, by default: some 35-50 MiB of keys, in array buffers the
 * GC does not walk (a RecentMap).
 */
export const DEFAULT_MAX_ACKED = 1_000_000;

/**
 * The embedded default: one session-ms replica, state in this process. Same semantics as Redis,
 * except that it remembers at most `maxAcked` acked mids (the oldest go first): at a sustained
 * 1,000 msg/s a day of them would not fit in memory, so the dedup window shrinks under load instead.
 */
export class MemorySessionStore implements SessionStore {
  readonly outlivesProcess = false;
  readonly waitsForReplicas: boolean = false;
  private readonly connections = new Map<string, Map<string, Connection>>();
  private readonly lastSeen = new Map<string, number>();
  /** The connection ids an erasure forgot, per user, until when (`forgetLastSeen`). */
  private readonly erased = new Map<string, { connIds: Set<string>; until: number }>();
  /** Each gateway's liveness: alive until, and when it last beat. */
  private readonly gateways = new Map<string, { aliveUntil: number; seenAt: number }>();
  /** When each gateway's process started, as its heartbeats say (`gatewayStarted`). */
  private readonly gatewayStarts = new Map<string, number>();
  /** Gateways to be asked to announce their connections (see `oweAnnouncement`). */
  private readonly announcementsOwed = new Set<string>();
  /**
   * When this store first processed a gateway heartbeat, until when the last one counts, and since
   * when they have been coming without a gap (one ttl long).
   */
  private heartbeats?: { firstAt: number; flowingUntil: number; flowingSince: number; ttlMs: number };
  /** What awaits an ack, per user and in the order it was tracked, with the time it is due for a retry. */
  private readonly pending = new Map<string, Map<string, PendingEntry>>();
  /**
   * The same entries by due time, so a claim takes the earliest without scanning and sorting all
   * that is pending (half a second per claim at a million). An entry acked, dropped or leased
   * again stays behind until it comes up, and is skipped then. Ties in the order tracked, so a
   * claim's limit does not split them at random.
   */
  private readonly dueOrder = new MinHeap<{ dueAt: number; entry: PendingEntry }>(
    (a, b) => a.dueAt - b.dueAt || a.entry.seq - b.entry.seq,
  );
  /** Acked mids with what each ack completed, a map per `rememberMs` (one in practice: the setting's). */
  private readonly acked = new Map<number, RecentMap<Completed | typeof NOTHING>>();
  private readonly readPositions = new Map<string, { at: number; expires: number }>();
  private tracked = 0;
  /**
   * What `markStored` named (one ttl in practice: session-ms's constant): true while marked, false
   * once an ack removed the mark (the newest value wins; a RecentMap cannot delete).
   */
  private stored?: RecentMap<boolean>;

  /**
   * Since when it holds its state: its creation. (A second process's store beside it, as in a
   * rolling update, would hold connections this one never sees: one replica only.)
   */
  private readonly stateSince: number;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly maxAcked = DEFAULT_MAX_ACKED,
    private readonly forgetGatewayAfterMs = FORGET_GATEWAY_AFTER_MS,
  ) {
    this.stateSince = now();
  }

  async addConnection(connection: Connection): Promise<void> {
    const started = this.gatewayStarts.get(connection.gateway);
    // Of the gateway's earlier process, read after its restart was noted: that socket is gone.
    if (started !== undefined && connection.at < started - RESTART_CLOCK_MARGIN_MS)
      return this.seenAt(connection.user, connection.at);
    const byConn = this.connections.get(connection.user) ?? new Map<string, Connection>();
    byConn.set(connection.connId, connection);
    this.connections.set(connection.user, byConn);
    this.seenAt(connection.user, connection.at);
  }

  async removeConnection(user: string, connId: string, at: number): Promise<void> {
    const byConn = this.connections.get(user);
    if (byConn?.delete(connId)) {
      if (byConn.size === 0) this.connections.delete(user);
    } else if (this.forgotByErasure(user, connId)) return;
    this.seenAt(user, at);
  }

  /**
   * Whether an erasure forgot this connection (the close of a socket still open then). Kept until
   * it expires: a connection-down read again (a batch retried) notes nothing either.
   */
  private forgotByErasure(user: string, connId: string): boolean {
    const erased = this.erased.get(user);
    if (!erased) return false;
    if (erased.until > this.now()) return erased.connIds.has(connId);
    this.erased.delete(user);
    return false;
  }

  /** Last seen only moves forward: a late connection-down from another gateway names an older time. */
  private seenAt(user: string, at: number): void {
    this.lastSeen.set(user, Math.max(at, this.lastSeen.get(user) ?? 0));
  }

  async gatewayAlive(gateway: string, ttlMs: number, startedAt?: number): Promise<boolean> {
    const now = this.now();
    const known =
      this.seenLately(gateway, now) ||
      startedSinceState(startedAt, this.stateSince, now, this.forgetGatewayAfterMs);
    this.gateways.set(gateway, { aliveUntil: now + ttlMs, seenAt: now });
    const flowing = this.heartbeats !== undefined && this.heartbeats.flowingUntil > now;
    this.heartbeats = {
      firstAt: this.heartbeats?.firstAt ?? now,
      flowingUntil: now + ttlMs,
      flowingSince: flowing ? this.heartbeats!.flowingSince : now,
      ttlMs,
    };
    return !known || this.announcementsOwed.has(gateway);
  }

  async oweAnnouncement(gateway: string): Promise<void> {
    this.announcementsOwed.add(gateway);
  }

  async announced(gateway: string): Promise<void> {
    this.announcementsOwed.delete(gateway);
  }

  private seenLately(gateway: string, now: number): boolean {
    const seenAt = this.gateways.get(gateway)?.seenAt;
    return seenAt !== undefined && now - seenAt <= this.forgetGatewayAfterMs;
  }

  /**
   * Whether a gateway's silence says it is gone: only once heartbeats have been read for a whole
   * ttl. While none are (Kafka away, this consumer stalled) and for a ttl after they resume, every
   * gateway had the same chance to beat, and the connections of one seen lately still count.
   */
  private judgesSilence(now: number): boolean {
    const beats = this.heartbeats;
    return !!beats && beats.flowingUntil > now && now - beats.flowingSince >= beats.ttlMs;
  }

  /** Whether a silent gateway can be told from a stalled heartbeat pipeline (FORGET_GATEWAY_AFTER_MS). */
  private mayForget(now: number): boolean {
    const beats = this.heartbeats;
    return !!beats && beats.flowingUntil > now && now - beats.firstAt > this.forgetGatewayAfterMs;
  }

  async connectionsOf(users: string[]): Promise<Map<string, Connection[]>> {
    const result = new Map<string, Connection[]>();
    const now = this.now();
    const mayForget = this.mayForget(now);
    const judging = this.judgesSilence(now);
    for (const user of users) {
      const byConn = this.connections.get(user);
      if (!byConn) continue;
      const live: Connection[] = [];
      for (const c of byConn.values()) {
        const seenLately = this.seenLately(c.gateway, now);
        if ((this.gateways.get(c.gateway)?.aliveUntil ?? 0) > now || (!judging && seenLately)) live.push(c);
        else if (mayForget && !seenLately) {
          byConn.delete(c.connId);
          this.seenUntilLastBeat(c);
        }
      }
      if (byConn.size === 0) this.connections.delete(user);
      if (live.length > 0) result.set(user, live);
    }
    return result;
  }

  async gatewayStarted(gateway: string, startedAt: number): Promise<number> {
    const previous = this.gatewayStarts.get(gateway);
    this.gatewayStarts.set(gateway, startedAt);
    if (previous === startedAt) return 0;
    return this.forgetConnections(
      (c) => c.gateway === gateway && c.at < startedAt - RESTART_CLOCK_MARGIN_MS,
      startedAt - RESTART_CLOCK_MARGIN_MS,
    );
  }

  /**
   * A connection forgotten without its connection-down (its gateway died with it): its user was
   * online until the gateway's last beat (or `atMost`, a restart's start), which is when they were
   * last seen.
   */
  private seenUntilLastBeat(c: Connection, atMost = Infinity): void {
    const beat = this.gateways.get(c.gateway)?.seenAt;
    if (beat !== undefined) this.seenAt(c.user, Math.min(beat, atMost));
  }

  /** Removes every connection `gone` says is gone (`seenUntilLastBeat`); returns how many. */
  private forgetConnections(gone: (c: Connection) => boolean, atMost?: number): number {
    let forgotten = 0;
    for (const [user, byConn] of this.connections) {
      for (const c of byConn.values()) {
        if (!gone(c)) continue;
        byConn.delete(c.connId);
        this.seenUntilLastBeat(c, atMost);
        forgotten++;
      }
      if (byConn.size === 0) this.connections.delete(user);
    }
    return forgotten;
  }

  async forgetGoneGateways(): Promise<number> {
    const now = this.now();
    if (!this.mayForget(now)) return 0;
    const forgotten = this.forgetConnections((c) => !this.seenLately(c.gateway, now));
    for (const gateway of this.gateways.keys())
      if (!this.seenLately(gateway, now)) {
        this.gateways.delete(gateway);
        this.gatewayStarts.delete(gateway);
        this.announcementsOwed.delete(gateway);
      }
    return forgotten;
  }

  async forgetLastSeen(user: string) {
    const now = this.now();
    for (const [u, { until }] of this.erased) if (until <= now) this.erased.delete(u);
    const connIds = [...(this.connections.get(user)?.keys() ?? [])];
    if (connIds.length > 0) {
      const before = this.erased.get(user)?.connIds ?? [];
      this.erased.set(user, {
        connIds: new Set([...before, ...connIds]),
        until: now + ERASED_CONNECTIONS_MS,
      });
    }
    this.connections.delete(user);
    this.lastSeen.delete(user);
  }

  async presence(users: string[]) {
    const live = await this.connectionsOf(users);
    return users.map((user) => {
      const online = live.has(user);
      let lastSeen = this.lastSeen.get(user);
      // Connections held on a gateway that stopped beating (not yet forgotten): they died with it.
      if (!online)
        for (const c of this.connections.get(user)?.values() ?? []) {
          const beat = this.gateways.get(c.gateway)?.seenAt;
          if (beat !== undefined) lastSeen = Math.max(lastSeen ?? 0, beat);
        }
      return { user, online, lastSeen: lastSeen ?? null };
    });
  }

  async track(pending: Pending, dueAt: number): Promise<TrackOutcome> {
    const { user, mid } = pending;
    if (this.isAcked(userKey(user, mid))) return 'acked';
    const ofUser = this.pending.get(user);
    const held = ofUser?.get(mid);
    if (held) {
      if (pending.stored) {
        // A replay on a connect: its attempts start again (SessionStore.track).
        held.pending.stored = true;
        held.pending.attempts = pending.attempts;
        // At the same time as it stood, the entry the heap holds for it stands (twice, one claim
        // would take it twice).
        if (held.dueAt !== dueAt) this.dueOrder.push({ dueAt, entry: held });
        held.dueAt = dueAt;
      }
      return 'pending';
    }
    const entry = { pending: { ...pending }, dueAt, seq: ++this.tracked };
    if (ofUser) ofUser.set(mid, entry);
    else this.pending.set(user, new Map([[mid, entry]]));
    this.dueOrder.push({ dueAt, entry });
    return 'tracked';
  }

  async complete(
    user: string,
    mids: string[],
    rememberMs: number,
    rememberNothing = true,
  ): Promise<Array<Completed | undefined>> {
    let acked = this.acked.get(rememberMs);
    if (!acked) this.acked.set(rememberMs, (acked = createRecentMap(rememberMs, this.maxAcked, this.now)));
    return mids.map((mid) => {
      const key = userKey(user, mid);
      const entry = this.remove(user, mid);
      const storedBefore = this.stored?.get(key) === true;
      if (storedBefore) this.stored!.set(key, false); // the ack removes the mark, as on Redis
      const completed: Completed | undefined = entry
        ? entry.pending.stored || storedBefore
          ? 'stored'
          : 'pushed'
        : (this.completedBefore(key) ?? (storedBefore ? 'stored' : undefined));
      if (completed || (rememberNothing && senderOfMid(mid) !== user)) acked.set(key, completed ?? NOTHING);
      return completed;
    });
  }

  async markStored(user: string, mids: string[], ttlMs: number): Promise<void> {
    this.stored ??= createRecentMap(ttlMs, this.maxAcked, this.now);
    for (const mid of mids) {
      const key = userKey(user, mid);
      // An ack completed it before the mark: that ack (or the drop after it) told storage, and a
      // mark left behind would take the ack of a later copy for one of the stored copy.
      if (this.completedBefore(key) === undefined) this.stored.set(key, true);
    }
  }

  async drop(
    user: string,
    mids: string[],
    asRead?: Array<Pick<Pending, 'attempts' | 'stored'>>,
  ): Promise<string[]> {
    mids.forEach((mid, i) => {
      const read = asRead?.[i];
      const held = this.pending.get(user)?.get(mid)?.pending;
      if (read && held && (held.attempts !== read.attempts || held.stored !== read.stored)) return;
      this.remove(user, mid);
    });
    return mids.filter((mid) => this.completedBefore(userKey(user, mid)) === 'pushed');
  }

  async pendingOf(users: string[]): Promise<Map<string, Pending[]>> {
    const result = new Map<string, Pending[]>();
    for (const user of users) {
      const ofUser = this.pending.get(user);
      if (ofUser)
        result.set(
          user,
          [...ofUser.values()].map((entry) => ({ ...entry.pending })),
        );
    }
    return result;
  }

  async claimDue(dueBy: number, now: number, leaseMs: number, limit: number): Promise<Pending[]> {
    const claimed: PendingEntry[] = [];
    while (claimed.length < limit) {
      const next = this.dueOrder.peek();
      if (!next || next.dueAt > dueBy) break;
      this.dueOrder.pop();
      // Acked, dropped or leased again since it was queued: a newer item stands for it, or none.
      const { user, mid } = next.entry.pending;
      if (this.pending.get(user)?.get(mid) !== next.entry || next.entry.dueAt !== next.dueAt) continue;
      claimed.push(next.entry);
    }
    // Leased after the loop, so a lease that ends by `dueBy` cannot be claimed twice in one call.
    return claimed
      .sort((a, b) => a.seq - b.seq)
      .map((entry) => {
        entry.pending.attempts += 1;
        entry.dueAt = now + leaseMs;
        this.dueOrder.push({ dueAt: entry.dueAt, entry });
        return { ...entry.pending };
      });
  }

  async reportReadUpTo(replica: string, at: number, ttlMs: number): Promise<void> {
    this.readPositions.set(replica, { at, expires: this.now() + ttlMs });
  }

  async forgetReadUpTo(replica: string): Promise<void> {
    this.readPositions.delete(replica);
  }

  async readUpTo(): Promise<number | undefined> {
    const now = this.now();
    let earliest: number | undefined;
    for (const [replica, { at, expires }] of this.readPositions) {
      if (expires <= now) this.readPositions.delete(replica);
      else earliest = Math.min(earliest ?? at, at);
    }
    return earliest;
  }

  async lostAt(): Promise<number | undefined> {
    return undefined;
  }

  /** No replicas: nothing to wait for. */
  async awaitReplicas(): Promise<ReplicaAnswer> {
    return 'replicated';
  }

  async ping(): Promise<void> {}

  private remove(user: string, mid: string): PendingEntry | undefined {
    const ofUser = this.pending.get(user);
    const entry = ofUser?.get(mid);
    if (!entry) return undefined;
    ofUser!.delete(mid);
    if (ofUser!.size === 0) this.pending.delete(user);
    return entry;
  }

  private isAcked(key: string): boolean {
    for (const acked of this.acked.values()) if (acked.has(key)) return true;
    return false;
  }

  private completedBefore(key: string): Completed | undefined {
    for (const acked of this.acked.values()) {
      const before = acked.get(key);
      if (before !== undefined && before !== NOTHING) return before;
    }
    return undefined;
  }

  async close(): Promise<void> {}
}

interface PendingEntry {
  pending: Pending;
  dueAt: number;
  /** The order in which it was tracked, among all users'. */
  seq: number;
}

/** A binary min-heap under `compare`. */
class MinHeap<T> {
  private readonly items: T[] = [];

  constructor(private readonly compare: (a: T, b: T) => number) {}

  peek(): T | undefined {
    return this.items[0];
  }

  push(item: T): void {
    const items = this.items;
    let i = items.push(item) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.compare(items[parent], item) <= 0) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = item;
  }

  pop(): T | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length === 0 || last === undefined) return top;
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= items.length) break;
      if (child + 1 < items.length && this.compare(items[child + 1], items[child]) < 0) child++;
      if (this.compare(last, items[child]) <= 0) break;
      items[i] = items[child];
      i = child;
    }
    items[i] = last;
    return top;
  }
}
