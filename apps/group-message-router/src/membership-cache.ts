import { Membership, MembershipReader } from './membership';

export interface MembershipCacheOptions {
  ttlMs: number;
  maxGroups: number;
  /** Members of all cached groups together: what bounds the cache's memory (about 150 bytes each). */
  maxMembers: number;
  clock?: () => number;
}

interface Entry {
  membership: Membership;
  expiresAt: number;
}

/**
 * A membership cache in front of a reader: entries live `ttlMs`, `invalidate` drops one at once
 * (on a change event), concurrent misses for one group share one read, and a read that started
 * before an invalidation is not cached (it may predate the change). Oldest entries go first when it
 * holds more than `maxGroups` groups or `maxMembers` members.
 */
export class MembershipCache implements MembershipReader {
  private readonly entries = new Map<string, Entry>();
  private readonly loading = new Map<string, Promise<Membership>>();
  private readonly clock: () => number;
  private members = 0;

  constructor(
    private readonly reader: MembershipReader,
    private readonly options: MembershipCacheOptions,
  ) {
    this.clock = options.clock ?? Date.now;
  }

  membersOf(group: string): Promise<Membership> {
    const entry = this.entries.get(group);
    if (entry && entry.expiresAt > this.clock()) return Promise.resolve(entry.membership);
    return this.loading.get(group) ?? this.load(group);
  }

  versionsOf(groups: string[]): Promise<Map<string, number>> {
    return this.reader.versionsOf(groups);
  }

  /**
   * Drops the cached groups among these whose version moved since they were read: a change made
   * through group-ms's REST API, say, whose change event this router has not consumed yet. One
   * read of the versions for all of them.
   */
  async refresh(groups: string[]): Promise<void> {
    const cached = groups.filter((group) => this.entries.has(group));
    if (cached.length === 0) return;
    const versions = await this.reader.versionsOf(cached);
    for (const group of cached) {
      const entry = this.entries.get(group);
      if (entry && entry.membership.version !== versions.get(group)) this.invalidate(group);
    }
  }

  invalidate(group: string): void {
    this.forget(group);
    this.loading.delete(group); // a read in flight may predate the change: it will not be cached
  }

  get size(): number {
    return this.entries.size;
  }

  /** Members of the cached groups, all together. */
  get memberCount(): number {
    return this.members;
  }

  private load(group: string): Promise<Membership> {
    const read: Promise<Membership> = this.reader.membersOf(group).then(
      (membership) => {
        if (this.loading.get(group) !== read) return membership; // invalidated meanwhile
        this.loading.delete(group);
        this.remember(group, membership);
        return membership;
      },
      (err: unknown) => {
        if (this.loading.get(group) === read) this.loading.delete(group);
        throw err;
      },
    );
    this.loading.set(group, read);
    return read;
  }

  private remember(group: string, membership: Membership): void {
    this.forget(group);
    this.entries.set(group, { membership, expiresAt: this.clock() + this.options.ttlMs });
    this.members += membership.members.length;
    if (this.entries.size > this.options.maxGroups || this.members > this.options.maxMembers)
      this.evictOldest();
  }

  private forget(group: string): void {
    const entry = this.entries.get(group);
    if (!entry) return;
    this.entries.delete(group);
    this.members -= entry.membership.members.length;
  }

  /**
   * Drops the oldest entries until an eighth of each limit is free: one at a time, each eviction
   * would walk again the deleted slots V8 leaves at the front of the map (24 us per miss at 100,000
   * groups, not 2). The newest entry stays, even a group larger than the room for members.
   */
  private evictOldest(): void {
    const { maxGroups, maxMembers } = this.options;
    const groupsAfter = maxGroups - Math.max(1, Math.floor(maxGroups / 8)) + 1;
    const membersAfter = maxMembers - Math.floor(maxMembers / 8);
    for (const [group, entry] of this.entries) {
      if (this.entries.size <= 1) break;
      if (this.entries.size <= groupsAfter && this.members <= membersAfter) break;
      this.entries.delete(group);
      this.members -= entry.membership.members.length;
    }
  }
}
