import { randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type WebSocket from 'ws';
import type { Identity } from '@parley/service-kit';
import type { ClientFrames } from './client-frames';
import { socketBudgets, WsGatewaySettings } from './config';
import type { ConnectionPublisher } from './connection-publisher';
import { ClientConnection, CLOSE_GOING_AWAY, ConnectionRegistry, GatewaySocket } from './connections';
import type { GatewayMetrics } from './metrics';
import type { UserBudgets } from './user-budgets';

export interface SocketsDeps {
  settings: WsGatewaySettings;
  registry: ConnectionRegistry;
  userBudgets: UserBudgets;
  frames: ClientFrames;
  publisher: ConnectionPublisher;
  metrics: GatewayMetrics;
  logger: Logger;
}

/** An upgraded, authenticated socket becomes a connection: registered, greeted, announced to session-ms. */
export type AcceptSocket = (
  socket: GatewaySocket,
  transport: Duplex,
  identity: Identity,
  deviceId: string | undefined,
) => void;

export function socketAcceptor(deps: SocketsDeps): AcceptSocket {
  const { settings, registry, userBudgets, frames, publisher, metrics, logger } = deps;

  // The listeners of every socket: `this` is the socket, carrying its connection (GatewaySocket).
  function onMessage(this: GatewaySocket, data: WebSocket.RawData, isBinary: boolean) {
    const conn = this.connection!;
    frames.handle(conn, data, isBinary).catch((err: unknown) => {
      // A defect, not the client's doing: answered, so the client is not left waiting.
      logger.error({ err, user: conn.user }, 'handling a frame failed');
      frames.refuse(conn, 'internal', 'the frame could not be handled');
    });
  }
  function onPong(this: GatewaySocket) {
    this.connection!.alive = true;
  }
  function onError(this: GatewaySocket, err: Error) {
    // A frame over maxFrameBytes: ws closes the socket with 1009 itself.
    if ((err as { code?: string }).code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH')
      metrics.refusedFrame('too_large');
    logger.debug({ err, user: this.connection!.user }, 'socket error');
  }
  function onClose(this: GatewaySocket) {
    const conn = this.connection!;
    registry.remove(conn);
    const left = registry.of(conn.user).length;
    userBudgets.update(conn.user, left);
    // What it spent is not given back by closing it: the user's next socket takes up from there.
    if (left === 0) userBudgets.retire(conn.user, { frames: conn.bucket, acks: conn.ackBucket });
    void publisher.down(conn);
  }

  return (socket, transport, identity, deviceId) => {
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
    socket.on('message', onMessage);
    socket.on('pong', onPong);
    socket.on('error', onError);
    socket.on('close', onClose);
    frames.send(
      conn,
      deviceId
        ? { type: 'hello', user: conn.user, connId: conn.id, deviceId }
        : { type: 'hello', user: conn.user, connId: conn.id },
    );
    void publisher.up(conn).then((published) => {
      // Unregistered, the socket would look healthy and get nothing: the client is to come back.
      if (!published) conn.close(CLOSE_GOING_AWAY, 'could not register the connection; reconnect');
    });
  };
}
