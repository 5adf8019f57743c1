import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { NetworkInterfaceInfo, networkInterfaces } from 'node:os';
import type { Duplex } from 'node:stream';
import { Static, Type } from '@sinclair/typebox';
import WebSocket, { WebSocketServer } from 'ws';
import { Counter, Gauge } from 'prom-client';
import {
  ClientFrame,
  clientIdOf,
  ConnectionTopicEvent,
  ErrorCode,
  ErrorFrame,
  FrameResult,
  GatewayAnnounceResponse,
  GatewaySendRequest,
  GatewaySendResponse,
  GatewaySendResult,
  InboundEvent,
  MAX_GATEWAY_BATCH,
  MaxFrameBytesSetting,
  ParleyError,
  parseClientFrame,
  PushedFrame,
  ServerFrame,
  statusOf,
  TOPICS,
  USER_ID_PATTERN,
  userMid,
} from '@parley/contracts';
import { EventBus, KafkaSettingsSchema } from '@parley/kafka';
import {
  AuthConfig,
  bearerToken,
  buildHttpServer,
  CommonConfig,
  frameBudgets,
  HttpServer,
  Identity,
  InternalConfig,
  PublishBudget,
  PublishBudgetConfig,
  rateLimitedRefusal,
  unavailableRetryAfterMs,
  requireInternalSecret,
  Runtime,
  Service,
  TokenBucket,
  TokenVerifier,
  rawErrorResponse,
  serviceUrl,
} from '@parley/service-kit';
import {
  ClientConnection,
  CLOSE_GOING_AWAY,
  CLOSE_POLICY,
  CLOSE_RATE_LIMITED,
  ConnectionRegistry,
  GatewaySocket,
} from './connections';
import { UserBudgets } from './user-budgets';

const DEFAULT_MAX_CONNECTIONS_PER_USER = 16;
const DEFAULT_USER_RATE_FACTOR = 4;
type ConnectionDown = Extract<ConnectionTopicEvent, { kind: 'connection-down' }>;
/** Connection-ups per publish when announcing every open connection again. */
const DEFAULT_ANNOUNCE_CHUNK = 1000;

export const WsGatewayConfig = Type.Object({
  ...CommonConfig,
  ...KafkaSettingsSchema,
  ...InternalConfig,
  ...AuthConfig,
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 8080, description: 'Public WebSocket port' }),
  INTERNAL_PORT: Type.Integer({
    minimum: 0,
    maximum: 65535,
    default: 9080,
    description: 'Internal /send, probes, metrics',
  }),
  GATEWAY_ID: Type.Optional(
    Type.String({ pattern: '^[A-Za-z0-9_.-]{1,100}$', description: 'Instance id; random when unset' }),
  ),
  GATEWAY_INTERNAL_URL: Type.Optional(
    serviceUrl({
      description:
        "How session-ms reaches this instance; when unset, http://<POD_IP (an IPv6 one in brackets), else HOST when it names one address, else this host's first non-loopback IPv4>:INTERNAL_PORT",
    }),
  ),
  POD_IP: Type.Optional(Type.String()),
  MAX_FRAME_BYTES: MaxFrameBytesSetting,
  RATE_LIMIT_PER_SECOND: Type.Number({
    minimum: 0.1,
    default: 20,
    description: 'Frames per second per connection',
  }),
  RATE_LIMIT_BURST: Type.Integer({ minimum: 1, default: 50 }),
  RATE_LIMIT_USER_FACTOR: Type.Number({
    minimum: 1,
    default: DEFAULT_USER_RATE_FACTOR,
    description:
      "A user's sockets on one gateway together get this many sockets' frame and ack budgets (rate and burst), on top of each socket's own",
  }),
  RATE_LIMIT_CLOSE_AFTER: Type.Integer({
    minimum: 1,
    default: 20,
    description: 'Refusals in a row before close 4029',
  }),
  MAX_UNSENT_BYTES: Type.Integer({
    minimum: 1024,
    default: 1024 * 1024,
    description: 'Per socket; a slower reader is cut off',
  }),
  MAX_CONNECTIONS: Type.Integer({ minimum: 1, default: 200_000 }),
  MAX_CONNECTIONS_PER_USER: Type.Integer({
    minimum: 1,
    default: DEFAULT_MAX_CONNECTIONS_PER_USER,
    description:
      "A user's sockets on one gateway at once (a device each, plus a reconnect racing its old socket's timeout); past it the new socket is closed with 1008",
  }),
  ...PublishBudgetConfig,
  PING_INTERVAL_MS: Type.Integer({ minimum: 100, default: 30_000 }),
  HEARTBEAT_INTERVAL_MS: Type.Integer({
    minimum: 100,
    default: 10_000,
    description: 'Gateway heartbeat to session-ms',
  }),
  ALLOWED_ORIGINS: Type.String({
    default: '',
    description: 'Comma-separated Origin allowlist; empty allows any',
  }),
});

