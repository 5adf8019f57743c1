import { OfflineTopicEvent, TOPICS } from '@parley/contracts';
import { DAY_MS, groupBy } from '@parley/service-kit';
import type { DeliveryDeps } from './delivery-deps';
import { Push, PushDeps, pushToGateways } from './push';
import { Pending, userKey } from './store/session-store';

/**
 * How long a deliverable handed to storage is remembered as stored (`SessionStore.markStored`), so
 * that its ack reaches storage: the ack of a note to oneself, which looks like the ack of an
 * `accepted` frame, and the ack of a later copy of its mid pushed as new (a group message resent
 * after a membership change). A little longer than storage keeps it by default (persistence-ms's
 * RETENTION_DAYS, 30); the ack removes the mark.
 */
const STORED_MEMORY_MS = 31 * DAY_MS;

type OfflineDeps = Pick<DeliveryDeps, 'store' | 'bus' | 'metrics'>;

/**
 * Pushes to the devices of users who are connected; what users found unreachable have pending
 * goes to storage (the offline topic), except what this batch acks further on (`ackedHere`).
 */
export async function pushOrOffline(
  deps: OfflineDeps & PushDeps,
  durable: Pending[],
  ephemeral: Push[],
  ackedHere: Set<string>,
): Promise<void> {
  if (durable.length === 0 && ephemeral.length === 0) return;
  const users = [...new Set([...durable.map((p) => p.user), ...ephemeral.map((p) => p.user)])];
  const connections = await deps.store.connectionsOf(users);
  // A replayed deliverable is stored already. Its user not seen connected means, as often as not,
  // that the replay outran this service's record of the connect: it stays for its retries.
  const unreachable = new Set(
    durable.filter((p) => !connections.has(p.user) && !p.stored).map((p) => p.user),
  );
  const pushes = [
    ...durable.filter((p) => connections.has(p.user)),
    ...ephemeral.filter((p) => connections.has(p.user)),
  ];
  await Promise.all([
    allOffline(deps, [...unreachable], ackedHere),
    pushToGateways(deps, pushes, connections),
  ]);
}

/**
 * Users found unreachable: everything they have pending and not stored goes offline, in the
 * order it was tracked, so storage serves it oldest first. One at a time, a new deliverable
 * would be stored at once and an older one, pushed before the user left, only once its
 * retries ran out.
 */
async function allOffline(deps: OfflineDeps, users: string[], ackedHere: Set<string>): Promise<void> {
  if (users.length === 0) return;
  const held = await deps.store.pendingOf(users);
  await goOffline(
    deps,
    [...held.values()].flat().filter((p) => !p.stored && !ackedHere.has(userKey(p.user, p.mid))),
  );
}

/** Hands these deliverables to storage and stops tracking them; a late ack of one reaches storage too. */
export async function goOffline({ store, bus, metrics }: OfflineDeps, pendings: Pending[]): Promise<void> {
  if (pendings.length === 0) return;
  const at = Date.now();
  // A replayed deliverable is stored already: going offline again must not store or push it twice.
  const events: OfflineTopicEvent[] = pendings
    .filter((p) => !p.stored)
    .map((p) => ({ v: 1, kind: 'offline', to: p.user, frame: p.frame, at }));
  await bus.publish(TOPICS.offline, events);
  const byUser = [...groupBy(pendings, (p) => p.user)];
  await Promise.all(
    byUser.map(([user, ofUser]) =>
      store.markStored(
        user,
        ofUser.map((p) => p.mid),
        STORED_MEMORY_MS,
      ),
    ),
  );
  const ackedMeanwhile = await Promise.all(
    byUser.map(([user, ofUser]) =>
      store.drop(
        user,
        ofUser.map((p) => p.mid),
        ofUser,
      ),
    ),
  );
  // An ack that completed one of these after it was read here, before it was marked stored, told
  // storage nothing: storage hears of it now.
  const lateAcks: OfflineTopicEvent[] = byUser.flatMap(([user], i) =>
    offlineAck(user, ackedMeanwhile[i], Date.now()),
  );
  await bus.publish(TOPICS.offline, lateAcks);
  metrics.offline.inc(events.length);
}

/**
 * With a store that dies with this process, what still awaits an ack goes to storage before the
 * process ends: its deliver events were committed, so nothing else would deliver it. Call it once
 * nothing new is tracked (the delivery consumer has stopped). Returns how many went.
 */
export async function handOffPending(deps: OfflineDeps): Promise<number> {
  const { store } = deps;
  if (store.outlivesProcess) return 0;
  let handed = 0;
  for (;;) {
    const claimed = await store.claimDue(Number.MAX_SAFE_INTEGER, Date.now(), 0, 500);
    if (claimed.length === 0) return handed;
    // Each user's in the order it was tracked, as storage will serve it.
    const held = await store.pendingOf([...new Set(claimed.map((p) => p.user))]);
    const all = [...held.values()].flat();
    await goOffline(deps, all); // drops them from the store
    handed += all.length;
  }
}

/**
 * Tells storage that the mids of these stored copies were acked already (an ack met a copy pushed
 * as new, and told storage nothing). One's own mids too: an ack of one's own mid leaves its mark
 * only where it completed a note to oneself, which storage must then drop as well.
 */
export async function tellStorageAcked(
  { bus }: Pick<DeliveryDeps, 'bus'>,
  replays: Pending[],
): Promise<void> {
  const events: OfflineTopicEvent[] = [...groupBy(replays, (p) => p.user)].flatMap(([user, ofUser]) => {
    return offlineAck(
      user,
      ofUser.map((p) => p.mid),
      Date.now(),
    );
  });
  await bus.publish(TOPICS.offline, events);
}

/**
 * The event telling storage that `user` acked these mids; none when there are none. `unknown`: they
 * completed nothing here, past the user's quota (storage keeps no tombstone for what it lacks).
 */
export function offlineAck(user: string, mids: string[], at: number, unknown?: true): OfflineTopicEvent[] {
  return mids.length > 0 ? [{ v: 1, kind: 'offline-ack', user, mids, at, ...(unknown && { unknown }) }] : [];
}
