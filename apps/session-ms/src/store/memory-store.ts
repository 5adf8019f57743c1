import { createRecentSet, RecentSet } from '@parley/service-kit';
import { Connection, Pending, SessionStore } from './session-store';

/** Acked mids remembered for dedup at most, by default: about 100 MiB of keys. */
export const DEFAULT_MAX_ACKED = 1_000_000;

/**
 * The embedded default: one session-ms replica, state in this process. Same semantics as Redis,
 * except that it remembers at most `maxAcked` acked mids (the oldest go first): at a sustained
 * 1,000 msg/s a day of them would not fit in memory, so the dedup window shrinks under load instead.
 */
export class MemorySessionStore implements SessionStore {
  private readonly connections = new Map<string, Map<string, Connection>>();
  private readonly lastSeen = new Map<string, number>();
  private readonly gateways = new Map<string, number>();
  /** What awaits an ack, with the time it is due for a retry. */
  private readonly pending = new Map<string, { pending: Pending; dueAt: number }>();
  private readonly acked: RecentSet;
  private readonly readPositions = new Map<string, { at: number; expires: number }>();

  constructor(
    private readonly now: () => number = Date.now,
    maxAcked = DEFAULT_MAX_ACKED,
  ) {
    this.acked = createRecentSet(24 * 3600_000, maxAcked, now);
  }

  async addConnection(connection: Connection): Promise<void> {
    const byConn = this.connections.get(connection.user) ?? new Map<string, Connection>();
    byConn.set(connection.connId, connection);
    this.connections.set(connection.user, byConn);
    this.lastSeen.set(connection.user, connection.at);
  }

  async removeConnection(user: string, connId: string, at: number): Promise<void> {
    const byConn = this.connections.get(user);
    byConn?.delete(connId);
    if (byConn?.size === 0) this.connections.delete(user);
    this.lastSeen.set(user, Math.max(at, this.lastSeen.get(user) ?? 0));
  }

  async gatewayAlive(gateway: string, ttlMs: number): Promise<void> {
    this.gateways.set(gateway, this.now() + ttlMs);
  }

  async connectionsOf(users: string[]): Promise<Map<string, Connection[]>> {
    const result = new Map<string, Connection[]>();
    const now = this.now();
    for (const user of users) {
      const live = [...(this.connections.get(user)?.values() ?? [])].filter(
        (c) => (this.gateways.get(c.gateway) ?? 0) > now,
      );
      if (live.length > 0) result.set(user, live);
    }
    return result;
  }

  async presence(users: string[]) {
    const live = await this.connectionsOf(users);
    return users.map((user) => ({ user, online: live.has(user), lastSeen: this.lastSeen.get(user) ?? null }));
  }

  async track(pending: Pending, dueAt: number): Promise<boolean> {
    const key = keyOf(pending.user, pending.mid);
    if (this.pending.has(key) || this.acked.has(key)) return false;
    this.pending.set(key, { pending: { ...pending }, dueAt });
    return true;
  }

  async complete(user: string, mids: string[], rememberMs: number): Promise<Array<Pending | undefined>> {
    return mids.map((mid) => {
      const key = keyOf(user, mid);
      const entry = this.pending.get(key);
      this.pending.delete(key);
      this.acked.add(key, rememberMs);
      return entry?.pending;
    });
  }

  async drop(user: string, mids: string[]): Promise<void> {
    for (const mid of mids) this.pending.delete(keyOf(user, mid));
  }

  async claimDue(dueBy: number, now: number, leaseMs: number, limit: number): Promise<Pending[]> {
    // Sort only what is due: the map holds every deliverable awaiting an ack.
    const due: Array<{ pending: Pending; dueAt: number }> = [];
    for (const entry of this.pending.values()) if (entry.dueAt <= dueBy) due.push(entry);
    due.sort((a, b) => a.dueAt - b.dueAt);
    return due.slice(0, limit).map((entry) => {
      entry.pending.attempts += 1;
      entry.dueAt = now + leaseMs;
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

  async ping(): Promise<void> {}

  async close(): Promise<void> {}
}

function keyOf(user: string, mid: string): string {
  return `${user}\n${mid}`;
}
