import { TopicSpec } from '@parley/contracts';
import { BackgroundWork, Envelope, EventBus, SubscribeOptions, Subscription } from './bus';
import { createCodecCache, DecodeError } from './codec';
import { isTransient, sleep, TransientError } from './retry';

const STOPPED = Symbol('stopped');

/** A consumer group's place in a topic: its members share the one partition. */
interface GroupPosition {
  /** The next offset its members read. */
  readAt: number;
  /** Where a member joining starts: below every member's unfinished background work. */
  committed: number;
  /** Moved on when a member leaving moves `readAt` back: a batch under way then leaves `readAt` alone. */
  generation: number;
  /** Its running members, each with its background work (if any). */
  members: Set<{ background?: BackgroundWork }>;
}

interface StoredRecord {
  key: string;
  value: Buffer;
  offset: number;
  timestamp: number;
  traceId?: string;
}

/**
 * An in-memory bus for unit tests: a real log per topic (events are encoded, validated and
 * stored), consumer groups with committed offsets, and the Kafka adapter's failure handling: a
 * batch whose handler throws is handed over again, a dependency's failure (isTransient) without
 * end, any other up to `maxAttempts` times; then each record alone, and one that still fails is
 * set aside on the topic's DLQ (`deadLetters`), as is at once a record the subscriber's schema
 * refuses. One partition per topic, so order is total: a group's members share it, and one that
 * stops hands the background work it abandoned to those left, as a Kafka rebalance does. Not for
 * production: nothing survives the process.
 */
export class MemoryBus implements EventBus {
  constructor(private readonly options: { maxAttempts?: number; retryDelayMs?: number } = {}) {}

  private readonly codecFor = createCodecCache();
  private readonly logs = new Map<string, StoredRecord[]>();
  private readonly parked = new Map<string, Array<{ value: Buffer; error: string }>>();
  /** Per group and topic. */
  private readonly groups = new Map<string, GroupPosition>();
  private readonly wakeups = new Set<() => void>();
  private readonly subscriptions = new Set<Subscription>();
  private closed = false;

  /**
   * A Kafka outage for tests: a publish whose events this returns true for fails as a publish to
   * an unreachable Kafka does (a TransientError), and nothing of it is written.
   */
  refusePublish: (events: readonly unknown[]) => boolean = () => false;

  /** Every event published on a topic, decoded: for assertions. */
  events<T>(topic: TopicSpec<T>): T[] {
    const codec = this.codecFor(topic);
    return (this.logs.get(topic.name) ?? []).map((r) => codec.decode(r.value));
  }

  async publish<T>(topic: TopicSpec<T>, events: T[], options?: { traceId?: string }): Promise<void> {
    if (this.closed) throw new Error('bus closed');
    if (this.refusePublish(events)) throw new TransientError('kafka is unreachable');
    const codec = this.codecFor(topic);
    const log = this.logs.get(topic.name) ?? [];
    this.logs.set(topic.name, log);
    const encoded = events.map((event) => codec.encode(event, options?.traceId));
    for (const record of encoded) codec.decode(record.value); // a publisher must never write what consumers would refuse; all or nothing
    for (const record of encoded)
      log.push({
        key: record.key,
        value: record.value,
        offset: log.length,
        timestamp: Date.now(),
        traceId: options?.traceId,
      });
    for (const wake of this.wakeups) wake();
  }

  /**
   * What consumers of `topic` set aside, with the error of its last attempt, decoded with `topic`'s
   * schema (a record set aside as undecodable reads back through a looser one).
   */
  deadLetters<T>(topic: TopicSpec<T>): Array<{ event: T; error: string }> {
    const codec = this.codecFor(topic);
    return (this.parked.get(topic.name) ?? []).map(({ value, error }) => ({
      event: codec.decode(value),
      error,
    }));
  }

  /** One partition per topic. */
  async partitioner(): Promise<((key: string) => number) | undefined> {
    return () => 0;
  }

