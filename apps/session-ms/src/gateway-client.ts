import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { isDeepStrictEqual } from 'node:util';
import {
  compile,
  GatewayDelivery,
  GatewaySendRequest,
  GatewaySendResponse,
  GatewaySendResult,
  INTERNAL_SECRET_HEADER,
  MAX_GATEWAY_BATCH,
  MAX_GATEWAY_SEND_BYTES,
  PushedFrame,
} from '@parley/contracts';

/**
 * Why a call to a gateway failed: the label of `parley_session_push_failures_total{reason}`.
 * `silent`: not made, the gateway having let a call time out moments before (`silentHoldMs`).
 */
export type GatewayFailure = 'unreachable' | 'timeout' | 'silent' | `http_${number}` | 'bad_answer';

/** A failed call to a gateway, with a reason from a short list (a metric label, not a message). */
export class GatewayCallError extends Error {
  constructor(
    message: string,
    readonly reason: GatewayFailure,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'GatewayCallError';
  }
}

/** How session-ms reaches a ws-gateway instance's internal `/send`. */
export interface GatewayClient {
  /**
   * Per delivery, in order: the sockets written, and the connections asked for that the gateway
   * does not hold. Rejects when the gateway cannot be reached.
   */
  send(gatewayUrl: string, deliveries: GatewayDelivery[]): Promise<GatewaySendResult[]>;
  /**
   * Asks the gateway to publish a connection-up for each of its open connections again (it answers
   * at once and publishes in the background). Rejects when it cannot be reached or refuses.
   */
  announce(gatewayUrl: string): Promise<void>;
  /** Closes kept-alive connections. */
  close?(): void;
}

const validateSendResponse = compile(GatewaySendResponse);
/**
 * What an answer may hold besides the connection ids its call named: each result's own text
 * (`{"written":16,"missing":[]}`, 30 bytes) for up to MAX_GATEWAY_BATCH deliveries, with room to spare.
 */
const ANSWER_OVERHEAD_BYTES = 64 * MAX_GATEWAY_BATCH;

export interface HttpGatewayClientOptions {
  /** How long a call may wait for the gateway's answer. */
  timeoutMs?: number;
  /**
   * After a call to a gateway timed out, how long further calls to it fail at once (`silent`); then
   * one call tries it again while the others still fail, until it answers or times out in turn.
   * 0: every call waits out its own timeout.
   */
  silentHoldMs?: number;
  /**
   * The clock the hold runs on: monotonic, as every duration here. On the wall clock a step back
   * (NTP correcting the host) lengthened a hold under way by the step, every push to that gateway
   * failing `silent` meanwhile.
   */
  now?: () => number;
}

/**
 * HTTP with kept-alive connections per gateway. `node:http` rather than `fetch`: on the delivery
 * hot path fetch's web streams and abort signals cost about as much as the request itself.
 */
