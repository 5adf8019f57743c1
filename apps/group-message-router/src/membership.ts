/** The members of one group, for membership checks and fan-out. Empty when the group does not exist. */
export interface Membership {
  readonly members: readonly string[];
  /** The group's version when read (it grows with every change); undefined for a group that does not exist. */
  readonly version?: number;
  has(user: string): boolean;
}

/** The router's read-only port onto group membership (group-ms owns the data). */
export interface MembershipReader {
  membersOf(group: string): Promise<Membership>;
  /** The current version of each of these groups (absent: no such group), in one cheap read. */
  versionsOf(groups: string[]): Promise<Map<string, number>>;
}

export function membershipOf(members: readonly string[], version?: number): Membership {
  const set = new Set(members);
  return { members, version, has: (user) => set.has(user) };
}
