import type { ConnectionUpEvent, Deliverable } from '@parley/contracts';

/**
 * A gateway that has not beaten for this long is gone for good (its id is random per process
 * unless GATEWAY_ID pins it): its connections are forgotten. Much longer than a heartbeat gap, so
 * a gateway that only lost Kafka for a while keeps its connections when it comes back. Nothing is
 * forgotten while no heartbeat at all is being processed (Kafka down, the consumer stalled), nor
 * in the first such period after the store first saw one (an upgrade from a version that did not
 * record when gateways beat).
 */
export const FORGET_GATEWAY_AFTER_MS = 3_600_000;

/**
 * A gateway's restart forgets the connections it registered before its start, less this much: a
 * clock stepped back just after the start must not put a new socket among the dead ones (a restart
 * takes longer than this, so no dead one is kept).
 */
export const RESTART_CLOCK_MARGIN_MS = 1000;

/**
 * How far a gateway's clock may run ahead of session-ms's for `startedSinceState`: its start is
 * stamped by the gateway's host, the store's state by session-ms's. A gateway taken for started
 * since the state began when it started before (a Redis restarted empty just after a gateway pod
 * came up: a node lost with both on it) is not asked to announce, and the sockets it took before
 * the loss stay unknown for their whole life (counted offline, their messages stored and pushed).
 * Erring the other way only asks a gateway started within this after the loss to announce what
 * the store has already: each of those sockets is connected again (storage replays it again).
 */
export const STATE_CLOCK_MARGIN_MS = 10_000;

/**
 * Whether a gateway the store has not seen within `forgetAfterMs` holds no connection the store
 * lacks: its process started (`startedAt`, from its events; unknown for an older gateway) after the
 * store began holding what it holds now (`stateSince`: a Redis that lost its data starts again), so
 * every connection it holds has its connection-up in the topic since then, and less than
 * `forgetAfterMs` ago, so the store cannot have forgotten it after a silence. The gateway's clock
 * and the store's are taken to agree within STATE_CLOCK_MARGIN_MS (its start must lie that much
 * after the state's) and, against the hour-long horizon, RESTART_CLOCK_MARGIN_MS.
 */
export function startedSinceState(
  startedAt: number | undefined,
  stateSince: number,
  now: number,
  forgetAfterMs: number,
): boolean {
  return (
    startedAt !== undefined &&
    startedAt >= stateSince + STATE_CLOCK_MARGIN_MS &&
    now - startedAt < forgetAfterMs - RESTART_CLOCK_MARGIN_MS
  );
}

/**
 * How long an account erasure remembers the connection ids it forgot (`forgetLastSeen`), so that
 * the close of a socket still open then notes no last seen. A disconnect of any other connection
 * the store does not know (its connection-up lost with the store's state, a Redis restarted empty,
 * before its gateway announced it again) notes last seen as a known one does.
 */
export const ERASED_CONNECTIONS_MS = 24 * 3_600_000;

/**
 * One of a user's mids or connection ids as one string: a key in session-ms's sets, a member in
 * Redis's (whose scripts split it at the first newline, which no user id holds).
 */
export function userKey(user: string, id: string): string {
  return `${user}\n${id}`;
}

/** A device's socket on a gateway instance, as its connection-up event tells it. */
export type Connection = Omit<ConnectionUpEvent, 'v' | 'kind'>;

export type TrackOutcome = 'tracked' | 'pending' | 'acked';

/** A deliverable waiting for the user's ack. */
export interface Pending {
  user: string;
  mid: string;
  frame: Deliverable;
  /** Pushes made so far. */
  attempts: number;
  /** It was stored offline before (a replay on connect): an ack must also reach storage. */
  stored: boolean;
}

/** What an ack completed: a deliverable pushed and in no storage, or one stored offline before. */
export type Completed = 'pushed' | 'stored';

/**
 * How far this process's writes so far have gone (`SessionStore.awaitReplicas`): to the replicas
 * it waits for (`replicated`), not to all of them within the timeout (`short`), or not even to the
 * server it now talks to (`lost`: it lacks a write made before the previous answer, a failover to
 * a replica that lagged; writes since the last `replicated` may be gone).
 */
export type ReplicaAnswer = 'replicated' | 'short' | 'lost';

