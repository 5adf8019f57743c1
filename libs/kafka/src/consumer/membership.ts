import type { OffsetsByTopicPartition } from 'kafkajs';

/**
 * A member's standing in its consumer group, for the topic it reads: the partitions it was given
 * at its last join, how far it has handled each since, those rereadFrom moved back, and whether
 * the group is moving on without it.
 */
export class Membership {
  /** Set when a heartbeat learns the group is moving on without this member; cleared at the next join. */
  groupMoved: Error | undefined;
  assigned: number[] = [];
  /** How many times the member has joined its group: a join comes with a new assignment. */
  joins = 0;
  /** The next offset to read in each partition handled since the member joined (for rereadFrom). */
  private readonly handledTo = new Map<number, number>();
  /**
   * Partitions rereadFrom moved back, and where to, until kafkajs applies the seek (at its next
   * fetch, after any batch under way): commits carry the rewound offset meanwhile, so a stop or a
   * rebalance before then does not commit past the re-read.
   */
  private readonly rewinding = new Map<number, number>();
  /** The first offset read in each partition since the member joined (or rewound to, if lower). */
  private readonly readFrom = new Map<number, number>();

  constructor(private readonly topic: string) {}

  joined(assigned: number[]): void {
    this.joins++;
    this.groupMoved = undefined;
    this.assigned = assigned;
    this.handledTo.clear();
    this.readFrom.clear();
    // One moved away was committed rewound before it went (the commit at REBALANCING).
    for (const partition of this.rewinding.keys())
      if (!assigned.includes(partition)) this.rewinding.delete(partition);
  }

  /** A chunk of `partition` from `offset` on is being handled. */
  reading(partition: number, offset: number): void {
    if (!this.readFrom.has(partition)) this.readFrom.set(partition, offset);
  }

  /**
   * The first offset read in `partition` since the member joined: what it handled before (it held
   * the partition earlier, lost it, and got it back) the group has moved past since.
   */
  firstRead(partition: number): number | undefined {
    return this.readFrom.get(partition);
  }

  /** `partition` was handled up to `nextOffset` (the next offset to read). */
  handled(partition: number, nextOffset: number): void {
    this.handledTo.set(partition, nextOffset);
    this.rewinding.delete(partition); // read from the seek on: its offsets are the re-read's
  }

  /** The next offset to read in `partition`, if it was handled since the member joined. */
  nextOffset(partition: number): number | undefined {
    return this.handledTo.get(partition);
  }

  /** rereadFrom moved `partition` back to `offset`. */
  rewound(partition: number, offset: number): void {
    this.handledTo.set(partition, offset);
    this.rewinding.set(partition, offset);
    this.readFrom.set(partition, Math.min(offset, this.readFrom.get(partition) ?? offset));
  }

  /** `offsets` to commit, with each partition being rewound at its rewound offset. */
  committable(offsets: OffsetsByTopicPartition): OffsetsByTopicPartition {
    if (this.rewinding.size === 0) return offsets;
    const { topic } = this;
    const others = offsets.topics.filter((t) => t.topic !== topic);
    const mine = (offsets.topics.find((t) => t.topic === topic)?.partitions ?? []).filter(
      (p) => !this.rewinding.has(Number(p.partition)),
    );
    const rewound = [...this.rewinding].map(([partition, offset]) => ({ partition, offset: String(offset) }));
    return { topics: [...others, { topic, partitions: [...mine, ...rewound] }] };
  }
}
