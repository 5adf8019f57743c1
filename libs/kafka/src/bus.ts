import type { TopicSpec } from '@parley/contracts';

/** One consumed record, decoded and validated against its topic's schema. */
export interface Envelope<T> {
  event: T;
  key: string;
  partition: number;
  offset: string;
  /**
   * The event's place in its record: events packed into one record share its offset (absent: 0,
   * a record of one event). (partition, offset, index) is the event's place in the topic.
   */
  index?: number;
  timestamp: number;
  traceId?: string;
}

export interface SubscribeOptions<T> {
  /** Consumer group: every group gets every record; members of one group split the partitions. */
  groupId: string;
  /**
   * The group's name in metric labels, where `groupId` is made unique per process (a consumer that
   * reads every partition itself): one series across restarts. `groupId` by default.
   */
  metricsGroup?: string;
  topic: TopicSpec<T>;
  /**
   * Handles records of one partition, in order. Offsets are committed only after it resolves
   * (at-least-once), so it must be idempotent. A throw retries; past the retry limit each record is
   * tried alone and those still failing are parked on `<topic>.dlq`. Nothing more is fetched while
   * it runs (kafkajs awaits it), so a slow handler slows consumption instead of piling records up.
   */
  handle(batch: Envelope<T>[]): Promise<void>;
  /** Work on handled records that goes on after `handle` resolves; commits wait for it. */
  background?: BackgroundWork;
  /**
   * Asked before each commit of this member's offsets, after they are read: false (or a throw)
   * holds the commit back. The offsets stay uncommitted and the next interval asks again; a commit
   * held at a rebalance or at stop is not made, and the partition's next owner reads those records
   * again. For a handler whose writes become durable after it resolves (session-ms waits for its
   * Redis replicas to have them). The Kafka adapter's; the in-memory bus ignores it.
   */
  mayCommit?: () => Promise<boolean>;
}

/**
 * Work a handler starts on its records and finishes later (push-ms sends a notification once its
 * window closes). Offsets are committed only below each partition's oldest record whose work is
 * unfinished, so a crash hands that work to the group's next reader instead of losing it. At stop,
 * after the last batch, `finish()` runs before the last commit.
 */
export interface BackgroundWork {
  /** The offset of `partition`'s oldest record whose work is not finished; undefined when none. */
  oldestUnfinished(partition: number): number | undefined;
  /** Finishes or abandons the work under way (the process is stopping); what it abandons stays unfinished. */
  finish(): Promise<void>;
}

export interface Subscription {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Backpressure: stop fetching until `resume()`; a batch already handed to the handler completes. */
  pause(): void;
  resume(): void;
  /**
   * A time T such that every record written (record timestamps: the producers' clocks) to the
   * partitions this member reads before T has been handled: shortly behind the current time when
   * it is caught up, further behind during a backlog, and never ahead of what was really read.
   * Timeouts that wait for something on this topic (an ack) measure against it, so a backlog is
   * not taken for silence.
   */
  handledUpTo(): number;
  /**
   * Reads again, from the first record written at or after `time` (record timestamps), the
   * partitions this member holds now: for a consumer whose own state was lost (session-ms when
   * Redis comes back empty) and can be rebuilt from what it read. Never moves a partition forward,
   * so nothing unhandled is skipped. The records come again with the next fetch; offsets committed
   * from then on are the rewound ones, so a crash during the re-read starts it over (not while
   * `mayCommit` holds commits back: the committed offsets stay where it last let them go). Resolves
   * false when the member holds no partition now (not started, joining, or a rebalance under way).
   */
  rereadFrom(time: number): Promise<boolean>;
}

/**
 * The event-bus port the services use. The Kafka adapter (kafkajs, production and embedded broker)
 * and the in-memory adapter (unit tests) implement it.
 */
export interface EventBus {
  /** Resolves once every event is durably written (acks=all); rejects if it could not be. */
  publish<T>(topic: TopicSpec<T>, events: T[], options?: { traceId?: string }): Promise<void>;
  subscribe<T>(options: SubscribeOptions<T>): Subscription;
  /**
   * The partition this bus writes each key of the topic to, for now: for a publisher that gathers
   * one partition's events into one (`deliverToMany`). Undefined while the bus cannot tell (the
   * topic's partition count could not be read): such a publisher then sends one event per key.
   * After partitions are added it may lag for up to a minute; events then land off their key's
   * new partition, and nothing is lost.
   */
  partitioner<T>(topic: TopicSpec<T>): Promise<((key: string) => number) | undefined>;
  /** Resolves when the bus answers; for readiness checks. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
