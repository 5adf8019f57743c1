/**
 * The DLQ tool against the embedded Kafka-protocol broker with real kafkajs: records parked by a
 * real consumer whose handler keeps failing (or written with `dlqRecords`), then listed and
 * replayed to a consumer whose cause was fixed.
 */
import { Type } from '@sinclair/typebox';
import { Kafka, KafkaMessage, logLevel, Partitioners, Producer } from 'kafkajs';
import pino from 'pino';
import { dlqTopic, TOPICS, TopicSpec } from '@parley/contracts';
import {
  Broker,
  createKafkaBus,
  EncodedRecord,
  Envelope,
  EventBus,
  provisionTopics,
  startBroker,
  TopicCodec,
} from '@parley/kafka';
import { DAY_MS } from '@parley/service-kit';
import { waitFor } from '@parley/test-kit';
import { dlqRecords } from '../../../libs/kafka/src/consumer/dead-letter';
import { DEFAULT_GROUP_OPS_KEEP_DAYS } from '../../../apps/group-ms/src/ops-retention';
import {
  createDlqTool,
  DlqToolDeps,
  DlqToolError,
  HEADER_REPLAYED_FROM,
  headerStrings,
  replayGroupId,
} from '../src/dlq-tool';

const Note = Type.Object({
  kind: Type.Literal('note'),
  v: Type.Literal(1),
  to: Type.String(),
  n: Type.Integer(),
});
type Note = typeof Note.static;
const note = (to: string, n: number): Note => ({ kind: 'note', v: 1, to, n });

let counter = 0;
const noteTopic = (): TopicSpec<Note> => ({
  name: `notes-${++counter}`,
  schema: Note,
  key: (e) => e.to,
  description: 'test',
  partitions: 2,
  retentionMs: DAY_MS,
});

const silent = pino({ level: 'silent' });
let broker: Broker;
let kafka: Kafka;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  broker = await startBroker({ logger: silent });
  kafka = new Kafka({
    clientId: 'dlq-test',
    brokers: [broker.address],
    logLevel: logLevel.NOTHING,
    retry: { initialRetryTime: 50, retries: 10 },
  });
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
afterAll(() => broker.stop());

/** The tool, its output lines parsed. */
function tool(deps: Partial<DlqToolDeps> = {}) {
  const lines: Record<string, unknown>[] = [];
  const dlq = createDlqTool({ kafka, out: (line) => lines.push(JSON.parse(line)), ...deps });
  return { ...dlq, lines, actions: () => lines.filter((l) => 'action' in l) };
}

async function connected<T extends { connect(): Promise<void>; disconnect(): Promise<void> }>(
  client: T,
): Promise<T> {
  await client.connect();
  cleanups.push(() => client.disconnect());
  return client;
}

const rawProducer = () => connected(kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner }));

async function highWatermarks(topic: string): Promise<number[]> {
  const admin = await connected(kafka.admin());
  return (await admin.fetchTopicOffsets(topic))
    .sort((a, b) => a.partition - b.partition)
    .map((o) => Number(o.high));
}
const recordCount = async (topic: string) => (await highWatermarks(topic)).reduce((a, b) => a + b, 0);

/** Every record of `topic`, with its partition, read from the beginning in a group of its own. */
async function readAll(topic: string, count: number): Promise<(KafkaMessage & { partition: number })[]> {
  const consumer = await connected(kafka.consumer({ groupId: `reader-${++counter}`, maxWaitTimeInMs: 100 }));
  const read: (KafkaMessage & { partition: number })[] = [];
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message, partition }) => void read.push({ ...message, partition }),
  });
  await waitFor(() => read.length >= count, 10_000, `${count} records of ${topic}`);
  return read;
}

/**
 * A topic whose consumer (the bus's, retrying each record then parking it) refuses every event
 * until `fix()`, then collects them: the runbook's broken consumer, mended.
 */