/**
 * Session state: who is connected where, presence, and deliveries awaiting acks. Redis in
 * production (shared by session-ms replicas, survives restarts); in memory for the embedded default.
 */
export interface SessionStore {
  /** Whether what it holds outlives this process (Redis) or dies with it (memory). */
  readonly outlivesProcess: boolean;
  /** Whether `awaitReplicas` waits for replicas (Redis with REDIS_WAIT_REPLICAS set). */
  readonly waitsForReplicas: boolean;
  /**
   * Waits, up to its timeout, until every write this process made so far has reached the replicas
   * it is set to wait for: a failover can then lose none of them. `replicated` at once where it
   * waits for none.
   */
  awaitReplicas(): Promise<ReplicaAnswer>;
  addConnection(connection: Connection): Promise<void>;
  /**
   * Notes the user last seen at `at`, unless the connection is one an erasure forgot within
   * ERASED_CONNECTIONS_MS (`forgetLastSeen`): also where the store does not hold it (it lost its
   * state since the connect, and the gateway has not announced it again).
   */
  removeConnection(user: string, connId: string, at: number): Promise<void>;
  /**
   * Marks a gateway alive for `ttlMs`; connections on gateways that stopped beating are ignored.
   * True when the store had not seen it beat within `FORGET_GATEWAY_AFTER_MS`: one back after a long
   * silence, or a store that lost its state (a Redis restarted empty, a restarted in-memory store).
   * Connections it holds may then be unknown here: ask it to announce them again. Not for a new
   * gateway whose process started (`startedAt`, its events say) since the store began holding its
   * state (`startedSinceState`): every connection-up it sent comes to this store (a rollout's or a
   * scale-out's new pod, which a reconnect storm reaches before session-ms reads its heartbeat;
   * announced, each of its sockets would be connected twice over, and storage would replay
   * everything stored again). True as well while such an ask is owed (`oweAnnouncement`), whichever
   * replica owes it.
   */
  gatewayAlive(gateway: string, ttlMs: number, startedAt?: number): Promise<boolean>;
  /**
   * Notes when the gateway's process started (its heartbeat says). On a start not noted before (a
   * restart under the same id: GATEWAY_ID pinned, a pod's container restarted), forgets the
   * connections the gateway registered before it (`RESTART_CLOCK_MARGIN_MS`): those sockets died
   * with the process, and their connection-downs with them. Returns how many were forgotten.
   */
  gatewayStarted(gateway: string, startedAt: number): Promise<number>;
  /**
   * Notes that the gateway is to be asked to announce its connections, until `announced`: an ask
   * that fails is made again with the gateway's next event, by whichever replica reads it (its
   * heartbeats are keyed by gateway, its connection-ups by user, so they reach different replicas).
   */
  oweAnnouncement(gateway: string): Promise<void>;
  /** The gateway took the ask to announce its connections. */
  announced(gateway: string): Promise<void>;
  /**
   * Live connections of each user (users without any are absent). The connections of a gateway
   * unseen for `FORGET_GATEWAY_AFTER_MS` (it died without saying so) are removed as they are read.
   */
  connectionsOf(users: string[]): Promise<Map<string, Connection[]>>;
  /**
   * Removes every connection of the gateways unseen for `FORGET_GATEWAY_AFTER_MS`, also those of
   * users nobody looks up again (under the same rule as `connectionsOf`). Returns how many.
   */
  forgetGoneGateways(): Promise<number>;
  presence(users: string[]): Promise<Array<{ user: string; online: boolean; lastSeen: number | null }>>;
  /**
   * Forgets when the user was last seen (their account is erased), and their connections: a socket
   * still open counts as offline from now on, and its disconnect notes no last seen (the
   * connection ids are remembered for ERASED_CONNECTIONS_MS for that; nor would a connection that
   * died with its gateway, forgotten later). A later connect notes it again.
   */
  forgetLastSeen(user: string): Promise<void>;