  subscribe<T>({ groupId, topic, handle, background }: SubscribeOptions<T>): Subscription {
    const codec = this.codecFor(topic);
    const group = this.groupPosition(`${groupId}/${topic.name}`);
    const member = { background };
    let running = false;
    let paused = false;
    let loop: Promise<void> | undefined;
    let wake: (() => void) | undefined;
    /** Where a rereadFrom asked to start again: applied between batches, so a batch under way cannot undo it. */
    let rewindTo: number | undefined;

    const next = () => (this.logs.get(topic.name) ?? []).slice(group.readAt, group.readAt + 500);
    const commit = () => {
      group.committed = group.readAt;
      for (const { background: work } of group.members) {
        const oldest = work?.oldestUnfinished(0);
        if (oldest !== undefined) group.committed = Math.min(group.committed, oldest);
      }
    };
    const applyRewind = () => {
      if (rewindTo !== undefined) group.readAt = rewindTo;
      rewindTo = undefined;
    };
    const run = async () => {
      while (running) {
        applyRewind();
        commit();
        const records = paused ? [] : next();
        if (records.length === 0) {
          await new Promise<void>((resolve) => {
            wake = resolve;
            this.wakeups.add(resolve);
            setTimeout(resolve, 50);
          });
          if (wake) this.wakeups.delete(wake);
          continue;
        }
        // As the Kafka adapter: a record this reader cannot decode (a newer version, a broken
        // schema) goes to the DLQ with the error at once, and the rest are handled.
        const batch: Envelope<T>[] = [];
        const values: Buffer[] = [];
        for (const r of records) {
          let event: T;
          try {
            event = codec.decode(r.value);
          } catch (err) {
            if (!(err instanceof DecodeError)) throw err;
            this.park(topic.name, r.value, err);
            continue;
          }
          const { key, timestamp, traceId } = r;
          batch.push({ event, key, partition: 0, offset: String(r.offset), timestamp, traceId });
          values.push(r.value);
        }
        const generation = group.generation;
        const failure = batch.length === 0 ? undefined : await attempt(() => handle(batch));
        if (failure === STOPPED) continue;
        if (failure) {
          for (const [i, envelope] of batch.entries()) {
            const alone = await attempt(() => handle([envelope]));
            if (alone === STOPPED) break;
            if (alone) this.park(topic.name, values[i], alone);
          }
          if (!running) continue; // stopped while isolating: the batch is handed over again
        }
        if (rewindTo === undefined && group.generation === generation)
          group.readAt = records[records.length - 1].offset + 1;
        // Committed at the top of the next turn (or by stop()), before anything else runs.
      }
    };
    /** Runs `work` until it succeeds (undefined), a non-transient failure outlasts maxAttempts (that error), or the subscription stops. */
    const attempt = async (work: () => Promise<void>): Promise<unknown> => {
      for (let tries = 1; ; tries++) {
        try {
          await work();
          return undefined;
        } catch (err) {
          if (!running) return STOPPED;
          if (tries >= (this.options.maxAttempts ?? 5) && !isTransient(err)) return err;
          await sleep(this.options.retryDelayMs ?? 20);
        }
      }
    };
    const subscription: Subscription = {
      start: async () => {
        // As a Kafka group member joining: reading starts at the group's committed offset.
        group.readAt = group.committed;
        group.members.add(member);
        running = true;
        loop = run();
      },
      stop: async () => {
        this.subscriptions.delete(subscription);
        running = false;
        wake?.();
        await loop;
        applyRewind(); // asked while the last batch was under way: the group's next reader starts there
        if (!group.members.has(member)) return; // not started, or stopped already
        await background?.finish().catch(() => undefined); // what it abandons stays unfinished
        commit();
        group.members.delete(member);
        if (group.members.size > 0 && group.committed < group.readAt) {
          // As a Kafka rebalance: the members left read on from the group's committed offset, so
          // the work this one abandoned is done again.
          group.readAt = group.committed;
          group.generation++;
        }
      },
      pause: () => {
        paused = true;
      },
      resume: () => {
        paused = false;
      },
      handledUpTo: () => {
        const unhandled = (this.logs.get(topic.name) ?? [])[group.readAt];
        return unhandled ? unhandled.timestamp - 1 : Date.now();
      },
      rereadFrom: async (time) => {
        if (!running) return false;
        const log = this.logs.get(topic.name) ?? [];
        const first = log.findIndex((r) => r.timestamp >= time);
        const target = first === -1 ? log.length : first;
        if (target >= group.readAt) return true;
        rewindTo = Math.min(rewindTo ?? target, target);
        wake?.();
        return true;
      },
    };
    this.subscriptions.add(subscription);
    return subscription;
  }

  private groupPosition(key: string): GroupPosition {
    let group = this.groups.get(key);
    if (!group) {
      group = { readAt: 0, committed: 0, generation: 0, members: new Set() };
      this.groups.set(key, group);
    }
    return group;
  }

  private park(topic: string, value: Buffer, err: unknown): void {
    const parked = this.parked.get(topic) ?? [];
    this.parked.set(topic, parked);
    parked.push({ value, error: String((err as Error)?.message ?? err) });
  }

  async ping(): Promise<void> {
    if (this.closed) throw new Error('bus closed');
  }

  /** As the Kafka adapter: stops the subscriptions (a batch under way finishes and may publish), then refuses publishes. */
  async close(): Promise<void> {
    await Promise.all([...this.subscriptions].map((s) => s.stop()));
    this.closed = true;
  }
}
