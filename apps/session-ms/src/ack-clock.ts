import type { DeliveryDeps, DeliverySettings } from './delivery-deps';

/*
 * The ack clock: ack timeouts run on how far the slowest live replica has read acks (each replica
 * reports its read position to the store), not on the wall clock (`DeliveryReader.readUpTo`).
 */

/** How long a replica's read position counts without a new report: about a consumer session timeout, and several retry ticks. */
const readReportTtlMs = (retryTickMs: number) => Math.max(10_000, 3 * retryTickMs);
/** A reader stalled this far behind no longer holds retries and the offline hand-over back. */
const MAX_ACK_READ_LAG_MS = 60_000;
/** A stopping replica this close to the present withdraws its read position; a lagging one lets it expire. */
const CAUGHT_UP_MS = 1000;

/** How far behind a reader may hold retries back (`DeliverySettings.maxAckReadLagMs`, 60 s by default). */
export function maxAckReadLagMs(settings: Pick<DeliverySettings, 'maxAckReadLagMs'>): number {
  return settings.maxAckReadLagMs ?? MAX_ACK_READ_LAG_MS;
}

/** Tells the store how far this replica has read acks, as of `now`. */
export function reportReadPosition(
  { store, reader, settings }: Pick<DeliveryDeps, 'store' | 'reader' | 'settings'>,
  now: number,
): Promise<void> {
  return store.reportReadUpTo(
    reader.replica,
    Math.min(now, reader.readUpTo()),
    readReportTtlMs(settings.retryTickMs),
  );
}

/** The time acks have been read up to by every live replica, though no further back than the lag allowed. */
export async function ackClock(
  { store, settings }: Pick<DeliveryDeps, 'store' | 'settings'>,
  now: number,
): Promise<number> {
  const readUpTo = Math.min(now, (await store.readUpTo()) ?? now);
  return Math.max(readUpTo, now - maxAckReadLagMs(settings));
}

/** This replica stops retrying: if it is caught up, the others no longer wait for its read position. */
export async function withdrawReadPosition({
  store,
  reader,
}: Pick<DeliveryDeps, 'store' | 'reader'>): Promise<void> {
  // A lagging replica's report must outlive it: until the partitions' next owner has fetched,
  // its unread acks would otherwise be taken for silence by every other replica.
  if (Date.now() - reader.readUpTo() > CAUGHT_UP_MS) return;
  await store.forgetReadUpTo(reader.replica);
}
