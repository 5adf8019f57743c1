import WebSocket from 'ws';

type Frame = Record<string, unknown> & { type: string };

/**
 * A WebSocket client for tests: collects every frame and waits for the ones a test expects.
 * Acks nothing by itself unless `autoAck` is set.
 */
export class WsTestClient {
  readonly frames: Frame[] = [];
  closeCode?: number;
  private waiters: Array<() => void> = [];
  private unacked: string[] = [];

  private constructor(
    readonly socket: WebSocket,
    private readonly autoAck: boolean,
  ) {
    socket.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as Frame;
      this.frames.push(frame);
      if (this.autoAck && typeof frame.mid === 'string') this.ackSoon(frame.mid);
      this.notify();
    });
    socket.on('close', (code) => {
      this.closeCode = code;
      this.notify();
    });
  }

  /** `autoPong: false` leaves the server's pings unanswered, as a dead peer would. */
  static async connect(
    url: string,
    options: { autoAck?: boolean; autoPong?: boolean; headers?: Record<string, string> } = {},
  ): Promise<WsTestClient> {
    const socket = new WebSocket(url, { headers: options.headers, autoPong: options.autoPong ?? true });
    const client = new WsTestClient(socket, options.autoAck ?? false);
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
      socket.once('unexpected-response', (_req, res) =>
        reject(new Error(`upgrade refused: ${res.statusCode}`)),
      );
    });
    await client.next((f) => f.type === 'hello');
    return client;
  }

  /** Attempts an upgrade that should be refused; resolves with the HTTP status and body. */
  static refusal(url: string, headers?: Record<string, string>): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url, { headers });
      socket.once('open', () => reject(new Error('upgrade was accepted')));
      socket.once('error', () => undefined);
      socket.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (chunk: Buffer) => (body += chunk.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
    });
  }

  /** Acks are batched, as a real client does: one frame for whatever arrived in the same tick. */
  private ackSoon(mid: string) {
    if (this.unacked.push(mid) > 1) return;
    setImmediate(() => {
      const mids = this.unacked.splice(0, 500);
      if (this.socket.readyState === WebSocket.OPEN) this.send({ type: 'ack', mids });
      if (this.unacked.length > 0) this.ackSoon(this.unacked.pop()!);
    });
  }

  send(frame: unknown): void {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** Frames of a type received so far. */
  ofType(type: string): Frame[] {
    return this.frames.filter((f) => f.type === type);
  }

  /** Waits for the first frame (received before or after the call) that matches. */
  async next(match: (frame: Frame) => boolean, timeoutMs = 5000): Promise<Frame> {
    let found: Frame | undefined;
    await this.until(() => (found = this.frames.find(match)) !== undefined, timeoutMs);
    return found!;
  }

  async until(condition: () => boolean, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      if (Date.now() > deadline)
        throw new Error(`timed out; frames so far: ${JSON.stringify(this.frames.slice(-10))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(100, Math.max(1, deadline - Date.now())));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async closed(timeoutMs = 5000): Promise<number> {
    await this.until(() => this.closeCode !== undefined, timeoutMs);
    return this.closeCode!;
  }

  async close(): Promise<void> {
    if (this.closeCode !== undefined) return;
    this.socket.close();
    await this.closed().catch(() => this.socket.terminate());
  }

  private notify() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }
}

/** Polls `check` until it returns true; by default for 10 s (a busy machine made 5 s too short). */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
