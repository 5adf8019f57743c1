import { Counter, Registry } from 'prom-client';
import { scrapedGauge } from '@parley/service-kit';
import type { ConnectionRegistry } from './connections';

export type GatewayMetrics = ReturnType<typeof gatewayMetrics>;

export function gatewayMetrics(metrics: Registry, registry: ConnectionRegistry) {
  const registers = [metrics];
  scrapedGauge(
    metrics,
    { name: 'parley_ws_connections', help: 'Open WebSocket connections' },
    () => registry.size,
  );
  // One counter, split by `stage`: summed over it, it reads as it did before the label came.
  const refused = new Counter({
    name: 'parley_ws_refused_total',
    help: 'Refusals by stage and error code: stage="connect" an upgrade refused (before or after the handshake), stage="frame" a client frame',
    labelNames: ['stage', 'code'],
    registers,
  });
  return {
    frames: new Counter({
      name: 'parley_ws_frames_total',
      help: 'Client frames accepted for processing',
      labelNames: ['type'],
      registers,
    }),
    /** A connect refused: an upgrade answered with an error, or closed (1008, 4029) once upgraded. */
    refusedConnect: (code: string) => refused.inc({ stage: 'connect', code }),
    /** A client frame refused: answered with an error frame, or its socket closed for it. */
    refusedFrame: (code: string) => refused.inc({ stage: 'frame', code }),
    delivered: new Counter({
      name: 'parley_ws_delivered_total',
      help: 'Frames written to sockets from /send',
      registers,
    }),
  };
}
