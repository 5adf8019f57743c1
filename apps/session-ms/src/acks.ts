import {
  AckEvent,
  deliveredReceipts,
  DeliverEvent,
  OfflineTopicEvent,
  senderOfMid,
  TOPICS,
} from '@parley/contracts';
import { PerMinuteQuota } from '@parley/service-kit';
import type { DeliveryDeps } from './delivery-deps';
import { offlineAck } from './offline';

/**
 * An app acks what it received, so an ack completes something but where a copy took another way
 * (synced from storage after its marks expired, re-read after Redis lost its data): a few. Anyone
 * may ack any mid, though, 500 to a frame and 200 frames a second a socket, and each ack of a mid
 * that completed nothing left a key in Redis for ACKED_TTL_MS (24 h): one user filled Redis.
 */
export const UNKNOWN_ACKS_PER_MINUTE = 1000;

/**
 * Client acks: they complete what is pending, send the senders `delivered` receipts for what was
 * pushed, and tell storage of what it holds or may hold.
 */
export class AckHandler {
  private readonly unknownAcks: PerMinuteQuota;

  constructor(private readonly deps: Pick<DeliveryDeps, 'store' | 'bus' | 'settings' | 'metrics'>) {
    this.unknownAcks = new PerMinuteQuota(deps.settings.unknownAcksPerMinute ?? UNKNOWN_ACKS_PER_MINUTE);
  }

  async handle(acks: AckEvent[]): Promise<void> {
    const { store, bus, settings, metrics } = this.deps;
    const receipts: DeliverEvent[] = [];
    const offlineAcks: OfflineTopicEvent[] = [];
    // One store call per ack, all at once: with Redis, one round trip for the batch instead of one
    // per ack. Redis runs them in the order sent, so the outcome is that of running them in turn.
    const remembering = acks.map((ack) => this.unknownAcks.allows(ack.user));
    const completed = await Promise.all(
      acks.map((ack, i) => store.complete(ack.user, ack.mids, settings.rememberAckedMs, remembering[i])),
    );
    for (const [i, ack] of acks.entries()) {
      const found = completed[i];
      metrics.acked.inc(found.filter((outcome) => outcome !== undefined).length);
      // Acking one's own mid (the `accepted` frame carries it) concerns no stored deliverable,
      // unless it is a message to oneself that was stored: then it completed `stored`.
      const completedNothing = (mid: string, j: number) =>
        found[j] === undefined && senderOfMid(mid) !== ack.user;
      const unknown = ack.mids.filter(completedNothing);
      if (remembering[i]) this.unknownAcks.spend(ack.user, unknown.length);
      else metrics.unknownAcksForgotten.inc(unknown.length);
      const told = ack.mids.filter(
        (mid, j) => found[j] === 'stored' || (remembering[i] && completedNothing(mid, j)),
      );
      offlineAcks.push(...offlineAck(ack.user, told, ack.at));
      // Past the quota, storage still drops what it holds of them (a copy synced after Redis lost its
      // data), and keeps a tombstone only for that.
      if (!remembering[i]) offlineAcks.push(...offlineAck(ack.user, unknown, ack.at, true));
      // A receipt only for what was pushed to this user and is in no storage: storage sends those of
      // what it held (a mid that is neither is no proof of delivery: anyone can ack any mid).
      const pushedOnly = ack.mids.filter((_, j) => found[j] === 'pushed');
      receipts.push(...deliveredReceipts(ack.user, pushedOnly, ack.at));
    }
    await Promise.all([bus.publish(TOPICS.delivery, receipts), bus.publish(TOPICS.offline, offlineAcks)]);
  }
}