export interface WsGatewaySettings {
  gatewayId: string;
  internalUrl: string;
  maxFrameBytes: number;
  ratePerSecond: number;
  rateBurst: number;
  /** A user's sockets on this gateway together: this many sockets' budgets; default 4. */
  userRateFactor?: number;
  rateCloseAfter: number;
  maxUnsentBytes: number;
  maxConnections: number;
  /** A user's sockets on this gateway at once; default 16. */
  maxConnectionsPerUser?: number;
  pingIntervalMs: number;
  heartbeatIntervalMs: number;
  allowedOrigins: string[];
  /** Bytes of client frames waiting for Kafka at once; default 64 MiB. */
  maxPendingPublishBytes?: number;
  /** Connection-ups per publish when announcing the open connections again; default 1,000. */
  announceChunk?: number;
}

/**
 * How session-ms reaches this replica: GATEWAY_INTERNAL_URL, else the pod's address, else the
 * address the internal server listens on when that is one, else this host's first non-loopback
 * IPv4 (a container's own, in compose), else loopback. Each replica advertises an address of its
 * own: loopback would send session-ms to itself.
 */
export function advertisedInternalUrl(
  config: Pick<Static<typeof WsGatewayConfig>, 'GATEWAY_INTERNAL_URL' | 'POD_IP' | 'HOST' | 'INTERNAL_PORT'>,
  interfaces: NodeJS.Dict<NetworkInterfaceInfo[]> = networkInterfaces(),
): string {
  if (config.GATEWAY_INTERNAL_URL) return config.GATEWAY_INTERNAL_URL;
  const listening =
    config.HOST && config.HOST !== '0.0.0.0' && config.HOST !== '::' ? config.HOST : undefined;
  const address =
    config.POD_IP ??
    listening ??
    Object.values(interfaces)
      .flat()
      .find((a) => a && a.family === 'IPv4' && !a.internal)?.address ??
    '127.0.0.1';
  // An IPv6 address (an IPv6-only cluster's pod IP) goes in brackets in a URL.
  return `http://${address.includes(':') ? `[${address}]` : address}:${config.INTERNAL_PORT}`;
}

/** The settings a configuration gives (main.ts; tests that want the production defaults). */
export function gatewaySettings(
  config: Static<typeof WsGatewayConfig>,
  where: { gatewayId: string; internalUrl: string },
): WsGatewaySettings {
  return {
    ...where,
    maxFrameBytes: config.MAX_FRAME_BYTES,
    ratePerSecond: config.RATE_LIMIT_PER_SECOND,
    rateBurst: config.RATE_LIMIT_BURST,
    userRateFactor: config.RATE_LIMIT_USER_FACTOR,
    rateCloseAfter: config.RATE_LIMIT_CLOSE_AFTER,
    maxUnsentBytes: config.MAX_UNSENT_BYTES,
    maxPendingPublishBytes: config.MAX_PENDING_PUBLISH_BYTES,
    maxConnections: config.MAX_CONNECTIONS,
    maxConnectionsPerUser: config.MAX_CONNECTIONS_PER_USER,
    pingIntervalMs: config.PING_INTERVAL_MS,
    heartbeatIntervalMs: config.HEARTBEAT_INTERVAL_MS,
    allowedOrigins: config.ALLOWED_ORIGINS.split(',')
      .map((o) => o.trim())
      .filter(Boolean),
  };
}

export interface WsGatewayDeps extends Omit<Runtime, 'closer'> {
  bus: EventBus;
  verifyToken: TokenVerifier;
  internalSecret: string;
  settings: WsGatewaySettings;
  port: number;
  internalPort: number;
  host?: string;
}

