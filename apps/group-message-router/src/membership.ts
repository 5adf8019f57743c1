/** The members of one group, for membership checks and fan-out. Empty when the group does not exist. */
export interface Membership {
  readonly members: readonly string[];
  has(user: string): boolean;
}

/** The router's read-only port onto group membership (group-ms owns the data). */
export interface MembershipReader {
  membersOf(group: string): Promise<Membership>;
}

export function membershipOf(members: readonly string[]): Membership {
  const set = new Set(members);
  return { members, has: (user) => set.has(user) };
}
