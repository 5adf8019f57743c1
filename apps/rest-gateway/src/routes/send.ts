import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { Counter, Registry } from 'prom-client';
import {
  clientIdOf,
  InboundEvent,
  jsonDepth,
  MAX_BODY_DEPTH,
  ParleyError,
  SendableFrame,
  SendRequest,
  SendResponse,
  SendResult,
  TOPICS,
  userMid,
  validateSendableFrame,
} from '@parley/contracts';
import { EventBus } from '@parley/kafka';
import {
  FrameBudgets,
  frameBudgets,
  KeyedFrameBudgets,
  PublishBudget,
  rateLimitedRefusal,
  TokenBucket,
} from '@parley/service-kit';
import { DEFAULT_SEND_FRAMES_BURST, DEFAULT_SEND_FRAMES_PER_SECOND, RestGatewaySettings } from '../config';
import { bodyErrors, s, secured } from '../schemas';

export interface SendRouteDeps {
  bus: EventBus;
  metrics: Registry;
  settings: RestGatewaySettings;
}

type Accepted = { result: SendResult & { status: 'accepted' }; event: InboundEvent };

/** `POST /v1/send`: the WebSocket's semantics over HTTP, one frame or up to 100. */
export function registerSendRoute(api: FastifyInstance, { bus, metrics, settings }: SendRouteDeps): void {
  const sendBudgets = new KeyedFrameBudgets(() =>
    frameBudgets(
      settings.sendFramesPerSecond ?? DEFAULT_SEND_FRAMES_PER_SECOND,
      settings.sendFramesBurst ?? DEFAULT_SEND_FRAMES_BURST,
    ),
  );
  const publishBudget = new PublishBudget(metrics, 'parley_rest', settings.maxPendingPublishBytes);
  const counters = sendCounters(metrics);

  api.post(
    '/v1/send',
    {
      schema: {
        tags: ['messages'],
        operationId: 'sendFrames',
        description:
          'Send one client frame (`message`, `ack`, `read`, `group`) or an array of up to 100. Each is accepted once Kafka has it, or rejected with a code.',
        security: secured,
        body: s(SendRequest),
        response: { 200: s(SendResponse), ...bodyErrors },
      },
      // Before validation, whose type coercion would make a lone string or null a batch of one.
      preValidation: async (request) => {
        const body = request.body;
        if (body !== null && typeof body === 'object') return;
        const got = body === undefined ? 'no body' : body === null ? 'null' : `a ${typeof body}`;
        throw new ParleyError(
          'invalid_request',
          `body: must be a frame (a JSON object) or an array of frames (got ${got})`,
        );
      },
    },
    async (request) => {
      const items = Array.isArray(request.body) ? (request.body as unknown[]) : [request.body];
      const sentAt = Date.now();
      const budgets = sendBudgets.of(request.user);
      const { results, accepted } = judge(items, {
        user: request.user,
        sentAt,
        budgets,
        maxFrameBytes: settings.maxFrameBytes,
      });
      if (accepted.length > 0)
        await publish(
          accepted.map((a) => a.event),
          { bus, publishBudget, budgets, log: request.log },
        );
      for (const { event } of accepted) counters.accepted.inc({ type: event.frame.type });
      for (const result of results)
        if (result.status === 'rejected') counters.rejected.inc({ code: result.code });
      return { results };
    },
  );
}

/** What POST /v1/send answered, frame by frame: as the ws-gateway's frames and refusals. */
function sendCounters(metrics: Registry) {
  return {
    accepted: new Counter({
      name: 'parley_rest_frames_total',
      help: 'Frames of POST /v1/send accepted (Kafka has them), by type',
      labelNames: ['type'],
      registers: [metrics],
    }),
    rejected: new Counter({
      name: 'parley_rest_rejected_total',
      help: 'Frames of POST /v1/send rejected, by error code',
      labelNames: ['code'],
      registers: [metrics],
    }),
  };
}

