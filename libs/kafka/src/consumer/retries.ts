import type { EachBatchPayload } from 'kafkajs';
import type { Logger } from 'pino';
import { backoffMs, isTransient, sleep } from '../retry';
import type { Membership } from './membership';

export interface Retrying {
  logger: Logger;
  /** Whether the batch is to be left unhandled: the consumer stopping, or kafkajs done with it. */
  leaving(payload: EachBatchPayload): boolean;
  member: Pick<Membership, 'groupMoved'>;
  /** One heartbeat of the member handling `payload` (`heartbeat`). */
  beat(payload: EachBatchPayload): Promise<void>;
  /** Counts a retry. */
  retried(): void;
}

/**
 * Runs `work` until it succeeds, a non-transient failure outlasts `attempts`, or the consumer stops.
 * Resolves with that last failure, or undefined on success.
 */
export async function withRetries(
  work: () => Promise<void>,
  attempts: number,
  payload: EachBatchPayload,
  { logger, leaving, member, beat, retried }: Retrying,
): Promise<unknown> {
  for (let attempt = 0; ; attempt++) {
    try {
      await work();
      // The failures were logged one by one: say that they ended, or the log leaves it open.
      if (attempt > 0) logger.info({ retries: attempt }, 'handler succeeded after retrying');
      return undefined;
    } catch (err) {
      // Stopping, or the group moving on: leave the batch unhandled (the partition's next owner
      // replays it) rather than hold stop() or the rebalance up, or handle it beside that owner.
      if (leaving(payload)) throw err;
      if (member.groupMoved) throw member.groupMoved;
      if (attempt + 1 >= attempts && !isTransient(err)) return err;
      retried();
      logger.warn({ err, attempt }, 'handler failed, retrying');
      await sleep(backoffMs(attempt));
      await beat(payload);
      if (member.groupMoved) throw member.groupMoved;
    }
  }
}