export function createHttpGatewayClient(
  internalSecret: string,
  {
    timeoutMs = 5000,
    silentHoldMs = timeoutMs,
    now = () => performance.now(),
  }: HttpGatewayClientOptions = {},
): GatewayClient {
  const agents = { http: new HttpAgent({ keepAlive: true }), https: new HttpsAgent({ keepAlive: true }) };
  const silence = silentGateways(silentHoldMs, now);
  /** POSTs `body` to the gateway's `path`; the answer's text, or a throw unless its status is `expected`. */
  const post = async (gatewayUrl: string, path: string, body: Buffer, expected: number) => {
    silence.check(gatewayUrl);
    try {
      const text = await postOnce(gatewayUrl, path, body, expected);
      silence.answered(gatewayUrl);
      return text;
    } catch (err) {
      if (err instanceof GatewayCallError && err.reason === 'timeout') silence.timedOut(gatewayUrl);
      else silence.answered(gatewayUrl);
      throw err;
    }
  };
  const postOnce = async (gatewayUrl: string, path: string, body: Buffer, expected: number) => {
    const url = new URL(path, gatewayUrl);
    const secure = url.protocol === 'https:';
    const call = (secure ? httpsRequest : httpRequest)(url, {
      method: 'POST',
      agent: secure ? agents.https : agents.http,
      headers: {
        'content-type': 'application/json',
        'content-length': body.length,
        [INTERNAL_SECRET_HEADER]: internalSecret,
      },
    });
    // The whole call, its answer's body too: a socket's idle timeout let a gateway that trickled its
    // answer hold the call, and the batch waiting on it, for good.
    let expired: GatewayCallError | undefined;
    const deadline = setTimeout(() => {
      expired = new GatewayCallError(
        `gateway ${gatewayUrl} did not answer within ${timeoutMs} ms`,
        'timeout',
      );
      call.destroy(expired);
    }, timeoutMs);
    try {
      const response = await new Promise<IncomingMessage>((resolve, reject) => {
        call.once('response', resolve);
        call.once('error', (err) => reject(unreachable(gatewayUrl, err)));
        call.end(body);
      });
      const text = await readBody(gatewayUrl, response, body.length + ANSWER_OVERHEAD_BYTES).catch(
        (err: unknown) => {
          throw expired ?? unreachable(gatewayUrl, err);
        },
      );
      if (response.statusCode !== expected)
        throw new GatewayCallError(
          `gateway ${gatewayUrl} answered ${response.statusCode}`,
          `http_${response.statusCode ?? 0}`,
        );
      return text;
    } finally {
      clearTimeout(deadline);
    }
  };
  const send = async (gatewayUrl: string, deliveries: GatewayDelivery[]): Promise<GatewaySendResult[]> => {
    const body = Buffer.from(JSON.stringify(sharingFrames(deliveries)));
    // Over what a gateway takes (a connect's push of ~1,000 large group notices): two calls, one
    // after the other, so that each user's deliveries keep their order.
    if (deliveries.length > 1 && body.length > MAX_GATEWAY_SEND_BYTES) {
      const half = Math.ceil(deliveries.length / 2);
      const first = await send(gatewayUrl, deliveries.slice(0, half));
      return [...first, ...(await send(gatewayUrl, deliveries.slice(half)))];
    }
    const text = await post(gatewayUrl, '/send', body, 200);
    let answer: unknown;
    try {
      answer = JSON.parse(text);
    } catch (err) {
      throw new GatewayCallError(`gateway ${gatewayUrl} answered no JSON`, 'bad_answer', { cause: err });
    }
    const checked = validateSendResponse(answer);
    if (!checked.ok)
      throw new GatewayCallError(
        `gateway ${gatewayUrl} answered no results (${checked.errors.join('; ')})`,
        'bad_answer',
      );
    return checked.value.results;
  };
  return {
    send,
    async announce(gatewayUrl) {
      await post(gatewayUrl, '/announce', Buffer.from('{}'), 202);
    },
    close() {
      agents.http.destroy();
      agents.https.destroy();
    },
  };
}

/**
 * Gateways that let a call time out (a node lost: its pod's address takes connections nowhere).
 * Each call to one waited the whole timeout, and a delivery batch waits for all its calls: every
 * batch naming one of its users took that long, for as long as the gateway still counted alive
 * (GATEWAY_TTL_MS). Failed at once, the pushes go to their retries, then to storage, as any failed
 * push does. A refusal or any answer (an error status too) ends the hold.
 */
function silentGateways(holdMs: number, now: () => number) {
  const held = new Map<string, { until: number; trying: boolean }>();
  return {
    /** Throws `silent` while the gateway is held; past the hold, lets one call try it. */
    check(gatewayUrl: string): void {
      const hold = held.get(gatewayUrl);
      if (!hold) return;
      if (hold.trying || now() < hold.until)
        throw new GatewayCallError(
          `gateway ${gatewayUrl} let a call time out moments ago: not called for up to ${holdMs} ms after it`,
          'silent',
        );
      hold.trying = true;
    },
    timedOut(gatewayUrl: string): void {
      if (holdMs <= 0) return;
      const at = now();
      // Gateways that went for good (a rollout's old pods) are not called again: dropped once past.
      for (const [url, hold] of held) if (!hold.trying && hold.until <= at) held.delete(url);
      held.set(gatewayUrl, { until: at + holdMs, trying: false });
    },
    answered(gatewayUrl: string): void {
      held.delete(gatewayUrl);
    },
  };
}

interface WaitingSend {
  deliveries: GatewayDelivery[];
  resolve: (results: GatewaySendResult[]) => void;
  reject: (err: unknown) => void;
}

/**
 * Sends to one gateway made in the same turn of the event loop go out as one call (up to
 * `maxBatch` deliveries), each caller getting its own deliveries' results. Each partition batch
 * and each batch's receipts made a call of their own: at 1,000 msg/s, 850 requests a second of two
 * or three deliveries each, as much work for both ends as what they carried.
 */
