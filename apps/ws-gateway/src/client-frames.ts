import type { Logger } from 'pino';
import type WebSocket from 'ws';
import {
  ClientFrame,
  clientIdOf,
  ErrorCode,
  ErrorFrame,
  FrameResult,
  InboundEvent,
  parseClientFrame,
  ServerFrame,
  TOPICS,
  userMid,
} from '@parley/contracts';
import type { EventBus } from '@parley/kafka';
import { PublishBudget, rateLimitedRefusal, TokenBucket, unavailableRetryAfterMs } from '@parley/service-kit';
import type { WsGatewaySettings } from './config';
import { ClientConnection, CLOSE_POLICY, CLOSE_RATE_LIMITED } from './connections';
import type { InFlight } from './in-flight';
import type { GatewayMetrics } from './metrics';
import type { UserBudgets } from './user-budgets';

const BINARY_FRAME_REFUSED: FrameResult<ClientFrame> = {
  ok: false,
  code: 'invalid_frame',
  message: 'frame: must be a text frame holding one JSON object',
};

export interface ClientFramesDeps {
  bus: EventBus;
  settings: WsGatewaySettings;
  metrics: GatewayMetrics;
  userBudgets: UserBudgets;
  publishBudget: PublishBudget;
  inFlight: InFlight;
  logger: Logger;
}

/**
 * What a client sends on its socket: each frame checked against its budgets and the protocol,
 * answered (`pong`, `accepted`, an `error`) and published to Kafka for message-router.
 */
export class ClientFrames {
  constructor(private readonly deps: ClientFramesDeps) {}

  /** An answer to the client (`ClientConnection.send`'s `answer`). */
  send(conn: ClientConnection, frame: ServerFrame): boolean {
    return conn.send(JSON.stringify(frame), true);
  }

  refuse(
    conn: ClientConnection,
    code: ErrorCode,
    message: string,
    id?: string,
    extra?: Pick<ErrorFrame, 'retryAfterMs'>,
  ): void {
    this.deps.metrics.refusedFrame(code);
    this.send(conn, { type: 'error', ...(id !== undefined && { id }), code, message, ...extra });
  }

  async handle(conn: ClientConnection, data: WebSocket.RawData, isBinary: boolean): Promise<void> {
    const { settings, metrics } = this.deps;
    conn.alive = true;
    if (conn.isExpired(Date.now())) {
      metrics.refusedFrame('unauthorized');
      return conn.close(CLOSE_POLICY, 'auth expired');
    }
    const parsed = isBinary
      ? BINARY_FRAME_REFUSED
      : parseClientFrame(data as Buffer, { maxBytes: settings.maxFrameBytes });
    // A frame refused as invalid still spends a token, so a stream of them ends in 4029 as well.
    if (!parsed.ok) {
      if (this.admit(conn, false, parsed.id)) this.refuse(conn, parsed.code, parsed.message, parsed.id);
      return;
    }
    const frame = parsed.frame;
    // A ping goes on the acks' larger budget: a keepalive refused because the user's other devices
    // spent the frames' budget would make the app drop a healthy socket.
    if (!this.admit(conn, frame.type === 'ack' || frame.type === 'ping', clientIdOf(frame))) return;
    metrics.frames.inc({ type: frame.type });
    if (frame.type === 'ping') return void this.send(conn, { type: 'pong' });
    await this.publish(conn, frame, (data as Buffer).length);
  }

  /** Nothing was accepted: the client is told when to send it again, spread so a crowd does not come back at once. */
  private refuseUnavailable(conn: ClientConnection, message: string, id?: string): void {
    this.refuse(conn, 'unavailable', message, id, { retryAfterMs: unavailableRetryAfterMs() });
  }

  /**
   * Takes a token for a frame; without one, refuses it and closes after repeated violations. Counted
   * per socket and kind: acks, with a budget of their own, do not wipe out a run of refused messages.
   */
  private admit(conn: ClientConnection, onAckBudget: boolean, id: string | undefined): boolean {
    const kind = onAckBudget ? 'acks' : 'frames';
    const bucket = this.refusingBucket(conn, onAckBudget);
    if (!bucket) {
      conn.refusedInARow[kind] = 0;
      return true;
    }
    const { message, retryAfterMs } = rateLimitedRefusal(bucket);
    this.refuse(conn, 'rate_limited', message, id, { retryAfterMs });
    // Counted on the socket, not the bucket: a shared bucket's run is that of all the user's sockets.
    if (++conn.refusedInARow[kind] >= this.deps.settings.rateCloseAfter)
      conn.close(CLOSE_RATE_LIMITED, 'rate limited repeatedly');
    return false;
  }

  /**
   * The bucket that refuses the frame, if one does: the socket's own first, then its user's where the
   * user holds several sockets here (no array per frame: this runs for every frame). A frame the
   * user's budget refuses costs the socket's own nothing: it was not taken.
   */
  private refusingBucket(conn: ClientConnection, onAckBudget: boolean): TokenBucket | undefined {
    const own = onAckBudget ? conn.ackBucket : conn.bucket;
    if (!own.take()) return own;
    const shared = this.deps.userBudgets.of(conn.user);
    const userBucket = shared && (onAckBudget ? shared.acks : shared.frames);
    if (!userBucket || userBucket.take()) return undefined;
    own.giveBack();
    return userBucket;
  }

  private async publish(
    conn: ClientConnection,
    frame: Exclude<ClientFrame, { type: 'ping' }>,
    size: number,
  ): Promise<void> {
    const { bus, settings, publishBudget, inFlight, logger } = this.deps;
    const event: InboundEvent = {
      v: 1,
      kind: 'inbound',
      from: conn.user,
      deviceId: conn.deviceId,
      connId: conn.id,
      gateway: settings.gatewayId,
      sentAt: Date.now(),
      frame,
    };
    const id = clientIdOf(frame);
    try {
      const publish = () => inFlight.track(bus.publish(TOPICS.inbound, [event]));
      if (!(await publishBudget.hold(size, 1, publish, frame.type === 'ack')))
        return this.refuseUnavailable(conn, 'the gateway is waiting on storage; send it again later', id);
    } catch (err) {
      logger.warn({ err }, 'publishing an inbound frame failed');
      return this.refuseUnavailable(conn, 'the message could not be stored; send it again', id);
    }
    if (id !== undefined) this.send(conn, { type: 'accepted', id, mid: userMid(conn.user, id) });
  }
}