export interface WsGateway extends Service {
  /** Public: the WebSocket upgrade on /v1/ws and the probes. */
  http: HttpServer;
  /** Internal: POST /send, probes, metrics. */
  internal: HttpServer;
  connections: ConnectionRegistry;
}

/** A socket's frame budgets, or (`factor`) those of that many sockets. */
const socketBudgets = (settings: WsGatewaySettings, factor = 1) =>
  frameBudgets(settings.ratePerSecond * factor, settings.rateBurst * factor);
const deviceIdPattern = new RegExp(USER_ID_PATTERN);
const BINARY_FRAME_REFUSED: FrameResult<ClientFrame> = {
  ok: false,
  code: 'invalid_frame',
  message: 'frame: must be a text frame holding one JSON object',
};

export function createWsGateway(deps: WsGatewayDeps): WsGateway {
  const { bus, settings, logger } = deps;
  // Before any socket: session-ms forgets what this gateway's id registered earlier (a restart).
  const startedAt = Date.now();
  const registry = new ConnectionRegistry();
  const http = buildHttpServer(deps);
  // A /send batch carries up to MAX_GATEWAY_BATCH frames of up to maxFrameBytes each, plus what the
  // server stamps on them and each delivery's addressing.
  const internal = buildHttpServer({
    ...deps,
    bodyLimit: MAX_GATEWAY_BATCH * (settings.maxFrameBytes + 1024),
  });
  requireInternalSecret(internal, deps.internalSecret, ['/send', '/announce']);
  // Reached only without an upgrade: a proxy in between that drops Upgrade/Connection is a classic
  // deployment mistake, and "no route" would send the app developer looking for a wrong URL.
  http.get('/v1/ws', { schema: { hide: true } }, async (_request, reply) =>
    reply
      .code(426)
      .header('upgrade', 'websocket')
      .send({
        error: {
          code: 'invalid_request',
          message:
            'this endpoint needs a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade); a proxy in between may have dropped those headers',
        },
      }),
  );
  const wss = new WebSocketServer({
    WebSocket: GatewaySocket,
    noServer: true,
    maxPayload: settings.maxFrameBytes,
    perMessageDeflate: false,
  });
  const publishBudget = new PublishBudget(deps.metrics, 'parley_ws', settings.maxPendingPublishBytes);
  const metrics = gatewayMetrics(deps, registry);
  const inFlight = new Set<Promise<unknown>>();
  let draining = false;

  const track = <T>(promise: Promise<T>) => {
    inFlight.add(promise);
    void promise.finally(() => inFlight.delete(promise)).catch(() => undefined);
    return promise;
  };

  const connectionEvent = (
    kind: 'connection-up' | 'connection-down',
    conn: ClientConnection,
  ): ConnectionTopicEvent => ({
    v: 1,
    kind,
    user: conn.user,
    connId: conn.id,
    deviceId: conn.deviceId,
    gateway: settings.gatewayId,
    gatewayUrl: settings.internalUrl,
    // Never before this process's start: session-ms drops a connection stamped earlier than the
    // start its heartbeats name (less RESTART_CLOCK_MARGIN_MS) as one of a process gone, so a clock
    // stepped back since the start (NTP correcting a clock that booted fast) made every socket
    // opened until it caught up unknown there: counted offline, its messages sent to storage.
    at: Math.max(Date.now(), startedAt),
    startedAt,
  });
  const publishConnection = (kind: 'connection-up' | 'connection-down', conn: ClientConnection) => {
    const event = connectionEvent(kind, conn);
    return track(bus.publish(TOPICS.connections, [event])).then(
      () => {
        if (kind === 'connection-up') conn.announced = true;
        return true;
      },
      (err: unknown) => {
        logger.error({ err, kind, user: conn.user }, 'publishing a connection event failed');
        // Lost, session-ms would count the device connected for as long as this gateway beats. A
        // connect Kafka never took needs none: while Kafka is away every reconnect is such a one,
        // and keeping a disconnect for each grew the gateway for as long as the outage lasted.
        if (event.kind === 'connection-down' && conn.announced) keepLostDown(event);
        return false;
      },
    );
  };
  /** Disconnects Kafka did not take: sent again with each heartbeat, and at stop, until it does. */
  const unpublishedDowns = new Map<string, ConnectionDown>();
  new Gauge({
    name: 'parley_ws_unpublished_disconnects',
    help: 'Disconnects Kafka refused, held to be published again with each heartbeat (at most MAX_CONNECTIONS)',
    registers: [deps.metrics],
    collect() {
      this.set(unpublishedDowns.size);
    },
  });
  /**
   * At most one per socket the gateway may hold; past that the oldest goes (session-ms still drops
   * such a connection when this gateway's /send answer names it missing).
   */
  const keepLostDown = (event: ConnectionDown) => {
    if (unpublishedDowns.size >= settings.maxConnections && !unpublishedDowns.has(event.connId))
      unpublishedDowns.delete(unpublishedDowns.keys().next().value!);
    unpublishedDowns.set(event.connId, event);
  };
  const publishWithLostDowns = (events: ConnectionTopicEvent[]) => {
    const downs = [...unpublishedDowns.values()];
    return track(bus.publish(TOPICS.connections, [...downs, ...events])).then(() => {
      for (const down of downs) unpublishedDowns.delete(down.connId);
    });
  };

  /**
   * Every open connection goes out again as a connection-up: session-ms asked (POST /announce), as
   * it did not know this gateway (its store lost its state, or it had forgotten a gateway silent for
   * an hour). What Kafka refuses is tried again with the next heartbeat.
   */
  let announcing: Promise<void> | undefined;
  let announceOwed = false;
  const announceConnections = async () => {
    announceOwed = false;
    const open = [...registry.all()];
    const chunkSize = settings.announceChunk ?? DEFAULT_ANNOUNCE_CHUNK;
    try {
      // Draining closes every socket: the rest need no announcing, and stop() waits for this.
      for (let i = 0; i < open.length && !draining; i += chunkSize) {
        const chunk = open.slice(i, i + chunkSize);
        await track(
          bus.publish(
            TOPICS.connections,
            chunk.map((conn) => connectionEvent('connection-up', conn)),
          ),
        );
        for (const conn of chunk) {
          conn.announced = true;
          // One that closed meanwhile may have had its connection-down written before this up: again.
          if (registry.of(conn.user, [conn.id]).length === 0) void publishConnection('connection-down', conn);
        }
      }
      logger.info({ connections: open.length }, 'open connections announced again to session-ms');
    } catch (err) {
      announceOwed = true;
      logger.warn({ err }, 'announcing the open connections failed; trying again with the next heartbeat');
    }
  };
  const announce = () => {
    announcing ??= announceConnections().finally(() => (announcing = undefined));
  };

  /**
   * One heartbeat at a time: while Kafka hangs (answers nothing until kafkajs's retries run out,
   * minutes), a beat per interval queued one more copy of every disconnect held, up to
   * MAX_CONNECTIONS of them, for as long as it hung. A tick that finds one under way is skipped.
   */
  let beating: Promise<unknown> | undefined;
  const publishHeartbeat = () => {
    if (announceOwed) announce();
    beating ??= sendHeartbeat().finally(() => (beating = undefined));
    return beating;
  };
  const sendHeartbeat = () =>
    publishWithLostDowns([
      {
        v: 1,
        kind: 'gateway-heartbeat',
        gateway: settings.gatewayId,
        gatewayUrl: settings.internalUrl,
        connections: registry.size,
        at: Date.now(),
        startedAt,
      },
    ]).catch((err) => logger.warn({ err }, 'gateway heartbeat failed'));

  const send = (conn: ClientConnection, frame: ServerFrame) => conn.send(JSON.stringify(frame));
  const refuse = (
    conn: ClientConnection,
    code: ErrorCode,
    message: string,
    id?: string,
    extra?: Pick<ErrorFrame, 'retryAfterMs'>,
  ) => {
    metrics.refused.inc({ code });
    send(conn, { type: 'error', ...(id !== undefined && { id }), code, message, ...extra });
  };

  /** Nothing was accepted: the client is told when to send it again, spread so a crowd does not come back at once. */
  const refuseUnavailable = (conn: ClientConnection, message: string, id?: string) =>
    refuse(conn, 'unavailable', message, id, { retryAfterMs: unavailableRetryAfterMs() });

  const userBudgets = new UserBudgets(() =>
    socketBudgets(settings, settings.userRateFactor ?? DEFAULT_USER_RATE_FACTOR),
  );
  /**
   * The bucket that refuses the frame, if one does: the socket's own first, then its user's where the
   * user holds several sockets here (no array per frame: this runs for every frame).
   */
  const refusingBucket = (conn: ClientConnection, onAckBudget: boolean): TokenBucket | undefined => {
    const own = onAckBudget ? conn.ackBucket : conn.bucket;
    if (!own.take()) return own;
    const shared = userBudgets.of(conn.user);
    const userBucket = shared && (onAckBudget ? shared.acks : shared.frames);
    return userBucket && !userBucket.take() ? userBucket : undefined;
  };

  /**
   * Takes a token for a frame; without one, refuses it and closes after repeated violations. Counted
   * per socket and kind: acks, with a budget of their own, do not wipe out a run of refused messages.
   */
  const admit = (conn: ClientConnection, onAckBudget: boolean, id: string | undefined): boolean => {
    const kind = onAckBudget ? 'acks' : 'frames';
    const bucket = refusingBucket(conn, onAckBudget);
    if (!bucket) {
      conn.refusedInARow[kind] = 0;
      return true;
    }
    const { message, retryAfterMs } = rateLimitedRefusal(bucket);
    refuse(conn, 'rate_limited', message, id, { retryAfterMs });
    // Counted on the socket, not the bucket: a shared bucket's run is that of all the user's sockets.
    if (++conn.refusedInARow[kind] >= settings.rateCloseAfter)
      conn.close(CLOSE_RATE_LIMITED, 'rate limited repeatedly');
    return false;
  };

  const onFrame = async (conn: ClientConnection, data: WebSocket.RawData, isBinary: boolean) => {
    conn.alive = true;
    if (isExpired(conn, Date.now())) {
      metrics.refused.inc({ code: 'unauthorized' });
      return conn.close(CLOSE_POLICY, 'auth expired');
    }
    const parsed = isBinary
      ? BINARY_FRAME_REFUSED
      : parseClientFrame(data as Buffer, { maxBytes: settings.maxFrameBytes });
    // A frame refused as invalid still spends a token, so a stream of them ends in 4029 as well.
    if (!parsed.ok) {
      if (admit(conn, false, parsed.id)) refuse(conn, parsed.code, parsed.message, parsed.id);
      return;
    }
    const frame = parsed.frame;
    // A ping goes on the acks' larger budget: a keepalive refused because the user's other devices
    // spent the frames' budget would make the app drop a healthy socket.
    if (!admit(conn, frame.type === 'ack' || frame.type === 'ping', clientIdOf(frame))) return;
    metrics.frames.inc({ type: frame.type });
    if (frame.type === 'ping') return void send(conn, { type: 'pong' });
    await publishFrame(conn, frame, (data as Buffer).length);
  };

  const publishFrame = async (
    conn: ClientConnection,
    frame: Exclude<ClientFrame, { type: 'ping' }>,
    size: number,
  ) => {
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
      const publish = () => track(bus.publish(TOPICS.inbound, [event]));
      if (!(await publishBudget.hold(size, 1, publish, frame.type === 'ack')))
        return refuseUnavailable(conn, 'the gateway is waiting on storage; send it again later', id);
    } catch (err) {
      logger.warn({ err }, 'publishing an inbound frame failed');
      return refuseUnavailable(conn, 'the message could not be stored; send it again', id);
    }
    if (id !== undefined) send(conn, { type: 'accepted', id, mid: userMid(conn.user, id) });
  };

  // The listeners of every socket: `this` is the socket, carrying its connection (GatewaySocket).
  function onSocketMessage(this: GatewaySocket, data: WebSocket.RawData, isBinary: boolean) {
    const conn = this.connection!;
    onFrame(conn, data, isBinary).catch((err: unknown) => {
      // A defect, not the client's doing: answered, so the client is not left waiting.
      logger.error({ err, user: conn.user }, 'handling a frame failed');
      refuse(conn, 'internal', 'the frame could not be handled');
    });
  }
  function onSocketPong(this: GatewaySocket) {
    this.connection!.alive = true;
  }
  function onSocketError(this: GatewaySocket, err: Error) {
    // A frame over maxFrameBytes: ws closes the socket with 1009 itself.
    if ((err as { code?: string }).code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH')
      metrics.refused.inc({ code: 'too_large' });
    logger.debug({ err, user: this.connection!.user }, 'socket error');
  }
  function onSocketClose(this: GatewaySocket) {
    const conn = this.connection!;
    registry.remove(conn);
    const left = registry.of(conn.user).length;
    userBudgets.update(conn.user, left);
    // What it spent is not given back by closing it: the user's next socket takes up from there.
    if (left === 0) userBudgets.retire(conn.user, { frames: conn.bucket, acks: conn.ackBucket });
    void publishConnection('connection-down', conn);
  }

  const onConnection = (
    socket: GatewaySocket,
    transport: Duplex,
    identity: Identity,
    deviceId: string | undefined,
  ) => {
    // A socket opened again after the user's last one closed gets no fresh budget: a reconnect loop
    // would otherwise send a burst per socket.
    const own =
      (registry.of(identity.user).length === 0 ? userBudgets.resume(identity.user) : undefined) ??
      socketBudgets(settings);
    const conn = new ClientConnection(
      randomUUID(),
      identity.user,
      deviceId,
      socket,
      own.frames,
      own.acks,
      identity.expiresAt,
      settings.maxUnsentBytes,
      transport,
    );
    registry.add(conn);
    userBudgets.update(conn.user, registry.of(conn.user).length);
    socket.connection = conn;
    socket.on('message', onSocketMessage);
    socket.on('pong', onSocketPong);
    socket.on('error', onSocketError);
    socket.on('close', onSocketClose);
    send(
      conn,
      deviceId
        ? { type: 'hello', user: conn.user, connId: conn.id, deviceId }
        : { type: 'hello', user: conn.user, connId: conn.id },
    );
    void publishConnection('connection-up', conn).then((published) => {
      // Unregistered, the socket would look healthy and get nothing: the client is to come back.
      if (!published) conn.close(CLOSE_GOING_AWAY, 'could not register the connection; reconnect');
    });
  };

  /** Refuses with a close 1008 after the upgrade: a browser can read a close, not a refused upgrade's status. */
  const closeOnUpgrade = (
    request: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    code: string,
    reason: string,
  ) => {
    // A close reason is at most 123 bytes (of UTF-8: an origin may hold non-ASCII text).
    let short = reason.slice(0, 123);
    while (Buffer.byteLength(short) > 123) short = short.slice(0, -1);
    // Counted once upgraded: a handshake ws refuses itself is counted (and answered) by wsClientError.
    wss.handleUpgrade(request, socket, head, (ws) => {
      metrics.refused.inc({ code });
      // Its reader still runs until the close completes: an error there (a frame past maxPayload)
      // emitted with no listener would throw out of the socket's data handler and end the process.
      ws.on('error', ignore);
      ws.close(CLOSE_POLICY, short);
    });
  };

  // The handshake checks ws makes itself (method, key, version): the protocol's error body, not ws's text/html.
  wss.on('wsClientError', (err: Error, socket: Duplex) => {
    metrics.refused.inc({ code: 'invalid_request' });
    const message = `not a valid WebSocket upgrade: ${err.message} (a GET with Upgrade: websocket, a Sec-WebSocket-Key and Sec-WebSocket-Version: 13)`;
    rejectUpgrade(socket, new ParleyError('invalid_request', message));
  });

  const onUpgrade = async (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', ignore);
    try {
      const url = upgradeUrl(request);
      if (url.pathname !== '/v1/ws')
        throw new ParleyError('not_found', `no WebSocket endpoint at ${url.pathname}; use /v1/ws`);
      if (draining) throw new ParleyError('unavailable', 'this gateway is shutting down; reconnect');
      const origin = request.headers.origin;
      if (origin && settings.allowedOrigins.length > 0 && !settings.allowedOrigins.includes(origin)) {
        // PROTOCOL.md: close 1008.
        return closeOnUpgrade(request, socket, head, 'forbidden', `origin ${origin} is not allowed`);
      }
      const deviceId = url.searchParams.get('deviceId') ?? undefined;
      if (deviceId !== undefined && !deviceIdPattern.test(deviceId)) {
        throw new ParleyError('invalid_request', `deviceId: must match ${USER_ID_PATTERN}`);
      }
      const identity = await deps.verifyToken(
        bearerToken(request.headers.authorization, url.searchParams.get('token')),
      );
      // The check may take a while (a JWKS fetch): stop may have begun meanwhile.
      if (draining) throw new ParleyError('unavailable', 'this gateway is shutting down; reconnect');
      if (registry.size >= settings.maxConnections)
        throw new ParleyError('unavailable', 'this gateway is full; try another');
      const perUser = settings.maxConnectionsPerUser ?? DEFAULT_MAX_CONNECTIONS_PER_USER;
      if (registry.of(identity.user).length >= perUser) {
        // One user must not take a gateway's sockets.
        const reason = `too many connections for this user (at most ${perUser})`;
        return closeOnUpgrade(request, socket, head, 'too_many_connections', reason);
      }
      wss.handleUpgrade(request, socket, head, (ws) => onConnection(ws, socket, identity, deviceId));
    } catch (err) {
      const error = err instanceof ParleyError ? err : new ParleyError('internal', 'upgrade failed');
      if (!(err instanceof ParleyError)) logger.error({ err }, 'upgrade failed');
      metrics.refused.inc({ code: error.code });
      rejectUpgrade(socket, error);
    }
  };
  http.server.on(
    'upgrade',
    (request: IncomingMessage, socket: Duplex, head: Buffer) => void onUpgrade(request, socket, head),
  );

  internal.post(
    '/send',
    { schema: { body: GatewaySendRequest } },
    async (request): Promise<GatewaySendResponse> => {
      // Its sockets are closing or closed: session-ms pushes again later, to wherever they reconnect.
      if (draining) throw new ParleyError('unavailable', 'this gateway is shutting down');
      const { deliveries, frames = [] } = request.body as GatewaySendRequest;
      const texts = frameTexts(deliveries, frames);
      // A batch often holds several frames for one socket (a group's receipts to its sender):
      // corked, they leave in one write instead of one each.
      const corked = new Set<ClientConnection>();
      let results: GatewaySendResult[];
      try {
        results = deliveries.map((delivery, i) => {
          const text = texts[i]!;
          let written = 0;
          const conns = registry.of(delivery.to, delivery.connIds);
          for (const conn of conns) {
            if (!corked.has(conn)) {
              conn.cork();
              corked.add(conn);
            }
            if (conn.send(text)) written++;
          }
          if (!delivery.connIds || conns.length === delivery.connIds.length) return { written };
          const held = new Set(conns.map((conn) => conn.id));
          const missing = delivery.connIds.filter((id) => !held.has(id));
          return missing.length > 0 ? { written, missing } : { written };
        });
      } finally {
        for (const conn of corked) conn.uncork();
      }
      metrics.delivered.inc(results.reduce((n, r) => n + r.written, 0));
      return { results };
    },
  );

  internal.post(
    '/announce',
    // It takes no body ({} from session-ms): not one up to /send's limit.
    { bodyLimit: 1024, schema: { response: { 202: GatewayAnnounceResponse } } },
    async (_request, reply) => {
      if (draining) throw new ParleyError('unavailable', 'this gateway is shutting down');
      announce();
      return reply.code(202).send({ connections: registry.size });
    },
  );

  const timers = startTimers(settings, registry, publishHeartbeat);
  // The probes are on the internal port, which listens first: not ready until the public one does.
  let started = false;
  deps.readiness.register('startup', () => {
    if (!started) throw new Error('starting: the WebSocket port is not listening yet');
  });

  return {
    http,
    internal,
    connections: registry,
    async start() {
      // Listening before the first heartbeat advertises it: a session-ms whose store lost its state
      // after this process started (or an older session-ms) asks at once for its connections
      // (POST /announce).
      await internal.listen({ port: deps.internalPort, host: deps.host ?? '0.0.0.0' });
      await publishHeartbeat();
      await http.listen({ port: deps.port, host: deps.host ?? '0.0.0.0' });
      timers.start();
      started = true;
      logger.info({ gateway: settings.gatewayId, internalUrl: settings.internalUrl }, 'ws-gateway listening');
    },
    async stop() {
      draining = true;
      deps.readiness.markDraining();
      timers.stop();
      // Upgraded sockets still count as server connections: close them before the server.
      await closeAll(registry);
      // An announce under way publishes no more chunks, but the one on its way may be followed by
      // the disconnects of sockets it named that closed meanwhile: those go out before the bus closes.
      await announcing;
      // Their disconnects are still on their way: one Kafka refuses is then among those sent again.
      await Promise.allSettled([...inFlight]);
      if (unpublishedDowns.size > 0)
        await publishWithLostDowns([]).catch((err) =>
          logger.error({ err, count: unpublishedDowns.size }, 'disconnects could not be published'),
        );
      await http.close();
      await Promise.allSettled([...inFlight]);
      await internal.close();
      wss.close();
    },
  };
}

