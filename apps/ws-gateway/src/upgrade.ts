import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { WebSocketServer } from 'ws';
import { ParleyError, statusOf, USER_ID_PATTERN } from '@parley/contracts';
import { bearerToken, KeyedBudgets, rawErrorResponse, TokenBucket, TokenVerifier } from '@parley/service-kit';
import { DEFAULT_MAX_CONNECTIONS_PER_USER, WsGatewaySettings } from './config';
import { CLOSE_POLICY, CLOSE_RATE_LIMITED, ConnectionRegistry } from './connections';
import type { GatewayMetrics } from './metrics';
import type { AcceptSocket } from './sockets';

export interface UpgradeDeps {
  wss: WebSocketServer;
  settings: WsGatewaySettings;
  registry: ConnectionRegistry;
  verifyToken: TokenVerifier;
  /** Each user's budget of new sockets (`connectBudgets`). */
  connects: KeyedBudgets<TokenBucket>;
  metrics: GatewayMetrics;
  logger: Logger;
  isDraining: () => boolean;
  accept: AcceptSocket;
}

const deviceIdPattern = new RegExp(USER_ID_PATTERN);

/**
 * The WebSocket handshake on /v1/ws: path, origin, deviceId, token and connection limits checked
 * before the socket is accepted. A refusal is an HTTP answer with the protocol's error body, or a
 * close (1008, 4029) a browser can read, where the client is to change what it does.
 */
export function upgradeHandler(deps: UpgradeDeps) {
  const { wss, settings, registry, metrics, logger, isDraining } = deps;

  /** Refuses with a close (1008, or `closeCode`) after the upgrade: a browser can read a close, not a refused upgrade's status. */
  const closeOnUpgrade = (
    request: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    code: string,
    reason: string,
    closeCode = CLOSE_POLICY,
  ) => {
    // A close reason is at most 123 bytes (of UTF-8: an origin may hold non-ASCII text).
    let short = reason.slice(0, 123);
    while (Buffer.byteLength(short) > 123) short = short.slice(0, -1);
    // Counted once upgraded: a handshake ws refuses itself is counted (and answered) by wsClientError.
    wss.handleUpgrade(request, socket, head, (ws) => {
      metrics.refusedConnect(code);
      // Its reader still runs until the close completes: an error there (a frame past maxPayload)
      // emitted with no listener would throw out of the socket's data handler and end the process.
      ws.on('error', ignore);
      ws.close(closeCode, short);
    });
  };

  // The handshake checks ws makes itself (method, key, version): the protocol's error body, not ws's text/html.
  wss.on('wsClientError', (err: Error, socket: Duplex) => {
    metrics.refusedConnect('invalid_request');
    const message = `not a valid WebSocket upgrade: ${err.message} (a GET with Upgrade: websocket, a Sec-WebSocket-Key and Sec-WebSocket-Version: 13 or 8)`;
    rejectUpgrade(socket, new ParleyError('invalid_request', message));
  });

  const onUpgrade = async (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', ignore);
    try {
      const url = upgradeUrl(request);
      if (url.pathname !== '/v1/ws')
        throw new ParleyError('not_found', `no WebSocket endpoint at ${url.pathname}; use /v1/ws`);
      if (isDraining()) throw new ParleyError('unavailable', 'this gateway is shutting down; reconnect');
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
      if (isDraining()) throw new ParleyError('unavailable', 'this gateway is shutting down; reconnect');
      if (registry.size >= settings.maxConnections)
        throw new ParleyError('unavailable', 'this gateway is full; try another');
      const perUser = settings.maxConnectionsPerUser ?? DEFAULT_MAX_CONNECTIONS_PER_USER;
      if (registry.of(identity.user).length >= perUser) {
        // One user must not take a gateway's sockets.
        const reason = `too many connections for this user (at most ${perUser})`;
        return closeOnUpgrade(request, socket, head, 'too_many_connections', reason);
      }
      // Spent only on a socket that opens: one refused above costs Kafka and session-ms nothing, and
      // a client that closed one as the 1008 says must then get its next one in.
      const connects = deps.connects.of(identity.user);
      if (!connects.take()) {
        const reason = `connecting too often; retry after ${Math.ceil(connects.retryAfterSeconds())} s`;
        return closeOnUpgrade(request, socket, head, 'rate_limited', reason, CLOSE_RATE_LIMITED);
      }
      wss.handleUpgrade(request, socket, head, (ws) => deps.accept(ws, socket, identity, deviceId));
    } catch (err) {
      const error = err instanceof ParleyError ? err : new ParleyError('internal', 'upgrade failed');
      if (!(err instanceof ParleyError)) logger.error({ err }, 'upgrade failed');
      metrics.refusedConnect(error.code);
      rejectUpgrade(socket, error);
    }
  };
  return (request: IncomingMessage, socket: Duplex, head: Buffer) => void onUpgrade(request, socket, head);
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

/** Errors of a socket not (yet) a WebSocket: the upgrade's own handling answers or drops it. */
function ignore(): void {}