export function coalescingSends(client: GatewayClient, maxBatch = MAX_GATEWAY_BATCH): GatewayClient {
  let waiting = new Map<string, WaitingSend[]>();
  const sendTogether = async (gatewayUrl: string, sends: WaitingSend[]) => {
    try {
      const all = sends.length === 1 ? sends[0].deliveries : sends.flatMap((w) => w.deliveries);
      const results = await client.send(gatewayUrl, all);
      if (results.length !== all.length)
        throw new GatewayCallError(
          `gateway ${gatewayUrl} answered ${results.length} results for ${all.length} deliveries`,
          'bad_answer',
        );
      let at = 0;
      for (const send of sends) send.resolve(results.slice(at, (at += send.deliveries.length)));
    } catch (err) {
      for (const send of sends) send.reject(err);
    }
  };
  const flush = () => {
    const due = waiting;
    waiting = new Map();
    for (const [gatewayUrl, sends] of due)
      for (const part of fillRequests(sends, maxBatch)) void sendTogether(gatewayUrl, part);
  };
  return {
    send(gatewayUrl, deliveries) {
      return new Promise((resolve, reject) => {
        if (waiting.size === 0) setImmediate(flush);
        const sends = waiting.get(gatewayUrl);
        const send = { deliveries, resolve, reject };
        if (sends) sends.push(send);
        else waiting.set(gatewayUrl, [send]);
      });
    },
    announce: (gatewayUrl) => client.announce(gatewayUrl),
    close: () => client.close?.(),
  };
}

/** Consecutive runs of `sends` of at most `maxBatch` deliveries in all (a larger send alone). */
function fillRequests(sends: WaitingSend[], maxBatch: number): WaitingSend[][] {
  const parts: WaitingSend[][] = [];
  let part: WaitingSend[] = [];
  let count = 0;
  for (const send of sends) {
    if (part.length > 0 && count + send.deliveries.length > maxBatch) {
      parts.push(part);
      part = [];
      count = 0;
    }
    part.push(send);
    count += send.deliveries.length;
  }
  if (part.length > 0) parts.push(part);
  return parts;
}

/**
 * The request body, each distinct frame written once: a group message pushed to 1,000 members is
 * one frame and 1,000 short deliveries, not 1,000 copies to serialize, parse and validate. Frames
 * with the same `mid` are compared, not assumed equal: a client reusing a message id for two
 * recipients gives two direct messages one mid. The recipients of one `deliver-many` share one
 * frame object, which needs no comparing.
 */
export function sharingFrames(deliveries: GatewayDelivery[]): GatewaySendRequest {
  const frames: PushedFrame[] = [];
  const byMid = new Map<string, number[]>();
  const indexOf = (frame: PushedFrame) => {
    if (!('mid' in frame)) return frames.push(frame) - 1;
    const candidates = byMid.get(frame.mid);
    const same = candidates?.find((i) => frames[i] === frame || isDeepStrictEqual(frames[i], frame));
    if (same !== undefined) return same;
    const index = frames.push(frame) - 1;
    if (candidates) candidates.push(index);
    else byMid.set(frame.mid, [index]);
    return index;
  };
  // Built field by field: rest-and-spread makes a slow object per delivery (400 bytes here).
  const indexed = deliveries.map(({ to, connIds, frame }) =>
    connIds === undefined ? { to, frame: indexOf(frame) } : { to, connIds, frame: indexOf(frame) },
  );
  return { frames, deliveries: indexed };
}

/** A call's own error (a timeout) as it is; a socket's (refused, reset) as `unreachable`. */
function unreachable(gatewayUrl: string, err: unknown): GatewayCallError {
  if (err instanceof GatewayCallError) return err;
  return new GatewayCallError(
    `gateway ${gatewayUrl} is unreachable: ${(err as Error).message}`,
    'unreachable',
    {
      cause: err,
    },
  );
}

/**
 * The answer's text, refused past `maxBytes`: an answer to /send only echoes the connection ids the
 * call named, so one larger than the call by more than its per-result text is no answer to it (an
 * endless one was read until session-ms ran out of memory).
 */
async function readBody(gatewayUrl: string, response: IncomingMessage, maxBytes: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response) {
    size += (chunk as Buffer).length;
    if (size > maxBytes)
      throw new GatewayCallError(`gateway ${gatewayUrl} answered more than ${maxBytes} bytes`, 'bad_answer');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString();
}
