import { randomUUID } from 'node:crypto';
import {
  Admin,
  Consumer,
  EachBatchPayload,
  IHeaders,
  Kafka,
  KafkaMessage,
  Partitioners,
  Producer,
} from 'kafkajs';
import { dlqTopic, TOPICS } from '@parley/contracts';
import { HEADER_DLQ_ERROR, HEADER_DLQ_GROUP, HEADER_DLQ_SOURCE, HEADER_PACK_INDEX } from '@parley/kafka';
import { DAY_MS } from '@parley/service-kit';
import { DEFAULT_GROUP_OPS_KEEP_DAYS } from '../../../apps/group-ms/src/ops-retention';
import type { OffsetRange } from './args';

export const HEADER_REPLAYED_FROM = 'parley-replayed-from';
/** Bytes of a value `list` prints at most. */
export const MAX_SHOWN_VALUE_BYTES = 4096;
/** Topics whose records group-ms applies as group ops, remembering each only GROUP_OPS_KEEP_DAYS. */
const GROUP_OP_TOPICS: string[] = [TOPICS.group.name, TOPICS.groupCommands.name];
const GROUP_OP_KIND = 'group-command';

export interface DlqToolDeps {
  kafka: Kafka;
  /** Takes each output line (JSON, no newline). */
  out(line: string): void;
  /** How long group-ms remembers an applied op (GROUP_OPS_KEEP_DAYS). */
  groupOpsKeepMs?: number;
  now?: () => number;
}

export interface ListOptions {
  topic: string;
  max?: number;
}

export interface ReplayOptions {
  topic: string;
  offsets?: OffsetRange;
  errorContains?: string;
  dryRun?: boolean;
  fromBeginning?: boolean;
  force?: boolean;
  /** Stops after the record being replayed; what was replayed stays committed. */
  signal?: AbortSignal;
}

export interface ReplaySummary {
  dlq: string;
  group: string;
  dryRun: boolean;
  replayed: number;
  skipped: number;
  refused: number;
  interrupted: boolean;
  /** Per DLQ partition, the offset the next replay starts from. */
  next: Record<number, string>;
}

/** A tool's failure that is the operator's to fix (no such topic): said in one line, exit 1. */
export class DlqToolError extends Error {}

/** The DLQ topic and its default source topic, from either name. */
export function dlqNames(topic: string): { dlq: string; source: string } {
  const suffix = dlqTopic('');
  return topic.endsWith(suffix)
    ? { dlq: topic, source: topic.slice(0, -suffix.length) }
    : { dlq: dlqTopic(topic), source: topic };
}

export const replayGroupId = (dlq: string) => `parley-dlq-replay.${dlq}`;

/**
 * `list` and `replay` over a DLQ (`<topic>.dlq`, written by libs/kafka's dead-letter.ts): each
 * record's headers say why it was parked (`parley-error`), where it came from
 * (`parley-source` = `<topic>/<partition>/<offset>`), who read it (`parley-group`) and, for an event
 * of a pack, its place there (`parley-pack-index`). Its value is the one event (or the record that
 * could not be decoded), which every consumer accepts as a record of its own.
 */
