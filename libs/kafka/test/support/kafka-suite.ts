import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { Type, Static } from '@sinclair/typebox';
import {
  Admin,
  AssignerProtocol,
  Consumer,
  Kafka,
  logLevel,
  PartitionAssigner,
  PartitionAssigners,
  Partitioners,
  Producer,
} from 'kafkajs';
import pino from 'pino';
import { Registry } from 'prom-client';
import { dlqTopic, TopicSpec } from '@parley/contracts';
import {
  createKafkaBus,
  Envelope,
  EventBus,
  isTransient,
  provisionTopics,
  sleep,
  TransientError,
} from '../../src';
import { busContract, noteTopic } from './bus-contract';
import { waitFor } from '@parley/test-kit';
import { offsetCommitError, offsetCommitV2, RawClient } from './raw-client';
import type { KafkaTarget, KafkaTargetKind } from './targets';

// Builders from kafkajs's own protocol code, to send hand-made requests in the duplicate-batch test.
const ProduceV3 = require('kafkajs/src/protocol/requests/produce/v3/request');
const Long = require('kafkajs/src/utils/long');

/** Consumer settings that keep group rebalances in the tens of milliseconds. */
export const FAST_CONSUMER = {
  heartbeatInterval: 200,
  maxWaitTimeInMs: 250,
  sessionTimeout: 3000,
  rebalanceTimeout: 3000,
};

export const Ping = Type.Object({
  kind: Type.Literal('test.ping'),
  v: Type.Literal(1),
  id: Type.String(),
  n: Type.Integer(),
});
export type Ping = Static<typeof Ping>;
export const pingTopic = (name: string, partitions = 1): TopicSpec<Ping> => ({
  name,
  schema: Ping,
  key: (e) => e.id,
  description: 'test topic',
  partitions,
  retentionMs: 24 * 3600 * 1000,
});
const ping = (n: number): Ping => ({ kind: 'test.ping', v: 1, id: `id-${n}`, n });

let counter = 0;
const unique = (prefix: string) => `${prefix}-${process.pid}-${Date.now().toString(36)}-${++counter}`;

/** Records every consumer `k` creates, so a test can watch a bus's consumer through kafkajs's events. */
function watchConsumers(k: Kafka): Consumer[] {
  const created: Consumer[] = [];
  const create = k.consumer.bind(k);
  k.consumer = (config) => {
    const c = create(config);
    created.push(c);
    return c;
  };
  return created;
}

/** A partition assignor kafkajs's own consumers do not offer: a group can share no protocol with it. */
function assignorNamed(name: string) {
  return () => ({
    name,
    version: 1,
    async assign({ members }: { members: { memberId: string }[] }) {
      return members.map(({ memberId }) => ({
        memberId,
        memberAssignment: AssignerProtocol.MemberAssignment.encode({
          version: 1,
          assignment: {},
          userData: Buffer.alloc(0),
        }),
      }));
    },
    protocol({ topics }: { topics: string[] }) {
      return {
        name,
        metadata: AssignerProtocol.MemberMetadata.encode({ version: 1, topics, userData: Buffer.alloc(0) }),
      };
    },
  });
}

/**
 * The libs/kafka suite: plain kafkajs and the EventBus adapter against one Kafka target. The same
 * function runs against the embedded broker and, when a Docker engine is present, a real Kafka.
 */
