import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { MAX_MIDS_PER_FRAME, SYNC_MAX_LIMIT } from '@parley/contracts';

type Frame = Record<string, unknown> & { type: string };

/** Tries of a REST call refused for now (503, 429), each after the `Retry-After` it was given. */
const REST_ATTEMPTS = 5;

export interface ResilientClientOptions {
  /** A function: asked again on every connect (a load balancer over several gateways). */
  wsUrl: string | (() => string);
  restUrl: string | (() => string);
  token: string;
  deviceId?: string;
  /** A frame not `accepted` after this long is sent again (same `id`, so the same `mid`). */
  resendAfterMs?: number;
  reconnectMs?: number;
  /** False: a device that receives and never acks, over the socket or after a sync (an app killed first). */
  acks?: boolean;
}

/**
 * A client that behaves as the protocol asks an app to, so that a fault test can count what a user
 * would see: it keeps every frame in an outbox until `accepted` and sends it again (same `id`) after
 * `unavailable`, a silence or a reconnect; it reconnects by itself; it acks every deliverable; on
 * every connect and on `sync()` it catches up through `GET /v1/messages` and acks over REST, making
 * a call refused for now (503, 429) again after its `Retry-After`.
 */
export class ResilientClient {
  /** Client id -> every `mid` the server answered for it; one send must only ever have one. */
  readonly acceptedMids = new Map<string, Set<string>>();
  /** `mid` -> the first `message` deliverable with it, over the socket or from sync. */
  readonly messages = new Map<string, Frame>();
  /** Frames refused for good (anything but `unavailable` or `rate_limited`). */
  readonly rejected: Frame[] = [];
  /** Every `message` deliverable in the order it came (copies too), and how. */
  readonly arrivals: { frame: Frame; via: 'socket' | 'sync'; at: number }[] = [];
  /** `mid` -> the users a `delivered` receipt named for it. */
  readonly delivered = new Map<string, Set<string>>();
  readonly stats = { connects: 0, transientErrors: 0, resent: 0, viaSync: 0, lastMessageAt: 0 };
  /** When each socket closed (a drop, a gateway's 1001). */
  readonly closedAt: number[] = [];
  private readonly outbox = new Map<string, { frame: Frame; sentAt: number }>();
  private socket?: WebSocket;
  private stopped = false;
  private unacked: string[] = [];
  private readonly resendTimer: NodeJS.Timeout;
  private reconnectTimer?: NodeJS.Timeout;

  constructor(private readonly options: ResilientClientOptions) {
    const resendAfterMs = options.resendAfterMs ?? 3000;
    this.resendTimer = setInterval(() => this.resendOverdue(resendAfterMs), 500);
  }

  get pending(): number {
    return this.outbox.size;
  }