async function brokenConsumer(topic: TopicSpec<Note>, refuse: (e: Note) => string = () => 'handler broken') {
  await provisionTopics(kafka, { topics: [topic as TopicSpec<never>] });
  const bus: EventBus = createKafkaBus({
    kafka,
    logger: silent,
    maxAttempts: 1,
    consumer: { heartbeatInterval: 200, maxWaitTimeInMs: 100, sessionTimeout: 3000, rebalanceTimeout: 3000 },
  });
  cleanups.push(() => bus.close());
  let broken = true;
  const received: Envelope<Note>[] = [];
  const subscription = bus.subscribe({
    groupId: `${topic.name}-reader`,
    topic,
    handle: async (batch) => {
      for (const envelope of batch) if (broken) throw new Error(refuse(envelope.event));
      received.push(...batch);
    },
  });
  await subscription.start();
  cleanups.push(() => subscription.stop());
  return {
    bus,
    received,
    fix: () => void (broken = false),
    /** Publishes `events` in one flush (packed per partition) and waits for them all on the DLQ. */
    async park(events: Note[]) {
      const before = await recordCount(dlqTopic(topic.name));
      await bus.publish(topic, events);
      await waitFor(
        async () => (await recordCount(dlqTopic(topic.name))) >= before + events.length,
        15_000,
        'parked',
      );
    },
  };
}

/** Writes `events` to the DLQ of `topic` (provisioned) as a consumer parks them, one by one. */
async function parkWritten(topic: TopicSpec<Note>, events: Note[]): Promise<void> {
  await provisionTopics(kafka, { topics: [topic as TopicSpec<never>] });
  const records = dlqRecords(
    events.map((event, n) => ({
      value: Buffer.from(JSON.stringify(event)),
      key: event.to,
      partition: 0,
      offset: String(n),
    })),
    new Error('handler broken'),
    { topic: topic.name, groupId: `${topic.name}-reader` },
  );
  await (await rawProducer()).send({ topic: dlqTopic(topic.name), messages: records });
}

describe('list', () => {
  it('prints every parked record with its headers, from the beginning, committing nothing', async () => {
    const topic = noteTopic();
    const consumer = await brokenConsumer(topic);
    // One flush of two events for one user: one packed record, each event parked with its place.
    await consumer.park([note('ann', 1), note('ann', 2)]);
    const producer = await rawProducer();
    await producer.send({ topic: topic.name, messages: [{ key: 'bob', value: Buffer.from([0xff, 0x00]) }] });
    await waitFor(
      async () => (await recordCount(dlqTopic(topic.name))) === 3,
      15_000,
      'the undecodable record parked',
    );

    const listing = tool();
    expect(await listing.list({ topic: topic.name })).toBe(3);
    const [first, second, raw] = listing.lines;
    expect(first).toMatchObject({
      dlq: `${topic.name}.dlq/0/0`,
      key: 'ann',
      error: 'handler broken',
      group: `${topic.name}-reader`,
      packIndex: 0,
      value: note('ann', 1),
    });
    expect(first.source).toMatch(new RegExp(`^${topic.name}/\\d/0$`));
    expect(second).toMatchObject({ key: 'ann', packIndex: 1, value: note('ann', 2), source: first.source });
    expect(raw).toMatchObject({
      key: 'bob',
      valueBase64: Buffer.from([0xff, 0x00]).toString('base64'),
      bytes: 2,
    });
    expect(raw.error).toMatch(/not JSON/);
    expect(raw.packIndex).toBeUndefined();
    expect(Date.now() - Date.parse(String(first.timestamp))).toBeLessThan(60_000);

    // Nothing committed: a second listing reads the same from the beginning; --max stops early.
    const again = tool();
    expect(await again.list({ topic: `${topic.name}.dlq`, max: 2 })).toBe(2);
    expect(again.lines.map((l) => l.dlq)).toEqual([first.dlq, second.dlq]);
    const admin = await connected(kafka.admin());
    const listers = (await admin.listGroups()).groups.filter((g) => g.groupId.startsWith('parley-dlq-list-'));
    expect(listers.length).toBeGreaterThanOrEqual(2);
    for (const { groupId } of listers) {
      const [committed] = await admin.fetchOffsets({ groupId, topics: [dlqTopic(topic.name)] });
      expect(committed.partitions.map((p) => p.offset)).toEqual(['-1']);
    }
  });

  it('shows a large value cut short', async () => {
    const topic = noteTopic();
    await provisionTopics(kafka, { topics: [topic as TopicSpec<never>] });
    const big = { kind: 'note', v: 1, to: 'ann', n: 1, pad: 'x'.repeat(10_000) };
    const records = dlqRecords(
      [{ value: Buffer.from(JSON.stringify(big)), key: 'ann', partition: 0, offset: '7' }],
      new Error('too big'),
      { topic: topic.name, groupId: 'g' },
    );
    await (await rawProducer()).send({ topic: dlqTopic(topic.name), messages: records });
    const listing = tool();
    await listing.list({ topic: topic.name });
    const [line] = listing.lines;
    expect(line).toMatchObject({ truncated: true, bytes: JSON.stringify(big).length });
    expect(String(line.valueText)).toHaveLength(4096);
  });

  it('reads a DLQ larger than one fetch (a MiB a partition) to its end, listing and replaying', async () => {
    const topic = noteTopic();
    await provisionTopics(kafka, { topics: [topic as TopicSpec<never>] });
    const count = 160; // 10 KB each: 1.6 MB on the DLQ's one partition
    const records = dlqRecords(
      Array.from({ length: count }, (_, n) => ({
        value: Buffer.from(JSON.stringify({ ...note('ann', n), pad: 'x'.repeat(10_000) })),
        key: 'ann',
        partition: 0,
        offset: String(n),
      })),
      new Error('handler broken'),
      { topic: topic.name, groupId: 'g' },
    );
    const producer = await rawProducer();
    for (let i = 0; i < count; i += 40)
      await producer.send({ topic: dlqTopic(topic.name), messages: records.slice(i, i + 40) });

    expect(await tool().list({ topic: topic.name })).toBe(count);
    expect(await tool().replay({ topic: topic.name, fromBeginning: true })).toMatchObject({
      replayed: count,
      next: { 0: '160' },
    });
  }, 30_000);
});

