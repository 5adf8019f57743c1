import type { EachBatchPayload, OffsetsByTopicPartition } from 'kafkajs';
import type { Logger } from 'pino';

export type Committer = ReturnType<typeof createCommitter>;

/** The subscription's `mayCommit` held a commit back: its offsets stay uncommitted. */
export class CommitHeldBack extends Error {
  constructor() {
    super('commit held back by mayCommit: the offsets stay uncommitted');
  }
}

/**
 * Commits what a member has handled every `intervalMs`, at a rebalance and at stop. kafkajs's own
 * autoCommit sends an OffsetCommit after every partition batch, as many requests as fetches: at
 * 1,000 msg/s half of all the fleet's Kafka requests. A crash replays at most the last interval
 * (from the oldest record whose background work is unfinished, where that is older), which
 * consumers idempotent by mid absorb.
 */
export function createCommitter(
  intervalMs: number,
  logger: Logger,
  adjust: (offsets: OffsetsByTopicPartition) => OffsetsByTopicPartition = (offsets) => offsets,
  mayCommit?: () => Promise<boolean>,
) {
  // The latest batch's payload: its closures reach the member's current offsets, whatever batch.
  let member: Pick<EachBatchPayload, 'uncommittedOffsets' | 'commitOffsetsIfNecessary'> | undefined;
  let committing: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  const commitNow = async () => {
    const offsets = member && adjust(member.uncommittedOffsets());
    if (!offsets || offsets.topics.length === 0) return;
    // Asked after the offsets are read: what it vouches for covers every record they commit.
    if (mayCommit && !(await mayCommit().catch(() => false))) throw new CommitHeldBack();
    await member!.commitOffsetsIfNecessary(offsets);
  };
  /** Waits for a commit under way, then commits what was handled since it read the offsets. */
  const commit = async (): Promise<void> => {
    while (committing) await committing.catch(() => undefined);
    committing = commitNow().finally(() => (committing = undefined));
    return committing;
  };
  return {
    handledIn(payload: EachBatchPayload) {
      member = payload;
    },
    commit,
    start() {
      timer = setInterval(() => {
        if (committing) return; // a slow broker: no queue of commits behind it
        commit().catch((err) => logger.debug({ err }, 'commit failed; the next one retries'));
      }, intervalMs).unref();
    },
    stop() {
      clearInterval(timer);
    },
  };
}
