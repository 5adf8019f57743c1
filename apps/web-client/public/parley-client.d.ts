// Types for parley-client.js (for TypeScript users of the reference client, and the repo's tests).

export declare function devToken(restUrl: string, user: string): Promise<string>;
export declare function newId(): string;

export declare class ParleyError extends Error {
  status: number;
  code: string;
  constructor(status: number, code: string, message: string);
  static from(response: Response): Promise<ParleyError>;
}

export interface ParleyClientOptions {
  /** The rest-gateway origin ('' = the page's own). */
  restUrl?: string;
  /** The ws-gateway URL, e.g. `ws://localhost:8080/v1/ws`. */
  wsUrl: string;
  /** A JWT whose `sub` is the user; called on every connect. */
  getToken: () => Promise<string>;
  deviceId?: string;
  /** A WebSocket implementation (Node: the `ws` package). */
  WebSocket?: unknown;
  /** How long one REST call may take before it rejects with a TimeoutError (default 30 s). */
  restTimeoutMs?: number;
}

export type ReportReason =
  'spam' | 'harassment' | 'hate' | 'sexual' | 'violence' | 'self_harm' | 'impersonation' | 'other';
/** A message from the reported user, as received. */
export interface ReportedMessage {
  mid: string;
  body?: unknown;
  sentAt?: number;
}

/**
 * The event of a deliverable (`message`, `receipt`, `group`, and a `rejected` with a `mid`): the
 * client acks it once the listeners return, or once every promise passed to `waitUntil` resolves (an
 * asynchronous store's write); one that rejects leaves it unacked, and it is handed over again when
 * the server delivers it again.
 */
export interface DeliverableEvent extends CustomEvent<Record<string, unknown>> {
  waitUntil(promise: Promise<unknown>): void;
}

export type ConnectionState = 'connecting' | 'online' | 'offline';
type Json = Record<string, unknown>;

export declare class ParleyClient extends EventTarget {
  constructor(options: ParleyClientOptions);
  readonly user: string | null;
  readonly state: ConnectionState;
  /** The open socket, if any (tests close it to simulate a drop). */
  readonly socket: { close(code?: number, reason?: string): void; readyState: number } | null;
  /** Frames sent but not yet accepted, by client id. */
  readonly outbox: Map<string, Json>;
  start(): void;
  /** Closes the socket; start() connects again as the same user (after a sign-out, make a new client). */
  close(): void;
  /**
   * Catch-up through `GET /v1/messages`, every page until `next` is null (what the user has not
   * acked, however much): hands each new deliverable to the app and acks it; resolves to how many
   * were new. Stops early at `close()`; a ParleyError `sync_stalled` if the server repeats a cursor.
   */
  sync(): Promise<number>;
  send(to: string, body: unknown, chat?: 'direct' | 'group', id?: string): { id: string; mid: string | null };
  /** Read receipts for these mids, kept in the outbox until accepted; returns the frames' ids. */
  read(to: string, mids: string[]): string[];
  typing(to: string, chat?: 'direct' | 'group'): void;
  groupOp(
    op: 'create' | 'add' | 'remove' | 'leave' | 'rename',
    group: string,
    args?: { name?: string; members?: string[] },
    id?: string,
  ): string;
  /**
   * Throws a ParleyError on an error status; a 429 or 503 is tried again (Retry-After, a 503's doubled
   * while they go on; else a backoff), 4 tries in all; not when its Retry-After is over 30 s.
   */
  rest<T = Json>(method: string, path: string, body?: unknown): Promise<T>;
  createGroup(name: string, members: string[], id?: string): Promise<Json>;
  groups(): Promise<Json[]>;
  group(id: string): Promise<Json>;
  /** `lastSeen`: the last connect or disconnect; null if never seen. */
  presence(users: string[]): Promise<Array<{ user: string; online: boolean; lastSeen: number | null }>>;
  block(user: string): Promise<void>;
  unblock(user: string): Promise<void>;
  blocks(): Promise<string[]>;
  mute(chat: 'direct' | 'group', id: string, until?: number): Promise<void>;
  unmute(chat: 'direct' | 'group', id: string): Promise<void>;
  mutes(): Promise<Array<{ chat: 'direct' | 'group'; id: string; until: number | null }>>;
  /**
   * `POST /v1/reports`: `comment` up to 1,000 characters; of `messages` (the user's, as received)
   * the last 20 go. A ParleyError 429 `rate_limited` past 20 reports a day, 400 for oneself.
   */
  report(
    user: string,
    reason: ReportReason,
    options?: { comment?: string; messages?: ReportedMessage[] },
  ): Promise<{ id: string; at: number }>;
}
