import { setTimeout as sleep } from 'node:timers/promises';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Kafka, logLevel, Partitioners, type Admin } from 'kafkajs';
import pino from 'pino';
import { waitFor } from '@parley/test-kit';
import { startBroker, type Broker, type BrokerOptions } from '../src/broker';
import { errorCodeOf, joinGroupV0, RawClient } from './support/raw-client';

// Offset retention (Kafka's offsets.retention.minutes, KIP-211): a group without members loses its
// committed offsets once it has been empty that long, and is forgotten, in memory and on disk.

const logger = pino({ level: 'silent' });
const dirs: string[] = [];
const brokers: Broker[] = [];
const admins: Admin[] = [];

function tmp(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-offset-retention-'));
  dirs.push(dir);
  return dir;
}

async function start(options: BrokerOptions): Promise<Broker> {
  const broker = await startBroker({ logger, retentionCheckIntervalMs: 50, ...options });
  brokers.push(broker);
  return broker;
}

async function stop(broker: Broker): Promise<void> {
  await Promise.all(admins.splice(0).map((a) => a.disconnect()));
  brokers.splice(brokers.indexOf(broker), 1);
  await broker.stop();
}

const kafkaAt = (broker: Broker) =>
  new Kafka({ clientId: 'retention-test', brokers: [broker.address], logLevel: logLevel.NOTHING });

async function adminOf(broker: Broker): Promise<Admin> {
  const admin = kafkaAt(broker).admin();
  await admin.connect();
  admins.push(admin);
  return admin;
}

async function produce(broker: Broker, topic: string, values: string[]): Promise<void> {
  const producer = kafkaAt(broker).producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  await producer.send({ topic, messages: values.map((value) => ({ value })) });
  await producer.disconnect();
}

/** A consumer of `groupId` (from the earliest record where it has no offset) that has read `count` values. */
async function consume(broker: Broker, groupId: string, topic: string, count: number) {
  const consumer = kafkaAt(broker).consumer({ groupId, heartbeatInterval: 100, maxWaitTimeInMs: 100 });
  const values: string[] = [];
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({ eachMessage: async ({ message }) => void values.push(String(message.value)) });
  await waitFor(() => values.length >= count, 10_000, `${count} records on ${topic} for ${groupId}`);
  return { consumer, values };
}

/** The committed offset of partition 0 ('-1': none). */
async function committed(admin: Admin, groupId: string, topic: string): Promise<string> {
  const [{ partitions }] = await admin.fetchOffsets({ groupId, topics: [topic] });
  return partitions.find((p) => p.partition === 0)!.offset;
}

/** On `broker`, group `groupId` reads the three records of `topic` and commits them; its member stays. */
async function readAndCommitted(broker: Broker, groupId: string, topic: string) {
  await produce(broker, topic, ['a', 'b', 'c']);
  const { consumer } = await consume(broker, groupId, topic, 3);
  const admin = await adminOf(broker);
  await waitFor(async () => (await committed(admin, groupId, topic)) === '3', 5000, 'the commit');
  return { consumer, admin };
}

async function groupState(admin: Admin, groupId: string) {
  const listed = (await admin.listGroups()).groups.some((g) => g.groupId === groupId);
  const { groups } = await admin.describeGroups([groupId]);
  return { listed, state: groups[0].state };
}

