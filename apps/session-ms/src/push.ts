import {
  GatewayDelivery,
  GatewaySendResult,
  MAX_DELIVERY_CONN_IDS,
  MAX_GATEWAY_BATCH,
  PushedFrame,
} from '@parley/contracts';
import { chunk, groupBy } from '@parley/service-kit';
import type { DeliveryDeps } from './delivery-deps';
import { GatewayCallError } from './gateway-client';
import type { Connection, Pending } from './store/session-store';

/**
 * A frame for the devices of `user`. Unlike a `Pending` it counts no attempts: its push is never
 * timed as a first push (a typing notice, a push to a device that connected).
 */
export interface Push {
  user: string;
  frame: PushedFrame;
}

export type PushDeps = Pick<DeliveryDeps, 'store' | 'gateways' | 'logger' | 'metrics'>;

/** One batched call per gateway; a failed call is retried by the retry loop (durable ones). */
export async function pushToGateways(
  deps: PushDeps,
  pushes: Array<Push | Pending>,
  connections: Map<string, Connection[]>,
): Promise<void> {
  const { byGateway, firstPushes } = deliveriesByGateway(pushes, connections);
  const timed = new Set<Pending>();
  await Promise.all(
    [...byGateway].map(async ([url, deliveries]) => {
      for (const calls of callRounds(deliveries, MAX_GATEWAY_BATCH)) {
        const sent = await Promise.all(calls.map((call) => pushToGateway(deps, url, call)));
        calls.forEach((call, i) => sent[i] && observeFirstPushes(deps.metrics, call, firstPushes, timed));
        // The next round must not overtake what a failed call carried (retries push that again).
        if (sent.includes(false)) break;
      }
    }),
  );
}

/** What each gateway is to get: per push, one delivery to the user's devices there (or more, past MAX_DELIVERY_CONN_IDS). */
export function deliveriesByGateway(
  pushes: Array<Push | Pending>,
  connections: Map<string, Connection[]>,
): { byGateway: Map<string, GatewayDelivery[]>; firstPushes: Map<GatewayDelivery, Pending> } {
  const byGateway = new Map<string, GatewayDelivery[]>();
  /**
   * The deliveries of messages pushed for the first time, each to its message: their latency is
   * measured, once a message (`observeFirstPushes`), though a user's devices on two gateways get
   * a delivery from each.
   */
  const firstPushes = new Map<GatewayDelivery, Pending>();
  const add = (url: string, delivery: GatewayDelivery, push: Push | Pending) => {
    const list = byGateway.get(url);
    if (list) list.push(delivery);
    else byGateway.set(url, [delivery]);
    if ('attempts' in push && push.attempts === 1 && !push.stored) firstPushes.set(delivery, push);
  };
  for (const push of pushes) {
    const { user, frame } = push;
    const devices = connections.get(user) ?? [];
    if (devices.length === 1) {
      add(devices[0]!.gatewayUrl, { to: user, connIds: [devices[0]!.connId], frame }, push);
      continue;
    }
    // A gateway set to take more of a user's sockets than a delivery may name gets several.
    for (const [url, ofUser] of groupBy(devices, (c) => c.gatewayUrl))
      for (const part of chunk(ofUser, MAX_DELIVERY_CONN_IDS))
        add(url, { to: user, connIds: part.map((c) => c.connId), frame }, push);
  }
  return { byGateway, firstPushes };
}

/**
 * One gateway's deliveries as calls of at most `max`, in rounds: the calls of a round go at once,
 * and a round waits for the one before. Two calls in flight to one gateway may reach its sockets in
 * either order (the smaller is parsed first), so a user's deliveries stay in one call, in order; only
 * a user with more than `max` of them spreads over rounds. Cutting by user rather than by frame keeps
 * a group's fan-out in parallel calls: cut by frame, its next message would go to the same members.
 */
export function callRounds(deliveries: GatewayDelivery[], max: number): GatewayDelivery[][][] {
  const rounds: GatewayDelivery[][][] = [];
  for (const ofUser of groupBy(deliveries, (delivery) => delivery.to).values())
    chunk(ofUser, max).forEach((part, round) => {
      const calls = (rounds[round] ??= [[]]);
      if (calls[calls.length - 1]!.length + part.length > max) calls.push([]);
      calls[calls.length - 1]!.push(...part);
    });
  return rounds;
}

/** One call to a gateway; false when it failed. */
async function pushToGateway(deps: PushDeps, url: string, deliveries: GatewayDelivery[]): Promise<boolean> {
  const { gateways, logger, metrics } = deps;
  let results: GatewaySendResult[];
  try {
    results = await gateways.send(url, deliveries);
  } catch (err) {
    metrics.pushFailures.inc({ reason: err instanceof GatewayCallError ? err.reason : 'other' });
    logger.warn({ err, gateway: url, count: deliveries.length }, 'push to gateway failed');
    return false;
  }
  // Deliverables only: a typing notice is never acked, and the ack/push ratio is watched.
  metrics.pushed.inc(deliveries.filter((d) => 'mid' in d.frame).length);
  // The push went out: a store that cannot forget the connections it named as gone now is no
  // failed push (they are found missing again on the next one).
  await forgetMissing(deps, deliveries, results).catch((err: unknown) =>
    logger.warn({ err, gateway: url }, 'could not forget the connections a gateway no longer holds'),
  );
  return true;
}

/**
 * Connections the gateway does not hold any more: their connection-down was lost (a crash, or a
 * restart under a pinned GATEWAY_ID). Removed, so presence and later pushes stop counting them.
 * Only those the call asked that gateway for: one it names besides (a connection of the user on
 * another gateway) is not its to disown.
 */
async function forgetMissing(
  { store, metrics }: Pick<PushDeps, 'store' | 'metrics'>,
  deliveries: GatewayDelivery[],
  results: GatewaySendResult[],
): Promise<void> {
  const at = Date.now();
  const stale = new Map<string, string>(); // connId -> user; a user's deliveries may name it twice
  results.forEach((result, i) => {
    const asked = deliveries[i]?.connIds;
    for (const connId of result.missing ?? [])
      if (asked?.includes(connId)) stale.set(connId, deliveries[i].to);
  });
  if (stale.size === 0) return;
  metrics.staleConnections.inc(stale.size);
  await Promise.all([...stale].map(([connId, user]) => store.removeConnection(user, connId, at)));
}

/**
 * Send-to-socket latency of messages pushed for the first time: from the `sentAt` the edge
 * stamped to the gateway's answer, once the frame is written to the sockets (two hosts' clocks).
 * Once a message (`timed`): at the first of its gateways to answer, whichever that is (one that
 * failed does not keep another's answer from counting).
 */
function observeFirstPushes(
  metrics: PushDeps['metrics'],
  call: GatewayDelivery[],
  firstPushes: Map<GatewayDelivery, Pending>,
  timed: Set<Pending>,
): void {
  if (firstPushes.size === 0) return;
  const now = Date.now();
  for (const delivery of call) {
    const pending = firstPushes.get(delivery);
    if (pending === undefined || timed.has(pending)) continue;
    timed.add(pending);
    const { frame } = delivery;
    if (frame.type === 'message')
      metrics.firstPushLatency.observe({ chat: frame.chat }, Math.max(0, now - frame.sentAt) / 1000);
  }
}
