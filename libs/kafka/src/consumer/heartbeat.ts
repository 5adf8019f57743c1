import type { EachBatchPayload } from 'kafkajs';
import type { Logger } from 'pino';
import { GROUP_MOVING } from './errors';
import type { Membership } from './membership';

/**
 * Heartbeats while a batch is being handled. When the group is rebalancing (or has dropped this
 * member), commits what was handled and remembers it: the batch is then left for the partition's
 * next owner, since this member rejoins only once its batch returns. A beat that fails otherwise
 * (the broker away) is tried again at the next one.
 */
export async function heartbeat(
  payload: EachBatchPayload,
  member: Pick<Membership, 'groupMoved'>,
  commit: () => Promise<void>,
): Promise<void> {
  try {
    await payload.heartbeat();
  } catch (err) {
    const type = (err as { type?: string } | null)?.type;
    if (!type || !GROUP_MOVING.has(type)) return;
    if (!member.groupMoved && type === 'REBALANCE_IN_PROGRESS') await commit().catch(() => undefined);
    member.groupMoved ??= err as Error;
  }
}

export interface Beating {
  /** One heartbeat of the member handling `payload` (`heartbeat`). */
  beat(payload: EachBatchPayload): Promise<void>;
  intervalMs: number;
  maxHandlerMs: number;
  logger: Logger;
}

/**
 * kafkajs heartbeats only between batches; a handler that outlasts the session timeout (a large
 * fan-out under load) would be expelled from the group and its uncommitted records handled again
 * by the next member. So the member keeps beating while the handler runs, up to `maxHandlerMs`
 * (as Kafka's max.poll.interval.ms): a handler hung past that lets its partitions move.
 */
export async function whileBeating<R>(
  payload: EachBatchPayload,
  { beat, intervalMs, maxHandlerMs, logger }: Beating,
  work: () => Promise<R>,
): Promise<R> {
  // A duration, on the monotonic clock: a wall-clock step forward must not end the beats early.
  const giveUpAt = performance.now() + maxHandlerMs;
  // One beat at a time: on a broker slower to answer than the interval, a beat per tick piled up
  // requests behind the one it had not answered.
  let inFlight: Promise<void> | undefined;
  const beating = setInterval(() => {
    if (performance.now() < giveUpAt) {
      inFlight ??= beat(payload).finally(() => (inFlight = undefined));
      return;
    }
    clearInterval(beating);
    logger.error(
      { maxHandlerMs },
      // A handler retrying a failure (a dependency down) still beats between its tries.
      'handler still running: heartbeats now come only between its retries; if it is stuck in one call, its partitions will move',
    );
  }, intervalMs);
  try {
    return await work();
  } finally {
    clearInterval(beating);
  }
}