/** Each frame in order, accepted (its budget had a token) or rejected: a result for each. */
function judge(
  items: unknown[],
  {
    user,
    sentAt,
    budgets,
    maxFrameBytes,
  }: { user: string; sentAt: number; budgets: FrameBudgets; maxFrameBytes: number },
): { results: SendResult[]; accepted: Accepted[] } {
  const results: SendResult[] = [];
  const accepted: Accepted[] = [];
  const spent = new Set<TokenBucket>();
  items.forEach((item, index) => {
    const parsed = parseFrame(item, index, maxFrameBytes);
    if (!parsed.ok) {
      results.push(parsed.rejected);
      return;
    }
    const frame = parsed.frame;
    const frameId = clientIdOf(frame);
    const bucket = frame.type === 'ack' ? budgets.acks : budgets.frames;
    // Once a frame is refused, so is every later one of its budget in this request, even if a
    // token came meanwhile: a resend of the refused ones then keeps the sender's order.
    if (spent.has(bucket) || !bucket.take()) {
      spent.add(bucket);
      const id = frameId !== undefined ? { id: frameId } : {};
      results.push({
        index,
        status: 'rejected',
        ...id,
        code: 'rate_limited',
        ...rateLimitedRefusal(bucket),
      });
      return;
    }
    const result: SendResult & { status: 'accepted' } =
      frameId !== undefined
        ? { index, status: 'accepted', id: frameId, mid: userMid(user, frameId) }
        : { index, status: 'accepted' };
    accepted.push({ result, event: { v: 1, kind: 'inbound', from: user, sentAt, frame } });
    results.push(result);
  });
  return { results, accepted };
}

/** The item as a frame POST /v1/send takes, or its rejection (too large, or not such a frame). */
function parseFrame(
  item: unknown,
  index: number,
  maxFrameBytes: number,
): { ok: true; frame: SendableFrame } | { ok: false; rejected: SendResult } {
  // Serializing a frame nested thousands deep would overflow the stack: validation refuses it below.
  const tooDeep = jsonDepth(item, MAX_BODY_DEPTH + 2) > MAX_BODY_DEPTH + 1; // the frame's level + its body's
  const size = tooDeep ? 0 : Buffer.byteLength(JSON.stringify(item));
  const id = typeof (item as { id?: unknown })?.id === 'string' ? (item as { id: string }).id : undefined;
  if (size > maxFrameBytes) {
    return {
      ok: false,
      rejected: {
        index,
        status: 'rejected',
        ...(id !== undefined ? { id } : {}),
        code: 'too_large',
        message: `frame: must be at most ${maxFrameBytes} bytes (got ${size})`,
      },
    };
  }
  const parsed = validateSendableFrame(item);
  if (!parsed.ok) {
    return {
      ok: false,
      rejected: {
        index,
        status: 'rejected',
        ...(parsed.id !== undefined ? { id: parsed.id } : {}),
        code: parsed.code,
        message: parsed.message,
      },
    };
  }
  return { ok: true, frame: parsed.frame };
}

/** The accepted frames to Kafka, all of them or none (a 503, their tokens given back). */
async function publish(
  events: InboundEvent[],
  {
    bus,
    publishBudget,
    budgets,
    log,
  }: { bus: EventBus; publishBudget: PublishBudget; budgets: FrameBudgets; log: FastifyBaseLogger },
): Promise<void> {
  // Nothing is accepted after all: the client is told to send them again, at no cost.
  const giveBack = () => {
    for (const event of events) (event.frame.type === 'ack' ? budgets.acks : budgets.frames).giveBack();
  };
  let held: boolean;
  try {
    held = await publishBudget.hold(
      Buffer.byteLength(JSON.stringify(events)),
      events.length,
      () => bus.publish(TOPICS.inbound, events),
      events.every((e) => e.frame.type === 'ack'),
    );
  } catch (err) {
    log.warn({ err }, 'publishing frames failed');
    giveBack();
    throw new ParleyError(
      'unavailable',
      'the frames could not be stored; nothing was accepted, send them again',
    );
  }
  if (!held) {
    giveBack();
    throw new ParleyError(
      'unavailable',
      'the gateway is waiting on storage; nothing was accepted, send them again later',
    );
  }
}
