import type { Duplex } from 'node:stream';
import type WebSocket from 'ws';
import { TokenBucket } from './token-bucket';

export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_POLICY = 1008;
export const CLOSE_TOO_LARGE = 1009;
export const CLOSE_RATE_LIMITED = 4029;

/** One authenticated socket. Counts its own unsent bytes (ws's bufferedAmount stays 0 until the kernel buffer fills). */
export class ClientConnection {
  alive = true;
  unsentBytes = 0;
  rateViolations = 0;

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
  }

  uncork(): void {
    this.transport.uncork();
  }

  /** Writes a text frame; false (and the socket is cut) when the reader is too slow. */
  send(text: string): boolean {
    if (this.socket.readyState !== this.socket.OPEN) return false;
    const size = Buffer.byteLength(text);
    if (this.unsentBytes + size > this.maxUnsentBytes) {
      this.socket.terminate();
      return false;
    }
    this.unsentBytes += size;
    this.socket.send(text, () => {
      this.unsentBytes -= size;
    });
    return true;
  }

  close(code: number, reason: string): void {
    if (this.socket.readyState === this.socket.OPEN) this.socket.close(code, reason);
  }
}

/** Which sockets this gateway holds, by user and by connection id. */
export class ConnectionRegistry {
  private readonly byUser = new Map<string, Map<string, ClientConnection>>();
  private count = 0;

  /** Read on every upgrade (the connection limit): kept, not counted. */
  get size(): number {
    return this.count;
  }

  add(conn: ClientConnection): void {
    const conns = this.byUser.get(conn.user) ?? new Map<string, ClientConnection>();
    if (!conns.has(conn.id)) this.count++;
    conns.set(conn.id, conn);
    this.byUser.set(conn.user, conns);
  }

  remove(conn: ClientConnection): void {
    const conns = this.byUser.get(conn.user);
    if (conns?.delete(conn.id)) this.count--;
    if (conns?.size === 0) this.byUser.delete(conn.user);
  }

  /** The user's sockets, or only those among `connIds`. */
  of(user: string, connIds?: string[]): ClientConnection[] {
    const conns = this.byUser.get(user);
    if (!conns) return [];
    if (!connIds) return [...conns.values()];
    return connIds.map((id) => conns.get(id)).filter((c): c is ClientConnection => c !== undefined);
  }

  *all(): IterableIterator<ClientConnection> {
    for (const conns of this.byUser.values()) yield* conns.values();
  }
}