afterEach(async () => {
  await Promise.all(admins.splice(0).map((a) => a.disconnect()));
  await Promise.all(brokers.splice(0).map((b) => b.stop()));
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

describe('offset retention in the embedded broker', () => {
  test('an empty group loses its offsets after the retention; a new member starts from its reset position', async () => {
    const retention = 1000;
    const broker = await start({ offsetsRetentionMs: retention });
    const { consumer, admin } = await readAndCommitted(broker, 'idle', 'idle-topic');
    const emptyAt = Date.now(); // at the latest: the member leaves during disconnect
    await consumer.disconnect();
    expect(await groupState(admin, 'idle')).toEqual({ listed: true, state: 'Empty' });

    // A quarter of the retention: a pause of the test process (a busy box) must not carry the check
    // past it. Expiring too early is caught below as well.
    await sleep(retention / 4);
    expect(await committed(admin, 'idle', 'idle-topic')).toBe('3'); // not yet
    await waitFor(
      async () => (await committed(admin, 'idle', 'idle-topic')) === '-1',
      retention * 3,
      'the offsets to expire',
    );
    expect(Date.now() - emptyAt).toBeGreaterThanOrEqual(retention);
    expect(await groupState(admin, 'idle')).toEqual({ listed: false, state: 'Dead' });

    // A new member of the group starts over from its reset position (the earliest record).
    const again = await consume(broker, 'idle', 'idle-topic', 3);
    expect(again.values).toEqual(['a', 'b', 'c']);
    await again.consumer.disconnect();
  });

  test("the empty-since time survives a restart, and an expired group's offsets do not come back", async () => {
    const dataDir = tmp();
    const retention = 2500;
    let broker = await start({ dataDir, offsetsRetentionMs: retention });
    const started = await readAndCommitted(broker, 'restarted', 'kept-topic');
    const { consumer } = started;
    let { admin } = started;
    const emptyAt = Date.now(); // at the latest: the member leaves during disconnect
    await consumer.disconnect();
    await stop(broker);

    // Restarted within the retention: the offsets are still there, and the clock did not start over.
    await sleep(retention / 3);
    broker = await start({ dataDir, offsetsRetentionMs: retention });
    admin = await adminOf(broker);
    expect(await committed(admin, 'restarted', 'kept-topic')).toBe('3');
    expect(await groupState(admin, 'restarted')).toEqual({ listed: true, state: 'Empty' });
    await waitFor(
      async () => (await committed(admin, 'restarted', 'kept-topic')) === '-1',
      retention * 3,
      'the offsets to expire',
    );
    expect(Date.now() - emptyAt).toBeGreaterThanOrEqual(retention);
    expect(Date.now() - emptyAt).toBeLessThan(retention + retention / 3); // not from the restart
    await stop(broker);

    // Gone for good: a broker keeping offsets forever does not bring them back from the file.
    broker = await start({ dataDir, offsetsRetentionMs: -1 });
    admin = await adminOf(broker);
    expect(await committed(admin, 'restarted', 'kept-topic')).toBe('-1');
    expect(await groupState(admin, 'restarted')).toEqual({ listed: false, state: 'Dead' });
  }, 30_000);

  test('a group empty past the retention while the broker was down expires at the start', async () => {
    const dataDir = tmp();
    const retention = 1000;
    let broker = await start({ dataDir, offsetsRetentionMs: retention });
    await produce(broker, 'down-topic', ['a', 'b']);
    const { consumer } = await consume(broker, 'down', 'down-topic', 2);
    const admin = await adminOf(broker);
    await waitFor(async () => (await committed(admin, 'down', 'down-topic')) === '2', 5000, 'the commit');
    await consumer.disconnect();
    await stop(broker);

    await sleep(retention + 200);
    // A check interval longer than the test: only the check at the start can expire it.
    broker = await start({ dataDir, offsetsRetentionMs: retention, retentionCheckIntervalMs: 60_000 });
    expect(await committed(await adminOf(broker), 'down', 'down-topic')).toBe('-1');
  });

  test('a group with a live member keeps its offsets past the retention; the clock starts when it empties', async () => {
    const retention = 1000;
    const broker = await start({ offsetsRetentionMs: retention });
    const { consumer, admin } = await readAndCommitted(broker, 'live', 'live-topic');

    await sleep(retention * 3); // nothing committed since, but the member heartbeats
    expect(await committed(admin, 'live', 'live-topic')).toBe('3');
    expect(await groupState(admin, 'live')).toEqual({ listed: true, state: 'Stable' });

    const emptyAt = Date.now(); // at the latest: the member leaves during disconnect
    await consumer.disconnect();
    // A quarter of the retention: a pause of the test process (a busy box) must not carry the check
    // past it. Timed from the last commit, the offsets would be gone within a check interval (50 ms).
    await sleep(retention / 4);
    expect(await committed(admin, 'live', 'live-topic')).toBe('3'); // the last commit is long past
    await waitFor(
      async () => (await committed(admin, 'live', 'live-topic')) === '-1',
      retention * 3,
      'the offsets to expire',
    );
    expect(Date.now() - emptyAt).toBeGreaterThanOrEqual(retention);
  }, 20_000);

  test('an offsets file written before offset retention loads; its groups are empty from that start', async () => {
    const dataDir = tmp();
    let broker = await start({ dataDir });
    await produce(broker, 'legacy', ['0', '1', '2', '3', '4']);
    await stop(broker);
    // offsets.log as brokers before offset retention wrote it: no commit times, no empty times.
    fs.writeFileSync(
      path.join(dataDir, 'offsets.log'),
      [
        '{"g":"old","c":[["legacy",0,2,null]]}',
        '{"g":"old","c":[["legacy",0,3,"m"]]}',
        '{"g":"untouched","c":[["legacy",0,1,null],["dropped",0,7,null]]}',
        '{"dt":"dropped"}',
        '',
      ].join('\n'),
    );

    const retention = 2000;
    const startedAt = Date.now();
    broker = await start({ dataDir, offsetsRetentionMs: retention });
    const admin = await adminOf(broker);
    const [old] = await admin.fetchOffsets({ groupId: 'old', topics: ['legacy'] });
    expect(old.partitions).toEqual([{ partition: 0, offset: '3', metadata: 'm' }]);
    expect(await committed(admin, 'untouched', 'legacy')).toBe('1');

    // A member resumes where the old file says.
    const { consumer, values } = await consume(broker, 'old', 'legacy', 2);
    expect(values).toEqual(['3', '4']);
    await consumer.disconnect();

    // Their retention counts from this start (the file has no times): gone one retention later.
    await waitFor(
      async () => (await committed(admin, 'untouched', 'legacy')) === '-1',
      retention * 3,
      'the legacy offsets to expire',
    );
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(retention);
    await waitFor(
      async () => (await committed(admin, 'old', 'legacy')) === '-1',
      retention * 3,
      'the resumed group to expire',
    );
  }, 20_000);
});

describe('offset retention when the disk fails a write', () => {
  /** Every fs.writeSync fails as on a full disk until the returned spy is restored. */
  const diskFull = () =>
    jest.spyOn(fs, 'writeSync').mockImplementation(() => {
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    });

  /** JoinGroup v0 of a new member of `groupId` (session timeout `sessionMs`); resolves with its error code. */
  const joinGroup = async (client: RawClient, groupId: string, sessionMs: number) =>
    errorCodeOf(await client.request(11, 0, joinGroupV0(groupId, '', sessionMs)));

  test('a failed write as an empty group expires (the retention timer) is logged; the broker runs on', async () => {
    const broker = await start({ dataDir: tmp(), offsetsRetentionMs: 300 });
    const { consumer, admin } = await readAndCommitted(broker, 'full-disk', 'full-disk-topic');
    await consumer.disconnect();
    const failing = diskFull();
    try {
      // Forgotten in memory all the same (not on disk: it comes back after a restart, to expire again).
      await waitFor(
        async () => (await committed(admin, 'full-disk', 'full-disk-topic')) === '-1',
        3000,
        'the offsets to expire',
      );
      expect(failing).toHaveBeenCalled();
      await sleep(200); // more retention passes
      expect((await admin.listTopics()).includes('full-disk-topic')).toBe(true);
    } finally {
      failing.mockRestore();
    }
  }, 20_000);

  test("a failed write as a vanished member's session runs out is logged; the member is removed all the same", async () => {
    const broker = await start({ dataDir: tmp() });
    const { consumer, admin } = await readAndCommitted(broker, 'vanished', 'vanished-topic');
    await consumer.disconnect();
    // A member that joins and is never heard from again (its process killed): its session runs out.
    const client = await RawClient.connect(broker.address);
    expect(await joinGroup(client, 'vanished', 200)).toBe(0);
    client.close();
    const failing = diskFull();
    try {
      await waitFor(
        async () => (await groupState(admin, 'vanished')).state === 'Empty',
        3000,
        'the member to be removed',
      );
      expect(failing).toHaveBeenCalled();
      expect(await committed(admin, 'vanished', 'vanished-topic')).toBe('3');
    } finally {
      failing.mockRestore();
    }
  }, 20_000);
});