describe('replay', () => {
  it('sends each parked event back to its topic, same key and value, and the mended consumer gets it', async () => {
    const topic = noteTopic();
    const consumer = await brokenConsumer(topic);
    const events = [note('ann', 1), note('ann', 2), note('bob', 3)];
    await consumer.park(events);
    const parked = await readAll(dlqTopic(topic.name), 3);
    consumer.fix();

    const replay = tool();
    const summary = await replay.replay({ topic: topic.name, fromBeginning: true });
    expect(summary).toMatchObject({
      replayed: 3,
      skipped: 0,
      refused: 0,
      interrupted: false,
      next: { 0: '3' },
    });
    expect(replay.actions().map((l) => l.action)).toEqual(['replayed', 'replayed', 'replayed']);
    await waitFor(() => consumer.received.length === 3, 10_000, 'the replayed events');
    expect(consumer.received.map((e) => [e.key, e.event]).sort()).toEqual(
      events.map((e) => [e.to, e]).sort(),
    );

    // On the source topic: the DLQ record's key and value, where it came from in a header, and
    // (same key) on the partition the event was first written to.
    const source = await readAll(topic.name, await recordCount(topic.name));
    const replayed = source.filter((m) => m.headers?.[HEADER_REPLAYED_FROM]);
    expect(replayed).toHaveLength(3);
    const codec = new TopicCodec(topic);
    for (const record of parked) {
      const from = `${topic.name}.dlq/0/${record.offset}`;
      const copy = replayed.find((m) => String(m.headers![HEADER_REPLAYED_FROM]) === from)!;
      expect([copy.key?.toString(), copy.value?.toString()]).toEqual([
        record.key?.toString(),
        record.value?.toString(),
      ]);
      expect(String(record.headers!['parley-source'])).toMatch(
        new RegExp(`^${topic.name}/${copy.partition}/`),
      );
      expect(codec.decodeRecord(copy.value, {})).toEqual([
        { ok: true, event: JSON.parse(String(copy.value)) },
      ]);
    }
  });

  it('--dry-run produces and commits nothing; --error-contains and --offsets select', async () => {
    const topic = noteTopic();
    const consumer = await brokenConsumer(topic, (e) => (e.n === 2 ? 'row 2 is bad' : `timeout ${e.n}`));
    await consumer.park([note('ann', 1), note('bob', 2), note('cy', 3)]);
    consumer.fix();
    const sourceBefore = await recordCount(topic.name);

    const dry = tool();
    expect(await dry.replay({ topic: topic.name, dryRun: true, fromBeginning: true })).toMatchObject({
      replayed: 3,
      dryRun: true,
    });
    expect(dry.actions().map((l) => l.action)).toEqual(['would replay', 'would replay', 'would replay']);
    expect(await recordCount(topic.name)).toBe(sourceBefore);
    const admin = await connected(kafka.admin());
    const [offsets] = await admin.fetchOffsets({
      groupId: replayGroupId(`${topic.name}.dlq`),
      topics: [`${topic.name}.dlq`],
    });
    expect(offsets.partitions.map((p) => p.offset)).toEqual(['-1']);

    // The DLQ holds the three in the order the records were tried alone; select by error.
    const filtered = tool();
    expect(
      await filtered.replay({ topic: topic.name, errorContains: 'row 2', fromBeginning: true }),
    ).toMatchObject({
      replayed: 1,
      skipped: 2,
    });
    const replayedOne = filtered.actions().filter((l) => l.action === 'replayed');
    expect(replayedOne).toEqual([expect.objectContaining({ key: 'bob' })]);
    await waitFor(() => consumer.received.length === 1);
    expect(consumer.received[0].event).toEqual(note('bob', 2));

    // Passed over by the filter: only --from-beginning reaches them again, here one by its offset.
    expect(await tool().replay({ topic: topic.name })).toMatchObject({ replayed: 0, skipped: 0 });
    const [ann] = (await readAll(dlqTopic(topic.name), 3)).filter((m) => m.key?.toString() === 'ann');
    const byOffset = tool();
    const range = { from: BigInt(ann.offset), to: BigInt(ann.offset) };
    expect(await byOffset.replay({ topic: topic.name, fromBeginning: true, offsets: range })).toMatchObject({
      replayed: 1,
      skipped: 0,
    });
    await waitFor(() => consumer.received.length === 2);
    expect(consumer.received[1].event).toEqual(note('ann', 1));
  });

  it('an interrupted or failed replay resumes after the last record Kafka took; a finished one sends nothing again', async () => {
    const topic = noteTopic();
    const consumer = await brokenConsumer(topic);
    await consumer.park([1, 2, 3, 4, 5].map((n) => note(`u${n}`, n)));
    consumer.fix();

    // Interrupted (SIGINT) once the first record is replayed.
    const interrupt = new AbortController();
    const first = tool({
      out: (line) => {
        if (JSON.parse(line).action === 'replayed') interrupt.abort();
      },
    });
    expect(
      await first.replay({ topic: topic.name, fromBeginning: true, signal: interrupt.signal }),
    ).toMatchObject({
      replayed: 1,
      interrupted: true,
      next: { 0: '1' },
    });

    // The next run's second produce fails: the record it was sending is not passed.
    let sends = 0;
    const failing = Object.create(kafka) as Kafka;
    failing.producer = (config) => {
      const producer: Producer = kafka.producer(config);
      const send = producer.send.bind(producer);
      producer.send = async (record) => {
        if (++sends === 2) throw new Error('broker said no');
        return send(record);
      };
      return producer;
    };
    const second = tool({ kafka: failing });
    await expect(second.replay({ topic: topic.name })).rejects.toThrow('broker said no');
    expect(second.actions().map((l) => l.dlq)).toEqual([`${topic.name}.dlq/0/1`]);

    const third = tool();
    expect(await third.replay({ topic: topic.name })).toMatchObject({ replayed: 3, next: { 0: '5' } });
    expect(third.actions().map((l) => l.dlq)).toEqual([2, 3, 4].map((o) => `${topic.name}.dlq/0/${o}`));
    expect(await tool().replay({ topic: topic.name })).toMatchObject({ replayed: 0, next: { 0: '5' } });

    await waitFor(() => consumer.received.length === 5);
    expect(consumer.received.map((e) => e.event.n).sort()).toEqual([1, 2, 3, 4, 5]);
  });

  it('--from-beginning over records an earlier replay sent leaves its position: the next replay sends nothing again', async () => {
    const topic = noteTopic();
    await parkWritten(topic, [note('ann', 1), note('bob', 2), note('cy', 3)]);
    expect(await tool().replay({ topic: topic.name, fromBeginning: true })).toMatchObject({
      replayed: 3,
      next: { 0: '3' },
    });

    // The first one again, chosen by its offset.
    const again = tool();
    expect(
      await again.replay({ topic: topic.name, fromBeginning: true, offsets: { from: 0n, to: 0n } }),
    ).toMatchObject({ replayed: 1, next: { 0: '1' } });
    const sourceAfter = await recordCount(topic.name);

    const next = tool();
    expect(await next.replay({ topic: topic.name })).toMatchObject({ replayed: 0, next: { 0: '3' } });
    expect(next.actions()).toEqual([]);
    expect(await recordCount(topic.name)).toBe(sourceAfter);
  });

  it('refuses a record whose topic does not exist (dry runs too) and replays the rest, rather than fail there on every run', async () => {
    const topic = noteTopic();
    await parkWritten(topic, [note('ann', 1)]);
    const gone: TopicSpec<Note> = { ...noteTopic(), partitions: 1 };
    const [orphan] = dlqRecords(
      [{ value: Buffer.from(JSON.stringify(note('bob', 2))), key: 'bob', partition: 0, offset: '9' }],
      new Error('handler broken'),
      { topic: gone.name, groupId: 'g' },
    );
    const later = dlqRecords(
      [{ value: Buffer.from(JSON.stringify(note('cy', 3))), key: 'cy', partition: 0, offset: '1' }],
      new Error('handler broken'),
      { topic: topic.name, groupId: 'g' },
    );
    await (await rawProducer()).send({ topic: dlqTopic(topic.name), messages: [orphan, ...later] });

    const dry = tool();
    expect(await dry.replay({ topic: topic.name, dryRun: true, fromBeginning: true })).toMatchObject({
      replayed: 2,
      refused: 1,
    });
    expect(dry.actions().map((l) => l.action)).toEqual(['would replay', 'refused', 'would replay']);

    const replay = tool();
    expect(await replay.replay({ topic: topic.name, fromBeginning: true })).toMatchObject({
      replayed: 2,
      refused: 1,
      next: { 0: '3' },
    });
    const refusal = replay.actions()[1];
    expect(refusal).toMatchObject({ action: 'refused', dlq: `${topic.name}.dlq/0/1` });
    expect(refusal.why).toMatch(
      new RegExp(`topic ${gone.name} does not exist.*--from-beginning --offsets 1$`),
    );

    // Once the topic is there, the command its line names sends it.
    await provisionTopics(kafka, { topics: [gone as TopicSpec<never>] });
    expect(
      await tool().replay({ topic: topic.name, fromBeginning: true, offsets: { from: 1n, to: 1n } }),
    ).toMatchObject({ replayed: 1, refused: 0 });
    const [sent] = await readAll(gone.name, 1);
    expect(JSON.parse(String(sent.value))).toEqual(note('bob', 2));
  });

  it('refuses to guess where to start when Kafka has forgotten the last replay (offsets retention), rather than send it all again', async () => {
    // Kafka drops an idle group's offsets after offsets.retention.minutes (7 days by default), while
    // a DLQ keeps its records 30 days: here a broker that forgets after a second.
    const forgetful = await startBroker({
      logger: silent,
      offsetsRetentionMs: 1000,
      retentionCheckIntervalMs: 50,
    });
    cleanups.push(() => forgetful.stop());
    const client = new Kafka({
      clientId: 'dlq-test',
      brokers: [forgetful.address],
      logLevel: logLevel.NOTHING,
    });
    const topic = noteTopic();
    await provisionTopics(client, { topics: [topic as TopicSpec<never>] });
    const producer = await connected(client.producer({ createPartitioner: Partitioners.DefaultPartitioner }));
    const park = (events: Note[], first: number) =>
      producer.send({
        topic: dlqTopic(topic.name),
        messages: dlqRecords(
          events.map((event, n) => ({
            value: Buffer.from(JSON.stringify(event)),
            key: event.to,
            partition: 0,
            offset: String(first + n),
          })),
          new Error('handler broken'),
          { topic: topic.name, groupId: `${topic.name}-reader` },
        ),
      });
    await park([note('ann', 1), note('bob', 2)], 0);

    // A first replay names its start; the next one resumes.
    const first = tool({ kafka: client });
    await expect(first.replay({ topic: topic.name })).rejects.toThrow(
      /no replay of .* is on record.*--from-beginning.*--offsets FROM-/,
    );
    await expect(first.replay({ topic: topic.name, dryRun: true })).rejects.toThrow(DlqToolError);
    expect(await first.replay({ topic: topic.name, fromBeginning: true })).toMatchObject({
      replayed: 2,
      next: { 0: '2' },
    });

    // The group's offsets expire; a record parked since must not bring the two replayed back.
    const admin = await connected(client.admin());
    const group = replayGroupId(dlqTopic(topic.name));
    await waitFor(
      async () =>
        (await admin.fetchOffsets({ groupId: group, topics: [dlqTopic(topic.name)] }))[0].partitions[0]
          .offset === '-1',
      10_000,
      'the replay group forgotten',
    );
    await park([note('cy', 3)], 2);
    const sourceBefore = (await admin.fetchTopicOffsets(topic.name)).reduce((n, o) => n + Number(o.high), 0);
    const later = tool({ kafka: client });
    await expect(later.replay({ topic: topic.name })).rejects.toThrow(DlqToolError);
    expect(later.actions()).toEqual([]);
    expect((await admin.fetchTopicOffsets(topic.name)).reduce((n, o) => n + Number(o.high), 0)).toBe(
      sourceBefore,
    );
    // Told where to start (the last summary's next), it sends the new one only.
    expect(await later.replay({ topic: topic.name, offsets: { from: 2n } })).toMatchObject({
      replayed: 1,
      next: { 0: '3' },
    });
    expect(await tool({ kafka: client }).replay({ topic: topic.name })).toMatchObject({ replayed: 0 });
  });

  describe('the group topic, whose ops group-ms remembers GROUP_OPS_KEEP_DAYS', () => {
    const keepMs = DEFAULT_GROUP_OPS_KEEP_DAYS * DAY_MS;
    const groupDlq = dlqTopic(TOPICS.group.name);
    const op = {
      kind: 'group-command',
      v: 1,
      from: 'ann',
      sentAt: 1,
      frame: { type: 'group', op: 'add', group: 'g1' },
    };
    const message = {
      kind: 'group-message',
      v: 1,
      from: 'ann',
      sentAt: 1,
      frame: { type: 'message', to: 'g1' },
    };

    beforeAll(async () => {
      await provisionTopics(kafka, { topics: [TOPICS.group as TopicSpec<never>] });
      const parked: EncodedRecord[] = dlqRecords(
        [op, message].map((event, i) => ({
          value: Buffer.from(JSON.stringify(event)),
          key: 'g1',
          partition: 3,
          offset: String(i),
        })),
        new Error('group-ms away'),
        { topic: TOPICS.group.name, groupId: 'group-message-router' },
      );
      const producer = await rawProducer();
      await producer.send({
        topic: groupDlq,
        messages: [...parked, { key: 'g1', value: Buffer.from('not json') }],
      });
      await producer.disconnect();
    });

    it('refuses ops (and what it cannot read) parked longer ago without --force, replays within it', async () => {
      const within = tool({ now: () => Date.now() + keepMs - 3_600_000 });
      expect(
        await within.replay({ topic: TOPICS.group.name, dryRun: true, fromBeginning: true }),
      ).toMatchObject({
        replayed: 3,
        refused: 0,
      });

      const past = tool({ now: () => Date.now() + keepMs + 3_600_000 });
      expect(await past.replay({ topic: groupDlq, fromBeginning: true })).toMatchObject({
        replayed: 1,
        refused: 2,
      });
      expect(past.actions().map((l) => [l.dlq, l.action])).toEqual([
        [`${groupDlq}/0/0`, 'refused'],
        [`${groupDlq}/0/1`, 'replayed'],
        [`${groupDlq}/0/2`, 'refused'],
      ]);
      expect(past.actions()[0].why).toMatch(/GROUP_OPS_KEEP_DAYS.*--from-beginning --offsets 0 --force$/);
      // Passed: a rerun with --force alone sends nothing; the command the refusal names sends it.
      const rerun = tool({ now: () => Date.now() + keepMs + 3_600_000 });
      expect(await rerun.replay({ topic: groupDlq, force: true })).toMatchObject({ replayed: 0 });
      const [replayed] = (await readAll(TOPICS.group.name, 1)).filter(
        (m) => m.headers?.[HEADER_REPLAYED_FROM],
      );
      expect(JSON.parse(String(replayed.value))).toEqual(message);

      const forced = tool({ now: () => Date.now() + keepMs + 3_600_000 });
      expect(
        await forced.replay({
          topic: groupDlq,
          fromBeginning: true,
          offsets: { from: 0n, to: 0n },
          force: true,
        }),
      ).toMatchObject({
        replayed: 1,
        refused: 0,
      });
    });
  });
});

describe('headerStrings', () => {
  it('reads each header as text, the first of a repeated one, and leaves out one without a value', () => {
    // kafkajs decodes a header written without a value (by another client) as null.
    const headers = {
      'parley-error': Buffer.from('boom'),
      'parley-source': [Buffer.from('t/0/1'), Buffer.from('t/0/2')],
      odd: null as unknown as Buffer,
      gone: undefined,
    };
    expect(headerStrings(headers)).toEqual({ 'parley-error': 'boom', 'parley-source': 't/0/1' });
  });
});
