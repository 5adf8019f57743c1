import net from 'node:net';
import type { Logger } from 'pino';
import type { BrokerContext, RequestHeader } from './context';
import { HANDLERS } from './handlers';
import { ApiKey, isSupported } from './protocol/api';
import { ProtocolError, Reader } from './protocol/reader';
import type { Writer } from './protocol/writer';

/** Unread request bytes held while a request is handled before the socket stops being read. */
const MAX_BUFFERED_BYTES = 32 * 1024 * 1024;
const MAX_UNSENT_BYTES = 32 * 1024 * 1024;

/**
 * One client connection: size-prefixed frames in, one request handled at a time, as Kafka does
 * (it mutes a connection from a request's arrival until its answer is sent). A request pipelined
 * behind a waiting one (a long-polling Fetch, a JoinGroup in the rebalance barrier) is handled only
 * once that one is answered: an OffsetCommit behind a rejoin sees the new generation, as on Kafka.
 * Anything that does not parse closes this connection only.
 */
export class Connection {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** A request is being handled: the next one waits until it is answered. */
  private busy = false;
  /** `next` is on the stack (an answer given synchronously must not start a second loop). */
  private pumping = false;
  private closed = false;
  private readonly clientHost: string;

  constructor(
    private readonly socket: net.Socket,
    private readonly broker: BrokerContext,
    private readonly maxRequestBytes: number,
    private readonly logger: Logger,
  ) {
    this.clientHost = `/${socket.remoteAddress ?? 'unknown'}`;
    socket.setNoDelay(true);
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('drain', () => this.next());
    socket.on('error', (err) => this.logger.debug({ err }, 'connection error'));
    socket.on('close', () => {
      this.closed = true;
      this.pending = [];
      this.pendingBytes = 0;
    });
  }

  destroy(): void {
    this.closed = true;
    this.socket.destroy();
  }

  private fail(reason: string, err?: unknown): void {
    if (this.closed) return;
    this.logger.warn({ err, reason, client: this.clientHost }, 'closing connection after a bad request');
    this.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    this.next();
  }

  /** Handles the buffered requests in order, each once the one before it is answered and sent. */
  private next(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (!this.closed && !this.busy && this.socket.writableLength <= MAX_UNSENT_BYTES) {
        const frame = this.takeFrame();
        if (!frame) break;
        this.handle(frame);
      }
    } finally {
      this.pumping = false;
    }
    this.pauseOrResume();
  }

  /** The next whole request frame, if one is buffered; a bad size closes the connection. */
  private takeFrame(): Buffer | undefined {
    if (this.pendingBytes < 4) return undefined;
    let head = this.pending[0];
    if (head.length < 4) head = this.coalesce();
    const size = head.readInt32BE(0);
    if (size < 10 || size > this.maxRequestBytes) {
      this.fail(`invalid request size ${size}`);
      return undefined;
    }
    if (this.pendingBytes < 4 + size) return undefined;
    if (head.length < 4 + size) head = this.coalesce();
    const rest = head.subarray(4 + size);
    this.pendingBytes -= 4 + size;
    if (rest.length) this.pending[0] = rest;
    else this.pending.shift();
    return head.subarray(4, 4 + size);
  }

  private coalesce(): Buffer {
    const all = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [all];
    return all;
  }

  /**
   * Stops reading while what the client sent ahead (behind a request being handled) or what it has
   * not read of the answers passes its limit; reads again once below. A partial request is always
   * read on (nothing is being handled then), however large.
   */
  private pauseOrResume(): void {
    if (this.closed) return;
    const full =
      this.socket.writableLength > MAX_UNSENT_BYTES || (this.busy && this.pendingBytes > MAX_BUFFERED_BYTES);
    if (full && !this.socket.isPaused()) this.socket.pause();
    else if (!full && this.socket.isPaused()) this.socket.resume();
  }

  private handle(frame: Buffer): void {
    let header: RequestHeader;
    const r = new Reader(frame);
    try {
      header = {
        apiKey: r.int16(),
        apiVersion: r.int16(),
        correlationId: r.int32(),
        clientId: r.nullableString(),
        clientHost: this.clientHost,
      };
    } catch (err) {
      return this.fail('malformed request header', err);
    }
    const handler = HANDLERS.get(header.apiKey);
    if (!handler) return this.fail(`unsupported api key ${header.apiKey}`);
    if (!isSupported(header.apiKey, header.apiVersion) && header.apiKey !== ApiKey.ApiVersions) {
      return this.fail(`unsupported version ${header.apiVersion} of api ${header.apiKey}`);
    }
    this.busy = true;
    const complete = (w: Writer | null) => this.answered(header.correlationId, w ? w.finish() : null);
    const failed = (err: unknown) => {
      if (err instanceof ProtocolError)
        this.fail(`malformed ${header.apiKey} v${header.apiVersion} request`, err);
      else {
        this.logger.error({ err, apiKey: header.apiKey }, 'request handler failed');
        this.destroy();
      }
    };
    try {
      const result = handler(header, r, this.broker);
      if (result instanceof Promise) result.then(complete, failed);
      else complete(result);
    } catch (err) {
      failed(err);
    }
  }

  /** Sends a request's answer (none for acks=0) and goes on to the next request. */
  private answered(correlationId: number, body: Buffer[] | null): void {
    if (this.closed) return;
    if (body) {
      let size = 4;
      for (const b of body) size += b.length;
      const head = Buffer.allocUnsafe(8);
      head.writeInt32BE(size, 0);
      head.writeInt32BE(correlationId, 4);
      this.socket.cork();
      this.socket.write(head);
      for (const b of body) this.socket.write(b);
      this.socket.uncork();
    }
    this.busy = false;
    this.next();
  }
}
