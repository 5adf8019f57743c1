/** Heartbeat errors that mean the group is rebalancing or no longer counts this member. */
export const GROUP_MOVING = new Set(['REBALANCE_IN_PROGRESS', 'UNKNOWN_MEMBER_ID', 'ILLEGAL_GENERATION']);

/**
 * What a batch throws, as kafkajs must take it. The group moving on stays as it is: kafkajs rejoins.
 * Anything else (a DLQ refusing a record, a handler's error while stopping) becomes retriable:
 * kafkajs stops a consumer for good on an error it takes for non-retriable, every partition it
 * held with it, where a retriable one has it fetch the batch again from the last handled offset
 * and, past its retries, restart the consumer.
 */
export function retriableForKafkajs(err: unknown): unknown {
  const type = (err as { type?: string } | undefined)?.type;
  return type && GROUP_MOVING.has(type) ? err : new BatchFailed(err);
}

export class BatchFailed extends Error {
  readonly retriable = true;

  constructor(cause: unknown) {
    super(`batch failed: ${String((cause as Error)?.message ?? cause)}`, { cause });
    this.name = 'BatchFailed';
  }
}
