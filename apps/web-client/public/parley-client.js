/* global fetch, setTimeout, clearTimeout, setInterval, clearInterval, EventTarget, CustomEvent, URL, URLSearchParams, TextEncoder, AbortSignal */
/**
 * parley-client.js: a reference client for the Parley protocol v1, with no UI and no dependencies.
 *
 * It runs in any modern browser (and in Node 20 with a WebSocket implementation passed in), and
 * uses only the public protocol (docs/protocol.md):
 *   - REST on the rest-gateway: dev tokens, `GET /v1/messages` (catch-up), groups, presence,
 *     blocks, reports;
 *   - the WebSocket on the ws-gateway: send, receive, ack, read receipts, typing, group ops.
 *
 * What a well-behaved Parley client does, and where it happens here:
 *   1. Send with its own `id`, keep the frame in an outbox until `accepted` arrives, and send it
 *      again after a reconnect: the server's `mid` is `<user>:<id>`, so a resend is the same message
 *      (`send`, `#flushOutbox`), and again on the same socket when no answer came in 30 s
 *      (`#resendUnanswered`). Read receipts too: a `read` with an `id` is answered `accepted`
 *      (`read`), and is otherwise lost without a word when a socket drops or a limit refuses it.
 *   2. Ack every deliverable (every server frame with a `mid`), including duplicates, once the app
 *      has stored it, and show each `mid` once (`#onDeliverable`, `#queueAck`).
 *   3. On every (re)connect, catch up through `GET /v1/messages` and ack what it returned
 *      (`sync`). The socket also redelivers unacked frames on connect; dedup by `mid` makes that safe.
 *   4. Reconnect with exponential backoff and jitter (0.5 s doubling to 30 s; it starts over only
 *      once a connection has held for 10 s), soon after close 1001 (server shutting down) the first
 *      time, and after the wait a close 4029 names (`connecting too often; retry after N s`); an
 *      application-level ping detects dead connections.
 *   5. Send each outbox frame once per connection, under the server's rate limit, and again a
 *      little later when it was refused `unavailable` or `rate_limited` (nothing was accepted;
 *      the wait doubles while `unavailable` goes on);
 *      refuse a frame over the 64 KiB limit at once, which the server would answer by closing.
 *
 * Events (a CustomEvent with the frame or details in `event.detail`):
 *   `status`    {state: 'connecting'|'online'|'offline', attempt?, retryInMs?}
 *   `message`   a deliverable message frame (once per `mid`)
 *   `receipt`   a receipt frame (`delivered` or `read`, once per `mid`)
 *   `group`     a group change frame (once per `mid`)
 *   `typing`    an ephemeral typing frame
 *   `accepted`  {id, mid}: the server durably accepted a frame we sent
 *   `rejected`  an error frame: `{id?, code, message}`
 *
 * A deliverable is acked once its listeners have returned: store it there, synchronously, or pass
 * the store's promise to `event.waitUntil(promise)` (IndexedDB, SQLite): the ack then waits for it,
 * and a rejected one is not acked (the server delivers it again).
 * One client serves one user: on sign-out, close() it and make a new one for the next user. Its
 * outbox, dedup set and token are the signed-out user's; started again under another user's
 * token, it would send that outbox as theirs.
 */

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const PING_EVERY_MS = 20_000;
const PONG_TIMEOUT_MS = 10_000;
/**
 * A frame a live socket carried and never answered (`accepted` or `error`) goes again after this
 * long, under the same id: a socket far behind may have its answers dropped (docs/protocol.md).
 * Checked at each ping.
 */
const ANSWER_TIMEOUT_MS = 30_000;
const ACK_BATCH_MS = 30;
/** The ids a client gives its frames (docs/protocol.md). */
const CLIENT_ID = /^[A-Za-z0-9_-]{1,64}$/;
const SEEN_LIMIT = 5000;
/** A connection that held this long was a success: backoff starts over. */
const STABLE_AFTER_MS = 10_000;
/** PROTOCOL.md's frame limit (the server's default). */
const MAX_FRAME_BYTES = 64 * 1024;
/** The most mids an `ack` or `read` frame may name. */
const MAX_MIDS_PER_FRAME = 500;
/** Users one `GET /v1/presence` takes (MAX_PRESENCE_USERS in libs/contracts). */
const MAX_PRESENCE_USERS = 200;
/**
 * The outbox goes out at most this fast: under the server's default rate limit (20 frames a
 * second, a burst of 50), which closes a socket that keeps going past it (4029).
 */
