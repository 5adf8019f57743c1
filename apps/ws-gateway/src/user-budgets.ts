import type { FrameBudgets } from '@parley/service-kit';

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
  private readonly restingShared = new RestingBudgets();
  /** The own budgets of users' last sockets, not yet refilled. */
  private readonly restingOwn = new RestingBudgets();

  constructor(private readonly create: () => FrameBudgets) {}

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

const MIN_SWEEP_SIZE = 1024;

/**
 * Budgets kept until they have refilled (a refilled one is as good as a new one, and is not kept).
 * Swept each time the map has doubled since the last sweep, so it holds about the users whose
 * sockets closed within a burst's refill time (2.5 s by default).
 */
class RestingBudgets {
  private readonly byUser = new Map<string, FrameBudgets>();
  private sweepAt = MIN_SWEEP_SIZE;

  keep(user: string, budgets: FrameBudgets): void {
    if (isFull(budgets)) return;
    if (this.byUser.size >= this.sweepAt) this.sweep();
    this.byUser.set(user, budgets);
  }

  take(user: string): FrameBudgets | undefined {
    const budgets = this.byUser.get(user);
    if (budgets) this.byUser.delete(user);
    return budgets;
  }

  get size(): number {
    return this.byUser.size;
  }

  private sweep(): void {
    for (const [user, budgets] of this.byUser) if (isFull(budgets)) this.byUser.delete(user);
    this.sweepAt = Math.max(MIN_SWEEP_SIZE, 2 * this.byUser.size);
  }
}

function isFull(budgets: FrameBudgets): boolean {
  return budgets.frames.isFull() && budgets.acks.isFull();
}
