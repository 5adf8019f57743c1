import { Counter } from 'prom-client';
import { InboundEvent, TOPICS, TYPING_NOTICE_MAX_AGE_MS } from '@parley/contracts';
import { Envelope, EventBus } from '@parley/kafka';
import { buildHttpServer, HttpServer, Runtime, Service, serviceLifecycle } from '@parley/service-kit';
import { createBlockCheck } from './block-check';
import { blockKey, BlockPair, BlockReader } from './blocks';
import { checkInbound, INBOUND_RECORDS, InboundRecord, route, Routed } from './route';

export interface MessageRouterDeps extends Omit<Runtime, 'closer'> {
  bus: EventBus;
  /** Who blocked whom, and whose blocks changed (group-ms's tables, read-only). */
  blocks: BlockReader;
  port: number;
  host?: string;
  groupId?: string;
  /** How long a batch waits for its block check before it is routed without it; 1 s by default. */
  blockCheckTimeoutMs?: number;
  /** After a failed block check, how long batches are routed without asking again; 5 s by default. */
  blockCheckRetryMs?: number;
  /**
   * How often the users whose blocks changed are read, to forget the blocks kept for them
   * (`cacheBlocks`); 1 s by default, 0 to read them before every batch. A block or unblock applies
   * within it.
   */
  blockPollMs?: number;
  /**
   * The clock the block check's durations run on (its polls and retry), in ms: monotonic,
   * `performance.now` by default. On the wall clock a step back (NTP correcting the host) stopped the
   * reads of the changes for the step, and blocks went unapplied that long.
   */
  clock?: () => number;
}

export interface MessageRouter extends Service {
  http: HttpServer;
}

/**
 * Consumes inbound frames and routes them; at-least-once, and idempotent because routing is pure.
 * A frame it cannot route goes back to its sender as an `error` deliverable. A 1:1 message, typing
 * notice or read receipt whose recipient blocked its sender is dropped: the sender was answered
 * `accepted` by its gateway and is told nothing (no `error`), so it cannot learn of the block.
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

  const blockedFrames = new Counter({
    name: 'parley_router_blocked_total',
    help: '1:1 frames not routed, by frame type: their recipient blocked their sender',
    labelNames: ['type'],
    registers: [deps.metrics],
  });
  const checkBlocks = createBlockCheck({
    blocks: deps.blocks,
    metrics: deps.metrics,
    logger: deps.logger,
    clock: deps.clock ?? (() => performance.now()),
    timeoutMs: deps.blockCheckTimeoutMs,
    retryMs: deps.blockCheckRetryMs,
    pollMs: deps.blockPollMs,
  });

  const handle = async (batch: Envelope<InboundRecord>[]) => {
    const out: Routed = { delivery: [], group: [] };
    // A typing notice sent this long ago (read behind a backlog) is about a moment long gone.
    const staleBefore = Date.now() - TYPING_NOTICE_MAX_AGE_MS;
    const frames = batch.map(({ event: record }) => {
      const checked = checkInbound(record);
      const isStale = checked.ok && checked.inbound.frame.type === 'typing' && record.sentAt < staleBefore;
      const pair = checked.ok && !isStale ? blockPairOf(checked.inbound) : undefined;
      return { checked, isStale, pair };
    });
    // One lookup for the whole batch, none when it holds no 1:1 frame.
    const blocked = await checkBlocks(frames.flatMap(({ pair }) => (pair ? [pair] : [])));
    // Counted once the batch is published: a publish that fails is retried, the batch routed again.
    const counts: Array<() => void> = [];
    for (const { checked, isStale, pair } of frames) {
      if (isStale) {
        counts.push(() => stale.inc());
      } else if (checked.ok && pair && blocked.has(blockKey(pair.recipient, pair.sender))) {
        const { type } = checked.inbound.frame;
        counts.push(() => blockedFrames.inc({ type }));
      } else if (checked.ok) {
        route(checked.inbound, out);
        const { type } = checked.inbound.frame;
        counts.push(() => routed.inc({ type }));
      } else {
        out.delivery.push(checked.refusal);
        counts.push(() => refused.inc());
      }
    }
    await Promise.all([
      deps.bus.publish(TOPICS.delivery, out.delivery),
      deps.bus.publish(TOPICS.group, out.group),
    ]);
    for (const count of counts) count();
  };
  const subscription = deps.bus.subscribe({
    groupId: deps.groupId ?? 'message-router',
    topic: INBOUND_RECORDS,
    handle,
  });

  return { http, ...serviceLifecycle(http, deps, deps.readiness, [subscription]) };
}

/**
 * The pair a frame's block check asks about: a 1:1 message, typing notice or read receipt to
 * another user. Group traffic, acks and group ops are never blocked, nor a frame to oneself.
 */
function blockPairOf({ frame, from }: InboundEvent): BlockPair | undefined {
  if (frame.type !== 'message' && frame.type !== 'typing' && frame.type !== 'read') return undefined;
  if (frame.type !== 'read' && frame.chat === 'group') return undefined;
  if (frame.to === from) return undefined;
  return { recipient: frame.to, sender: from };
}
