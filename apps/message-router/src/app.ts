import { Counter } from 'prom-client';
import { TOPICS, TYPING_NOTICE_MAX_AGE_MS } from '@parley/contracts';
import { Envelope, EventBus } from '@parley/kafka';
import { buildHttpServer, HttpServer, Runtime, Service, serviceLifecycle } from '@parley/service-kit';
import { checkInbound, INBOUND_RECORDS, InboundRecord, route, Routed } from './route';

export interface MessageRouterDeps extends Omit<Runtime, 'closer'> {
  bus: EventBus;
  port: number;
  host?: string;
  groupId?: string;
}

export interface MessageRouter extends Service {
  http: HttpServer;
}

/**
 * Consumes inbound frames and routes them; at-least-once, and idempotent because routing is pure.
 * A frame it cannot route goes back to its sender as an `error` deliverable.
 */
export function createMessageRouter(deps: MessageRouterDeps): MessageRouter {
  const http = buildHttpServer(deps);
  const routed = new Counter({
    name: 'parley_router_frames_total',
    help: 'Inbound frames routed, by frame type',
    labelNames: ['type'],
    registers: [deps.metrics],
  });
  const refused = new Counter({
    name: 'parley_router_refused_total',
    help: 'Inbound frames the router cannot route, sent back to their sender as errors',
    registers: [deps.metrics],
  });

  const stale = new Counter({
    name: 'parley_router_stale_typing_total',
    help: 'Typing notices not routed: sent longer ago than 30 s (read behind a backlog)',
    registers: [deps.metrics],
  });

  const handle = async (batch: Envelope<InboundRecord>[]) => {
    const out: Routed = { delivery: [], group: [] };
    // A typing notice sent this long ago (read behind a backlog) is about a moment long gone.
    const staleBefore = Date.now() - TYPING_NOTICE_MAX_AGE_MS;
    for (const { event: record } of batch) {
      const checked = checkInbound(record);
      if (checked.ok && checked.inbound.frame.type === 'typing' && record.sentAt < staleBefore) {
        stale.inc();
      } else if (checked.ok) {
        route(checked.inbound, out);
        routed.inc({ type: checked.inbound.frame.type });
      } else {
        out.delivery.push(checked.refusal);
        refused.inc();
      }
    }
    await Promise.all([
      deps.bus.publish(TOPICS.delivery, out.delivery),
      deps.bus.publish(TOPICS.group, out.group),
    ]);
  };
  const subscription = deps.bus.subscribe({
    groupId: deps.groupId ?? 'message-router',
    topic: INBOUND_RECORDS,
    handle,
  });

  return { http, ...serviceLifecycle(http, deps, deps.readiness, [subscription]) };
}