export function createDlqTool(deps: DlqToolDeps) {
  const now = deps.now ?? Date.now;
  const groupOpsKeepMs = deps.groupOpsKeepMs ?? DEFAULT_GROUP_OPS_KEEP_DAYS * DAY_MS;
  const print = (line: object) => deps.out(JSON.stringify(line));

  return {
    /** Prints the DLQ's records from its first, as JSON lines, in a group of its own that commits nothing. */
    async list({ topic, max }: ListOptions): Promise<number> {
      const { dlq } = dlqNames(topic);
      const ends = await withAdmin(deps.kafka, (admin) => partitionEnds(admin, dlq));
      const start = new Map([...ends].map(([partition, { low }]) => [partition, low]));
      const end = new Map([...ends].map(([partition, { high }]) => [partition, high]));
      let listed = 0;
      await readRange(deps.kafka, {
        topic: dlq,
        groupId: `parley-dlq-list-${randomUUID()}`,
        start,
        end,
        handle: async (partition, message) => {
          if (max !== undefined && listed >= max) return 'stop';
          listed++;
          print(describe(dlq, partition, message));
          return 'next';
        },
      });
      return listed;
    },

    /**
     * Produces the selected records back to their source topics through an idempotent acks=all
     * producer, each with `parley-replayed-from`, committing the replay group's offset past each
     * one once Kafka has it: an interrupted replay resumes after the last record written, and a
     * second replay of the same DLQ finds nothing new. Records left out (filters, refusals) are
     * passed as well; `--from-beginning` with a filter that selects them replays them later.
     */
    async replay(options: ReplayOptions): Promise<ReplaySummary> {
      const { dlq, source } = dlqNames(options.topic);
      const group = replayGroupId(dlq);
      // One admin connection for what the replay reads before it starts.
      const { ends, committed, topics } = await withAdmin(deps.kafka, async (admin) => {
        const found = {
          ends: await partitionEnds(admin, dlq),
          committed: await committedOffsets(admin, group, dlq),
          topics: new Set(await admin.listTopics()),
        };
        // A dry run reads in a group of its own: the replay group's position stays as it is.
        if (!options.dryRun) await refuseIfRunning(admin, group);
        return found;
      });
      const start = new Map<number, bigint>();
      const end = new Map<number, bigint>();
      for (const [partition, { low, high }] of ends) {
        const resumeAt = options.fromBeginning ? low : (committed.get(partition) ?? low);
        start.set(partition, max(low, resumeAt, options.offsets?.from ?? 0n));
        end.set(partition, options.offsets?.to === undefined ? high : min(high, options.offsets.to + 1n));
      }
      if (!options.fromBeginning && options.offsets?.from === undefined)
        refuseIfForgotten(dlq, group, committed, start, end);
      const summary: ReplaySummary = {
        dlq,
        group,
        dryRun: options.dryRun ?? false,
        replayed: 0,
        skipped: 0,
        refused: 0,
        interrupted: false,
        next: Object.fromEntries([...start].map(([partition, offset]) => [partition, String(offset)])),
      };
      const producer = options.dryRun ? undefined : await connectedProducer(deps.kafka);
      try {
        await readRange(deps.kafka, {
          topic: dlq,
          groupId: options.dryRun ? `parley-dlq-dry-run-${randomUUID()}` : group,
          start,
          end,
          handle: async (partition, message, consumer) => {
            if (options.signal?.aborted) {
              summary.interrupted = true;
              return 'stop';
            }
            const at = `${dlq}/${partition}/${message.offset}`;
            const headers = headerStrings(message.headers);
            const target = sourceOf(headers, source);
            const verdict = judge(options, headers, target, message, topics);
            if (verdict.action === 'replay' && producer) {
              const [written] = await producer.send({
                topic: target.topic,
                acks: -1,
                messages: [
                  {
                    key: message.key,
                    value: message.value,
                    headers: { [HEADER_REPLAYED_FROM]: at },
                  },
                ],
              });
              print({
                action: 'replayed',
                dlq: at,
                source: headers[HEADER_DLQ_SOURCE],
                to: `${target.topic}/${written.partition}/${written.baseOffset ?? written.offset}`,
                key: message.key?.toString(),
              });
            } else if (verdict.action === 'replay') {
              print({
                action: 'would replay',
                dlq: at,
                source: headers[HEADER_DLQ_SOURCE],
                to: target.topic,
                key: message.key?.toString(),
              });
            } else {
              print({ action: verdict.action, dlq: at, why: verdict.why });
            }
            summary[verdict.action === 'replay' ? 'replayed' : verdict.action]++;
            const next = BigInt(message.offset) + 1n;
            summary.next[partition] = String(next);
            // Never back: --from-beginning going over what an earlier replay sent leaves its position,
            // or the next replay would send those records again.
            if (producer && next > (committed.get(partition) ?? -1n))
              await consumer.commitOffsets([{ topic: dlq, partition, offset: String(next) }]);
            return 'next';
          },
        });
      } finally {
        await producer?.disconnect();
      }
      print({ summary });
      return summary;
    },
  };

  function judge(
    options: ReplayOptions,
    headers: Record<string, string>,
    target: { topic: string },
    message: KafkaMessage,
    topics: Set<string>,
  ): { action: 'replay' } | { action: 'skipped' | 'refused'; why: string } {
    const error = headers[HEADER_DLQ_ERROR] ?? '';
    if (options.errorContains !== undefined && !error.includes(options.errorContains))
      return {
        action: 'skipped',
        why: `${HEADER_DLQ_ERROR} does not contain ${JSON.stringify(options.errorContains)}`,
      };
    // Sent, it failed the whole replay there (after the producer's retries), on every run, naming
    // neither record nor topic; a dry run promised it.
    if (!topics.has(target.topic))
      return {
        action: 'refused',
        why:
          `its topic ${target.topic} does not exist. Passed like a skipped record: if it should, create it, ` +
          `then replay this record alone with --from-beginning --offsets ${message.offset}`,
      };
    const ageMs = now() - Number(message.timestamp);
    if (!options.force && ageMs > groupOpsKeepMs && mayBeGroupOp(target.topic, message.value)) {
      const days = (ms: number) => `${Number((ms / DAY_MS).toFixed(1))} days`;
      return {
        action: 'refused',
        why:
          `a group op parked ${days(ageMs)} ago, and group-ms remembers an applied op for ${days(groupOpsKeepMs)} ` +
          '(GROUP_OPS_KEEP_DAYS): if it was applied before, it would be applied again. Passed like a skipped ' +
          `record: check it, then replay it alone with --from-beginning --offsets ${message.offset} --force`,
      };
    }
    return { action: 'replay' };
  }
}

