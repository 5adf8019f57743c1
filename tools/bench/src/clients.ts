import { setTimeout as sleep } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import {
  due,
  intendedAtMs,
  LatencyTimeline,
  newHistogram,
  scanFrame,
  sourceAddress,
  summarize,
  type Histogram,
} from './stats';

/**
 * The load generator's WebSocket clients: the same code drives the fleet and the relay.
 * Every client acks every deliverable (a frame with a `mid`), batched every `ackEveryMs` per
 * socket (≤ 500 mids a frame), as the protocol asks; frames are scanned, not JSON-parsed, to keep
 * the generator cheap. Latency = receive time − the message's intended send time on the open-loop
 * schedule (`body.t`, µs of this process's monotonic clock: senders and receivers share one clock),
 * so a generator that falls behind its schedule shows as latency (and as `maxLagMs`), not less.
 */

export interface Target {
  name: string;
  wsUrl: string;
  token(user: string): Promise<string>;
}

export class BenchClient {
  pending: string[] = [];
  constructor(
    readonly user: string,
    readonly socket: WebSocket,
    public partner: string,
  ) {}
}

export interface StepCounters {
  step: number;
  sent: number;
  accepted: number;
  received: number;
  duplicates: number;
  stale: number;
  errors: number;
  receipts: number;
  groupFrames: number;
  lastErrors: string[];
  hist: Histogram;
  timeline: LatencyTimeline;
  lastFrameAt: number;
}

function freshCounters(step: number): StepCounters {
  return {
    step,
    sent: 0,
    accepted: 0,
    received: 0,
    duplicates: 0,
    stale: 0,
    errors: 0,
    receipts: 0,
    groupFrames: 0,
    lastErrors: [],
    hist: newHistogram(),
    timeline: new LatencyTimeline(),
    lastFrameAt: performance.now(),
  };
}

const nowUs = () => Math.round(performance.now() * 1000);

export class ClientPool {
  readonly clients: BenchClient[] = [];
  private c: StepCounters = freshCounters(0);
  private seen = new Set<string>();
  private seq = 0;
  private ackTimer?: NodeJS.Timeout;
  private readonly pad: string;
  /** Send time of the first and receive time of the last delivered message of the step (ms). */
  firstSendAt = 0;
  lastReceiveAt = 0;

  constructor(
    readonly target: Target,
    private readonly options: { bodyBytes: number; ackEveryMs: number; ackAccepted?: boolean },
  ) {
    this.pad = 'x'.repeat(Math.max(0, options.bodyBytes));
  }

  get counters(): StepCounters {
    return this.c;
  }