/** Each delivery's frame as text; a frame shared by index is serialized once. */
function frameTexts(deliveries: GatewaySendRequest['deliveries'], frames: PushedFrame[]): string[] {
  const shared: string[] = [];
  return deliveries.map(({ frame }, i) => {
    if (typeof frame !== 'number') return JSON.stringify(frame);
    if (frame >= frames.length)
      throw new ParleyError(
        'invalid_request',
        `deliveries[${i}].frame: no frame ${frame}; the request has ${frames.length} frames`,
      );
    return (shared[frame] ??= JSON.stringify(frames[frame]));
  });
}

/** The upgrade's URL; one that cannot be read is the client's error, as the HTTP routes answer it. */
function upgradeUrl(request: IncomingMessage): URL {
  try {
    return new URL(request.url ?? '/', 'http://gateway');
  } catch {
    throw new ParleyError('invalid_request', 'path: is not a valid URL');
  }
}

/** A refused upgrade gets an HTTP answer with the protocol's error body, before any WebSocket exists. */
function rejectUpgrade(socket: Duplex, error: ParleyError) {
  // The upgrade took the socket from the HTTP parser and nothing reads it: a client that wrote past
  // its request (a first frame) was never seen to close, and its socket was held for good (stop()
  // waited on it). Read on, discarding, and let go once the answer is written, as ws does.
  socket.resume();
  socket.once('finish', () => socket.destroy());
  socket.end(rawErrorResponse(statusOf(error.code), error.code, error.message));
}