  /**
   * Starts tracking a deliverable, due for a retry at `dueAt`: `tracked`. A duplicate changes
   * nothing: `acked` when an ack of the user completed this mid already, `pending` when it is
   * pending, except that a stored copy (a replay) marks the pending one stored, so its ack reaches
   * storage, and starts its attempts and due time again (`pending.attempts`, `dueAt`): a replay
   * comes with a connect, and one that finds the pending copy's retries used up on a socket that
   * dropped (or outruns session-ms's record of the connect) would otherwise be dropped by the next
   * retry without reaching the new socket.
   */
  track(pending: Pending, dueAt: number): Promise<TrackOutcome>;
  /**
   * Acks: removes what was pending and tells what each ack completed: `pushed` (pending, not
   * stored), `stored` (a stored copy was pending, or the mid was marked stored: `markStored`), or
   * nothing (undefined). What it completed is
   * remembered for `rememberMs`: a mid completed before answers the same again (a batch retried
   * after its receipts failed to publish, or a script whose reply was lost and resent, still sends
   * them), and `track` takes a later copy of it for a duplicate, also where the ack completed
   * nothing (a mid synced from storage: the same message sent again must not reach the user
   * again). Except an ack of one's own mid that completed nothing: it is a sender's ack of its
   * own `accepted` frame, one for every message sent, and nothing tracks that mid for the sender
   * later but a note to oneself, which the ack would have completed had it been pending.
   * `rememberNothing` false: an ack that completed nothing leaves nothing either (a user past the
   * quota of such acks: made-up mids, up to 500 a frame, would each leave a key for `rememberMs`).
   */
  complete(
    user: string,
    mids: string[],
    rememberMs: number,
    rememberNothing?: boolean,
  ): Promise<Array<Completed | undefined>>;
  /**
   * Remembers for `ttlMs` that these deliverables of `user` went to storage: `complete` then answers
   * `stored` for them, also where a later copy of the mid is pending as pushed (a group message
   * resent after a membership change), and forgets the mark. Without it, the ack of a note to oneself
   * that nothing tracks would pass for the ack of an `accepted` frame, and the ack of such a later
   * copy would complete `pushed`: neither would reach storage, and sync would serve the stored copy.
   * A mid an ack completed before (between the hand-over's read and this call) is not marked: that
   * ack, or the `drop` after it, tells storage, and a mark left behind would outlive it.
   */
  markStored(user: string, mids: string[], ttlMs: number): Promise<void>;
  /**
   * Stops tracking without marking acked (it went offline). With `asRead` (each mid's attempts and
   * stored flag when it was read for the hand-off), only those unchanged since: a replay on a
   * connect that started one again meanwhile (`track`) keeps it pending, for the device that
   * connected. Returns those of `mids` that an ack completed as `pushed` after they were read here
   * and before this drop: those acks told storage nothing. (One that completed `stored` told
   * storage itself.)
   */
  drop(user: string, mids: string[], asRead?: Array<Pick<Pending, 'attempts' | 'stored'>>): Promise<string[]>;
  /** What each of these users has pending (users without any are absent), in the order it was tracked. */
  pendingOf(users: string[]): Promise<Map<string, Pending[]>>;
  /**
   * Claims up to `limit` pendings due by `dueBy` (the ack clock, which may lag the wall clock):
   * each is leased until `now + leaseMs`, since the push it is claimed for happens now, and its
   * attempts are incremented atomically, so replicas never claim the same one twice. What it
   * claims comes in the order it was tracked (what one lease made due together comes due together).
   * Where more than `limit` are due at the same instant, Redis picks which by member (user, then
   * mid), so the rest, claimed a tick later, may be older.
   */
  claimDue(dueBy: number, now: number, leaseMs: number, limit: number): Promise<Pending[]>;
  /**
   * Records the time up to which `replica` has read the delivery topic, for `ttlMs` by the store's
   * own clock: a replica that stops reporting (it died, its partitions moved) stops counting.
   */
  reportReadUpTo(replica: string, at: number, ttlMs: number): Promise<void>;
  /** A replica that stops takes its report back, so the others need not wait for it to expire. */
  forgetReadUpTo(replica: string): Promise<void>;
  /** The earliest read position among replicas whose report is live; undefined when none is. */
  readUpTo(): Promise<number | undefined>;
  /**
   * When the store was found empty although it had held state (a Redis that restarted without its
   * data, taking pending deliveries and the connections of open sockets with it), if that happened
   * since this replica last asked: every replica that asks hears of a loss once, with the same
   * time (when the store was marked again). A replica's first call only learns the mark. Never for
   * a store that dies with its process.
   */
  lostAt(): Promise<number | undefined>;
  ping(): Promise<void>;
  close(): Promise<void>;
}