/** A record of a group-op topic that is a group op, or cannot be told apart from one. */
function mayBeGroupOp(topic: string, value: Buffer | null): boolean {
  if (!GROUP_OP_TOPICS.includes(topic)) return false;
  try {
    const kind = (JSON.parse(value?.toString('utf8') ?? '') as { kind?: unknown } | null)?.kind;
    return typeof kind !== 'string' || kind === GROUP_OP_KIND;
  } catch {
    return true;
  }
}

/** One `list` line: where the record lies on the DLQ, its headers, and its value (JSON, or base64 when it is not). */
function describe(dlq: string, partition: number, message: KafkaMessage) {
  const headers = headerStrings(message.headers);
  const value = message.value ?? Buffer.alloc(0);
  const truncated = value.length > MAX_SHOWN_VALUE_BYTES;
  return {
    dlq: `${dlq}/${partition}/${message.offset}`,
    partition,
    offset: message.offset,
    timestamp: new Date(Number(message.timestamp)).toISOString(),
    key: message.key?.toString() ?? null,
    error: headers[HEADER_DLQ_ERROR],
    source: headers[HEADER_DLQ_SOURCE],
    group: headers[HEADER_DLQ_GROUP],
    packIndex: headers[HEADER_PACK_INDEX] === undefined ? undefined : Number(headers[HEADER_PACK_INDEX]),
    replayedFrom: headers[HEADER_REPLAYED_FROM],
    bytes: value.length,
    ...shownValue(value),
    ...(truncated ? { truncated } : {}),
  };
}

function shownValue(value: Buffer): { value: unknown } | { valueText: string } | { valueBase64: string } {
  const shown = value.subarray(0, MAX_SHOWN_VALUE_BYTES);
  const text = value.toString('utf8');
  try {
    const parsed: unknown = JSON.parse(text);
    return shown.length === value.length ? { value: parsed } : { valueText: shown.toString('utf8') };
  } catch {
    return { valueBase64: shown.toString('base64') };
  }
}

/** The topic a DLQ record came from: the topic part of `parley-source`, else the DLQ's source. */
function sourceOf(headers: Record<string, string>, fallback: string): { topic: string } {
  const parts = headers[HEADER_DLQ_SOURCE]?.split('/') ?? [];
  return { topic: parts.length >= 3 ? parts.slice(0, -2).join('/') : fallback };
}

/**
 * A record's headers as text, the first value of a repeated one. A header without a value (null:
 * another client than kafkajs can write one) is left out: a throw here stopped a list, and every
 * replay, at that record.
 */
export function headerStrings(headers: IHeaders | undefined): Record<string, string> {
  const strings: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    const first: unknown = Array.isArray(value) ? value[0] : value;
    if (first !== undefined && first !== null) strings[name] = String(first);
  }
  return strings;
}

/** Each partition's first and next offset now. */
async function partitionEnds(
  admin: Admin,
  topic: string,
): Promise<Map<number, { low: bigint; high: bigint }>> {
  if (!(await admin.listTopics()).includes(topic)) throw new DlqToolError(`topic ${topic} does not exist`);
  const offsets = await admin.fetchTopicOffsets(topic);
  return new Map(offsets.map((o) => [o.partition, { low: BigInt(o.low), high: BigInt(o.high) }]));
}

async function committedOffsets(admin: Admin, groupId: string, topic: string): Promise<Map<number, bigint>> {
  const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] });
  const committed = (offsets?.partitions ?? []).filter((p) => Number(p.offset) >= 0);
  return new Map(committed.map((p) => [p.partition, BigInt(p.offset)]));
}

/**
 * A partition with records to replay and no position in the replay group: either no replay ran, or
 * Kafka forgot it (an idle group's offsets go after `offsets.retention.minutes`, 7 days by default,
 * while a DLQ keeps 30), and starting at its first record would send again what that replay sent.
 */
