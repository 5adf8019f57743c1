import { ErrorCode, GroupChangeFrame, TopicPosition } from '@parley/contracts';
import type { GroupPosition } from './cursor';
import { GroupState } from './group';

/** Which page of a member's groups: after `after` (from the start without), at most `limit` and `maxBytes`. */
export interface MemberPage {
  after?: GroupPosition;
  limit: number;
  maxBytes?: number;
}

/** What a change tells the world: the `group` frame, who receives it, and the members after it. */
export interface GroupNotice {
  frame: GroupChangeFrame;
  /** Members after the change, plus those it removed. */
  recipients: string[];
  /** Members after the change. */
  members: string[];
}

export interface StoredChange {
  next: GroupState;
  notice: GroupNotice;
}

/** Why an op was refused (a ParleyError's code and message), remembered so a replay is refused alike. */
export interface OpRefusal {
  code: ErrorCode;
  message: string;
}

/** What `decide` may ask the store, inside the change's transaction. */
export interface DecideContext {
  /**
   * How many groups each of `users` is in. Until the change commits or rolls back, these users join
   * no other group: a change that would add one waits here, and then reads the count this one left.
   * A limit checked against these counts holds however many changes race.
   */
  lockGroupCounts(users: string[]): Promise<Map<string, number>>;
  /** Those of `candidates` who blocked `user` (read in the change's transaction). */
  blockersAmong(user: string, candidates: string[]): Promise<string[]>;
}

export type ApplyResult =
  | { kind: 'applied'; next: GroupState; notice: GroupNotice }
  | { kind: 'unchanged'; current: GroupState | undefined }
  /** `opMid` was decided before: nothing changed now; here is what that change told, or why it was refused. */
  | { kind: 'replayed'; notice: GroupNotice | null; refusal: OpRefusal | null };

/**
 * The group store port, owned by group-ms. `apply` runs in one transaction, serialized per group:
 * if `opMid` was decided already it changes nothing; otherwise it hands the current state to
 * `decide`, persists the state it returns together with `opMid` and the notice, and commits.
 * A throw from `decide` rolls everything back (for a replayable op, a refusal is remembered first).
 * `decide` may lock and count the groups of the users it adds (`DecideContext`) before it answers.
 */
export interface GroupStore {
  /** Prepares the storage (migrations) before the service consumes or serves. */
  init(): Promise<void>;
  find(id: string): Promise<GroupState | undefined>;
  /**
   * A page of the user's groups, oldest first (by creation, then id): at most `limit` of them after
   * `after`, and none more once they reach `maxBytes` as JSON (GROUP_PAGE_MAX_BYTES; one group at
   * least). `more`: the page stopped at either, and more follow its last.
   */
  listForMember(user: string, page: MemberPage): Promise<{ groups: GroupState[]; more: boolean }>;
  apply(
    group: string,
    opMid: string,
    decide: (current: GroupState | undefined, context: DecideContext) => Promise<StoredChange | null>,
    /**
     * An op that can come again (from the pipe, at least once): one that changes nothing or is
     * refused (a ParleyError from `decide`) is remembered as well, at `at`, so that a replay after a
     * later change is not applied then; the refusal is thrown once it is committed. `position`: the
     * op's place in the group topic (from a router); a change records it, with `at`, as the group's
     * last piped op (`groups.pipe_*`), which group-message-router reads with the members.
     */
    replayable?: { at: number; position?: TopicPosition },
  ): Promise<ApplyResult>;
  /**
   * Forgets the ops applied before `appliedBefore` (returns how many): a replay of one of them is
   * applied again, so keep them for longer than anything can redeliver them.
   */
  forgetOpsBefore(appliedBefore: number, signal?: AbortSignal): Promise<number>;
  /**
   * Forgets the groups left without members and unchanged since `changedBefore` (returns how many):
   * a group its last member left is gone (its id may be created again), but its row stayed, one
   * for every group ever emptied. Kept as long as the ops, so a router that handles a batch again
   * still reads its last piped op, and a cached member list still sees its version move.
   */
  forgetEmptyGroupsBefore(changedBefore: number, signal?: AbortSignal): Promise<number>;
  /** The outbox: notices of ops applied before `appliedBefore` not yet marked published, oldest first. */
  unpublished(appliedBefore: number, limit: number): Promise<Array<{ opMid: string; notice: GroupNotice }>>;
  markPublished(opMids: string[]): Promise<void>;

  // Blocks (App Store guideline 1.2): `user` blocked `blocked`. message-router reads `user_blocks`
  // and `user_block_changes` itself to drop a blocked sender's 1:1 frames; each change of a user's
  // blocks (block, unblock, erasure) is recorded there in the transaction that makes it; the rest-gateway asks for the blockers among the
  // users whose presence it answers.

  /**
   * `user` blocks `blocked` at `at`: 'already' when so (nothing changes, its time stays), 'too_many'
   * when `user` already blocked `max` users. Serialized per `user`: blocks racing at the limit do
   * not pass it together.
   */
  block(user: string, blocked: string, at: number, max: number): Promise<BlockOutcome>;
  /** Idempotent: unblocking a user not blocked changes nothing. */
  unblock(user: string, blocked: string, at: number): Promise<void>;
  /** The users `user` blocked, oldest block first (then by id). */
  blocksOf(user: string): Promise<string[]>;
  /** Those of `candidates` who blocked `user`, in the order of `candidates`. */
  blockersAmong(user: string, candidates: string[]): Promise<string[]>;
  /**
   * Account erasure: the blocks the user made (returns how many). Others' blocks of the user are
   * theirs and stay: the user's own token erases, and Parley cannot tell that the account is gone
   * elsewhere, so a blocked user would lift every block of them with one call and write again.
   */
  forgetBlocksOf(user: string, at: number): Promise<number>;
  /**
   * Forgets which users' blocks changed before `changedBefore` (returns how many): a router reads
   * the changes each second, so they are kept only as long as the ops, and an erased user's id
   * leaves with them.
   */
  forgetBlockChangesBefore(changedBefore: number, signal?: AbortSignal): Promise<number>;

  // group-message-router records the group messages it routed in `group_routed_messages`.

  /** Forgets the group messages routed before `routedBefore` (returns how many): kept as long as the ops. */
  forgetRoutedBefore(routedBefore: number, signal?: AbortSignal): Promise<number>;
  /** Account erasure: the routings of the group messages the user sent (returns how many). */
  forgetRoutedOf(user: string): Promise<number>;
}

export type BlockOutcome = 'blocked' | 'already' | 'too_many';
