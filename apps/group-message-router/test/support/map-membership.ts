import type { TopicPosition } from '@parley/contracts';
import { Membership, membershipOf, MembershipReader, PipedOp } from '../../src/membership';

/**
 * Membership the test changes directly (stands in for group-ms's tables), counting reads, with the
 * group's last op from the group topic that changed it (its place, and when it was applied).
 * `hold` keeps reads pending until `release`; `failNext` makes the next read fail with an error.
 */
export class MapMembership implements MembershipReader {
  groups = new Map<string, string[]>();
  versions = new Map<string, number>();
  lastOps = new Map<string, PipedOp>();
  reads = 0;
  private held: Array<() => void> | undefined;
  private failing: Error | undefined;

  async membersOf(group: string): Promise<Membership> {
    this.reads++;
    const failing = this.failing;
    this.failing = undefined;
    if (failing) throw failing;
    const membership = membershipOf(
      [...(this.groups.get(group) ?? [])],
      this.versions.get(group),
      this.lastOps.get(group),
    );
    if (this.held) await new Promise<void>((resolve) => this.held!.push(resolve));
    return membership;
  }

  async versionsOf(groups: string[]) {
    return new Map(
      groups.flatMap((g) => (this.versions.has(g) ? [[g, this.versions.get(g)!] as const] : [])),
    );
  }

  /** A change made elsewhere (group-ms's REST API) whose change event has not come yet. */
  change(group: string, members: string[]) {
    this.groups.set(group, members);
    this.versions.set(group, (this.versions.get(group) ?? 0) + 1);
  }

  /** A change an op from the group topic made, at its place there. */
  changeByOp(group: string, members: string[], place: TopicPosition | undefined) {
    this.change(group, members);
    if (place) this.lastOps.set(group, { ...place, at: Date.now() });
  }

  failNext(err: Error) {
    this.failing = err;
  }

  hold() {
    this.held = [];
  }

  release() {
    const held = this.held ?? [];
    this.held = undefined;
    held.forEach((resolve) => resolve());
  }
}