function refuseIfForgotten(
  dlq: string,
  group: string,
  committed: Map<number, bigint>,
  start: Map<number, bigint>,
  end: Map<number, bigint>,
): void {
  const unknown = [...start].filter(
    ([partition, from]) => !committed.has(partition) && from < end.get(partition)!,
  );
  if (unknown.length > 0)
    throw new DlqToolError(
      `no replay of ${dlq} is on record (group ${group} has no position on partition ${unknown.map(([p]) => p).join(', ')}): ` +
        "none ran, or Kafka forgot it (it drops an idle group's offsets after offsets.retention.minutes, 7 days by default, " +
        'and a DLQ keeps 30), so what an earlier replay sent would be sent again. Say where to start: --from-beginning, ' +
        "or --offsets FROM- (an earlier replay's summary gave its next offset; dlq list shows each record's offset and time)",
    );
}

/** Two replays of one DLQ would share its partition, and the second would start where the first began. */
async function refuseIfRunning(admin: Admin, groupId: string): Promise<void> {
  const { groups } = await admin.describeGroups([groupId]);
  const members = groups[0]?.members.length ?? 0;
  if (members > 0)
    throw new DlqToolError(`a replay of this DLQ is running (group ${groupId} has ${members} member(s))`);
}

async function withAdmin<T>(kafka: Kafka, use: (admin: Admin) => Promise<T>): Promise<T> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    return await use(admin);
  } finally {
    await admin.disconnect();
  }
}

async function connectedProducer(kafka: Kafka): Promise<Producer> {
  const producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: false,
  });
  await producer.connect();
  return producer;
}

interface RangeRead {
  topic: string;
  groupId: string;
  /** Per partition, the first offset to read and the one to stop before. */
  start: Map<number, bigint>;
  end: Map<number, bigint>;
  /** Handles one record, in order; 'stop' ends the whole read. */
  handle(partition: number, message: KafkaMessage, consumer: Consumer): Promise<'next' | 'stop'>;
}

/**
 * Reads each partition of `topic` from `start` up to `end` as member of `groupId`, committing
 * nothing itself, and resolves once every partition is read (or `handle` says stop). Each join of
 * the group (the first, or after kafkajs restarted the consumer) seeks to the next record to handle.
 */
async function readRange(kafka: Kafka, { topic, groupId, start, end, handle }: RangeRead): Promise<void> {
  const next = new Map(start);
  const pending = new Set(
    [...next].filter(([partition, from]) => from < end.get(partition)!).map(([p]) => p),
  );
  if (pending.size === 0) return;
  const consumer = kafka.consumer({ groupId, allowAutoTopicCreation: false, maxWaitTimeInMs: 500 });
  let finish!: () => void;
  let fail!: (err: unknown) => void;
  const done = new Promise<void>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  const listeners = [
    consumer.on(consumer.events.GROUP_JOIN, () => {
      for (const [partition, offset] of next) consumer.seek({ topic, partition, offset: String(offset) });
    }),
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      if (!payload.restart) fail(payload.error);
    }),
  ];
  const handleBatch = async ({ batch, isRunning, isStale, heartbeat, resolveOffset }: EachBatchPayload) => {
    const { partition } = batch;
    for (const message of batch.messages) {
      if (!isRunning() || isStale()) return;
      if (!pending.has(partition)) break;
      const offset = BigInt(message.offset);
      if (offset < next.get(partition)!) continue;
      if (offset >= end.get(partition)!) {
        pending.delete(partition);
        break;
      }
      let verdict;
      try {
        verdict = await handle(partition, message, consumer);
      } catch (err) {
        // Not retried by kafkajs: the run stops, and the next one starts at this record.
        pending.clear();
        return fail(err);
      }
      if (verdict === 'stop') {
        pending.clear();
        break;
      }
      next.set(partition, offset + 1n);
      // kafkajs fetches from the last resolved offset (the seek's, unless resolved): unresolved, each
      // fetch returned the same first MiB again, and a DLQ larger than one fetch was never finished.
      // Nothing is committed by it (autoCommit is off).
      resolveOffset(message.offset);
      if (offset + 1n >= end.get(partition)!) pending.delete(partition);
      await heartbeat();
    }
    if (pending.size === 0) finish();
  };
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await consumer.run({ autoCommit: false, eachBatchAutoResolve: false, eachBatch: handleBatch });
    await done;
  } finally {
    for (const remove of listeners) remove();
    await consumer.disconnect();
  }
}

const max = (...values: bigint[]) => values.reduce((a, b) => (a > b ? a : b));
const min = (...values: bigint[]) => values.reduce((a, b) => (a < b ? a : b));