/** Close every socket with 1001 (reconnect elsewhere), cutting those that do not finish in time. */
async function closeAll(registry: ConnectionRegistry, graceMs = 2000) {
  for (const conn of registry.all()) conn.close(CLOSE_GOING_AWAY, 'server shutting down');
  const deadline = Date.now() + graceMs;
  while (registry.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  for (const conn of registry.all()) conn.socket.terminate();
  while (registry.size > 0) await new Promise((r) => setTimeout(r, 5));
}

/** WebSocket ping/pong (a socket that missed the last ping is dead), token expiry, gateway heartbeat. */
function startTimers(settings: WsGatewaySettings, registry: ConnectionRegistry, heartbeat: () => unknown) {
  let ping: NodeJS.Timeout | undefined;
  let beat: NodeJS.Timeout | undefined;
  const sweep = () => {
    const now = Date.now();
    for (const conn of registry.all()) {
      if (isExpired(conn, now)) conn.close(CLOSE_POLICY, 'auth expired');
      else if (!conn.alive) conn.socket.terminate();
      else {
        conn.alive = false;
        conn.socket.ping();
      }
    }
  };
  return {
    start() {
      ping = setInterval(sweep, settings.pingIntervalMs);
      beat = setInterval(heartbeat, settings.heartbeatIntervalMs);
    },
    stop() {
      clearInterval(ping);
      clearInterval(beat);
    },
  };
}

function gatewayMetrics(deps: WsGatewayDeps, registry: ConnectionRegistry) {
  const registers = [deps.metrics];
  new Gauge({
    name: 'parley_ws_connections',
    help: 'Open WebSocket connections',
    registers,
    collect() {
      this.set(registry.size);
    },
  });
  return {
    frames: new Counter({
      name: 'parley_ws_frames_total',
      help: 'Client frames accepted for processing',
      labelNames: ['type'],
      registers,
    }),
    refused: new Counter({
      name: 'parley_ws_refused_total',
      help: 'Client frames and connections refused, by error code (upgrades refused before or after the handshake included)',
      labelNames: ['code'],
      registers,
    }),
    delivered: new Counter({
      name: 'parley_ws_delivered_total',
      help: 'Frames written to sockets from /send',
      registers,
    }),
  };
}

/** Errors of a socket not (yet) a WebSocket: the upgrade's own handling answers or drops it. */
function ignore(): void {}

function isExpired(conn: ClientConnection, now: number): boolean {
  return conn.expiresAt !== undefined && conn.expiresAt <= now;
}
