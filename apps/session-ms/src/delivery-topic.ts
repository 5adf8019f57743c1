import {
  AckEvent,
  Deliverable,
  DeliverEvent,
  deliveriesIn,
  DeliveryTopicEvent,
  senderOfMid,
  TYPING_NOTICE_MAX_AGE_MS,
} from '@parley/contracts';
import type { Envelope } from '@parley/kafka';
import type { AckHandler } from './acks';
import type { DeliveryDeps } from './delivery-deps';
import { pushOrOffline, tellStorageAcked } from './offline';
import { Pending, userKey } from './store/session-store';

/** The events of a delivery-topic batch, less typing notices written too long ago to matter. */
export function withoutStaleNotices(
  batch: Envelope<DeliveryTopicEvent>[],
  now = Date.now(),
): DeliveryTopicEvent[] {
  const staleBefore = now - TYPING_NOTICE_MAX_AGE_MS;
  return batch
    .filter(({ event, timestamp }) => !(event.kind !== 'ack' && event.ephemeral && timestamp < staleBefore))
    .map((e) => e.event);
}

/**
 * The deliverables (a frame's bytes times its recipients) one slice of a batch holds at most. A
 * fan-out multiplies what a fetch (1 MiB a partition) holds by its recipients, and each recipient's
 * deliverable is a copy of the frame on its way to the store and to storage: 15 group messages of
 * 64 KiB to 85 offline members (a 1,024-member group's share of a partition), four partitions at
 * once, took session-ms (on Redis) past its 384 MB heap on every start.
 */
export const MAX_SLICE_BYTES = 8 * 1024 * 1024;

/**
 * A batch of the delivery topic in consecutive slices of at most `maxBytes` of deliverables, a
 * fan-out cut between its recipients where it must: handled one after the other, in order, as
 * smaller fetches would have been. A plain `deliver` counts for nothing: it is one of a fetch's
 * records, no more.
 */
export function deliverySlices(
  events: DeliveryTopicEvent[],
  maxBytes = MAX_SLICE_BYTES,
): DeliveryTopicEvent[][] {
  const slices: DeliveryTopicEvent[][] = [];
  let slice: DeliveryTopicEvent[] = [];
  let bytes = 0;
  for (const event of events) {
    if (event.kind !== 'deliver-many') {
      slice.push(event);
      continue;
    }
    const frameBytes = JSON.stringify(event.frame).length;
    for (let from = 0; from < event.to.length;) {
      const fits = Math.floor((maxBytes - bytes) / frameBytes);
      if (fits === 0 && bytes > 0) {
        slices.push(slice);
        slice = [];
        bytes = 0;
        continue;
      }
      const to = event.to.slice(from, from + Math.max(1, fits));
      slice.push(to.length === event.to.length ? event : { ...event, to });
      bytes += to.length * frameBytes;
      from += to.length;
    }
  }
  if (slice.length > 0) slices.push(slice);
  return slices;
}

/**
 * Records of the delivery topic, in partition order: deliverables are tracked and pushed (or go
 * offline), typing notices pushed, and acks completed (`acks`).
 */
export async function handleDeliveryEvents(
  deps: Pick<DeliveryDeps, 'store' | 'gateways' | 'bus' | 'settings' | 'logger' | 'metrics'>,
  ackHandler: AckHandler,
  events: DeliveryTopicEvent[],
): Promise<void> {
  const { store, settings, metrics } = deps;
  const acks = events.filter((e): e is AckEvent => e.kind === 'ack');
  const { delivers, duplicates } = deliveriesNotAckedBefore(events);
  const now = Date.now();
  const durable: Pending[] = delivers
    .filter((d) => !d.ephemeral)
    .map((d) => ({
      user: d.to,
      mid: (d.frame as Deliverable).mid,
      frame: d.frame as Deliverable,
      attempts: 1,
      stored: d.replay === true,
    }));
  const dueAt = now + settings.ackTimeoutMs;
  const outcomes = await Promise.all(durable.map((pending) => store.track(pending, dueAt)));
  // A replay means a device just connected: one still pending (pushed to a device that left) goes
  // now, in storage's order, not at its retry, after what was stored behind it.
  const fresh = durable.filter(
    (p, i) => outcomes[i] === 'tracked' || (outcomes[i] === 'pending' && p.stored),
  );
  metrics.duplicates.inc(duplicates + durable.length - fresh.length);
  const ephemeral = delivers.filter((d) => d.ephemeral).map((d) => ({ user: d.to, frame: d.frame }));
  // What this batch acks further on (a batch read again) is neither pushed nor handed to storage
  // here: it is completed right after.
  const ackedHere = new Set(acks.flatMap((ack) => ack.mids.map((mid) => userKey(ack.user, mid))));
  // Except that one's own mid acked is usually the ack of its `accepted` frame: a note to oneself
  // still goes to the user's other devices.
  const unacked = fresh.filter(
    (p) => senderOfMid(p.mid) === p.user || !ackedHere.has(userKey(p.user, p.mid)),
  );
  await Promise.all([
    pushOrOffline(deps, unacked, ephemeral, ackedHere),
    // A stored copy replayed after its mid was acked: that ack met a copy pushed as new and told
    // storage nothing (a note to oneself too), so storage hears of it now.
    tellStorageAcked(
      deps,
      durable.filter((p, i) => outcomes[i] === 'acked' && p.stored),
    ),
  ]);
  if (acks.length > 0) await ackHandler.handle(acks);
}

/**
 * The deliveries of a batch's events, less copies of a mid that an ack earlier in the batch
 * completed, and how many of those there were.
 */
function deliveriesNotAckedBefore(events: DeliveryTopicEvent[]): {
  delivers: DeliverEvent[];
  duplicates: number;
} {
  // A copy of a mid that the same batch acked before it (a user who acked a stored copy, and its
  // sender sending it again) is a duplicate, as when read in turn: the ack, completed after the
  // batch's deliveries (`handleDeliveryEvents`), tells storage. Tracked, it would be completed by that ack as pushed, storage unaware.
  const ackedBefore = new Set<string>();
  let duplicates = 0;
  const delivers = events.flatMap((event) => {
    if (event.kind === 'ack')
      for (const mid of event.mids)
        if (senderOfMid(mid) !== event.user) ackedBefore.add(userKey(event.user, mid));
    if (ackedBefore.size === 0) return deliveriesIn(event);
    return deliveriesIn(event).filter((d) => {
      const acked = !d.ephemeral && !d.replay && ackedBefore.has(userKey(d.to, (d.frame as Deliverable).mid));
      if (acked) duplicates++;
      return !acked;
    });
  });
  return { delivers, duplicates };
}
