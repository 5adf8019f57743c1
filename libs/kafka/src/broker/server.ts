import net from 'node:net';
import type { Logger } from 'pino';
import type { BrokerContext, RequestHeader } from './context';
import { HANDLERS } from './handlers';
import { ApiKey, isSupported } from './protocol/api';
import { ProtocolError, Reader } from './protocol/reader';
import type { Writer } from './protocol/writer';

interface Slot {
  done: boolean;
  correlationId: number;
  body: Buffer[] | null;
}

const MAX_IN_FLIGHT = 256;
const MAX_UNSENT_BYTES = 32 * 1024 * 1024;

/**
 * One client connection: size-prefixed frames in, responses out strictly in request order
 * (pipelined Produce relies on it). Anything that does not parse closes this connection only.
 */
export class Connection {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private readonly queue: Slot[] = [];
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
    socket.on('drain', () => this.maybeResume());
    socket.on('error', (err) => this.logger.debug({ err }, 'connection error'));
    socket.on('close', () => {
      this.closed = true;
      this.pending = [];
      this.queue.length = 0;
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
    while (!this.closed && this.pendingBytes >= 4) {
      let head = this.pending[0];
      if (head.length < 4) head = this.coalesce();
      const size = head.readInt32BE(0);
      if (size < 10 || size > this.maxRequestBytes) return this.fail(`invalid request size ${size}`);
      if (this.pendingBytes < 4 + size) return;
      if (head.length < 4 + size) head = this.coalesce();
      const frame = head.subarray(4, 4 + size);
      const rest = head.subarray(4 + size);
      this.pendingBytes -= 4 + size;
      if (rest.length) this.pending[0] = rest;
      else this.pending.shift();
      this.handle(frame);
    }
    if (this.queue.length > MAX_IN_FLIGHT) this.socket.pause();
  }

  private coalesce(): Buffer {
    const all = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [all];
    return all;
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
    const slot: Slot = { done: false, correlationId: header.correlationId, body: null };
    this.queue.push(slot);
    const complete = (w: Writer | null) => {
      slot.body = w ? w.finish() : null;
      slot.done = true;
      this.flush();
    };
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

  private flush(): void {
    if (this.closed) return;
    let corked = false;
    while (this.queue.length && this.queue[0].done) {
      const slot = this.queue.shift()!;
      if (!slot.body) continue; // acks=0: nothing to send
      if (!corked) {
        this.socket.cork();
        corked = true;
      }
      let size = 4;
      for (const b of slot.body) size += b.length;
      const head = Buffer.allocUnsafe(8);
      head.writeInt32BE(size, 0);
      head.writeInt32BE(slot.correlationId, 4);
      this.socket.write(head);
      for (const b of slot.body) this.socket.write(b);
    }
    if (corked) this.socket.uncork();
    if (this.socket.writableLength > MAX_UNSENT_BYTES) this.socket.pause();
    else this.maybeResume();
  }

  private maybeResume(): void {
    if (
      !this.closed &&
      this.socket.isPaused() &&
      this.queue.length <= MAX_IN_FLIGHT / 2 &&
      this.socket.writableLength <= MAX_UNSENT_BYTES
    ) {
      this.socket.resume();
    }
  }
}
