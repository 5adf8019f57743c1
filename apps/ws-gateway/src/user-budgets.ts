import type { FrameBudgets } from '@parley/service-kit';

/**
 * The budgets a user's sockets on this gateway share, on top of each socket's own: without them, a
 * user with many sockets (up to the per-user connection limit) sends that many times one socket's
 * rate. Kept only while the user holds two sockets or more: with one, its own budget is the smaller.
 */
export class UserBudgets {
  private readonly byUser = new Map<string, FrameBudgets>();

  constructor(private readonly create: () => FrameBudgets) {}

  /** After one of the user's sockets opened or closed: `sockets` is how many the user holds now. */
  update(user: string, sockets: number): void {
    if (sockets < 2) this.byUser.delete(user);
    else if (!this.byUser.has(user)) this.byUser.set(user, this.create());
  }

  of(user: string): FrameBudgets | undefined {
    return this.byUser.get(user);
  }
}