export function kafkaSuite(label: string, kind: KafkaTargetKind): void {
  /** A test that needs `target.restart`: reported as skipped where the target cannot restart. */
  const restartTest = kind.canRestart ? test : test.skip;
  describe(label, () => {
    let target: KafkaTarget;
    const cleanups: (() => Promise<unknown>)[] = [];
    const kafka = (clientId = 'suite') =>
      new Kafka({
        clientId,
        brokers: target.brokers,
        logLevel: logLevel.NOTHING,
        retry: { initialRetryTime: 50, retries: 10 },
      });
    const later = <T extends { disconnect(): Promise<void> }>(client: T): T => {
      cleanups.push(() => client.disconnect().catch(() => undefined));
      return client;
    };
    const admin = async (): Promise<Admin> => {
      const a = later(kafka('suite-admin').admin());
      await a.connect();
      return a;
    };
    const producer = async (k = kafka(), idempotent = false): Promise<Producer> => {
      const p = later(
        k.producer({
          createPartitioner: Partitioners.DefaultPartitioner,
          idempotent,
          allowAutoTopicCreation: true,
        }),
      );
      await p.connect();
      return p;
    };
    const consumer = (groupId: string, extra: Partial<typeof FAST_CONSUMER> = {}): Consumer =>
      later(kafka('suite-consumer').consumer({ groupId, ...FAST_CONSUMER, ...extra }));
    const createTopic = async (
      topic: string,
      numPartitions = 1,
      configEntries: { name: string; value: string }[] = [],
    ) => {
      const a = await admin();
      await a.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions, configEntries }] });
      await a.disconnect();
    };
    /** Collects every message of `topic` seen by a fresh group until `count` arrived. */
    const consumeAll = async (topic: string, count: number, groupId = unique('reader')) => {
      const c = consumer(groupId);
      const seen: {
        partition: number;
        offset: string;
        key: string | null;
        value: Buffer | null;
        headers: Record<string, string>;
      }[] = [];
      await c.connect();
      await c.subscribe({ topic, fromBeginning: true });
      await c.run({
        eachMessage: async ({ partition, message }) => {
          const headers: Record<string, string> = {};
          for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
          seen.push({
            partition,
            offset: message.offset,
            key: message.key?.toString() ?? null,
            value: message.value,
            headers,
          });
        },
      });
      await waitFor(() => seen.length >= count, 15_000, `${count} messages on ${topic}`);
      await c.disconnect();
      return seen;
    };

    beforeAll(async () => {
      target = await kind.start();
    }, 180_000);
    afterEach(async () => {
      await Promise.all(cleanups.splice(0).map((c) => c()));
    });
    afterAll(async () => {
      await target?.stop();
    });

    test('keys and headers round-trip', async () => {
      const topic = unique('roundtrip');
      await createTopic(topic, 3);
      const p = await producer();
      const messages = Array.from({ length: 30 }, (_, i) => ({
        key: `key-${i}`,
        value: `value-${i}`,
        headers: { 'trace-id': `t-${i}`, kind: 'test' },
      }));
      await p.send({ topic, acks: -1, messages });
      const seen = await consumeAll(topic, 30);
      expect(seen).toHaveLength(30);
      for (const m of seen) {
        const i = Number(m.key!.slice(4));
        expect(m.value!.toString()).toBe(`value-${i}`);
        expect(m.headers).toEqual({ 'trace-id': `t-${i}`, kind: 'test' });
      }
      // Same key, same partition.
      const byKey = new Map(seen.map((m) => [m.key, m.partition]));
      await p.send({ topic, messages: [{ key: 'key-7', value: 'again' }] });
      const again = await consumeAll(topic, 31);
      expect(again.find((m) => m.value!.toString() === 'again')!.partition).toBe(byKey.get('key-7'));
    });

    test('many concurrent producers', async () => {
      const topic = unique('concurrent');
      await createTopic(topic, 4);
      const producers = await Promise.all(Array.from({ length: 10 }, () => producer(kafka('many'))));
      await Promise.all(
        producers.map((p, i) =>
          p.send({
            topic,
            messages: Array.from({ length: 20 }, (_, j) => ({ key: `${i}-${j}`, value: `${i}-${j}` })),
          }),
        ),
      );
      const seen = await consumeAll(topic, 200);
      expect(new Set(seen.map((m) => m.value!.toString())).size).toBe(200);
    });

    test('a two-member group splits partitions and rebalances when a member leaves', async () => {
      const topic = unique('group');
      const groupId = unique('g');
      await createTopic(topic, 4);
      const assignments = new Map<string, number[]>();
      const join = (name: string, c: Consumer) =>
        c.on(c.events.GROUP_JOIN, (e) =>
          assignments.set(name, [...(e.payload.memberAssignment[topic] ?? [])].sort()),
        );
      const a = consumer(groupId);
      const b = consumer(groupId);
      join('a', a);
      join('b', b);
      const received = new Map<string, number>();
      for (const [name, c] of [
        ['a', a],
        ['b', b],
      ] as const) {
        await c.connect();
        await c.subscribe({ topic, fromBeginning: true });
        await c.run({ eachMessage: async () => void received.set(name, (received.get(name) ?? 0) + 1) });
      }
      await waitFor(
        () =>
          (assignments.get('a')?.length ?? 0) + (assignments.get('b')?.length ?? 0) === 4 &&
          assignments.get('a')!.length === 2,
        15_000,
        'a split',
      );
      expect([...assignments.get('a')!, ...assignments.get('b')!].sort()).toEqual([0, 1, 2, 3]);
      const p = await producer();
      await p.send({
        topic,
        messages: Array.from({ length: 40 }, (_, i) => ({ key: `k${i}`, value: String(i) })),
      });
      await waitFor(() => (received.get('a') ?? 0) + (received.get('b') ?? 0) === 40, 15_000, '40 messages');
      expect(received.get('a')).toBeGreaterThan(0);
      expect(received.get('b')).toBeGreaterThan(0);

      await b.disconnect(); // LeaveGroup
      await waitFor(() => assignments.get('a')!.length === 4, 15_000, 'a takes every partition');
      await p.send({
        topic,
        messages: Array.from({ length: 20 }, (_, i) => ({ key: `late${i}`, value: String(i) })),
      });
      await waitFor(() => received.get('a')! + received.get('b')! === 60, 15_000, 'a consumes the rest');
    });

    test('a member that dies is evicted after its session timeout', async () => {
      const topic = unique('dies');
      const groupId = unique('g');
      await createTopic(topic, 2);
      const a = consumer(groupId);
      let assigned: number[] = [];
      a.on(a.events.GROUP_JOIN, (e) => (assigned = e.payload.memberAssignment[topic] ?? []));
      await a.connect();
      await a.subscribe({ topic, fromBeginning: true });
      await a.run({ eachMessage: async () => undefined });
      await waitFor(() => assigned.length === 2, 15_000, 'a owns both partitions');

      // Another member in a child process, killed with SIGKILL: no LeaveGroup, its heartbeats just stop.
      const child = spawn(process.execPath, ['-e', CHILD_CONSUMER], {
        env: {
          ...process.env,
          KAFKAJS: require.resolve('kafkajs'),
          BROKERS: target.brokers.join(','),
          TOPIC: topic,
          GROUP: groupId,
        },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      cleanups.push(async () => void child.kill('SIGKILL'));
      let childOutput = '';
      child.stdout.on('data', (d) => (childOutput += d));
      await waitFor(() => /JOIN \[\d/.test(childOutput), 20_000, 'the child member gets a partition');
      await waitFor(() => assigned.length === 1, 15_000, 'a gives one partition up');
      const killedAt = Date.now();
      child.kill('SIGKILL');
      await waitFor(() => assigned.length === 2, 15_000, 'a owns both partitions again');
      // Evicted by the session timeout (1500 ms in the child), not at once by the closed socket.
      expect(Date.now() - killedAt).toBeGreaterThanOrEqual(1000);
    }, 45_000);

    test("a follower waits in SyncGroup for a leader that assigns slower than the follower's session timeout, and gets its partitions", async () => {
      const topic = unique('slow-leader');
      const groupId = unique('g');
      await createTopic(topic, 2);
      // The leader takes 2 s to assign two members (a busy process, a large group): longer than the
      // follower's 1 s session, well within its own. Kafka keeps a member alive while it waits in
      // SyncGroup; evicted there, the follower rejoins as a new member, which sends the group into
      // another rebalance whose assignment takes as long: the follower never gets its partitions.
      const slowRoundRobin: PartitionAssigner = (config) => {
        const roundRobin = PartitionAssigners.roundRobin(config);
        return {
          ...roundRobin,
          name: 'SlowRoundRobin',
          protocol: (subscription) => ({ ...roundRobin.protocol(subscription), name: 'SlowRoundRobin' }),
          async assign(group) {
            if (group.members.length > 1) await sleep(2000);
            return roundRobin.assign(group);
          },
        };
      };
      const assigned = new Map<string, number[]>();
      const start = async (name: string, sessionTimeout: number) => {
        const c = later(
          kafka('suite-consumer').consumer({
            groupId,
            ...FAST_CONSUMER,
            sessionTimeout,
            rebalanceTimeout: 10_000,
            partitionAssigners: [slowRoundRobin],
          }),
        );
        c.on(c.events.GROUP_JOIN, (e) => assigned.set(name, e.payload.memberAssignment[topic] ?? []));
        await c.connect();
        await c.subscribe({ topic });
        await c.run({ eachMessage: async () => undefined });
      };
      await start('leader', 10_000);
      await waitFor(() => assigned.get('leader')?.length === 2, 15_000, 'the leader owns both partitions');
      await start('follower', 1000);
      await waitFor(
        () => assigned.get('follower')?.length === 1 && assigned.get('leader')?.length === 1,
        15_000,
        'the follower gets a partition',
      );
    }, 45_000);

    test('committed offsets resume', async () => {
      const topic = unique('resume');
      const groupId = unique('g');
      await createTopic(topic, 1);
      const p = await producer();
      await p.send({ topic, messages: Array.from({ length: 5 }, (_, i) => ({ value: `first-${i}` })) });
      const first = await consumeAll(topic, 5, groupId);
      expect(first.map((m) => m.offset)).toEqual(['0', '1', '2', '3', '4']);
      const a = await admin();
      expect((await a.fetchOffsets({ groupId, topics: [topic] }))[0].partitions[0].offset).toBe('5');
      await p.send({ topic, messages: Array.from({ length: 3 }, (_, i) => ({ value: `second-${i}` })) });
      const second = await consumeAll(topic, 3, groupId);
      expect(second.map((m) => m.value!.toString())).toEqual(['second-0', 'second-1', 'second-2']);
      expect(second[0].offset).toBe('5');
    });

    test('a standalone offset commit (generation -1, no member) to a group with members is refused with UNKNOWN_MEMBER_ID; its offsets stay', async () => {
      const topic = unique('standalone');
      const groupId = unique('g');
      await createTopic(topic, 1);
      const p = await producer();
      await p.send({ topic, messages: [{ value: 'a' }, { value: 'b' }] });
      const c = consumer(groupId);
      await c.connect();
      await c.subscribe({ topic, fromBeginning: true });
      await c.run({ eachMessage: async () => undefined });
      const a = await admin();
      const committed = async () =>
        (await a.fetchOffsets({ groupId, topics: [topic] }))[0].partitions[0].offset;
      await waitFor(async () => (await committed()) === '2', 15_000, 'the member commits offset 2');

      // As an offsets tool would reset the group under its running member: Kafka keeps the member's.
      const client = await RawClient.connect(target.brokers[0]);
      cleanups.push(async () => client.close());
      const reset = offsetCommitV2(groupId, -1, '', { topic, partition: 0, offset: 0 });
      expect(offsetCommitError(await client.request(8, 2, reset))).toBe(25); // UNKNOWN_MEMBER_ID
      expect(await committed()).toBe('2');

      // Once the group is empty, a standalone commit is how its offsets are set.
      await c.disconnect();
      expect(offsetCommitError(await client.request(8, 2, reset))).toBe(0);
      expect(await committed()).toBe('0');
    });

    test('a 1 MiB message', async () => {
      const topic = unique('large');
      await createTopic(topic, 1, [{ name: 'max.message.bytes', value: String(4 * 1024 * 1024) }]);
      const big = randomBytes(1024 * 1024);
      const p = await producer();
      await p.send({
        topic,
        messages: [
          { key: 'big', value: big },
          { key: 'small', value: 'after' },
        ],
      });
      const seen = await consumeAll(topic, 2);
      const digest = (b: Buffer) => createHash('sha256').update(b).digest('hex');
      expect(seen[0].value!.length).toBe(big.length);
      expect(digest(seen[0].value!)).toBe(digest(big));
      expect(seen[1].value!.toString()).toBe('after');
    });

    test('garbage bytes on a socket do not disturb other clients', async () => {
      const topic = unique('garbage');
      await createTopic(topic, 1);
      const p = await producer();
      await p.send({ topic, messages: [{ value: 'before' }] });

      const oversized = await RawClient.connect(target.brokers[0]);
      oversized.write(Buffer.from([0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4]));
      const unknownApi = await RawClient.connect(target.brokers[0]);
      const frame = Buffer.alloc(4 + 20, 0xab);
      frame.writeInt32BE(20, 0);
      unknownApi.write(frame);
      const truncated = await RawClient.connect(target.brokers[0]);
      // Metadata v1 whose topic array claims 1000 entries and carries none.
      void truncated.request(3, 1, Buffer.from([0, 0, 0x03, 0xe8])).catch(() => undefined);
      const noise = await RawClient.connect(target.brokers[0]);
      noise.write(randomBytes(4096));

      const closed = async (c: RawClient) => {
        let timer: NodeJS.Timeout | undefined;
        const result = await Promise.race([
          c.closed.then(() => true),
          new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 5000))),
        ]);
        clearTimeout(timer);
        return result;
      };
      expect(await closed(oversized)).toBe(true);
      expect(await closed(unknownApi)).toBe(true);
      expect(await closed(truncated)).toBe(true);
      noise.close();

      // An unsupported ApiVersions version is answered with UNSUPPORTED_VERSION, not a dropped socket.
      const polite = await RawClient.connect(target.brokers[0]);
      const answer = await polite.request(18, 99, Buffer.alloc(0));
      expect(answer.readInt16BE(0)).toBe(35);
      polite.close();

      await p.send({ topic, messages: [{ value: 'after' }] });
      const seen = await consumeAll(topic, 2);
      expect(seen.map((m) => m.value!.toString())).toEqual(['before', 'after']);
    });

    test('the idempotent producer: a retried batch is stored once', async () => {
      const topic = unique('idempotent');
      await createTopic(topic, 1);
      const client = await RawClient.connect(target.brokers[0]);
      cleanups.push(async () => client.close());
      // InitProducerId v0: null transactional id, timeout.
      const init = await client.request(22, 0, Buffer.from([0xff, 0xff, 0, 0, 0x75, 0x30]));
      expect(init.readInt16BE(4)).toBe(0);
      const producerId = init.readBigInt64BE(6);
      const batch = async (firstSequence: number, values: string[]) => {
        const request = ProduceV3({
          acks: -1,
          timeout: 5000,
          producerId: Long.fromString(producerId.toString()),
          producerEpoch: 0,
          topicData: [
            {
              topic,
              partitions: [{ partition: 0, firstSequence, messages: values.map((value) => ({ value })) }],
            },
          ],
        });
        return ((await request.encode()) as { buffer: Buffer }).buffer;
      };
      const baseOffset = (res: Buffer) => {
        // [topics: name, [partition, error, baseOffset, logAppendTime]], throttle
        const nameLen = res.readInt16BE(4);
        const at = 6 + nameLen + 4;
        return { error: res.readInt16BE(at + 4), offset: Number(res.readBigInt64BE(at + 6)) };
      };
      const first = await batch(0, ['a', 'b', 'c']);
      expect(baseOffset(await client.request(0, 3, first))).toEqual({ error: 0, offset: 0 });
      // The same batch again (a retry after a lost answer): acknowledged with the same offset, not stored.
      expect(baseOffset(await client.request(0, 3, first))).toEqual({ error: 0, offset: 0 });
      expect(baseOffset(await client.request(0, 3, await batch(3, ['d'])))).toEqual({ error: 0, offset: 3 });
      const a = await admin();
      const offsets = await a.fetchTopicOffsets(topic);
      expect(offsets[0].high).toBe('4');
      const seen = await consumeAll(topic, 4);
      expect(seen.map((m) => m.value!.toString())).toEqual(['a', 'b', 'c', 'd']);
    });

    test('admin.deleteTopics removes a topic and its records', async () => {
      const gone = unique('deleted');
      const kept = unique('kept');
      await createTopic(gone, 2);
      await createTopic(kept, 1);
      const p = await producer();
      await p.send({ topic: gone, messages: [{ key: 'k', value: 'old' }] });
      await p.disconnect(); // so that no metadata refresh of the producer creates the topic again
      const a = await admin();
      await a.deleteTopics({ topics: [gone] });
      // Real Kafka may list a deleted topic for a moment longer; the embedded broker never does.
      await waitFor(async () => !(await a.listTopics()).includes(gone), 10_000, 'the topic to go');
      expect(await a.listTopics()).toContain(kept);
      // Created again under the same name, it starts empty with its new partition count.
      await createTopic(gone, 1);
      expect(await a.fetchTopicOffsets(gone)).toEqual([
        expect.objectContaining({ partition: 0, low: '0', high: '0' }),
      ]);
    });

    test('admin.describeGroups shows a running group, its member and assignment, then an empty group', async () => {
      const topic = unique('described');
      const groupId = unique('g');
      await createTopic(topic, 2);
      const c = consumer(groupId);
      let memberId = '';
      c.on(c.events.GROUP_JOIN, (e) => (memberId = e.payload.memberId));
      await c.connect();
      await c.subscribe({ topic, fromBeginning: true });
      await c.run({ eachMessage: async () => undefined });
      await waitFor(() => memberId !== '', 15_000, 'the group to form');

      const a = await admin();
      const [group] = (await a.describeGroups([groupId])).groups;
      expect(group).toMatchObject({
        groupId,
        errorCode: 0,
        state: 'Stable',
        protocolType: 'consumer',
        protocol: 'RoundRobinAssigner',
      });
      expect(group.members.map((m) => [m.memberId, m.clientId])).toEqual([[memberId, 'suite-consumer']]);
      const metadata = AssignerProtocol.MemberMetadata.decode(group.members[0].memberMetadata);
      expect(metadata?.topics).toEqual([topic]);
      const assignment = AssignerProtocol.MemberAssignment.decode(group.members[0].memberAssignment);
      expect([...(assignment?.assignment[topic] ?? [])].sort()).toEqual([0, 1]);

      await c.disconnect(); // LeaveGroup: the group outlives its last member, empty
      await waitFor(
        async () => (await a.describeGroups([groupId])).groups[0].state === 'Empty',
        10_000,
        'the group to be empty',
      );
      expect((await a.describeGroups([groupId])).groups[0].members).toEqual([]);
    });

    restartTest(
      'a broker restart keeps data and committed offsets',
      async () => {
        const topic = unique('restart');
        const groupId = unique('g');
        await createTopic(topic, 2);
        const p = await producer();
        await p.send({
          topic,
          messages: Array.from({ length: 10 }, (_, i) => ({ key: `k${i}`, value: `v${i}` })),
        });
        await consumeAll(topic, 10, groupId);
        await p.disconnect();

        await target.restart!();

        const a = await admin();
        const committed = await a.fetchOffsets({ groupId, topics: [topic] });
        const high = await a.fetchTopicOffsets(topic);
        const total = (xs: { offset?: string; high?: string }[], key: 'offset' | 'high') =>
          xs.reduce((n, x) => n + Number(x[key]), 0);
        expect(total(committed[0].partitions, 'offset')).toBe(10);
        expect(total(high, 'high')).toBe(10);
        const p2 = await producer();
        await p2.send({
          topic,
          messages: Array.from({ length: 4 }, (_, i) => ({ key: `n${i}`, value: `new${i}` })),
        });
        const resumed = await consumeAll(topic, 4, groupId);
        expect(resumed.map((m) => m.value!.toString()).sort()).toEqual(['new0', 'new1', 'new2', 'new3']);
        const everything = await consumeAll(topic, 14);
        expect(everything).toHaveLength(14);
      },
      45_000,
    );

    busContract('createKafkaBus', async () => {
      const b = createKafkaBus({
        kafka: kafka('contract'),
        logger: pino({ level: 'silent' }),
        maxAttempts: 3,
        consumer: FAST_CONSUMER,
      });
      return {
        bus: b,
        groupId: () => unique('g'),
        topic: async (partitions) => {
          const spec = noteTopic(unique('contract'), partitions);
          await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
          return spec;
        },
      };
    });

    describe('createKafkaBus', () => {
      const logger = pino({ level: 'silent' });
      /** `packEvents: false` where a test counts offsets: one event per record. */
      const bus = (
        k: Kafka,
        options: { packEvents?: boolean; commitIntervalMs?: number; minCycleMs?: number } = {},
      ): EventBus => {
        const b = createKafkaBus({ kafka: k, logger, maxAttempts: 3, consumer: FAST_CONSUMER, ...options });
        cleanups.push(() => b.close());
        return b;
      };
      /** A group member's bus as client `id` (one event per record), closed after the test. */
      const memberBus = (
        id: string,
        options: Partial<Parameters<typeof createKafkaBus>[0]> = {},
      ): EventBus => {
        const made = createKafkaBus({
          kafka: kafka(id),
          logger,
          consumer: FAST_CONSUMER,
          packEvents: false,
          ...options,
        });
        cleanups.push(() => made.close());
        return made;
      };
      /** A key landing in each of the topic's first `count` partitions, by partition. */
      const keyPerPartition = async (b: EventBus, spec: ReturnType<typeof pingTopic>, count: number) => {
        const partitionOf = (await b.partitioner(spec))!;
        const keyOf = new Map<number, string>();
        for (let n = 0; keyOf.size < count; n++)
          if (!keyOf.has(partitionOf(`k${n}`))) keyOf.set(partitionOf(`k${n}`), `k${n}`);
        return keyOf;
      };
      /** A subscription that keeps every envelope it handles. */
      const receiving = (b: EventBus, spec: ReturnType<typeof pingTopic>) => {
        const got: Envelope<Ping>[] = [];
        const sub = b.subscribe({
          groupId: unique('g'),
          topic: spec,
          handle: async (batch) => void got.push(...batch),
        });
        return { sub, got };
      };
      /** A subscription that records the `n` of every ping it handles. */
      /** A member collecting the pings it handles; `subscribe` makes another in the same group and list. */
      const collecting = (
        b: EventBus,
        spec: ReturnType<typeof pingTopic>,
        mayCommit?: () => Promise<boolean>,
      ) => {
        const handled: number[] = [];
        const groupId = unique('g');
        const subscribe = () =>
          b.subscribe({
            groupId,
            topic: spec,
            handle: async (batch) => void handled.push(...batch.map((e) => e.event.n)),
            mayCommit,
          });
        return { sub: subscribe(), subscribe, handled, groupId };
      };

      test('publish/subscribe round trip with schema validation and trace id', async () => {
        const spec = pingTopic(unique('bus'), 2);
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const b = bus(kafka('bus'));
        const { sub, got } = receiving(b, spec);
        await sub.start();
        await b.publish(spec, [ping(1), ping(2), ping(3)], { traceId: 'trace-1' });
        await waitFor(() => got.length === 3, 15_000, 'three events');
        expect(got.map((e) => e.event.n).sort()).toEqual([1, 2, 3]);
        expect(got.every((e) => e.traceId === 'trace-1' && e.key === e.event.id)).toBe(true);
        await b.ping();
      });

      test('counts what a per-process group handles under its metricsGroup: one series across restarts', async () => {
        const spec = pingTopic(unique('labels'), 1);
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const metrics = new Registry();
        const b = createKafkaBus({ kafka: kafka('bus'), logger, consumer: FAST_CONSUMER, metrics });
        cleanups.push(() => b.close());
        let handled = 0;
        const sub = b.subscribe({
          groupId: unique('cache'),
          metricsGroup: 'cache',
          topic: spec,
          handle: async (batch) => void (handled += batch.length),
        });
        await sub.start();
        await b.publish(spec, [ping(1), ping(2)]);
        await waitFor(() => handled === 2, 15_000, 'two events handled');
        const consumed = (await metrics.getSingleMetric('parley_kafka_consumed_total')!.get()).values;
        expect(consumed).toEqual([{ value: 2, labels: { topic: spec.name, group: 'cache' } }]);
      });

      test('events published together travel as one record per partition, in order, each under its own key', async () => {
        const spec = pingTopic(unique('pack'), 3);
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const b = bus(kafka('bus'));
        const events = Array.from({ length: 60 }, (_, i) => ping(i % 6)).map((e, i) => ({ ...e, n: i }));
        await b.publish(spec, events);

        const written = await (await admin()).fetchTopicOffsets(spec.name);
        const recordCount = written.reduce((sum, p) => sum + Number(p.high), 0);
        expect(recordCount).toBe(written.filter((p) => p.high !== '0').length); // one record per partition used
        const records = await consumeAll(spec.name, recordCount);
        expect(records.map((r) => Number(r.headers['parley-pack'] ?? 1)).reduce((sum, c) => sum + c, 0)).toBe(
          60,
        );
        expect(records.some((r) => r.headers['parley-pack'] !== undefined)).toBe(true);

        const { sub, got } = receiving(b, spec);
        await sub.start();
        await waitFor(() => got.length === 60, 15_000, 'every event');
        expect(got.every((e) => e.key === e.event.id)).toBe(true);
        for (let k = 0; k < 6; k++) {
          const ofKey = got.filter((e) => e.event.id === `id-${k}`);
          expect(ofKey.map((e) => e.event.n)).toEqual(
            events.filter((e) => e.id === `id-${k}`).map((e) => e.n),
          );
          expect(new Set(ofKey.map((e) => e.partition)).size).toBe(1);
        }
      });

      test('a key lands on the same partition packed or not', async () => {
        const spec = pingTopic(unique('partition'), 4);
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const events = Array.from({ length: 16 }, (_, i) => ping(i));
        await bus(kafka('bus'), { packEvents: false }).publish(spec, events);
        await bus(kafka('bus')).publish(spec, events);
        const records = await consumeAll(spec.name, 16 + 4);
        const unpacked = records.filter((r) => r.headers['parley-pack'] === undefined);
        expect(unpacked).toHaveLength(16);
        const partitionOf = new Map(unpacked.map((r) => [r.key, r.partition]));
        for (const pack of records.filter((r) => r.headers['parley-pack'] !== undefined)) {
          const ids = (JSON.parse(pack.value!.toString()) as Ping[]).map((e) => e.id);
          for (const id of ids) expect(partitionOf.get(id)).toBe(pack.partition);
        }
      });

      test.each([true, false])(
        'a publish past message.max.bytes for one partition goes out in several requests, in order (packed: %s)',
        async (packEvents) => {
          const spec = pingTopic(unique('burst'));
          await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] }); // Kafka's default limit, 1 MiB
          const b = bus(kafka('bus'), { packEvents });
          const pad = 'x'.repeat(60 * 1024);
          const events = Array.from({ length: 40 }, (_, n) => ({ ...ping(n), id: 'one-key', pad })); // 2.4 MB
          await b.publish(spec, events);
          const { sub, handled } = collecting(b, spec);
          await sub.start();
          await waitFor(() => handled.length >= 40, 15_000, 'every event');
          expect(handled).toEqual(events.map((e) => e.n));
        },
      );

      test('thousands of publishes queued in one turn go out over several requests, in order', async () => {
        const spec = pingTopic(unique('backlog'));
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const b = bus(kafka('bus'));
        const count = 5000; // requests of at most 2,000 records: the queue is read across three
        await Promise.all(
          Array.from({ length: count }, (_, n) => b.publish(spec, [{ ...ping(n), id: 'one-key' }])),
        );
        const { sub, handled } = collecting(b, spec);
        await sub.start();
        await waitFor(() => handled.length >= count, 20_000, 'every event');
        expect(handled).toEqual(Array.from({ length: count }, (_, n) => n));
      });

      test('a refused request fails what was queued behind it, as transient, so nothing overtakes it', async () => {
        const spec = pingTopic(unique('refused'));
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const b = bus(kafka('bus'));
        await b.publish(spec, [ping(0)]);
        const tooLarge = { ...ping(1), pad: 'x'.repeat(1100 * 1024) };
        const outcomes = await Promise.allSettled([b.publish(spec, [tooLarge]), b.publish(spec, [ping(2)])]);
        expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected']);
        const [refused, behind] = outcomes.map((o) => (o as PromiseRejectedResult).reason);
        expect(isTransient(refused)).toBe(false); // the record itself is at fault: parked if a consumer's
        expect(isTransient(behind)).toBe(true); // not at fault: its publisher retries it
        await b.publish(spec, [ping(3)]);
        const { sub, handled } = collecting(b, spec);
        await sub.start();
        await waitFor(() => handled.length >= 2, 15_000, 'the accepted events');
        expect(handled).toEqual([0, 3]);
      });

      test.each([true, false])(
        'a request refused for one partition does not make a later publish to another vanish (packed: %s)',
        async (packEvents) => {
          const ok = pingTopic(unique('ok'));
          const small = pingTopic(unique('small'));
          await provisionTopics(kafka(), { topics: [ok as TopicSpec<never>] });
          const a = await admin();
          await a.createTopics({
            topics: [{ topic: small.name, configEntries: [{ name: 'max.message.bytes', value: '1024' }] }],
          });
          const b = bus(kafka('bus'), { packEvents });
          await b.publish(ok, [ping(0)]);
          // One turn, one produce request: `ok` is written, `small` refused, and kafkajs takes back
          // the sequence numbers of both. A later batch under the same numbers would pass for a
          // duplicate of the written one: answered, never stored.
          await Promise.allSettled([
            b.publish(ok, [ping(1)]),
            b.publish(small, [{ ...ping(99), pad: 'x'.repeat(4000) } as Ping]),
          ]);
          await b.publish(ok, [ping(2)]);
          const { sub, handled } = collecting(b, ok);
          await sub.start();
          await waitFor(() => handled.includes(2), 15_000, 'the later event');
          expect(handled).toEqual([0, 1, 2]);
        },
      );

      test('a member assigned no partition reads as current (session-ms holds every retry to the slowest replica)', async () => {
        const spec = pingTopic(unique('idle'), 1);
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const groupId = unique('g');
        const member = (b: EventBus) => b.subscribe({ groupId, topic: spec, handle: async () => undefined });
        const first = member(bus(kafka('a')));
        await first.start();
        const second = member(bus(kafka('b')));
        await second.start();
        cleanups.push(
          () => first.stop(),
          () => second.stop(),
        );
        const a = await admin();
        await waitFor(
          async () => {
            const [group] = (await a.describeGroups([groupId])).groups;
            return group.state === 'Stable' && group.members.length === 2;
          },
          15_000,
          'both members in the group',
        );
        await sleep(1000); // a few fetch cycles of both
        // One partition, two members: one of them is assigned nothing and never gets a Fetch answer.
        await waitFor(
          () => Math.min(first.handledUpTo(), second.handledUpTo()) > Date.now() - 2000,
          15_000,
          'both members to read as current',
        );
      });

      test('an invalid event in a pack is parked alone; the rest of the pack is handled', async () => {
        const spec = pingTopic(unique('pack-poison'));
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const raw = await producer();
        const bad = { kind: 'test.ping', v: 1, id: 'id-2', n: 'two' };
        await raw.send({
          topic: spec.name,
          messages: [
            {
              key: 'id-1',
              value: JSON.stringify([ping(1), bad, ping(3)]),
              headers: { 'parley-pack': '3' },
            },
          ],
        });
        const { sub, handled } = collecting(bus(kafka('bus')), spec);
        await sub.start();
        await waitFor(() => handled.length === 2, 15_000, 'the good events');
        expect(handled).toEqual([1, 3]);
        const parked = await consumeAll(dlqTopic(spec.name), 1);
        expect(JSON.parse(parked[0].value!.toString())).toEqual(bad);
        expect(parked[0].key).toBe('id-2'); // its own key, not the pack's
        expect(parked[0].headers).toMatchObject({
          'parley-source': `${spec.name}/0/0`,
          'parley-pack-index': '1',
        });
        expect(parked[0].headers['parley-error']).toMatch(/n: must be integer/);
      });

      test('a handler that throws is retried and its offset is committed only after it succeeds', async () => {
        const spec = pingTopic(unique('retry'));
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const groupId = unique('g');
        const a = await admin();
        const committed = async () =>
          (await a.fetchOffsets({ groupId, topics: [spec.name] }))[0].partitions[0].offset;
        // Each failure is logged; the success after them is too, or the log leaves the outage open.
        const lines: Array<{ level: number; msg: string; retries?: number }> = [];
        const b = createKafkaBus({
          kafka: kafka('bus'),
          logger: pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) }),
          maxAttempts: 3,
          consumer: FAST_CONSUMER,
          packEvents: false,
        });
        cleanups.push(() => b.close());
        await b.publish(spec, [ping(1), ping(2)]);
        let calls = 0;
        const whileFailing: string[] = [];
        const handled: number[] = [];
        const sub = b.subscribe({
          groupId,
          topic: spec,
          handle: async (batch) => {
            calls++;
            if (calls <= 2) {
              whileFailing.push(await committed());
              throw new Error('downstream unavailable');
            }
            handled.push(...batch.map((e) => e.event.n));
          },
        });
        await sub.start();
        await waitFor(() => handled.length === 2, 15_000, 'the handler to succeed');
        expect(whileFailing).toEqual(['-1', '-1']);
        expect(handled).toEqual([1, 2]);
        await waitFor(async () => (await committed()) === '2', 10_000, 'the commit');
        const handlerLines = lines.filter((l) => l.msg.startsWith('handler'));
        expect(handlerLines.map((l) => [l.level, l.msg, l.retries])).toEqual([
          [40, 'handler failed, retrying', undefined],
          [40, 'handler failed, retrying', undefined],
          [30, 'handler succeeded after retrying', 2],
        ]);
      });

      test('a consumer fetches again no sooner than its minimum cycle: what arrives meanwhile comes as one batch', async () => {
        const spec = pingTopic(unique('cycle'), 1);
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const b = bus(kafka('bus'), { packEvents: false, minCycleMs: 1500 });
        const batches: number[][] = [];
        const sub = b.subscribe({
          groupId: unique('g'),
          topic: spec,
          handle: async (batch) => void batches.push(batch.map((e) => e.event.n)),
        });
        await sub.start();
        await b.publish(spec, [ping(0)]);
        await waitFor(() => batches.length === 1, 15_000, 'the first batch');
        for (let n = 1; n <= 5; n++) {
          await b.publish(spec, [ping(n)]); // five requests, well inside the cycle
          await sleep(20);
        }
        await waitFor(() => batches.flat().length === 6, 15_000, 'every event');
        expect(batches).toEqual([[0], [1, 2, 3, 4, 5]]);
      });

      test('a wall-clock step back while a batch is handled does not hold the next fetch for the step: the pacing runs on the monotonic clock', async () => {
        const spec = pingTopic(unique('stepped'), 1);
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const b = bus(kafka('bus'), { packEvents: false }); // no minimum cycle: fetch again at once
        const batches: number[][] = [];
        let stepMs = 0;
        const realNow = Date.now.bind(Date);
        const clock = jest.spyOn(Date, 'now').mockImplementation(() => realNow() - stepMs);
        try {
          const sub = b.subscribe({
            groupId: unique('g'),
            topic: spec,
            handle: async (batch) => {
              if (batches.length === 0) stepMs = 60_000; // NTP steps the host's clock back a minute
              batches.push(batch.map((e) => e.event.n));
            },
          });
          await sub.start();
          await b.publish(spec, [ping(0)]);
          await waitFor(() => batches.length === 1, 15_000, 'the first batch');
          await b.publish(spec, [ping(1)]);
          await waitFor(() => batches.flat().length === 2, 10_000, 'the event published after the step');
          expect(batches).toEqual([[0], [1]]);
        } finally {
          clock.mockRestore();
        }
      });

      test('a consumer kafkajs stops for good (its group held by clients of another assignor) fails its start and is reported', async () => {
        const spec = pingTopic(unique('stopped'), 1);
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const groupId = unique('g');
        const otherApp = later(
          kafka('other-app').consumer({
            groupId,
            ...FAST_CONSUMER,
            partitionAssigners: [assignorNamed('other')],
          }),
        );
        await otherApp.connect();
        await otherApp.subscribe({ topic: spec.name, fromBeginning: true });
        let otherJoined = false;
        otherApp.on(otherApp.events.GROUP_JOIN, () => void (otherJoined = true));
        await otherApp.run({ eachMessage: async () => undefined });
        await waitFor(() => otherJoined, 15_000, 'the other app to join the group');

        const reported: Array<{ message: string; consumer: { topic: string; groupId: string } }> = [];
        const b = createKafkaBus({
          kafka: kafka('bus'),
          logger,
          consumer: FAST_CONSUMER,
          onConsumerStopped: (err, consumer) => reported.push({ message: err.message, consumer }),
        });
        cleanups.push(() => b.close());
        const sub = b.subscribe({ groupId, topic: spec, handle: async () => undefined });
        const expected = `the consumer of ${spec.name} (group ${groupId}) stopped for good: The group member's supported protocols are incompatible`;
        await expect(sub.start()).rejects.toThrow(expected);
        expect(reported).toEqual([
          { message: expect.stringContaining(expected), consumer: { topic: spec.name, groupId } },
        ]);
      });

      test('a stop() while the start is still connecting leaves no member running once the start ends', async () => {
        const spec = pingTopic(unique('stop-starting'), 1);
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const groupId = unique('g');
        const b = bus(kafka('bus'));
        const sub = b.subscribe({ groupId, topic: spec, handle: async () => undefined });
        const starting = sub.start();
        await sub.stop(); // a SIGTERM during the start: serviceLifecycle stops what is starting
        await starting.catch(() => undefined);
        await sleep(3000); // time for a consumer started anyway to join
        const [group] = (await (await admin()).describeGroups([groupId])).groups;
        expect(group.members).toEqual([]);
      });

      test('stop() does not wait out a handler that keeps failing on a dependency', async () => {
        const spec = pingTopic(unique('stop-retrying'));
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const groupId = unique('g');
        const b = bus(kafka('bus'), { packEvents: false });
        await b.publish(spec, [ping(1)]);
        let calls = 0;
        const sub = b.subscribe({
          groupId,
          topic: spec,
          handle: async () => {
            calls++;
            throw new TransientError('the database is down');
          },
        });
        await sub.start();
        await waitFor(() => calls >= 3, 15_000, 'a few retries');
        const started = Date.now();
        await sub.stop();
        expect(Date.now() - started).toBeLessThan(10_000); // one backoff at most, not the outage
        expect(await committedCount(await admin(), groupId, spec.name)).toBe(0); // replayed by the next owner
      });

      /** What `groupId` has committed on `topic`, summed over its partitions (-1 counts as 0). */
      const committedCount = async (a: Admin, groupId: string, topic: string) => {
        const [{ partitions }] = await a.fetchOffsets({ groupId, topics: [topic] });
        return partitions.reduce((sum, p) => sum + Math.max(0, Number(p.offset)), 0);
      };

      test('handled offsets are committed every interval, not after each batch', async () => {
        const spec = pingTopic(unique('interval'), 4);
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const k = kafka('bus');
        const consumers = watchConsumers(k);
        const b = bus(k, { packEvents: false, commitIntervalMs: 500 });
        const { sub, handled, groupId } = collecting(b, spec);
        await sub.start();
        let commits = 0;
        consumers[0].on(consumers[0].events.COMMIT_OFFSETS, () => commits++);
        const started = Date.now();
        for (let n = 1; n <= 30; n++) {
          await b.publish(spec, [ping(n)]);
          await waitFor(() => handled.includes(n), 10_000, `ping ${n}`); // each its own batch
        }
        const elapsed = Date.now() - started;
        expect(commits).toBeLessThanOrEqual(Math.ceil(elapsed / 500) + 1);
        const a = await admin();
        await waitFor(
          async () => (await committedCount(a, groupId, spec.name)) === 30,
          10_000,
          'the last commit',
        );
      });

      test('stop() commits what was handled since the last interval', async () => {
        const spec = pingTopic(unique('stop-commit'), 2);
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const b = bus(kafka('bus'), { packEvents: false, commitIntervalMs: 600_000 });
        const { sub, handled, groupId } = collecting(b, spec);
        await sub.start();
        await b.publish(spec, [1, 2, 3, 4, 5].map(ping));
        await waitFor(() => handled.length === 5, 10_000, 'five pings');
        const a = await admin();
        expect(await committedCount(a, groupId, spec.name)).toBe(0); // the interval has not come round
        await sub.stop();
        expect(await committedCount(a, groupId, spec.name)).toBe(5);
      });

      test('mayCommit holds commits back while it resolves false, at the interval and at stop; they go once it allows', async () => {
        const spec = pingTopic(unique('may-commit'), 2);
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const b = bus(kafka('bus'), { packEvents: false, commitIntervalMs: 200 });
        let allowed = false;
        let asked = 0;
        const { sub, subscribe, handled, groupId } = collecting(b, spec, async () => (asked++, allowed));
        await sub.start();
        await b.publish(spec, [1, 2, 3, 4, 5].map(ping));
        await waitFor(() => handled.length === 5, 10_000, 'five pings');
        await waitFor(() => asked >= 3, 10_000, 'three intervals asking');
        const a = await admin();
        expect(await committedCount(a, groupId, spec.name)).toBe(0);
        await sub.stop(); // its last commit is held back too: the next member reads them again
        expect(await committedCount(a, groupId, spec.name)).toBe(0);

        const again = subscribe();
        await again.start();
        await waitFor(() => handled.length === 10, 15_000, 'the five read again');
        allowed = true;
        await waitFor(
          async () => (await committedCount(a, groupId, spec.name)) === 5,
          10_000,
          'the commit once allowed',
        );
      });

      test('rereadFrom while mayCommit holds commits back: the rewind stands (true) and is read again once, nothing committed', async () => {
        const spec = pingTopic(unique('may-commit-reread'), 1);
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const b = bus(kafka('bus'), { packEvents: false, commitIntervalMs: 200 });
        const { sub, handled, groupId } = collecting(b, spec, async () => false);
        await sub.start();
        const since = Date.now() - 1000;
        await b.publish(spec, [1, 2, 3].map(ping));
        await waitFor(() => handled.length === 3, 10_000, 'three pings');
        expect(await sub.rereadFrom(since)).toBe(true);
        await waitFor(() => handled.length === 6, 10_000, 'the three read again');
        await sleep(1000); // no second rewind follows
        expect(handled).toEqual([1, 2, 3, 1, 2, 3]);
        expect(await committedCount(await admin(), groupId, spec.name)).toBe(0);
        await sub.stop();
      });

      test('a poison record (undecodable bytes) lands on the .dlq topic', async () => {
        const spec = pingTopic(unique('poison'));
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const b = bus(kafka('bus'));
        await b.publish(spec, [ping(1)]);
        const raw = await producer();
        await raw.send({ topic: spec.name, messages: [{ key: 'bad', value: 'not json {' }] });
        await b.publish(spec, [ping(2)]);
        const { sub, handled } = collecting(b, spec);
        await sub.start();
        await waitFor(() => handled.length === 2, 15_000, 'the good events');
        expect(handled).toEqual([1, 2]);
        const parked = await consumeAll(dlqTopic(spec.name), 1);
        expect(parked[0].value!.toString()).toBe('not json {');
        expect(parked[0].key).toBe('bad');
        expect(parked[0].headers['parley-error']).toMatch(/not JSON/);
        expect(parked[0].headers['parley-source']).toBe(`${spec.name}/0/1`);
      });

      test('a DLQ that refuses a poison record for good holds its partition back, not the consumer: other partitions are still handled', async () => {
        const spec = pingTopic(unique('dlq-refuses'), 2);
        const a = await admin();
        // A DLQ with a smaller record limit than its topic: parking the poison fails with
        // MESSAGE_TOO_LARGE, an error kafkajs itself does not retry.
        await a.createTopics({
          waitForLeaders: true,
          topics: [
            { topic: dlqTopic(spec.name), configEntries: [{ name: 'max.message.bytes', value: '1024' }] },
          ],
        });
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const k = kafka('bus');
        const consumers = watchConsumers(k);
        const b = bus(k, { packEvents: false });
        const partitionOf = (await b.partitioner(spec))!;
        const keyOn = (partition: number) =>
          Array.from({ length: 50 }, (_, i) => `id-${i}`).find((id) => partitionOf(id) === partition)!;
        const raw = await producer();
        await raw.send({
          topic: spec.name,
          messages: [{ key: keyOn(0), value: `not json ${'x'.repeat(4000)}` }],
        });
        const { sub, handled } = collecting(b, spec);
        let joined = false;
        consumers[0].on(consumers[0].events.GROUP_JOIN, () => (joined = true));
        await sub.start();
        await waitFor(() => joined, 15_000, 'the member joins');
        await sleep(2000); // the poison fetched and its parking refused
        // The bus's producer keeps trying to park the poison: a publish sent with one of those
        // tries fails with it (TransientError), and is published again, as any publisher does.
        await publishUntilTaken(() => b.publish(spec, [{ ...ping(1), id: keyOn(1) }]));
        await waitFor(() => handled.includes(1), 15_000, 'a record of the other partition');
        expect(handled).toEqual([1]);
      }, 45_000);

      test('an event nested too deep to serialize again is still parked (a note, its source named), not retried for good', async () => {
        const spec = pingTopic(unique('deep'));
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        // Written by a foreign producer: JSON.parse reads it, JSON.stringify overflows on it.
        const producer = kafka('foreign').producer();
        await producer.connect();
        const deep = '['.repeat(20_000) + ']'.repeat(20_000);
        await producer.send({
          topic: spec.name,
          messages: [{ key: 'id-1', value: `{"kind":"test.ping","v":1,"id":"id-1","n":1,"deep":${deep}}` }],
        });
        await producer.disconnect();
        const b = bus(kafka('bus'));
        const sub = b.subscribe({
          groupId: unique('g'),
          topic: spec,
          handle: async () => {
            throw new Error('refused');
          },
        });
        await sub.start();
        const [parked] = await consumeAll(dlqTopic(spec.name), 1);
        expect(JSON.parse(parked.value!.toString())).toEqual({ unserializable: expect.any(String) });
        expect(parked.headers).toMatchObject({
          'parley-error': 'refused',
          'parley-source': `${spec.name}/0/0`,
        });
        await sub.stop();
      }, 60_000);

      test('a record its handler keeps failing on is parked on the .dlq topic; its neighbours and later records are handled', async () => {
        const spec = pingTopic(unique('failing'));
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const groupId = unique('g');
        const b = bus(kafka('bus'), { packEvents: false });
        await b.publish(spec, [ping(1), ping(2), ping(3)]);
        const handled: number[] = [];
        let failures = 0;
        const sub = b.subscribe({
          groupId,
          topic: spec,
          handle: async (batch) => {
            if (batch.some((e) => e.event.n === 2)) {
              failures++;
              throw new Error('ping 2 breaks an invariant'); // not transient: no connection error
            }
            handled.push(...batch.map((e) => e.event.n));
          },
        });
        await sub.start();

        const parked = await consumeAll(dlqTopic(spec.name), 1);
        expect(parked).toHaveLength(1);
        expect(JSON.parse(parked[0].value!.toString())).toEqual(ping(2));
        expect(parked[0].key).toBe('id-2');
        expect(parked[0].headers).toMatchObject({
          'parley-error': 'ping 2 breaks an invariant',
          'parley-source': `${spec.name}/0/1`,
          'parley-group': groupId,
        });
        // maxAttempts (3) for the batch holding it, then 3 more for the record alone: bounded.
        expect(failures).toBe(6);
        await waitFor(() => handled.length === 2, 10_000, 'the neighbours');
        expect(handled).toEqual([1, 3]);

        // The offset moved past the parked record: a later record is handled and everything committed.
        await b.publish(spec, [ping(4)]);
        await waitFor(() => handled.includes(4), 15_000, 'a later record');
        expect(handled).toEqual([1, 3, 4]);
        const a = await admin();
        await waitFor(
          async () =>
            (await a.fetchOffsets({ groupId, topics: [spec.name] }))[0].partitions[0].offset === '4',
          10_000,
          'the commit past every record',
        );
      });

      test('a slow handler holds fetching back: one batch per partition at a time, nothing fetched ahead', async () => {
        const spec = pingTopic(unique('slow'), 2);
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const k = kafka('bus');
        const consumers = watchConsumers(k);
        const b = bus(k, { packEvents: false });
        await b.publish(
          spec,
          Array.from({ length: 20 }, (_, i) => ping(i)),
        );
        let release!: () => void;
        const released = new Promise<void>((resolve) => (release = resolve));
        const inFlight = new Map<number, number>();
        let mostInFlight = 0;
        const offsets = new Map<number, number[]>();
        const sub = b.subscribe({
          groupId: unique('g'),
          topic: spec,
          handle: async (batch) => {
            const { partition } = batch[0];
            inFlight.set(partition, (inFlight.get(partition) ?? 0) + 1);
            mostInFlight = Math.max(mostInFlight, inFlight.get(partition)!);
            await released;
            await sleep(5);
            offsets.set(partition, [
              ...(offsets.get(partition) ?? []),
              ...batch.map((e) => Number(e.offset)),
            ]);
            inFlight.set(partition, inFlight.get(partition)! - 1);
          },
        });
        let fetches = 0;
        consumers[0].on(consumers[0].events.FETCH_START, () => fetches++);
        await sub.start();
        await waitFor(() => inFlight.size > 0, 15_000, 'the handler to hold a batch');

        const fetchesWhileHeld = fetches;
        await b.publish(
          spec,
          Array.from({ length: 10 }, (_, i) => ping(20 + i)),
        );
        // Four fetch waits (maxWaitTimeInMs 250): a runner that fetched ahead would have by now.
        await sleep(1000);
        expect(fetches).toBe(fetchesWhileHeld);

        release();
        const count = () => [...offsets.values()].reduce((n, list) => n + list.length, 0);
        await waitFor(() => count() === 30, 15_000, 'every record');
        expect(mostInFlight).toBe(1);
        for (const list of offsets.values()) expect(list).toEqual(list.map((_, i) => i)); // in order, once
        expect(fetches).toBeGreaterThan(fetchesWhileHeld);
      });

      test('a handler that outlasts the session timeout keeps its membership: nothing is handled twice', async () => {
        const spec = pingTopic(unique('long'));
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const k = kafka('bus');
        const consumers = watchConsumers(k);
        const b = bus(k);
        const handled: number[] = [];
        const sub = b.subscribe({
          groupId: unique('g'),
          topic: spec,
          handle: async (batch) => {
            if (handled.length === 0) await sleep(FAST_CONSUMER.sessionTimeout + 1500);
            handled.push(...batch.map((e) => e.event.n));
          },
        });
        let joins = 0;
        consumers[0].on(consumers[0].events.GROUP_JOIN, () => joins++);
        await sub.start();
        await b.publish(spec, [ping(1), ping(2)]);
        await waitFor(() => handled.length >= 2, 20_000, 'the slow batch');
        await b.publish(spec, [ping(3)]);
        await waitFor(() => handled.includes(3), 15_000, 'a later record');
        await sleep(500);
        expect(handled).toEqual([1, 2, 3]);
        expect(joins).toBe(1);
      }, 30_000);

      test('a member retrying a failing dependency leaves its batch at a rebalance: the next owner handles the key in order', async () => {
        const spec = pingTopic(unique('rejoin'));
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const a = bus(kafka('a'), { packEvents: false });
        const b = bus(kafka('b'), { packEvents: false });
        const groupId = unique('g');
        const handled: string[] = [];
        let aDependencyUp = false; // A's database is away; B's is fine
        const subA = a.subscribe({
          groupId,
          topic: spec,
          handle: async (batch) => {
            if (!aDependencyUp) throw new TransientError('A: database unreachable');
            handled.push(...batch.map((e) => `A:${e.event.n}`));
          },
        });
        const subB = b.subscribe({
          groupId,
          topic: spec,
          handle: async (batch) => void handled.push(...batch.map((e) => `B:${e.event.n}`)),
        });
        cleanups.push(
          () => subA.stop(),
          () => subB.stop(),
        );
        await subA.start();
        await a.publish(spec, [{ ...ping(1), id: 'k' }]);
        await sleep(1500); // A is retrying record 1
        await subB.start(); // a second replica joins: a rebalance
        await sleep(FAST_CONSUMER.rebalanceTimeout + 2000);
        await a.publish(spec, [{ ...ping(2), id: 'k' }]);
        await sleep(2000); // whoever owns the partition now has record 2
        aDependencyUp = true;
        await waitFor(() => handled.some((h) => h.endsWith(':2')), 20_000, 'record 2');
        await sleep(3000);
        // Record 1 before record 2, and never again after it (A retrying beside the new owner did).
        const second = handled.findIndex((h) => h.endsWith(':2'));
        expect(handled.slice(0, second).some((h) => h.endsWith(':1'))).toBe(true);
        expect(handled.slice(second).filter((h) => h.endsWith(':1'))).toEqual([]);
      }, 60_000);

      test("a member dropped from the group while a batch runs starts none of the batches queued behind it: their partitions are the next owner's", async () => {
        const spec = pingTopic(unique('dropped'), 2);
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        // One batch at a time: the fetch's other partition waits in kafkajs's queue, as the 5th of
        // 12 partitions does with the default of 4.
        const make = (id: string) => memberBus(id, { partitionsConsumedConcurrently: 1 });
        const a = make('a');
        const b = make('b');
        const groupId = unique('g');
        const keys = [...(await keyPerPartition(a, spec, 2)).values()];
        // Both partitions hold a record before A starts: its first fetch brings a batch of each.
        await a.publish(
          spec,
          keys.map((id, n) => ({ ...ping(n), id })),
        );
        const log: string[] = [];
        let first = true;
        const subA = a.subscribe({
          groupId,
          topic: spec,
          handle: async (batch) => {
            log.push(`A start ${batch[0].partition}`);
            if (first) {
              first = false;
              // Past the rebalance timeout: the group moves on without A while this runs.
              await sleep(FAST_CONSUMER.rebalanceTimeout + 2500);
            }
            log.push(`A done ${batch[0].partition}`);
          },
        });
        const subB = b.subscribe({
          groupId,
          topic: spec,
          handle: async (batch) => void log.push(`B done ${batch[0].partition}`),
        });
        cleanups.push(
          () => subA.stop(),
          () => subB.stop(),
        );
        await subA.start();
        await waitFor(() => log.length > 0, 10_000, 'A starts its first batch');
        await subB.start(); // a rebalance that A, busy, misses
        await waitFor(() => log.filter((l) => l.startsWith('B done')).length === 2, 15_000, 'B takes both');
        await waitFor(() => log.some((l) => l.startsWith('A done')), 15_000, 'A ends its first batch');
        await sleep(2000);
        // A learnt that the group moved on while its first batch ran: the batch queued behind it
        // went to B, and A must not handle it too, beside B.
        expect(log.filter((l) => l.startsWith('A start'))).toHaveLength(1);
      }, 60_000);

      test('a member trying the records of a failing batch one by one stops when the group moves on: it handles none of them beside the next owner', async () => {
        const spec = pingTopic(unique('isolating'));
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        // The assignor gives the partition to the member whose id sorts first: B's, once both are in.
        const make = (id: string) => memberBus(id, { maxAttempts: 2 });
        const a = make('z-a');
        const b = make('b');
        const groupId = unique('g');
        await a.publish(
          spec,
          Array.from({ length: 12 }, (_, n) => ping(n)),
        );
        const log: string[] = [];
        let isolating = false;
        const subA = a.subscribe({
          groupId,
          topic: spec,
          handle: async (batch) => {
            // The batch breaks an invariant as a whole (not transient); each record alone is slow
            // but fine: trying all twelve outlasts the rebalance timeout.
            if (batch.length > 1) throw new Error('the batch as a whole is refused');
            isolating = true;
            await sleep(400);
            log.push(`A ${batch[0].event.n}`);
          },
        });
        const subB = b.subscribe({
          groupId,
          topic: spec,
          handle: async (batch) => void log.push(...batch.map((e) => `B ${e.event.n}`)),
        });
        cleanups.push(
          () => subA.stop(),
          () => subB.stop(),
        );
        await subA.start();
        await waitFor(() => isolating, 10_000, 'A tries the records one by one');
        await subB.start(); // a rebalance: the group waits for A, then goes on without it
        await waitFor(() => log.filter((l) => l.startsWith('B')).length === 12, 20_000, 'B handles all');
        await sleep(5000); // as long as A would take for the rest of them
        const firstOfB = log.findIndex((l) => l.startsWith('B'));
        expect(log.slice(firstOfB).filter((l) => l.startsWith('A'))).toEqual([]);
      }, 60_000);

      test('rereadFrom asked while a rebalance is under way: what it held is read again by the next owner, unless it resolves false', async () => {
        const spec = pingTopic(unique('reread-rebalance'), 2);
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        // The group waits for a member busy with a long batch: a long rebalance timeout. No commit
        // on the interval: rereadFrom's own is the one under test. Sent behind the member's pending
        // JoinGroup, it is handled after the join (Kafka and the embedded broker alike), refused.
        const make = (id: string) =>
          memberBus(id, {
            consumer: { ...FAST_CONSUMER, rebalanceTimeout: 20_000 },
            commitIntervalMs: 60_000,
          });
        // The assignor sorts members by id: A, C hold partitions 0, 1; once B is in, 0 is B's.
        const a = make('a');
        const c = make('c');
        const b = make('0-b');
        const groupId = unique('g');
        const keyOf = await keyPerPartition(a, spec, 2);
        const log: string[] = [];
        let slowStarted = false;
        const member = (name: string) => async (batch: Envelope<Ping>[]) => {
          if (batch.some((e) => e.event.n === 999)) {
            slowStarted = true;
            await sleep(4000);
          }
          log.push(...batch.map((e) => `${name} ${e.partition} ${e.event.n}`));
        };
        const subs = [a, c, b].map((bus, i) =>
          bus.subscribe({ groupId, topic: spec, handle: member(['A', 'C', 'B'][i]) }),
        );
        cleanups.push(...subs.map((s) => () => s.stop()));
        const [subA, subC, subB] = subs;
        await a.publish(spec, [{ ...ping(1), id: keyOf.get(0)! }]);
        await sleep(5); // the records to read again come after `since`
        const since = Date.now();
        await sleep(5);
        await a.publish(
          spec,
          [10, 11, 12].map((n) => ({ ...ping(n), id: keyOf.get(0)! })),
        );
        await subA.start();
        await subC.start();
        await waitFor(() => log.includes('A 0 12'), 15_000, 'A handles partition 0');
        const ad = await admin();
        await waitFor(
          async () =>
            (await ad.fetchOffsets({ groupId, topics: [spec.name] }))[0].partitions[0].offset === '4',
          10_000,
          'partition 0 committed',
        );
        await a.publish(spec, [{ ...ping(999), id: keyOf.get(1)! }]); // C's long batch
        await waitFor(() => slowStarted, 10_000, "C's long batch");
        const bStarted = subB.start(); // the rebalance waits for C's batch (4 s)
        await sleep(1000); // A, idle, has committed and rejoined: it waits for C too
        const askedAt = log.length;
        const held = await subA.rereadFrom(since);
        await bStarted;
        if (held) {
          await waitFor(
            () => [10, 11, 12].every((n) => log.slice(askedAt).some((l) => l.endsWith(` 0 ${n}`))),
            15_000,
            'partition 0 read again from `since`',
          );
        }
      }, 60_000);

      test('a batch that outlasts the session timeout while a member joins is handled once: the rebalance waits for it', async () => {
        const spec = pingTopic(unique('longjoin'));
        await provisionTopics(kafka(), { topics: [spec as TopicSpec<never>] });
        const { rebalanceTimeout: _default, ...consumer } = FAST_CONSUMER; // the bus's: maxHandlerMs
        const make = (id: string) => memberBus(id, { consumer, maxHandlerMs: 30_000 });
        const a = make('a');
        const b = make('b');
        const groupId = unique('g');
        const log: string[] = [];
        const subA = a.subscribe({
          groupId,
          topic: spec,
          handle: async (batch) => {
            log.push(`A start ${batch.map((e) => e.event.n)}`);
            await sleep(11_000); // a large fan-out: past the session timeout and the old 10 s rebalance timeout
            log.push(`A done ${batch.map((e) => e.event.n)}`);
          },
        });
        const subB = b.subscribe({
          groupId,
          topic: spec,
          handle: async (batch) => void log.push(`B done ${batch.map((e) => e.event.n)}`),
        });
        cleanups.push(
          () => subA.stop(),
          () => subB.stop(),
        );
        await subA.start();
        await a.publish(spec, [ping(1)]);
        await waitFor(() => log.length > 0, 10_000, 'A starts');
        await subB.start();
        await waitFor(() => log.includes('A done 1'), 25_000, 'A finishes');
        await sleep(3000);
        expect(log.filter((line) => line.endsWith('done 1'))).toEqual(['A done 1']);
      }, 60_000);

      test('provisionTopics creates topics and their DLQs, idempotently', async () => {
        const specs = [pingTopic(unique('prov-a'), 3), pingTopic(unique('prov-b'), 2)] as TopicSpec<never>[];
        const created = await provisionTopics(kafka(), { topics: specs });
        expect(created.sort()).toEqual(
          [specs[0].name, dlqTopic(specs[0].name), specs[1].name, dlqTopic(specs[1].name)].sort(),
        );
        expect(await provisionTopics(kafka(), { topics: specs })).toEqual([]);
        const a = await admin();
        const meta = await a.fetchTopicMetadata({
          topics: [specs[0].name, dlqTopic(specs[0].name), specs[1].name],
        });
        const partitions = new Map(meta.topics.map((t) => [t.name, t.partitions.length]));
        expect([specs[0].name, dlqTopic(specs[0].name), specs[1].name].map((n) => partitions.get(n))).toEqual(
          [3, 1, 2],
        );
      });
    });
  });
}

/** A kafkajs consumer in a child process, for the test that kills a member. */
const CHILD_CONSUMER = `
const { Kafka, logLevel } = require(process.env.KAFKAJS);
const kafka = new Kafka({ clientId: 'doomed', brokers: process.env.BROKERS.split(','), logLevel: logLevel.NOTHING });
const c = kafka.consumer({ groupId: process.env.GROUP, heartbeatInterval: 200, sessionTimeout: 1500, rebalanceTimeout: 3000, maxWaitTimeInMs: 250 });
c.on(c.events.GROUP_JOIN, (e) => console.log('JOIN ' + JSON.stringify(e.payload.memberAssignment[process.env.TOPIC] || [])));
(async () => {
  await c.connect();
  await c.subscribe({ topic: process.env.TOPIC, fromBeginning: true });
  await c.run({ eachMessage: async () => {} });
})().catch((e) => { console.error(e); process.exit(1); });
`;

/** Publishes again after a TransientError (a request it shared failed), as the services' publishers do. */
async function publishUntilTaken(publish: () => Promise<void>, tries = 20): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await publish();
    } catch (err) {
      if (!isTransient(err) || attempt >= tries) throw err;
      await sleep(100);
    }
  }
}