  /** Connects `users` (each with a partner for 1:1) with bounded concurrency; resolves when every socket got its `hello`. */
  async connect(
    users: Array<{ user: string; partner: string }>,
    concurrency = 200,
    startIndex = 0,
  ): Promise<void> {
    let next = 0;
    const worker = async () => {
      while (next < users.length) {
        const i = next++;
        const { user, partner } = users[i]!;
        const client = await openClient(
          this.target,
          user,
          partner,
          sourceAddress(startIndex + i),
          (client, text) => this.onFrame(client, text),
        );
        this.clients.push(client);
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, users.length) }, worker));
    if (!this.ackTimer) this.ackTimer = setInterval(() => this.flushAcks(), this.options.ackEveryMs);
  }

  private onFrame(client: BenchClient, text: string) {
    const c = this.c;
    const f = scanFrame(text);
    c.lastFrameAt = performance.now();
    // Deliverables (message, receipt, group) are acked; `accepted` also carries the message's mid but
    // answers the sender's own frame, so it is acked only with --ack-accepted (see the report's notes).
    if (f.mid !== undefined && (f.type !== 'accepted' || this.options.ackAccepted)) {
      client.pending.push(f.mid);
      if (client.pending.length >= 500) this.flushClient(client);
    }
    switch (f.type) {
      case 'message':
        if (f.s !== c.step) c.stale++;
        else if (this.seen.has(`${client.user}>${f.mid}`)) c.duplicates++;
        else {
          this.seen.add(`${client.user}>${f.mid}`);
          c.received++;
          const now = nowUs();
          const sentUs = f.t ?? now;
          const latencyUs = Math.max(1, now - sentUs);
          c.hist.recordValue(latencyUs);
          c.timeline.record(sentUs / 1000, latencyUs);
          this.lastReceiveAt = now / 1000;
        }
        break;
      case 'accepted':
        c.accepted++;
        break;
      case 'receipt':
        c.receipts++;
        break;
      case 'group':
        c.groupFrames++;
        break;
      case 'error':
        c.errors++;
        if (c.lastErrors.length < 5) c.lastErrors.push(text.slice(0, 200));
        break;
    }
  }

  private flushClient(client: BenchClient) {
    while (client.pending.length > 0) {
      const mids = client.pending.splice(0, 500);
      if (client.socket.readyState === WebSocket.OPEN)
        client.socket.send(`{"type":"ack","mids":${JSON.stringify(mids)}}`);
    }
  }

  private flushAcks() {
    for (const client of this.clients) if (client.pending.length > 0) this.flushClient(client);
  }

  /** Starts counting a new step, numbered after the last: frames of earlier steps count as stale. */
  beginStep(): StepCounters {
    this.c = freshCounters(this.c.step + 1);
    this.seen = new Set();
    this.firstSendAt = 0;
    this.lastReceiveAt = 0;
    return this.c;
  }

  /** `dueMs`: when the message was due on the schedule (performance.now() ms); its `t`. */
  private sendMessage(client: BenchClient, to: string, chat: 'direct' | 'group', dueMs: number) {
    const t = Math.round(dueMs * 1000);
    if (this.firstSendAt === 0) this.firstSendAt = t / 1000;
    const chatPart = chat === 'group' ? ',"chat":"group"' : '';
    client.socket.send(
      `{"type":"message","id":"m${this.seq++}","to":"${to}"${chatPart},"body":{"t":${t},"s":${this.c.step},"p":"${this.pad}"}}`,
    );
    this.c.sent++;
  }

  /**
   * Open-loop 1:1 load: `rate` messages per second for `durationMs`, spread round-robin over the
   * senders (each sends to its partner). Returns the counters at the end of the window, and how late
   * the generator sent its latest message against the schedule (`maxLagMs`).
   */
  async runRate(
    rate: number,
    durationMs: number,
    senders: BenchClient[] = this.clients,
  ): Promise<{
    sentInWindow: number;
    receivedInWindow: number;
    windowMs: number;
    cpuUs: number;
    maxLagMs: number;
  }> {
    const cpu0 = process.cpuUsage();
    const start = performance.now();
    let rr = 0;
    let sent = 0;
    let maxLagMs = 0;
    await new Promise<void>((resolve) => {
      const tick = () => {
        const now = performance.now();
        const elapsed = now - start;
        const n = due(rate, Math.min(elapsed, durationMs), sent);
        if (n > 0) maxLagMs = Math.max(maxLagMs, now - intendedAtMs(start, rate, sent));
        for (let k = 0; k < n; k++) {
          const client = senders[rr++ % senders.length]!;
          this.sendMessage(client, client.partner, 'direct', intendedAtMs(start, rate, sent + k));
        }
        sent += n;
        if (elapsed >= durationMs) {
          clearInterval(timer);
          resolve();
        }
      };
      const timer = setInterval(tick, 2);
    });
    const windowMs = performance.now() - start;
    const cpu = process.cpuUsage(cpu0);
    return {
      sentInWindow: sent,
      receivedInWindow: this.c.received,
      windowMs,
      cpuUs: cpu.user + cpu.system,
      maxLagMs: Math.round(maxLagMs * 10) / 10,
    };
  }

  /**
   * Group burst: each sender sends `perSender` messages to `group` at `ratePerSender`/s. Returns how
   * late the generator sent its latest message against the schedule.
   */
  async runGroupBurst(
    group: string,
    senders: BenchClient[],
    perSender: number,
    ratePerSender: number,
  ): Promise<{ maxLagMs: number }> {
    const start = performance.now();
    let sent = 0;
    let maxLagMs = 0;
    const total = senders.length * perSender;
    const rate = senders.length * ratePerSender;
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        const now = performance.now();
        const n = Math.min(total - sent, due(rate, now - start, sent));
        if (n > 0) maxLagMs = Math.max(maxLagMs, now - intendedAtMs(start, rate, sent));
        for (let k = 0; k < n; k++)
          this.sendMessage(
            senders[(sent + k) % senders.length]!,
            group,
            'group',
            intendedAtMs(start, rate, sent + k),
          );
        sent += n;
        if (sent >= total) {
          clearInterval(timer);
          resolve();
        }
      }, 2);
    });
    return { maxLagMs: Math.round(maxLagMs * 10) / 10 };
  }

  /** Waits until `done()` or until no frame arrived for `quietMs`, at most `maxMs`. */
  async settle(done: () => boolean, quietMs: number, maxMs: number): Promise<boolean> {
    const start = performance.now();
    while (performance.now() - start < maxMs) {
      if (done()) return true;
      if (performance.now() - this.c.lastFrameAt > quietMs) return done();
      await sleep(20);
    }
    return done();
  }

  /** Sends a raw frame from a client. */
  sendRaw(client: BenchClient, frame: unknown) {
    client.socket.send(JSON.stringify(frame));
  }

  latency() {
    return summarize(this.c.hist);
  }

  async close(): Promise<void> {
    clearInterval(this.ackTimer);
    this.ackTimer = undefined;
    await closeSockets(this.clients.map((c) => c.socket));
    this.clients.length = 0;
  }
}

/** Opens one authenticated socket from `localAddress`; resolves on the server's `hello`. */
export async function openClient(
  target: Target,
  user: string,
  partner: string,
  localAddress: string | undefined,
  onFrame?: (client: BenchClient, text: string) => void,
  timeoutMs = 15_000,
): Promise<BenchClient> {
  const token = await target.token(user);
  const socket = new WebSocket(`${target.wsUrl}?token=${token}`, {
    localAddress,
    perMessageDeflate: false,
    maxPayload: 1024 * 1024,
  });
  const client = new BenchClient(user, socket, partner);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.terminate();
      reject(new Error(`connect ${user}: no hello within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`connect ${user} from ${localAddress}: ${err.message}`));
    });
    socket.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      reject(new Error(`connect ${user}: upgrade refused with ${res.statusCode}`));
    });
    socket.once('message', (data) => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.on('error', () => undefined);
      if (onFrame) socket.on('message', (d) => onFrame(client, d.toString()));
      const text = data.toString();
      if (text.includes('"type":"hello"')) resolve();
      else reject(new Error(`connect ${user}: expected hello, got ${text.slice(0, 100)}`));
    });
  });
  return client;
}

export async function closeSockets(sockets: WebSocket[], graceMs = 3000): Promise<void> {
  await Promise.all(
    sockets.map(
      (s) =>
        new Promise<void>((resolve) => {
          if (s.readyState === WebSocket.CLOSED) return resolve();
          const timer = setTimeout(() => {
            s.terminate();
            resolve();
          }, graceMs);
          s.once('close', () => {
            clearTimeout(timer);
            resolve();
          });
          s.close(1000);
        }),
    ),
  );
}