  get online(): boolean {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  /** Connects; resolves on the first `hello`. Reconnects on every close until `close()`. */
  start(): Promise<void> {
    return new Promise((resolve) => this.connect(resolve));
  }

  send(frame: Frame & { id: string }): void {
    this.outbox.set(frame.id, { frame, sentAt: Date.now() });
    this.write(frame);
  }

  /** Pages through the user's stored deliverables, keeps the messages, acks them over REST. */
  async sync(): Promise<void> {
    let after: string | undefined;
    for (;;) {
      const query = new URLSearchParams({ limit: String(SYNC_MAX_LIMIT), ...(after && { after }) });
      const page = (await this.rest('GET', `/v1/messages?${query}`)) as { messages: Frame[]; next?: string };
      for (const frame of page.messages) {
        this.noteReceipt(frame);
        if (this.keep(frame, 'sync')) this.stats.viaSync++;
      }
      const mids = page.messages.map((f) => f.mid as string);
      if (mids.length > 0 && this.options.acks !== false)
        await this.rest('POST', '/v1/send', { type: 'ack', mids });
      if (!page.next) return;
      after = page.next;
    }
  }

  /** Cuts the socket (as a phone losing its network); the client reconnects by itself. */
  drop(): void {
    this.socket?.terminate();
  }

  close(): void {
    this.stopped = true;
    clearInterval(this.resendTimer);
    clearTimeout(this.reconnectTimer);
    this.socket?.terminate();
  }

  private connect(onHello?: () => void) {
    if (this.stopped) return;
    const device = this.options.deviceId ? `&deviceId=${this.options.deviceId}` : '';
    const url = typeof this.options.wsUrl === 'string' ? this.options.wsUrl : this.options.wsUrl();
    const socket = new WebSocket(`${url}?token=${this.options.token}${device}`);
    this.socket = socket;
    socket.on('message', (data) => this.onFrame(JSON.parse(data.toString()) as Frame, onHello));
    socket.on('error', () => undefined); // a close follows
    socket.on('close', () => {
      if (this.socket !== socket || this.stopped) return;
      this.closedAt.push(Date.now());
      this.reconnectTimer = setTimeout(() => this.connect(onHello), this.options.reconnectMs ?? 250);
    });
  }

  private onFrame(frame: Frame, onHello?: () => void) {
    switch (frame.type) {
      case 'hello':
        this.stats.connects++;
        for (const { frame: queued } of this.outbox.values()) this.write(queued);
        this.sync().catch(() => undefined); // what arrived while away; the next connect tries again
        onHello?.();
        return;
      case 'accepted': {
        const id = frame.id as string;
        this.outbox.delete(id);
        const mids = this.acceptedMids.get(id) ?? new Set<string>();
        this.acceptedMids.set(id, mids.add(frame.mid as string));
        return;
      }
      case 'error':
        if (frame.mid) break; // an error deliverable: ack it like any other
        if (frame.code === 'unavailable' || frame.code === 'rate_limited') this.stats.transientErrors++;
        else {
          this.rejected.push(frame);
          if (typeof frame.id === 'string') this.outbox.delete(frame.id);
        }
        return;
    }
    this.noteReceipt(frame);
    if (typeof frame.mid === 'string') {
      this.keep(frame, 'socket');
      if (this.options.acks !== false) this.ack(frame.mid);
    }
  }

  private noteReceipt(frame: Frame) {
    if (frame.type !== 'receipt' || frame.status !== 'delivered') return;
    for (const mid of frame.mids as string[])
      this.delivered.set(mid, (this.delivered.get(mid) ?? new Set<string>()).add(frame.by as string));
  }

  /** True when this is the first copy of a message. */
  private keep(frame: Frame, via: 'socket' | 'sync'): boolean {
    if (frame.type !== 'message') return false;
    this.arrivals.push({ frame, via, at: Date.now() });
    if (this.messages.has(frame.mid as string)) return false;
    this.messages.set(frame.mid as string, frame);
    this.stats.lastMessageAt = Date.now();
    return true;
  }

  private ack(mid: string) {
    if (this.unacked.push(mid) > 1) return;
    setImmediate(() => {
      while (this.unacked.length > 0)
        this.write({ type: 'ack', mids: this.unacked.splice(0, MAX_MIDS_PER_FRAME) });
    });
  }

  private resendOverdue(afterMs: number) {
    const now = Date.now();
    for (const entry of this.outbox.values()) {
      if (now - entry.sentAt < afterMs) continue;
      entry.sentAt = now;
      if (this.write(entry.frame)) this.stats.resent++;
    }
  }

  private write(frame: Frame): boolean {
    if (!this.online) return false;
    this.socket!.send(JSON.stringify(frame));
    return true;
  }

  /** A REST call; refused for now (503, 429), it is made again after the `Retry-After` given, a few times. */
  private async rest(method: string, path: string, body?: unknown): Promise<unknown> {
    for (let attempt = 1; ; attempt++) {
      const base = typeof this.options.restUrl === 'string' ? this.options.restUrl : this.options.restUrl();
      const response = await fetch(`${base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.options.token}`,
          ...(body !== undefined && { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (response.ok) return response.status === 204 ? undefined : response.json();
      const retryAfterS = Number(response.headers.get('retry-after'));
      const error = new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
      if (![429, 503].includes(response.status) || attempt >= REST_ATTEMPTS || this.stopped) throw error;
      this.stats.transientErrors++;
      await sleep((Number.isFinite(retryAfterS) && retryAfterS > 0 ? retryAfterS : 1) * 1000);
    }
  }
}
