import { FrameBudgets, KeyedFrameBudgets } from '@parley/service-kit';

/**
 * The budgets a user's sockets on this gateway share, on top of each socket's own: without them, a
 * user with many sockets (up to the per-user connection limit) sends that many times one socket's
 * rate. Applied only while the user holds two sockets or more: with one, its own budget is the smaller.
 *
 * What a user spent outlives their sockets until it has refilled: the shared budget while they are
 * down to one socket, and the last socket's own once they hold none. A socket opened again takes up
 * where they left off; made anew instead, closing and reopening a socket would refill either budget
 * at once, a reconnect loop sending a burst per socket.
 */
export class UserBudgets {
  private readonly byUser = new Map<string, FrameBudgets>();
  /** Shared budgets of users down to fewer than two sockets, not yet refilled. */
  private readonly restingShared: KeyedFrameBudgets;
  /** The own budgets of users' last sockets, not yet refilled. */
  private readonly restingOwn: KeyedFrameBudgets;

  constructor(private readonly create: () => FrameBudgets) {
    this.restingShared = new KeyedFrameBudgets(create);
    this.restingOwn = new KeyedFrameBudgets(create);
  }

  /** After one of the user's sockets opened or closed: `sockets` is how many the user holds now. */
  update(user: string, sockets: number): void {
    const shared = this.byUser.get(user);
    if (sockets < 2) {
      if (!shared) return;
      this.byUser.delete(user);
      this.restingShared.keep(user, shared);
    } else if (!shared) this.byUser.set(user, this.restingShared.take(user) ?? this.create());
  }

  of(user: string): FrameBudgets | undefined {
    return this.byUser.get(user);
  }

  /** The user's last socket here closed: what its own budget still lacks carries over to their next. */
  retire(user: string, own: FrameBudgets): void {
    this.restingOwn.keep(user, own);
  }

  /** The own budget for a user's socket opened while they hold none here: their last one's, if not refilled. */
  resume(user: string): FrameBudgets | undefined {
    return this.restingOwn.take(user);
  }
}
