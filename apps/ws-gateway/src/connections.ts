import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import type { TokenBucket } from '@parley/service-kit';

export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_POLICY = 1008;
export const CLOSE_TOO_LARGE = 1009;
export const CLOSE_RATE_LIMITED = 4029;

/**
 * A socket over its unsent cap that has taken none of its unsent bytes for this long has stopped
 * reading: it is cut. One still reading only misses the frames past the cap.
 */
export const STALLED_READER_MS = 10_000;

/**
 * Answers (pongs, accepteds, errors) a reader behind the unsent cap may have unsent at once. Past
 * the cap they are still written, but not without end: a client that sends on (a refused frame is
 * answered too) and takes a frame now and then, so it never counts as stalled, piled its answers
 * up in the gateway's memory for as long as it kept at it.
 */
export const MAX_UNSENT_ANSWER_BYTES = 64 * 1024;

/**
 * ws's WebSocket carrying its connection, so that one set of listeners, reading it from `this`,
 * serves every socket: listeners closed over each connection cost an idle socket about 250 bytes.
 */
export class GatewaySocket extends WebSocket {
  connection?: ClientConnection;
}

/** One authenticated socket. Counts its own unsent bytes (ws's bufferedAmount stays 0 until the kernel buffer fills). */
export class ClientConnection {
  alive = true;
  unsentBytes = 0;
  /** When a write of this socket last drained, or its backlog began (monotonic clock, ms). */
  drainedAt = performance.now();
  /** Kafka took a connection-up of it: session-ms may count it, so its disconnect must reach it. */
  announced = false;
  /**
   * Frames and acks refused in a row on this socket, by its own budget or its user's shared one: the
   * socket closes for its own run, not for refusals its user's other sockets met on the shared budget.
   */
  readonly refusedInARow = { frames: 0, acks: 0 };
  /** Bytes still unsent from earlier writes when the current corked batch began. */
  private backlogAtCork?: number;
  /** Bytes of answers written past the unsent cap and still unsent. */
  private unsentAnswerBytes = 0;

  constructor(
    readonly id: string,
    readonly user: string,
    readonly deviceId: string | undefined,
    readonly socket: WebSocket,
    readonly bucket: TokenBucket,
    /** Acks have their own, larger budget: throttling them would only cause redeliveries. */
    readonly ackBucket: TokenBucket,
    readonly expiresAt: number | undefined,
    private readonly maxUnsentBytes: number,
    /** The upgraded TCP socket under `socket`. */
    private readonly transport: Pick<Duplex, 'cork' | 'uncork'>,
  ) {}

  /** Holds this socket's writes until `uncork()`, so several frames leave in one system call. */
  cork(): void {
    this.transport.cork();
    this.backlogAtCork = this.unsentBytes;
  }

  uncork(): void {
    this.backlogAtCork = undefined;
    this.transport.uncork();
  }

  /**
   * Writes a text frame; false when the reader is too far behind to take it (and the socket is cut
   * when it has stopped reading). An `answer` to the client's own frame (a pong, an accepted, an
   * error) is written past the cap: small and paced by the client's own frames, and an app that
   * misses its pong takes the socket for dead. Up to MAX_UNSENT_ANSWER_BYTES of them: past that,
   * an answer is dropped as a push is (the client sends the frame again at its timeout).
   */
  send(text: string, answer = false): boolean {
    if (this.socket.readyState !== this.socket.OPEN) return false;
    const size = Buffer.byteLength(text);
    // A slow reader is one whose earlier writes have not drained: what this batch writes has had no
    // chance to, so it is not held against the reader (a replay on connect is one large batch).
    const backlog = this.backlogAtCork ?? this.unsentBytes;
    const pastCap = backlog > 0 && backlog + size > this.maxUnsentBytes;
    if (pastCap) {
      // Not written (session-ms pushes it again at its retry): a replay larger than one /send batch
      // comes faster than a phone's link takes it, and cut, the phone met the same replay again at
      // each reconnect. Only a reader that stopped taking bytes is cut, freeing its socket.
      if (performance.now() - this.drainedAt > STALLED_READER_MS) {
        this.socket.terminate();
        return false;
      }
      if (!answer || this.unsentAnswerBytes + size > MAX_UNSENT_ANSWER_BYTES) return false;
      this.unsentAnswerBytes += size;
    }
    if (this.unsentBytes === 0) this.drainedAt = performance.now();
    this.unsentBytes += size;
    this.socket.send(text, () => {
      this.unsentBytes -= size;
      if (pastCap) this.unsentAnswerBytes -= size;
      this.drainedAt = performance.now();
    });
    return true;
  }

  close(code: number, reason: string): void {
    if (this.socket.readyState === this.socket.OPEN) this.socket.close(code, reason);
  }

  /** Its token has expired: the socket is closed with 1008. */
  isExpired(now: number): boolean {
    return this.expiresAt !== undefined && this.expiresAt <= now;
  }
}

/**
 * Which sockets this gateway holds, by user and by connection id. Most users hold one socket, so a
 * user maps to that connection itself, and to an array only while they hold several: a Map per
 * user would cost about 260 bytes of every idle socket. The arrays are replaced, never changed in
 * place, so the lists handed out stay as they were.
 */
export class ConnectionRegistry {
  private readonly byUser = new Map<string, ClientConnection | readonly ClientConnection[]>();
  private count = 0;

  /** Read on every upgrade (the connection limit): kept, not counted. */
  get size(): number {
    return this.count;
  }

  add(conn: ClientConnection): void {
    const held = listOf(this.byUser.get(conn.user));
    const others = held.filter((c) => c.id !== conn.id);
    if (others.length === held.length) this.count++;
    this.byUser.set(conn.user, others.length === 0 ? conn : [...others, conn]);
  }

  remove(conn: ClientConnection): void {
    const held = listOf(this.byUser.get(conn.user));
    const rest = held.filter((c) => c.id !== conn.id);
    if (rest.length === held.length) return;
    this.count--;
    if (rest.length === 0) this.byUser.delete(conn.user);
    else this.byUser.set(conn.user, rest.length === 1 ? rest[0]! : rest);
  }

  /** The user's sockets, or only those among `connIds`. */
  of(user: string, connIds?: string[]): readonly ClientConnection[] {
    const held = listOf(this.byUser.get(user));
    return connIds ? held.filter((c) => connIds.includes(c.id)) : held;
  }

  *all(): IterableIterator<ClientConnection> {
    for (const held of this.byUser.values()) yield* listOf(held);
  }
}

/** Close every socket with 1001 (reconnect elsewhere), cutting those that do not finish in time. */
export async function closeAll(registry: ConnectionRegistry, graceMs = 2000): Promise<void> {
  for (const conn of registry.all()) conn.close(CLOSE_GOING_AWAY, 'server shutting down');
  const deadline = Date.now() + graceMs;
  while (registry.size > 0 && Date.now() < deadline) await sleep(20);
  for (const conn of registry.all()) conn.socket.terminate();
  while (registry.size > 0) await sleep(5);
}

function listOf(
  held: ClientConnection | readonly ClientConnection[] | undefined,
): readonly ClientConnection[] {
  if (held === undefined) return [];
  return Array.isArray(held) ? held : [held as ClientConnection];
}