const SEND_BURST = 40;
const SENDS_PER_SECOND = 15;
const OUTBOX_RETRY_MS = 1500;
/** REST answers that accepted nothing and ask to come back: 429 (after Retry-After) and 503. */
const REST_RETRY_STATUSES = new Set([429, 503]);
const REST_ATTEMPTS = 4;
/**
 * How long one REST call may take before it fails (a TimeoutError): past the rest-gateway's own
 * 10 s on the services behind it. Without it a call on a connection gone dark (a phone changing
 * networks) never settled, and a sync waiting on it never ended.
 */
const REST_TIMEOUT_MS = 30_000;
/** Messages one report may quote (MAX_REPORTED_MESSAGES in libs/contracts). */
const MAX_REPORTED_MESSAGES = 20;

/** Fetches a dev token (embedded/dev mode only: `POST /v1/dev/token`). */
export async function devToken(restUrl, user) {
  const response = await fetch(`${restUrl}/v1/dev/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user }),
  });
  if (!response.ok) throw await ParleyError.from(response);
  return (await response.json()).token;
}

/** A REST error: `{"error":{"code","message"}}` with its HTTP status. */
export class ParleyError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  static async from(response) {
    const body = await response.json().catch(() => ({}));
    return new ParleyError(
      response.status,
      body.error?.code ?? 'http_error',
      body.error?.message ?? response.statusText,
    );
  }
}

/**
 * A wait the close asks for, if it asks for one. 1001: the server is shutting down, and another
 * instance answers: soon, with jitter so that its clients do not all arrive at once; not again if
 * that did not hold (the next one fails too). 4029 on a socket opened past the user's connect
 * budget: the reason says when a new one is taken (a second of jitter on top).
 */
function reconnectDelayAfter({ code, reason }, attempt) {
  if (code === 1001 && attempt === 0) return Math.random() * 1000;
  const retryAfter = code === 4029 ? /retry after (\d+) s/.exec(reason ?? '') : null;
  return retryAfter ? Number(retryAfter[1]) * 1000 + Math.random() * 1000 : undefined;
}

/**
 * The server's Retry-After in seconds (a 503's doubled while the refusals go on: the server names
 * 1-2 s each time, and keeps no count), or a backoff with jitter; at most BACKOFF_MAX_MS.
 */
function restRetryDelayMs(response, attempt) {
  const seconds = Number(response.headers.get('retry-after'));
  const doubling = 2 ** (attempt - 1);
  const backoff = BACKOFF_MIN_MS * doubling;
  let wait = backoff / 2 + (Math.random() * backoff) / 2;
  if (seconds > 0) wait = seconds * 1000 * (response.status === 503 ? doubling : 1);
  return Math.min(BACKOFF_MAX_MS, wait);
}

/** A fresh group id (`^[A-Za-z0-9_.-]{1,64}$`), unique across users: a UUID where the platform has one. */
function newGroupId() {
  return globalThis.crypto?.randomUUID?.() ?? `g${newId()}${Math.random().toString(36).slice(2, 12)}`;
}

/** A fresh client message id: unique per sender, `^[A-Za-z0-9_-]{1,64}$`. */
export function newId() {
  return `w${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
}

/**
 * `build(part)` for runs of `mids`, each frame naming at most 500 of them and within the frame limit
 * (500 mids of the longest ids would not be).
 */
function midFrames(mids, build) {
  const frames = [];
  for (let at = 0; at < mids.length;) {
    let count = Math.min(MAX_MIDS_PER_FRAME, mids.length - at);
    while (count > 1 && bytesOf(build(mids.slice(at, at + count))) > MAX_FRAME_BYTES)
      count = Math.ceil(count / 2);
    frames.push(build(mids.slice(at, at + count)));
    at += count;
  }
  return frames;
}

function bytesOf(frame) {
  return new TextEncoder().encode(JSON.stringify(frame)).length;
}

export class ParleyClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.restUrl   the rest-gateway origin, e.g. `http://localhost:8081` ('' = this page's)
   * @param {string} options.wsUrl     the ws-gateway URL, e.g. `ws://localhost:8080/v1/ws`
   * @param {() => Promise<string>} options.getToken  a JWT whose `sub` is the user; called on every connect
   * @param {string} [options.deviceId]  this device (`^[A-Za-z0-9_.-]{1,64}$`)
   * @param {typeof WebSocket} [options.WebSocket]  a WebSocket implementation (Node)
   */
  constructor({
    restUrl = '',
    wsUrl,
    getToken,
    deviceId,
    WebSocket: Socket = globalThis.WebSocket,
    restTimeoutMs = REST_TIMEOUT_MS,
  }) {
    super();
    this.restUrl = restUrl;
    this.restTimeoutMs = restTimeoutMs;
    this.wsUrl = wsUrl;
    this.getToken = getToken;
    this.deviceId = deviceId;
    this.Socket = Socket;
    this.user = null;
    this.state = 'offline';
    this.socket = null;
    this.token = null;
    /** id -> {frame, sentOn: the socket it went out on, sentAt}, until `accepted` (or a final `error`). */
    this.outbox = new Map();
    this.outboxTimer = null;
    this.sendTokens = SEND_BURST;
    this.tokensAt = Date.now();
    this.stableTimer = null;
    this.seen = new Set(); // mids already handed to the app (dedup)
    this.storing = new Map(); // mid -> whether the app stored it, while its waitUntil() promises run
    this.pendingAcks = new Set();
    this.ackTimer = null;
    this.attempt = 0;
    this.reconnectTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    /** A ping went out and its pong has not come yet. */
    this.pongOwed = false;
    this.stopped = true;
    /** Counts close() calls: a connect begun before the last one is not this run's. */
    this.closes = 0;
  }

  // ---------------------------------------------------------------- connection

  /** Connects, and keeps reconnecting until `close()`. */
  start() {
    if (!this.stopped) return; // running already: a second socket would be left behind, never closed
    this.stopped = false;
    void this.#connect();
  }

  /**
   * Closes the socket (sign out, page closing, app in the background); start() connects again, as
   * the same user: after a sign-out, make a new client for the next one.
   */
  close() {
    this.stopped = true;
    this.closes += 1;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.outboxTimer);
    this.outboxTimer = null; // else #flushOutboxLater takes it for a retry still to come, after start()
    clearTimeout(this.stableTimer);
    this.#stopPing();
    this.#flushAcks();
    this.socket?.close(1000, 'bye');
    this.socket = null;
    this.#setState('offline');
  }

  async #connect() {
    if (this.stopped) return;
    const closes = this.closes;
    // Closed while the token was on its way, and perhaps started again: that start() connects on
    // its own, and a second socket (or reconnect) from here would leave an orphan, never closed.
    const closedSince = () => this.stopped || this.closes !== closes;
    this.#setState('connecting', { attempt: this.attempt });
    let socket;
    try {
      this.token = await this.getToken();
      if (closedSince()) return;
      const url = new URL(this.wsUrl);
      url.searchParams.set('token', this.token);
      if (this.deviceId) url.searchParams.set('deviceId', this.deviceId);
      socket = new this.Socket(url.toString());
    } catch (err) {
      if (!closedSince()) this.#scheduleReconnect(err);
      return;
    }
    this.socket = socket;
    // A connection that never says hello (a proxy that took the upgrade and hangs) is dropped as a
    // dead one is; the ping takes over after hello (#onOpen stops this timer).
    this.pongTimer = setTimeout(() => this.#abandonSocket('no hello'), PONG_TIMEOUT_MS);
    socket.onmessage = (event) => {
      if (this.socket === socket) this.#onFrame(event.data);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.#stopPing();
      clearTimeout(this.stableTimer);
      this.#scheduleReconnect(null, reconnectDelayAfter(event, this.attempt));
    };
    // Errors are always followed by `close`; nothing to do here.
    socket.onerror = () => undefined;
  }

  #scheduleReconnect(_err, delayMs) {
    if (this.stopped) return;
    const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const wait = delayMs ?? Math.round(backoff / 2 + (Math.random() * backoff) / 2); // "equal jitter"
    this.attempt += 1;
    this.#setState('offline', { attempt: this.attempt, retryInMs: wait });
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => void this.#connect(), wait);
  }

  #onOpen(hello) {
    this.user = hello.user;
    // Backoff starts over once this connection holds: a server that says hello and then closes
    // (it could not register the connection) must not be called again at once, forever.
    clearTimeout(this.stableTimer);
    this.stableTimer = setTimeout(() => (this.attempt = 0), STABLE_AFTER_MS);
    this.#setState('online', { user: hello.user, connId: hello.connId });
    this.#startPing();
    this.#flushOutbox();
    // Catch up on what arrived while we were away. The socket redelivers too; dedup covers it.
    this.sync().catch((err) =>
      this.#emit('rejected', { code: err.code ?? 'sync_failed', message: String(err.message ?? err) }),
    );
  }

  #startPing() {
    this.#stopPing();
    this.pingTimer = setInterval(() => {
      if (!this.#sendRaw({ type: 'ping' })) return;
      this.pongOwed = true;
      this.#awaitPong();
      this.#resendUnanswered();
    }, PING_EVERY_MS);
  }

  #resendUnanswered() {
    const sentBefore = Date.now() - ANSWER_TIMEOUT_MS;
    for (const entry of this.outbox.values())
      if (entry.sentOn === this.socket && entry.sentAt <= sentBefore) entry.sentOn = null;
    this.#flushOutbox();
  }

  /**
   * No pong, and nothing else, for PONG_TIMEOUT_MS: the connection is dead without a close (sleep,
   * network change). Start over now: a close handshake on a dead connection only ends at its own
   * timeout.
   */
  #awaitPong() {
    clearTimeout(this.pongTimer);
    this.pongTimer = setTimeout(() => this.#abandonSocket('no pong'), PONG_TIMEOUT_MS);
  }

  #abandonSocket(reason) {
    const socket = this.socket;
    if (!socket) return;
    this.socket = null; // its close event, whenever it comes, is ignored
    this.#stopPing();
    clearTimeout(this.stableTimer);
    socket.close(4000, reason);
    this.#scheduleReconnect();
  }

  #stopPing() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
    this.pongOwed = false;
  }

  #setState(state, details = {}) {
    this.state = state;
    this.#emit('status', { state, ...details });
  }

  // ---------------------------------------------------------------- receiving

  #onFrame(data) {
    // The pong comes behind whatever the server wrote before it: on a slow link, a backlog (a
    // replay on connect) delayed it past the timeout and a live socket was dropped, its replay
    // then sent again. Frames still arriving are a sign of life as good as the pong.
    if (this.pongOwed) this.#awaitPong();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    switch (frame.type) {
      case 'hello':
        this.#onOpen(frame);
        return;
      case 'pong':
        clearTimeout(this.pongTimer);
        this.pongOwed = false;
        return;
      case 'accepted':
        this.outbox.delete(frame.id);
        this.#emit('accepted', frame);
        return;
      case 'typing':
        this.#emit('typing', frame);
        return;
      default:
        if (frame.mid) this.#onDeliverable(frame);
        else if (frame.type === 'error') this.#onError(frame);
    }
  }

  /**
   * Every frame with a `mid`: hand it to the app once, and ack it (always, even a duplicate) once
   * the app has stored it: when its listeners return, or once the promises they passed to
   * `event.waitUntil()` resolve. A store that failed is not acked and the mid is forgotten, so the
   * server's redelivery (or the next sync) hands it over again. Resolves whether it was stored.
   */
  #onDeliverable(frame) {
    const { mid } = frame;
    let stored = this.storing.get(mid);
    if (!stored && !this.seen.has(mid)) {
      this.seen.add(mid);
      if (this.seen.size > SEEN_LIMIT) this.seen.delete(this.seen.values().next().value);
      const waits = frame.type === 'error' ? this.#onError(frame) : this.#emit(frame.type, frame);
      if (waits.length > 0) {
        stored = Promise.all(waits).then(
          () => true,
          () => (this.seen.delete(mid), false),
        );
        this.storing.set(mid, stored);
        void stored.then(() => this.storing.delete(mid));
      }
    }
    if (!stored) {
      this.#queueAck(mid);
      return Promise.resolve(true);
    }
    // A duplicate arriving while the first is being stored is acked once that store succeeds.
    return stored.then((ok) => (ok && this.#queueAck(mid), ok));
  }

  #onError(frame) {
    const queued = frame.id && this.outbox.get(frame.id);
    if (queued && (frame.code === 'unavailable' || frame.code === 'rate_limited')) {
      // Nothing was accepted: the same frame goes again later, on this connection, and nothing else
      // goes before then: after the wait the refusal names (retryAfterMs), else a little later.
      queued.sentOn = null;
      // `unavailable` again and again: the wait doubles while the refusals go on (docs/protocol.md;
      // the server names 1-2 s each time, and keeps no count).
      queued.unavailable = frame.code === 'unavailable' ? (queued.unavailable ?? 0) + 1 : 0;
      let waitMs = frame.retryAfterMs;
      if (queued.unavailable > 1)
        waitMs = Math.min(BACKOFF_MAX_MS, (waitMs ?? OUTBOX_RETRY_MS) * 2 ** (queued.unavailable - 1));
      this.sendTokens = Math.min(this.sendTokens, 0, 1 - ((waitMs ?? 0) / 1000) * SENDS_PER_SECOND);
      this.tokensAt = Date.now();
      this.#flushOutboxLater(waitMs);
    } else if (queued) {
      this.outbox.delete(frame.id); // refused for good: the same frame would be refused again
    }
    return this.#emit('rejected', frame);
  }

  #queueAck(mid) {
    this.pendingAcks.add(mid);
    if (!this.ackTimer) this.ackTimer = setTimeout(() => this.#flushAcks(), ACK_BATCH_MS);
  }

  #flushAcks() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.pendingAcks.size === 0) return;
    // Unsent acks stay pending; the frames come again on the next connect and are acked then.
    for (const frame of midFrames([...this.pendingAcks], (mids) => ({ type: 'ack', mids }))) {
      if (!this.#sendRaw(frame)) return;
      for (const mid of frame.mids) this.pendingAcks.delete(mid);
    }
  }

  /**
   * Catch-up: pages through `GET /v1/messages` (what the user has not acked yet, oldest first)
   * until its `next` is null, hands every new deliverable to the app, and acks them all. Returns
   * how many were new. It stops early at `close()` (what it did not reach stays stored for the next
   * sync), and throws a `ParleyError` `sync_stalled` (status 200) if the server hands back a cursor
   * it gave before.
   */
  async sync() {
    const closes = this.closes;
    const cursors = new Set();
    let after = null;
    let fresh = 0;
    for (;;) {
      const query = new URLSearchParams({ limit: '100' });
      if (after) query.set('after', after);
      const { messages, next } = await this.rest('GET', `/v1/messages?${query}`);
      // Signed out meanwhile: what the app would no longer keep must not be acked.
      if (this.closes !== closes) return fresh;
      const handed = [];
      for (const frame of messages) {
        if (!this.seen.has(frame.mid)) fresh++;
        handed.push(this.#onDeliverable(frame));
      }
      const storedOk = await Promise.all(handed);
      if (this.closes !== closes) return fresh;
      // Ack what the app stored (the rest stays on the server for the next sync). Over the socket
      // when it is up; otherwise over REST.
      const mids = messages.filter((_, i) => storedOk[i]).map((frame) => frame.mid);
      if (mids.length > 0 && !this.#sendRaw({ type: 'ack', mids }))
        await this.rest('POST', '/v1/send', { type: 'ack', mids });
      for (const mid of mids) this.pendingAcks.delete(mid);
      if (!next) return fresh;
      // A cursor seen before would page the same rows again, for ever.
      if (cursors.has(next))
        throw new ParleyError(200, 'sync_stalled', `GET /v1/messages gave the cursor ${next} twice`);
      cursors.add(next);
      after = next;
    }
  }

  // ---------------------------------------------------------------- sending

  /**
   * Sends a message; returns its `id` and `mid`. It stays in the outbox (and is sent again after
   * a reconnect) until the server accepts it. `chat` is `direct` (to a user) or `group` (to a group).
   */
  send(to, body, chat = 'direct', id = newId()) {
    this.#queue({ type: 'message', id, to, chat, body });
    return { id, mid: this.user ? `${this.user}:${id}` : null };
  }

  /**
   * Tells `to` (the sender) that this user read these messages. Like a message, it stays in the
   * outbox until `accepted` (a read with an `id` is answered so), in frames of at most 500 mids.
   * Returns the ids.
   */
  read(to, mids) {
    const frames = midFrames(mids, (part) => ({ type: 'read', id: newId(), to, mids: part }));
    for (const frame of frames) this.#queue(frame);
    return frames.map((frame) => frame.id);
  }

  /** Ephemeral: delivered only if the peer is online right now; never stored or retried. */
  typing(to, chat = 'direct') {
    this.#sendRaw({ type: 'typing', to, chat });
  }

  /** An asynchronous group operation over the socket (`create`, `add`, `remove`, `leave`, `rename`). */
  groupOp(op, group, { name, members } = {}, id = newId()) {
    this.#queue({
      type: 'group',
      id,
      op,
      group,
      ...(name !== undefined && { name }),
      ...(members && { members }),
    });
    return id;
  }

  /**
   * Into the outbox, and out now if the socket is up. Throws a TypeError for an id the server
   * refuses (it answers that refusal without the id, so the frame would stay and go again for ever)
   * and a RangeError for a frame over the limit.
   */
  #queue(frame) {
    if (typeof frame.id !== 'string' || !CLIENT_ID.test(frame.id))
      throw new TypeError(`frame id ${JSON.stringify(frame.id)}: 1-64 of A-Z a-z 0-9 _ -`);
    const bytes = bytesOf(frame);
    if (bytes > MAX_FRAME_BYTES)
      throw new RangeError(`frame ${frame.id}: ${bytes} bytes, over the ${MAX_FRAME_BYTES}-byte limit`);
    this.outbox.set(frame.id, { frame, sentOn: null });
    this.#flushOutbox();
  }

  /** Sends what this connection has not carried yet, as fast as the send budget allows. */
  #flushOutbox() {
    this.sendTokens = Math.min(
      SEND_BURST,
      this.sendTokens + ((Date.now() - this.tokensAt) / 1000) * SENDS_PER_SECOND,
    );
    this.tokensAt = Date.now();
    for (const entry of this.outbox.values()) {
      if (entry.sentOn === this.socket) continue;
      if (this.sendTokens < 1)
        return this.#flushOutboxLater(((1 - this.sendTokens) / SENDS_PER_SECOND) * 1000);
      if (!this.#sendRaw(entry.frame)) return;
      entry.sentOn = this.socket;
      entry.sentAt = Date.now();
      this.sendTokens -= 1;
    }
  }

  #flushOutboxLater(delayMs = OUTBOX_RETRY_MS / 2 + Math.random() * OUTBOX_RETRY_MS) {
    if (this.outboxTimer) return;
    this.outboxTimer = setTimeout(() => {
      this.outboxTimer = null;
      this.#flushOutbox();
    }, delayMs);
  }

  #sendRaw(frame) {
    if (!this.socket || this.socket.readyState !== 1 || this.state !== 'online') {
      return false;
    }
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  // ---------------------------------------------------------------- REST

  /**
   * A REST call as this user; throws a `ParleyError` on an error status. A 429 or 503 accepted
   * nothing: the call goes again after the server's Retry-After (a 503's doubled while they go
   * on) or a backoff, up to
   * REST_ATTEMPTS tries in all; not when the Retry-After is over BACKOFF_MAX_MS (it throws then).
   */
  async rest(method, path, body) {
    const call = () =>
      fetch(`${this.restUrl}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(body !== undefined && { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.restTimeoutMs),
      });
    const hadToken = Boolean(this.token);
    if (!hadToken) this.token = await this.getToken();
    let response = await call();
    if (response.status === 401 && hadToken) {
      this.token = await this.getToken(); // it expired: once more with a fresh one
      response = await call();
    }
    for (let attempt = 1; REST_RETRY_STATUSES.has(response.status) && attempt < REST_ATTEMPTS; attempt++) {
      // A Retry-After past the longest wait (a daily limit, e.g. reports): asking again sooner is
      // refused again, so the caller hears the refusal now rather than after three futile tries.
      if (Number(response.headers.get('retry-after')) * 1000 > BACKOFF_MAX_MS) break;
      await new Promise((resolve) => setTimeout(resolve, restRetryDelayMs(response, attempt)));
      response = await call();
    }
    if (!response.ok) throw await ParleyError.from(response);
    return response.status === 204 ? undefined : response.json();
  }

  /**
   * `POST /v1/groups`: creates a group now (the creator is member and admin); returns it. The id is
   * chosen here when the app names none: a 503 (the gateway gave up waiting on group-ms, which may
   * have created the group) is tried again, and only a create naming the same id is the same create.
   */
  createGroup(name, members, id = newGroupId()) {
    return this.rest('POST', '/v1/groups', { id, name, members });
  }

  /**
   * `GET /v1/groups`, a page of up to 200 at a time (fewer past 1 MiB) while `next` is not null (one
   * answer without paging is refused past 200 full groups' members, or 503 while the server is busy).
   */
  async groups() {
    const groups = [];
    for (let after = ''; ;) {
      const page = await this.rest(
        'GET',
        `/v1/groups?limit=200${after ? `&after=${encodeURIComponent(after)}` : ''}`,
      );
      groups.push(...page.groups);
      if (!page.next) return groups;
      after = page.next;
    }
  }

  group(id) {
    return this.rest('GET', `/v1/groups/${encodeURIComponent(id)}`);
  }

  /** `GET /v1/presence`: `[{user, online, lastSeen}]`, in calls of MAX_PRESENCE_USERS users each. */
  async presence(users) {
    const presence = [];
    for (let i = 0; i < users.length; i += MAX_PRESENCE_USERS) {
      const some = users.slice(i, i + MAX_PRESENCE_USERS).map(encodeURIComponent);
      presence.push(...(await this.rest('GET', `/v1/presence?users=${some.join(',')}`)).presence);
    }
    return presence;
  }

  /**
   * `PUT /v1/blocks/:user`: the user's 1:1 messages, typing and read receipts no longer reach this
   * user, and this user shows offline to them. They are not told.
   */
  block(user) {
    return this.rest('PUT', `/v1/blocks/${encodeURIComponent(user)}`);
  }

  /** `DELETE /v1/blocks/:user`: what the user sends from two seconds on arrives again (nothing sent meanwhile). */
  unblock(user) {
    return this.rest('DELETE', `/v1/blocks/${encodeURIComponent(user)}`);
  }

  /** `GET /v1/blocks`: the users this user blocked, oldest block first. */
  async blocks() {
    return (await this.rest('GET', '/v1/blocks')).blocked;
  }

  /**
   * `PUT /v1/mutes/:chat/:id`: no push notification for the conversation's messages (they still
   * arrive), until `until` (ms since the epoch) or until unmuted. `chat`: 'direct' or 'group'.
   */
  mute(chat, id, until) {
    const query = until === undefined ? '' : `?until=${until}`;
    return this.rest('PUT', `/v1/mutes/${chat}/${encodeURIComponent(id)}${query}`);
  }

  /** `DELETE /v1/mutes/:chat/:id`: the conversation's messages are announced again. */
  unmute(chat, id) {
    return this.rest('DELETE', `/v1/mutes/${chat}/${encodeURIComponent(id)}`);
  }

  /** `GET /v1/mutes`: the conversations muted now, `{chat, id, until}` (until null: until unmuted). */
  async mutes() {
    return (await this.rest('GET', '/v1/mutes')).mutes;
  }

  /**
   * `POST /v1/reports`: reports `user` to the operator's moderators; they are not told, and are not
   * blocked (`block` does that). `reason`: spam, harassment, hate, sexual, violence, self_harm,
   * impersonation or other. `comment`: the user's own words (up to 1,000 characters, lines
   * allowed). `messages`: what `user` sent, as received (`{mid, body, sentAt}`): the server keeps
   * no delivered message, so these are the evidence; the last 20 go (the most a report takes).
   * Returns `{id, at}`; throws a 429 `rate_limited` past 20 reports a day (at once: its Retry-After
   * can be up to a day away), a 400 `invalid_request` for this user itself.
   */
  report(user, reason, { comment, messages } = {}) {
    // One id for the call: rest()'s retries of it (a 503, a timeout) file it once.
    return this.rest('POST', '/v1/reports', {
      id: newId(),
      user,
      reason,
      ...(comment !== undefined && { comment }),
      ...(messages !== undefined && {
        messages: messages.slice(-MAX_REPORTED_MESSAGES).map(({ mid, body, sentAt }) => ({
          mid,
          ...(body !== undefined && { body }),
          ...(sentAt !== undefined && { sentAt }),
        })),
      }),
    });
  }

  /** Dispatches an event; returns the promises its listeners passed to `event.waitUntil()`. */
  #emit(type, detail) {
    const event = new CustomEvent(type, { detail });
    const waits = [];
    event.waitUntil = (promise) => void waits.push(Promise.resolve(promise));
    this.dispatchEvent(event);
    return waits;
  }
}
