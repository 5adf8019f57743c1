import type { Deliverable } from '@parley/contracts';

/** A deliverable to keep for its recipient until acked. */
export interface PendingDeliverable {
  to: string;
  frame: Deliverable;
}

/** A recipient's mid as one string, for sets and maps (no user id holds a newline). */
export const keyOf = (recipient: string, mid: string) => `${recipient}\n${mid}`;

/** Which stored deliverable: its recipient and mid. */
export interface StoredKey {
  to: string;
  mid: string;
}

export interface PendingPage {
  /** Oldest first. */
  messages: Deliverable[];
  /** Position of the last message returned (pass back as `afterSeq`); the input position when empty. */
  lastSeq: number;
  /** Whether more messages follow `lastSeq` right now. */
  hasMore: boolean;
}

export interface PurgeResult {
  messages: number;
  tombstones: number;
  /** Position counters of recipients with nothing stored and no connect left, forgotten. */
  sequences: number;
}

/**
 * The store port of persistence-ms: undelivered deliverables per recipient, idempotent by
 * (recipient, mid), and acks remembered for a while so a late deliverable is not resurrected.
 * Positions (`seq`) are per recipient and commit-ordered: a reader that has seen position n
 * will never later see a new message below n.
 */
export interface OfflineStore {
  /** Creates or upgrades the schema; safe when several replicas start together. */
  init(): Promise<void>;
  /** Stores what is neither stored nor acked yet; returns what was newly stored. */
  store(items: PendingDeliverable[]): Promise<PendingDeliverable[]>;
  /** Those of `items` (recipient and mid) that are stored right now: stored before or just now, and not acked since. */
  held<T extends StoredKey>(items: T[]): Promise<T[]>;
  /** Deletes the user's deliverables with these mids and remembers the ack; returns how many were deleted. */
  ack(user: string, mids: string[]): Promise<number>;
  /**
   * `ack` for several users at once, in one transaction; returns how many were deleted. An ack
   * marked `unknown` (mids that completed nothing in session-ms, past its quota) leaves a tombstone
   * only for what it deleted: made-up mids would each leave one for the tombstones' retention.
   */
  ackAll(acks: Array<{ user: string; mids: string[]; unknown?: true }>): Promise<number>;
  /**
   * The user's pending deliverables after position `afterSeq` (0: from the start), oldest first: at
   * most `limit`, and no more once their frames reach `maxBytes` (default SYNC_PAGE_MAX_BYTES; one
   * at least).
   */
  page(user: string, afterSeq: number, limit: number, maxBytes?: number): Promise<PendingPage>;
  /**
   * Notes when these users connected, by the connect events' own times (the connect race, see
   * `connectedSince`), and returns those with deliverables stored: their replay is under way until
   * `replayed`. The others need none: what is stored for them from now on is handed back by the
   * offline consumer. Serialized with `store` for each user, so nothing stored meanwhile is missed.
   */
  markConnected(connects: Array<{ user: string; at: number }>): Promise<Set<string>>;
  /**
   * Notes the replay of the user's stored deliverables for their latest connect over, and returns
   * true; but with `afterSeq` (the last position the replay sent), only if nothing is stored behind
   * it, else returns false (the replay reads on first). Serialized with `store` for the user, so what
   * a store after it commits is handed back by the offline consumer after all this replay sent.
   */
  replayed(user: string, afterSeq?: number): Promise<boolean>;
  /** Which of these users connected at or after `since`, and are not in the middle of that connect's replay. */
  connectedSince(users: string[], since: number): Promise<Set<string>>;
  /**
   * Erases what is held for the user (their account is erased): the deliverables stored for them,
   * their ack tombstones and their connect, a batch of rows at a time, each serialized with `store`
   * for the user. Once `outOfTime()` it stops after the batch under way, `done` false (call again to
   * go on); every call erases something, so calls again always get further. `erased`: how many
   * deliverables went in this call.
   */
  erase(user: string, outOfTime?: () => boolean): Promise<{ erased: number; done: boolean }>;
  /**
   * Drops deliverables stored before `messagesBefore` and ack tombstones older than `tombstonesBefore`
   * (ms), connects remembered from before it, then the position counters of recipients left with
   * nothing stored and no connect, in batches; stops between batches once `signal` aborts.
   */
  purge(
    cutoff: { messagesBefore: number; tombstonesBefore: number },
    signal?: AbortSignal,
  ): Promise<PurgeResult>;
}
