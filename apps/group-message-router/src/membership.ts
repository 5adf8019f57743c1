import { TopicPosition } from '@parley/contracts';

/** The last op from the group topic that changed a group: its place there, and when it was applied. */
export interface PipedOp extends TopicPosition {
  at: number;
}

/** The members of one group, for membership checks and fan-out. Empty when the group does not exist. */
export interface Membership {
  readonly members: readonly string[];
  /** The group's version when read (it grows with every change); undefined for a group that does not exist. */
  readonly version?: number;
  /**
   * The last op from the group topic that changed the group (absent: none, or applied by an earlier
   * release). The group's events placed before it were routed before it was applied (a router
   * flushes what it routed before it has ops applied): met again, they are a replay.
   */
  readonly lastOp?: PipedOp;
  has(user: string): boolean;
}

/** The router's read-only port onto group membership (group-ms owns the data). */
export interface MembershipReader {
  membersOf(group: string): Promise<Membership>;
  /** The current version of each of these groups (absent: no such group), in one cheap read. */
  versionsOf(groups: string[]): Promise<Map<string, number>>;
}

export function membershipOf(members: readonly string[], version?: number, lastOp?: PipedOp): Membership {
  const set = new Set(members);
  return { members, version, lastOp, has: (user) => set.has(user) };
}

/** Orders two places of one partition: negative when `a` is before `b`. */
export function comparePlaces(a: TopicPosition, b: TopicPosition): number {
  return a.offset - b.offset || a.index - b.index;
}
