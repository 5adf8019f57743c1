import { WebSocketServer } from 'ws';
import { MAX_GATEWAY_BATCH, MAX_GATEWAY_SEND_BYTES } from '@parley/contracts';
import type { EventBus } from '@parley/kafka';
import {
  buildHttpServer,
  HttpServer,
  NO_TRACE,
  PublishBudget,
  requireInternalSecret,
  Runtime,
  Service,
  TokenVerifier,
} from '@parley/service-kit';
import { ClientFrames } from './client-frames';
import { connectBudgets, DEFAULT_USER_RATE_FACTOR, socketBudgets, WsGatewaySettings } from './config';
import { ConnectionPublisher } from './connection-publisher';
import { closeAll, ConnectionRegistry, GatewaySocket } from './connections';
import { InFlight } from './in-flight';
import { internalRoutes } from './internal-routes';
import { gatewayMetrics } from './metrics';
import { socketAcceptor } from './sockets';
import { gatewayTimers } from './timers';
import { upgradeHandler } from './upgrade';
import { UserBudgets } from './user-budgets';

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

export function createWsGateway(deps: WsGatewayDeps): WsGateway {
  const { bus, settings, logger } = deps;
  // Before any socket: session-ms forgets what this gateway's id registered earlier (a restart).
  const startedAt = Date.now();
  const registry = new ConnectionRegistry();
  // No grace on the public port: stop() closes every socket before the server, so what is left there
  // is a client that sent part of an upgrade request and went silent (a phone gone dark
  // mid-handshake), which would hold stop() for the whole grace.
  const http = buildHttpServer({ ...deps, closeGraceMs: 0 });
  // session-ms cuts its /send calls at MAX_GATEWAY_SEND_BYTES. One of an older session-ms carries up
  // to MAX_GATEWAY_BATCH frames, each about a client frame (plus what the server stamps on it and
  // each delivery's addressing) but for a large group's notices.
  const internal = buildHttpServer({
    ...deps,
    bodyLimit: Math.max(MAX_GATEWAY_SEND_BYTES, MAX_GATEWAY_BATCH * (settings.maxFrameBytes + 1024)),
  });
  requireInternalSecret(internal, deps.internalSecret, ['/send', '/announce']);
  refuseWithoutUpgrade(http);
  const wss = new WebSocketServer({
    WebSocket: GatewaySocket,
    noServer: true,
    maxPayload: settings.maxFrameBytes,
    perMessageDeflate: false,
  });
  const metrics = gatewayMetrics(deps.metrics, registry);
  const inFlight = new InFlight();
  let draining = false;
  const isDraining = () => draining;

  const publisher = new ConnectionPublisher({
    bus,
    settings,
    registry,
    inFlight,
    logger,
    metrics: deps.metrics,
    startedAt,
    isDraining,
  });
  const userBudgets = new UserBudgets(() =>
    socketBudgets(settings, settings.userRateFactor ?? DEFAULT_USER_RATE_FACTOR),
  );
  const frames = new ClientFrames({
    bus,
    settings,
    metrics,
    userBudgets,
    publishBudget: new PublishBudget(deps.metrics, 'parley_ws', settings.maxPendingPublishBytes),
    inFlight,
    logger,
  });
  const accept = socketAcceptor({ settings, registry, userBudgets, frames, publisher, metrics, logger });
  http.server.on(
    'upgrade',
    upgradeHandler({
      wss,
      settings,
      registry,
      verifyToken: deps.verifyToken,
      connects: connectBudgets(settings),
      metrics,
      logger,
      isDraining,
      accept,
    }),
  );
  internalRoutes(internal, {
    registry,
    metrics,
    isDraining,
    announce: () => publisher.announce(),
    trace: deps.trace ?? NO_TRACE,
  });

  const timers = gatewayTimers(settings, registry, () => publisher.heartbeat());
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
      await publisher.heartbeat();
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
      // Sockets closed at the upgrade (1008, 4029) are no connections, yet count as the server's: one
      // whose client never answers its close held http.close() for ws's 30 s close timeout.
      for (const socket of wss.clients) socket.terminate();
      await publisher.finish();
      await http.close();
      await inFlight.settled();
      await internal.close();
      wss.close();
    },
  };
}

/**
 * GET /v1/ws reached without an upgrade: a proxy in between that drops Upgrade/Connection is a
 * classic deployment mistake, and "no route" would send the app developer looking for a wrong URL.
 */
function refuseWithoutUpgrade(http: HttpServer): void {
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
}
