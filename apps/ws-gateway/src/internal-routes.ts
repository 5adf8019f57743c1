import {
  GatewayAnnounceResponse,
  GatewaySendRequest,
  GatewaySendResponse,
  GatewaySendResult,
  ParleyError,
  PushedFrame,
  pushedFramePoints,
} from '@parley/contracts';
import { contractsBodyValidator, type HttpServer, type MessageTrace } from '@parley/service-kit';
import type { ClientConnection, ConnectionRegistry } from './connections';
import type { GatewayMetrics } from './metrics';

export interface InternalRoutesDeps {
  registry: ConnectionRegistry;
  metrics: GatewayMetrics;
  isDraining: () => boolean;
  /** Every open connection published again (session-ms lost track of this gateway). */
  announce: () => void;
  trace: MessageTrace;
}

/** session-ms's side of the gateway: POST /send writes frames to sockets, POST /announce. */
export function internalRoutes(internal: HttpServer, deps: InternalRoutesDeps): void {
  const { registry, metrics, isDraining } = deps;
  internal.post(
    '/send',
    { schema: { body: GatewaySendRequest }, validatorCompiler: contractsBodyValidator },
    async (request): Promise<GatewaySendResponse> => {
      // Its sockets are closing or closed: session-ms pushes again later, to wherever they reconnect.
      if (isDraining()) throw new ParleyError('unavailable', 'this gateway is shutting down');
      const { deliveries, frames = [] } = request.body as GatewaySendRequest;
      const results = writeDeliveries(registry, deliveries, frameTexts(deliveries, frames));
      metrics.delivered.inc(results.reduce((n, r) => n + r.written, 0));
      if (deps.trace.on) traceWritten(deps.trace, deliveries, frames, results);
      return { results };
    },
  );

  internal.post(
    '/announce',
    // It takes no body ({} from session-ms): not one up to /send's limit.
    { bodyLimit: 1024, schema: { response: { 202: GatewayAnnounceResponse } } },
    async (_request, reply) => {
      if (isDraining()) throw new ParleyError('unavailable', 'this gateway is shutting down');
      deps.announce();
      return reply.code(202).send({ connections: registry.size });
    },
  );
}

/** Each delivery written to its user's sockets (or those of its connIds), naming the connIds not held. */
function writeDeliveries(
  registry: ConnectionRegistry,
  deliveries: GatewaySendRequest['deliveries'],
  texts: string[],
): GatewaySendResult[] {
  // A batch often holds several frames for one socket (a group's receipts to its sender):
  // corked, they leave in one write instead of one each.
  const corked = new Set<ClientConnection>();
  try {
    return deliveries.map((delivery, i) => {
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
}

/** The hop of each traced user's delivery: how many of its sockets were written, which were gone. */
function traceWritten(
  trace: MessageTrace,
  deliveries: GatewaySendRequest['deliveries'],
  frames: PushedFrame[],
  results: GatewaySendResult[],
): void {
  deliveries.forEach((delivery, i) => {
    const frame = typeof delivery.frame === 'number' ? frames[delivery.frame]! : delivery.frame;
    const { users, mids } = pushedFramePoints([delivery.to], frame);
    const traced = trace.tracedAmong(users);
    if (traced.length > 0)
      trace.hop('written', { to: delivery.to, frameType: frame.type, mids, traced, ...results[i] });
  });
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
