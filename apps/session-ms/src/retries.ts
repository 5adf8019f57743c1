import { ackClock } from './ack-clock';
import type { DeliveryDeps } from './delivery-deps';
import { goOffline, pushOrOffline } from './offline';

/**
 * Pushes again what is due by the ack clock as of `now`; what ran out of attempts goes offline.
 * Returns how many were due.
 */
export async function retryDue(
  deps: Pick<DeliveryDeps, 'store' | 'gateways' | 'bus' | 'settings' | 'logger' | 'metrics'>,
  now: number,
  limit: number,
): Promise<number> {
  const { store, settings, metrics } = deps;
  const dueBy = await ackClock(deps, now);
  metrics.ackReadLag.set((now - dueBy) / 1000);
  const due = await store.claimDue(dueBy, now, settings.ackTimeoutMs, limit);
  const exhausted = due.filter((p) => p.attempts > settings.maxAttempts);
  const retry = due.filter((p) => p.attempts <= settings.maxAttempts);
  // Their attempts are counted already: a failed hand-off (Kafka away) must not cost these a push.
  const handOff = await goOffline(deps, exhausted).then(
    () => undefined,
    (err: unknown) => ({ err }),
  );
  await pushOrOffline(deps, retry, [], new Set());
  if (handOff) throw handOff.err;
  return due.length;
}
