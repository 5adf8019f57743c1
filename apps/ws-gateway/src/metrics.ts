import { Counter, Gauge, Registry } from 'prom-client';
import type { ConnectionRegistry } from './connections';

export type GatewayMetrics = ReturnType<typeof gatewayMetrics>;

export function gatewayMetrics(metrics: Registry, registry: ConnectionRegistry) {
  const registers = [metrics];
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
