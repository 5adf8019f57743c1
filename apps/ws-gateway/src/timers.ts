import type { WsGatewaySettings } from './config';
import { CLOSE_POLICY, ConnectionRegistry } from './connections';

/** WebSocket ping/pong (a socket that missed the last ping is dead), token expiry, gateway heartbeat. */
export function gatewayTimers(
  settings: WsGatewaySettings,
  registry: ConnectionRegistry,
  heartbeat: () => unknown,
) {
  let ping: NodeJS.Timeout | undefined;
  let beat: NodeJS.Timeout | undefined;
  const sweep = () => {
    const now = Date.now();
    for (const conn of registry.all()) {
      if (conn.isExpired(now)) conn.close(CLOSE_POLICY, 'auth expired');
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
