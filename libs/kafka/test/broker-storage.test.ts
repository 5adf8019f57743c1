import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import pino from 'pino';
import { startBroker } from '../src/broker';
import { OffsetStore } from '../src/broker/log/offset-store';
import { PartitionLog, LogConfig } from '../src/broker/log/partition-log';
import { TopicStore } from '../src/broker/log/topic-store';
import { BATCH, writeInt64 } from '../src/broker/log/record-batch';
import { crc32c } from '../src/broker/log/crc32c';
import { fetchRequest, offsetCommitError, offsetCommitV2, RawClient } from './support/raw-client';
import { TopicSpec } from '@parley/contracts';
import { createKafkaBus, provisionTopics } from '../src';
import { pingTopic } from './support/kafka-suite';
import { waitFor } from '@parley/test-kit';

// Builders from kafkajs's own protocol code, to send a retried idempotent batch by hand.
const ProduceV3 = require('kafkajs/src/protocol/requests/produce/v3/request');
const Long = require('kafkajs/src/utils/long');

const logger = pino({ level: 'silent' });
const config: LogConfig = {
  segmentBytes: 64 * 1024,
  segmentMs: 3_600_000,
  retentionMs: -1,
  retentionBytes: -1,
  maxMessageBytes: 1 << 20,
  verifyCrc: true,
  cacheBytes: 1 << 20,
};
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'parley-broker-unit-'));

/** Real record batches, written by kafkajs against an in-memory broker and fetched back raw. */
async function makeBatches(count: number, size = 1000): Promise<Buffer[]> {
  const broker = await startBroker({ logger });
  const kafka = new Kafka({ brokers: [broker.address], logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  for (let i = 0; i < count; i++)
    await producer.send({ topic: 'src', messages: [{ value: Buffer.alloc(size, i % 256) }] });
  await producer.disconnect();
  const client = await RawClient.connect(broker.address);
  const res = await client.request(1, 4, fetchRequest('src', { maxWaitMs: 0, minBytes: 0 }));
  client.close();
  await broker.stop();
  // throttle, [topic, [partition, error, hw, lso, aborted[], records]]
  const recordsAt = 4 + 4 + 2 + 3 + 4 + 4 + 2 + 8 + 8 + 4;
  const records = res.subarray(recordsAt + 4, recordsAt + 4 + res.readInt32BE(recordsAt));
  const out: Buffer[] = [];
  for (let p = 0; p < records.length;) {
    const size = 12 + records.readInt32BE(p + 8);
    out.push(Buffer.from(records.subarray(p, p + size)));
    p += size;
  }
  return out;
}

const logFilesIn = (dir: string) =>
  fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.log'))
    .sort()
    .map((f) => path.join(dir, f));

/** What a segment's `.log` holds, batch by batch: base offset, last offset delta, position, size. */
function batchesIn(logFile: string): number[][] {
  const bytes = fs.readFileSync(logFile);
  const out: number[][] = [];
  for (let pos = 0; pos < bytes.length;) {
    const size = BATCH.LOG_OVERHEAD + bytes.readInt32BE(pos + BATCH.LENGTH);
    out.push([
      Number(bytes.readBigInt64BE(pos)),
      bytes.readInt32BE(pos + BATCH.LAST_OFFSET_DELTA),
      pos,
      size,
    ]);
    pos += size;
  }
  return out;
}

/** The same four figures as the segment's `.index` records them. */
function indexEntries(logFile: string): number[][] {
  const base = Number(path.basename(logFile, '.log'));
  const bytes = fs.readFileSync(logFile.replace(/\.log$/, '.index'));
  const out: number[][] = [];
  for (let at = 0; at + 24 <= bytes.length; at += 24)
    out.push([
      base + bytes.readInt32BE(at),
      bytes.readInt32BE(at + 4),
      bytes.readInt32BE(at + 8),
      bytes.readInt32BE(at + 12),
    ]);
  return out;
}

/** fs.fdatasync spied on, its next call failing with EIO (a disk error); the calls after it are real. */
function failNextFdatasync() {
  return jest
    .spyOn(fs, 'fdatasync')
    .mockImplementationOnce(((_fd: number, callback: (err: NodeJS.ErrnoException | null) => void) =>
      callback(
        Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }),
      )) as typeof fs.fdatasync);
}

/** A broker syncing every write (`fsync: always`) in a directory of its own, with `topic` created. */
async function alwaysSyncingBroker(topic: string) {
  const dir = tmp();
  const broker = await startBroker({ logger, dataDir: dir, fsync: 'always' });
  const kafka = new Kafka({ brokers: [broker.address], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic }] });
  return { dir, broker, kafka, admin };
}

describe('broker storage', () => {
  let batches: Buffer[];
  beforeAll(async () => {
    batches = await makeBatches(200);
  });
  const fresh = () => batches.map((b) => Buffer.from(b));
  afterEach(() => jest.restoreAllMocks()); // a disk made to fill up by a test that failed midway

  test('segments roll, recover after a restart, and a torn tail is truncated', async () => {
    const dir = tmp();
    const log = PartitionLog.create('t', 0, dir, config, logger);
    for (const b of fresh()) log.append([b]);
    expect(log.nextOffset).toBe(200);
    const files = fs.readdirSync(dir).filter((f) => f.endsWith('.log'));
    expect(files.length).toBeGreaterThan(2);
    log.close();

    // Tear the last write: half a batch at the end of the active segment, and garbage in its index.
    const last = path.join(dir, files.sort()[files.length - 1]);
    fs.appendFileSync(last, batches[0].subarray(0, 500));
    fs.appendFileSync(last.replace(/\.log$/, '.index'), Buffer.from([1, 2, 3]));
    const sizeBefore = fs.statSync(last).size;
    const recovered = PartitionLog.create('t', 0, dir, config, logger);
    expect(recovered.nextOffset).toBe(200);
    expect(fs.statSync(last).size).toBe(sizeBefore - 500);
    const read = await recovered.read(0, 1 << 30, true);
    expect(read.chunks.reduce((n, c) => n + c.length, 0)).toBe(batches.reduce((n, b) => n + b.length, 0));
    // Appends continue after the recovered tail; a lost index is rebuilt from the log.
    recovered.append([Buffer.from(batches[0])]);
    expect(recovered.nextOffset).toBe(201);
    recovered.close();
    for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.index'))) fs.rmSync(path.join(dir, f));
    const again = PartitionLog.create('t', 0, dir, config, logger);
    expect(again.nextOffset).toBe(201);
    expect((await again.read(150, 1 << 30, true)).chunks.length).toBeGreaterThan(0);
    again.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a crash before the index entries are written loses nothing: recovery reads the log past the index', async () => {
    const dir = tmp();
    const log = PartitionLog.create('t', 0, dir, { ...config, segmentBytes: 1 << 30 }, logger);
    const appended = fresh().slice(0, 20);
    for (const b of appended) log.append([b]);
    // No close and no sync: the process "dies" here, with the index still waiting to be written.
    const [index] = fs.readdirSync(dir).filter((f) => f.endsWith('.index'));
    expect(fs.statSync(path.join(dir, index)).size).toBe(0);

    const recovered = PartitionLog.create('t', 0, dir, config, logger);
    expect(recovered.nextOffset).toBe(20);
    const read = await recovered.read(0, 1 << 30, true);
    expect(Buffer.concat(read.chunks)).toEqual(Buffer.concat(appended));
    recovered.close();
    expect(fs.statSync(path.join(dir, index)).size).toBe(20 * 24); // rebuilt by the recovery
    log.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /**
   * A disk that fills up during a write: the kernel takes part of it and returns a short count (no
   * error), and refuses the rest with ENOSPC. Writes the first `bytes` of the next write of `length`
   * bytes and answers so; every write after it fails until the returned restore is called.
   */
  const fillTheDiskDuring = (length: number, bytes: number) => {
    const writeSync = fs.writeSync;
    let filled = false;
    const full = jest.spyOn(fs, 'writeSync').mockImplementation(((
      fd: number,
      buf: Buffer,
      offset: number,
      size: number,
      position: number,
    ) => {
      if (filled)
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      if (size !== length) return writeSync(fd, buf, offset, size, position);
      filled = true;
      return writeSync(fd, buf, offset, bytes, position);
    }) as typeof fs.writeSync);
    return () => full.mockRestore();
  };

  test('a batch the disk took only part of (it filled up) is refused, not acknowledged: what was acknowledged reads back whole, before and after a restart', async () => {
    const dir = tmp();
    const log = PartitionLog.create('t', 0, dir, { ...config, cacheBytes: 0 }, logger);
    const [first, torn, after] = fresh();
    log.append([first]);
    const restore = fillTheDiskDuring(torn.length, 100);
    expect(() => log.append([torn])).toThrow('ENOSPC');
    restore();
    expect(log.nextOffset).toBe(1);
    log.append([after]); // space again (retention freed some)
    const acknowledged = Buffer.concat([first, after]);
    expect(Buffer.concat((await log.read(0, 1 << 30, true)).chunks)).toEqual(acknowledged);
    log.close();
    const recovered = PartitionLog.create('t', 0, dir, config, logger);
    expect(recovered.nextOffset).toBe(2);
    expect(Buffer.concat((await recovered.read(0, 1 << 30, true)).chunks)).toEqual(acknowledged);
    recovered.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('index entries the disk took only part of are written again, so an older segment reads back whole from its index', async () => {
    const dir = tmp();
    const segment = 10; // batches a segment
    const small = { ...config, segmentBytes: segment * batches[0].length, cacheBytes: 0 };
    const log = PartitionLog.create('t', 0, dir, small, logger);
    const appended = fresh().slice(0, 4 * segment + 1);
    for (const b of appended.slice(0, segment)) log.append([b]);
    // The next append rolls the full segment, writing its 10 index entries first: the disk fills there.
    const restore = fillTheDiskDuring(segment * 24, 24);
    expect(() => log.append([appended[segment]])).toThrow('ENOSPC');
    restore();
    for (const b of appended.slice(segment)) log.append([b]); // the first segment is now released
    expect(Buffer.concat((await log.read(0, 1 << 30, true)).chunks)).toEqual(Buffer.concat(appended));
    log.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('the index files match the logs: written at 256 pending entries, at a roll and at a sync', async () => {
    const dir = tmp();
    const batchBytes = batches[0].length;
    const log = PartitionLog.create('t', 0, dir, { ...config, segmentBytes: 300 * batchBytes }, logger);
    const append = (from: number, to: number) => {
      for (let i = from; i < to; i++) log.append([Buffer.from(batches[i % batches.length])]);
    };
    append(0, 260);
    const [onlyLog] = logFilesIn(dir);
    expect(indexEntries(onlyLog)).toEqual(batchesIn(onlyLog).slice(0, 256));
    append(260, 400);
    const [first, second] = logFilesIn(dir);
    expect(indexEntries(first)).toEqual(batchesIn(first)); // the roll wrote the first segment's last entries
    expect(batchesIn(first).length).toBeGreaterThan(256);
    expect(indexEntries(second)).toEqual([]); // fewer than 256 pending since the roll
    await log.sync();
    expect(indexEntries(second)).toEqual(batchesIn(second));
    expect(indexEntries(second).length).toBe(400 - batchesIn(first).length);
    log.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('holds the batch index of its newest segments and of those read lately, not of every segment its retention keeps', async () => {
    const dir = tmp();
    const batchBytes = batches[0].length;
    const segment = 10; // batches a segment
    const small = { ...config, segmentBytes: segment * batchBytes, cacheBytes: 0 };
    const log = PartitionLog.create('t', 0, dir, small, logger);
    const appended = fresh();
    for (const b of appended) log.append([b]);
    expect(logFilesIn(dir).length).toBeGreaterThanOrEqual(19);
    // The active segment and the one before it: the rest are in their index files.
    expect(log.batchesInMemory).toBeLessThanOrEqual(2 * segment);

    // Read from the start, old segments are read back, byte for byte, and by time.
    const all = await log.read(0, 1 << 30, true);
    expect(Buffer.concat(all.chunks)).toEqual(Buffer.concat(appended));
    expect(log.batchesInMemory).toBeLessThanOrEqual(4 * segment); // and the two read last
    for (const offset of [0, 15, 37, 120, 199]) {
      const one = await log.read(offset, 1, true);
      expect(Buffer.concat(one.chunks)).toEqual(appended[offset]);
    }
    expect(log.batchesInMemory).toBeLessThanOrEqual(4 * segment);
    expect(log.offsetForTimestamp(0)).toBe(0);
    expect(log.offsetForTimestamp(Number.MAX_SAFE_INTEGER)).toBe(-1);
    expect(log.logStartOffset).toBe(0);
    log.close();

    // Recovered, it holds as little; appends go on after the last offset.
    const again = PartitionLog.create('t', 0, dir, small, logger);
    expect(again.batchesInMemory).toBeLessThanOrEqual(2 * segment);
    expect([again.nextOffset, again.logStartOffset]).toEqual([200, 0]);
    expect(Buffer.concat((await again.read(55, 1, true)).chunks)).toEqual(appended[55]);
    again.append([Buffer.from(batches[0])]);
    expect(again.nextOffset).toBe(201);
    again.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('forgets an idempotent producer silent for a day, as Kafka does; one that writes on is kept', async () => {
    /** `batch` as written by producer `pid` (epoch 0) from sequence `seq`, its CRC made again. */
    const fromProducer = (batch: Buffer, pid: number, seq: number) => {
      const b = Buffer.from(batch);
      writeInt64(b, BATCH.PRODUCER_ID, pid);
      b.writeInt16BE(0, BATCH.PRODUCER_EPOCH);
      b.writeInt32BE(seq, BATCH.BASE_SEQUENCE);
      b.writeUInt32BE(crc32c(b, BATCH.ATTRIBUTES), BATCH.CRC);
      return b;
    };
    const log = PartitionLog.create('t', 0, null, config, logger);
    const t0 = Date.now();
    const day = 24 * 60 * 60 * 1000;
    // Each a service's producer before a restart or a failed request: a new id each time.
    for (let pid = 1; pid <= 50; pid++) log.append([fromProducer(batches[0], pid, 0)], t0);
    log.append([fromProducer(batches[0], 1000, 0)], t0 + day);
    expect(log.producersKnown).toBe(51);
    log.applyRetention(t0 + day + 1);
    expect(log.producersKnown).toBe(1);
    // The one still writing keeps its state: a retry of its last batch is still a duplicate.
    const retried = log.append([fromProducer(batches[0], 1000, 0)], t0 + day + 2);
    expect([retried.written, retried.baseOffset]).toEqual([false, 50]);
    // One forgotten that writes again is taken as new (remembered, its sequence gap would be refused).
    expect(log.append([fromProducer(batches[0], 7, 5)], t0 + day + 3).errorCode).toBe(0);
    log.close();
  });

  test('only the newest cacheBytes stay in memory; older batches are read back from the file, byte for byte', async () => {
    const dir = tmp();
    const batchBytes = batches[0].length;
    const log = PartitionLog.create('t', 0, dir, { ...config, cacheBytes: 10 * batchBytes }, logger);
    const appended = fresh();
    for (const b of appended) log.append([b]);
    const bytesOf = (chunks: Buffer[]) => Buffer.concat(chunks);

    const newest = log.read(195, 1 << 30, true);
    expect(Array.isArray((newest as { chunks: Buffer[] }).chunks)).toBe(true); // answered from memory
    expect(bytesOf((newest as { chunks: Buffer[] }).chunks)).toEqual(Buffer.concat(appended.slice(195)));

    const oldest = log.read(0, 1 << 30, true);
    expect(oldest).toBeInstanceOf(Promise); // from the segment files
    expect(bytesOf((await oldest).chunks)).toEqual(Buffer.concat(appended));
    log.close();

    // After a restart the newest bytes are cached again, within the same bound, each in a buffer of
    // its own rather than a slice of the whole recovered segment.
    const recovered = PartitionLog.create('t', 0, dir, { ...config, cacheBytes: 10 * batchBytes }, logger);
    const cachedAgain = recovered.read(195, 1 << 30, true) as { chunks: Buffer[] };
    expect(cachedAgain).not.toBeInstanceOf(Promise);
    expect(cachedAgain.chunks.every((c) => c.buffer.byteLength === c.length)).toBe(true);
    const older = recovered.read(100, 1 << 30, true);
    expect(older).toBeInstanceOf(Promise);
    await older; // read back before close() closes the files under it (EBADF)
    recovered.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a cached batch does not keep the produce request it came in alive', () => {
    const request = Buffer.concat(fresh().slice(0, 5)); // five batches in one request buffer
    const log = PartitionLog.create('t', 0, tmp(), config, logger);
    let at = 0;
    for (const b of batches.slice(0, 5)) {
      log.append([request.subarray(at, at + b.length)]);
      at += b.length;
    }
    const { chunks } = log.read(0, 1 << 30, true) as { chunks: Buffer[] };
    expect(chunks).toHaveLength(5);
    expect(chunks.every((c) => c.buffer.byteLength === c.length)).toBe(true);
    log.destroy();
  });

  test('retention deletes whole old segments by size and by age', () => {
    const dir = tmp();
    const log = PartitionLog.create('t', 0, dir, { ...config, retentionBytes: 100 * 1024 }, logger);
    for (const b of fresh()) log.append([b]);
    const before = log.sizeBytes;
    log.applyRetention();
    expect(log.sizeBytes).toBeLessThan(before);
    expect(log.sizeBytes).toBeGreaterThanOrEqual(100 * 1024 - 64 * 1024);
    expect(log.logStartOffset).toBeGreaterThan(0);
    expect(log.read(0, 1000, true)).toMatchObject({ errorCode: 1 }); // OFFSET_OUT_OF_RANGE
    log.config = { ...log.config, retentionBytes: -1, retentionMs: 1000 };
    log.applyRetention(Date.now() + 3_600_000);
    expect(log.logStartOffset).toBe(200);
    expect(log.nextOffset).toBe(200);
    log.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a corrupted batch is refused with CORRUPT_MESSAGE', () => {
    const log = PartitionLog.create('t', 0, null, config, logger);
    const bad = Buffer.from(batches[0]);
    bad[bad.length - 1] ^= 0xff;
    expect(() => log.append([bad])).toThrow(expect.objectContaining({ code: 2 }));
    expect(log.nextOffset).toBe(0);
  });

  test('committed offsets survive a restart and a torn last line', () => {
    const dir = tmp();
    const store = new OffsetStore(dir, logger);
    store.commit('g', [
      ['t', 0, 5, null],
      ['t', 1, 7, 'meta'],
    ]);
    store.commit('g', [['t', 0, 6, null]]);
    store.close();
    fs.appendFileSync(path.join(dir, 'offsets.log'), '{"g":"g","c":[["t",0,99');
    const again = new OffsetStore(dir, logger);
    expect(again.get('g', 't', 0)).toEqual({ offset: 6, metadata: null });
    expect(again.get('g', 't', 1)).toEqual({ offset: 7, metadata: 'meta' });
    again.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a commit whose write failed partway (a full disk) loses only itself: the commits after it survive a restart', () => {
    const dir = tmp();
    const store = new OffsetStore(dir, logger);
    store.commit('g', [['t', 0, 5, null]]);
    const writeSync = fs.writeSync;
    const full = jest.spyOn(fs, 'writeSync').mockImplementationOnce((fd: number, text: unknown) => {
      writeSync(fd, String(text).slice(0, 12));
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    });
    expect(() => store.commit('g', [['t', 0, 6, null]])).toThrow('ENOSPC');
    full.mockRestore();
    store.commit('g', [['t', 1, 8, null]]);
    store.commit('h', [['t', 0, 3, null]]);
    store.close();
    const again = new OffsetStore(dir, logger);
    expect(again.get('g', 't', 0)).toEqual({ offset: 5, metadata: null }); // replayed: at-least-once
    expect(again.get('g', 't', 1)).toEqual({ offset: 8, metadata: null });
    expect(again.get('h', 't', 0)).toEqual({ offset: 3, metadata: null });
    again.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("locks its data directory: refuses a live owner's, takes over one left by a process that is gone", async () => {
    const dir = tmp();
    const lock = path.join(dir, '.lock');
    const startsOn = async (token: string) => {
      fs.writeFileSync(lock, token);
      const broker = await startBroker({ logger, dataDir: dir });
      await broker.stop();
      return fs.existsSync(lock); // released on stop
    };
    // killed, and restarted under the same pid (a container's): written before this process began
    expect(await startsOn(`${process.pid}:${performance.timeOrigin - 60_000}:0.5`)).toBe(false);
    // its pid now another process's (a reboot): that process started after the lock was written
    expect(await startsOn(`1:1000:0.5`)).toBe(false);
    expect(await startsOn(`99999999:${Date.now()}:0.5`)).toBe(false); // no such process
    fs.writeFileSync(lock, `${process.ppid}:${Date.now()}:0.5`); // alive, and older than its lock
    await expect(startBroker({ logger, dataDir: dir })).rejects.toThrow(
      `data directory ${dir} is in use by process ${process.ppid}`,
    );
    fs.rmSync(lock);
    const first = await startBroker({ logger, dataDir: dir });
    await expect(startBroker({ logger, dataDir: dir })).rejects.toThrow(
      `data directory ${dir} is in use by another broker in this process`,
    );
    await first.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a committed offset past the end of its log after a restart (a power loss) is moved back to the end', async () => {
    const dir = tmp();
    const first = await startBroker({ logger, dataDir: dir });
    const kafka = (address: string) => new Kafka({ brokers: [address], logLevel: logLevel.NOTHING });
    const producer = kafka(first.address).producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    await producer.send({ topic: 'kept', messages: [{ value: 'a' }, { value: 'b' }, { value: 'c' }] });
    await producer.disconnect();
    await first.stop();
    // The offsets file came through the loss with more than the log did.
    const offsets = new OffsetStore(dir, logger);
    offsets.commit('g', [
      ['kept', 0, 10, null],
      ['gone', 0, 4, null],
    ]);
    offsets.close();

    const again = await startBroker({ logger, dataDir: dir });
    const admin = kafka(again.address).admin();
    await admin.connect();
    try {
      const [kept] = await admin.fetchOffsets({ groupId: 'g', topics: ['kept'] });
      expect(kept.partitions).toEqual([expect.objectContaining({ partition: 0, offset: '3' })]);
    } finally {
      await admin.disconnect();
      await again.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a waiting fetch is answered at maxWait even when the wait runs out during a slow read from disk', async () => {
    const dir = tmp();
    const broker = await startBroker({ logger, dataDir: dir, cacheBytesPerPartition: 0 });
    const kafka = new Kafka({ brokers: [broker.address], logLevel: logLevel.NOTHING });
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    for (const value of ['on disk', 'on disk too', 'the newest stays in memory'])
      await producer.send({ topic: 'cold', messages: [{ value }] });
    const read = fs.read;
    const slowRead = jest
      .spyOn(fs, 'read')
      .mockImplementation(((...args: Parameters<typeof fs.read>) =>
        setTimeout(() => (read as (...a: unknown[]) => void)(...args), 200)) as unknown as typeof fs.read);
    const client = await RawClient.connect(broker.address);
    try {
      // min bytes: more than will ever come
      const body = fetchRequest('cold', { maxWaitMs: 300, minBytes: 10 << 20 });
      const started = Date.now();
      const answered = client.request(1, 4, body).then(() => Date.now() - started);
      // Lands while the fetch waits, so its re-check (another slow read) is running when maxWait ends.
      setTimeout(() => void producer.send({ topic: 'cold', messages: [{ value: 'wakes it' }] }), 350);
      const timeout = new Promise<string>((resolve) => setTimeout(() => resolve('not answered'), 3000));
      expect(await Promise.race([answered, timeout])).toBeLessThan(1500);
      expect(slowRead).toHaveBeenCalled();
    } finally {
      slowRead.mockRestore();
      client.close();
      await producer.disconnect();
      await broker.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("under fsync 'always' a committed offset is on disk before the commit is answered", async () => {
    const { dir, broker, kafka, admin } = await alwaysSyncingBroker('durable');
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    const client = await RawClient.connect(broker.address);
    // A slow disk: each sync ends 100 ms after it is asked for. An answer sent before its sync ended
    // (a sync started and not awaited) finds fewer syncs finished than started.
    const fdatasync = fs.fdatasync;
    let finished = 0;
    const syncs = jest.spyOn(fs, 'fdatasync').mockImplementation(((
      fd: number,
      callback: (err: NodeJS.ErrnoException | null) => void,
    ) =>
      fdatasync(fd, (err) =>
        setTimeout(() => {
          finished++;
          callback(err);
        }, 100),
      )) as typeof fs.fdatasync);
    try {
      await producer.send({ topic: 'durable', messages: [{ value: 'a' }] });
      const afterProduce = syncs.mock.calls.length;
      expect(afterProduce).toBeGreaterThan(0);
      expect(finished).toBe(afterProduce);
      // OffsetCommit v2, standalone (generation -1, no member), offset 1 for durable/0; sent raw, as
      // admin.setOffsets runs a consumer after its commit and would outwait any sync.
      const commit = offsetCommitV2('g', -1, '', { topic: 'durable', partition: 0, offset: 1 });
      const answer = await client.request(8, 2, commit);
      const answeredAfter = finished;
      expect(offsetCommitError(answer)).toBe(0);
      expect(syncs.mock.calls.length).toBeGreaterThan(afterProduce);
      expect(answeredAfter).toBe(syncs.mock.calls.length);
      const [committed] = await admin.fetchOffsets({ groupId: 'g', topics: ['durable'] });
      expect(committed.partitions).toEqual([expect.objectContaining({ partition: 0, offset: '1' })]);
    } finally {
      syncs.mockRestore();
      client.close();
      await Promise.all([producer.disconnect(), admin.disconnect()]);
      await broker.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("under fsync 'always' a commit whose sync failed is not answered as committed; the next sync tries again", async () => {
    const { dir, broker, admin } = await alwaysSyncingBroker('durable');
    const client = await RawClient.connect(broker.address);
    const syncs = failNextFdatasync();
    try {
      const commit = offsetCommitV2('g', -1, '', { topic: 'durable', partition: 0, offset: 1 });
      const answer = await Promise.race([
        client.request(8, 2, commit).then(offsetCommitError),
        client.closed.then(() => 'connection closed'),
      ]);
      expect(answer).toBe('connection closed'); // the client commits again, as after a lost answer
      expect(syncs).toHaveBeenCalledTimes(1);
      // Nothing new written since: the next sync (the next commit's, the interval's, the stop's) runs all the same.
      await broker.stop();
      expect(syncs).toHaveBeenCalledTimes(2);
    } finally {
      syncs.mockRestore();
      client.close();
      await admin.disconnect();
      await broker.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a sync that failed is tried again by the next one', async () => {
    const dir = tmp();
    const log = PartitionLog.create('t', 0, dir, config, logger);
    log.append(fresh().slice(0, 1));
    const syncs = failNextFdatasync();
    await expect(log.sync()).rejects.toThrow('EIO');
    await log.sync();
    expect(syncs).toHaveBeenCalledTimes(2);
    log.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a sync covers every segment written since the last one, those that rolled in between too', async () => {
    const dir = tmp();
    const segment = 10; // batches a segment
    const small = { ...config, segmentBytes: segment * batches[0].length };
    const log = PartitionLog.create('t', 0, dir, small, logger);
    const append = (from: number, to: number) => {
      for (let i = from; i < to; i++) log.append([Buffer.from(batches[i])]);
    };
    const fdatasync = fs.fdatasync;
    const synced: string[] = [];
    const syncs = jest.spyOn(fs, 'fdatasync').mockImplementation(((
      fd: number,
      callback: (err: NodeJS.ErrnoException | null) => void,
    ) => {
      synced.push(path.basename(fs.readlinkSync(`/proc/self/fd/${fd}`)));
      fdatasync(fd, callback);
    }) as typeof fs.fdatasync);
    try {
      append(0, segment / 2);
      await log.sync();
      // Written between two syncs (an fsync interval, or one produce under 'always'): four rolls.
      append(segment / 2, 4 * segment + 1);
      synced.length = 0;
      await log.sync();
      expect(synced.sort()).toEqual(logFilesIn(dir).map((f) => path.basename(f)));
      // Those the last sync covered and that took nothing since are not synced again.
      append(4 * segment + 1, 4 * segment + 2);
      synced.length = 0;
      await log.sync();
      expect(synced).toEqual([path.basename(logFilesIn(dir).at(-1)!)]);
    } finally {
      syncs.mockRestore();
      log.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("under fsync 'always' a retried batch (a duplicate) is answered only once its original is on disk", async () => {
    const { dir, broker, admin } = await alwaysSyncingBroker('retried');
    const [original, retry] = await Promise.all([
      RawClient.connect(broker.address),
      RawClient.connect(broker.address),
    ]);
    // A slow disk: syncs end only when released.
    const fdatasync = fs.fdatasync;
    const held: (() => void)[] = [];
    const syncs = jest
      .spyOn(fs, 'fdatasync')
      .mockImplementation(
        ((fd: number, callback: (err: NodeJS.ErrnoException | null) => void) =>
          void held.push(() => fdatasync(fd, callback))) as typeof fs.fdatasync,
      );
    try {
      // InitProducerId v0 (null transactional id, timeout), then one idempotent batch from sequence 0.
      const init = await original.request(22, 0, Buffer.from([0xff, 0xff, 0, 0, 0x75, 0x30]));
      const request = ProduceV3({
        acks: -1,
        timeout: 5000,
        producerId: Long.fromString(init.readBigInt64BE(6).toString()),
        producerEpoch: 0,
        topicData: [
          { topic: 'retried', partitions: [{ partition: 0, firstSequence: 0, messages: [{ value: 'a' }] }] },
        ],
      });
      const batch = ((await request.encode()) as { buffer: Buffer }).buffer;
      const answered: string[] = [];
      const first = original.request(0, 3, batch).then((res) => (answered.push('original'), res));
      await waitFor(() => held.length > 0, 5000, "the original's sync");
      // Its connection lost, the producer sends the batch again on another while the sync runs.
      const again = retry.request(0, 3, Buffer.from(batch)).then((res) => (answered.push('retry'), res));
      await new Promise((r) => setTimeout(r, 200));
      expect(answered).toEqual([]); // neither is on disk yet
      for (const release of held.splice(0)) release();
      // [topics: name, [partition, error, baseOffset, logAppendTime]], throttle
      const errorAndOffset = (res: Buffer) => [
        res.readInt16BE(4 + 2 + 7 + 4 + 4),
        Number(res.readBigInt64BE(4 + 2 + 7 + 4 + 6)),
      ];
      expect(errorAndOffset(await first)).toEqual([0, 0]);
      expect(errorAndOffset(await again)).toEqual([0, 0]); // the same record, stored once
    } finally {
      syncs.mockRestore();
      original.close();
      retry.close();
      await admin.disconnect();
      await broker.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a waiting fetch wakes as soon as data arrives', async () => {
    const broker = await startBroker({ logger });
    const kafka = new Kafka({ brokers: [broker.address], logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: 'poll' }] });
    const consumer = kafka.consumer({
      groupId: 'poll',
      maxWaitTimeInMs: 5000,
      heartbeatInterval: 200,
      sessionTimeout: 3000,
    });
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await Promise.all([consumer.connect(), producer.connect()]);
    await consumer.subscribe({ topic: 'poll', fromBeginning: true });
    let receivedAt = 0;
    let joined = false;
    consumer.on(consumer.events.GROUP_JOIN, () => (joined = true));
    await consumer.run({ eachMessage: async () => void (receivedAt = Date.now()) });
    while (!joined) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 300)); // the consumer is now parked in a 5 s long poll
    const sentAt = Date.now();
    await producer.send({ topic: 'poll', messages: [{ value: 'x' }] });
    while (!receivedAt) await new Promise((r) => setTimeout(r, 5));
    expect(receivedAt - sentAt).toBeLessThan(1000); // well before maxWait
    await Promise.all([consumer.disconnect(), producer.disconnect(), admin.disconnect()]);
    await broker.stop();
  });

  test('the bus publishes again after a restart that lost its last acked batch (a torn tail under fsync interval)', async () => {
    const dataDir = tmp();
    let broker = await startBroker({ dataDir, logger, fsync: 'interval' });
    const port = broker.port;
    const kafka = new Kafka({
      clientId: 'torn',
      brokers: [broker.address],
      logLevel: logLevel.NOTHING,
      retry: { initialRetryTime: 50, retries: 3 },
    });
    const topic = pingTopic('torn');
    await provisionTopics(kafka, { topics: [topic as TopicSpec<never>] });
    const bus = createKafkaBus({ kafka, logger, maxAttempts: 3 });
    try {
      for (const n of [0, 1]) await bus.publish(topic, [{ kind: 'test.ping', v: 1, id: 'k', n }]);
      await broker.stop();
      // A power loss: the last acknowledged batch never reached the disk.
      const partitionDir = path.join(dataDir, 'log', 'torn', '0');
      const [segment] = fs.readdirSync(partitionDir).filter((f) => f.endsWith('.log'));
      const file = path.join(partitionDir, segment);
      fs.truncateSync(file, fs.statSync(file).size - 10);
      fs.rmSync(file.replace(/\.log$/, '.index'), { force: true });
      broker = await startBroker({ dataDir, port, logger, fsync: 'interval' });
      const outcomes: string[] = [];
      for (let n = 2; n < 6; n++) {
        const [outcome] = await Promise.allSettled([
          bus.publish(topic, [{ kind: 'test.ping', v: 1, id: 'k', n }]),
        ]);
        outcomes.push(outcome.status);
      }
      // The producer's sequence no longer matches the log: refused once, then a fresh producer.
      expect(outcomes).toEqual(['rejected', 'fulfilled', 'fulfilled', 'fulfilled']);
    } finally {
      await bus.close();
      await broker.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe('the topics Parley provisions', () => {
  const MINUTE = 60_000;
  const DAY = 24 * 60 * MINUTE;

  test('drop a record within its retention and an eighth more, on a Kafka rolling segments at its default (7 days) and a topic that keeps receiving records', async () => {
    // What provisioning asks for, as the broker records it (topics.json).
    const dataDir = tmp();
    const broker = await startBroker({ dataDir, logger });
    await provisionTopics(new Kafka({ brokers: [broker.address], logLevel: logLevel.NOTHING }));
    await broker.stop();
    const provisioned = JSON.parse(fs.readFileSync(path.join(dataDir, 'topics.json'), 'utf8')) as Array<{
      name: string;
      configs: Record<string, string>;
    }>;
    fs.rmSync(dataDir, { recursive: true, force: true });

    // A batch stamped `at`, its CRC made again.
    const [template] = await makeBatches(1, 100);
    const stamped = (at: number) => {
      const b = Buffer.from(template);
      writeInt64(b, BATCH.FIRST_TIMESTAMP, at);
      writeInt64(b, BATCH.MAX_TIMESTAMP, at);
      b.writeUInt32BE(crc32c(b, BATCH.ATTRIBUTES), BATCH.CRC);
      return b;
    };
    // Kafka's defaults: a segment rolls after 7 days (log.roll.ms) or 1 GiB; retention is checked
    // every 5 minutes. The topic's first record is followed by one every 10 minutes.
    const kafkaDefaults: LogConfig = { ...config, segmentMs: 7 * DAY, segmentBytes: 1 << 30 };
    const start = Date.now();
    let now = start;
    const clock = jest.spyOn(Date, 'now').mockImplementation(() => now); // segments note their start by it
    /** How long the first record of a partition made now is kept. */
    const keptDays = (create: () => PartitionLog) => {
      now = start;
      const log = create();
      for (; now - start < 60 * DAY; now += 5 * MINUTE) {
        if ((now - start) % (10 * MINUTE) === 0) log.append([stamped(now)], now);
        log.applyRetention(now);
        if (log.logStartOffset > 0) return (now - start) / DAY;
      }
      return Infinity;
    };
    let kept: Array<{ name: string; retentionDays: number; keptDays: number }>;
    try {
      kept = provisioned.map(({ name, configs }) => ({
        name,
        retentionDays: Number(configs['retention.ms']) / DAY,
        keptDays: keptDays(
          () => new TopicStore(null, kafkaDefaults, 'never', logger).create(name, 1, configs).partitions[0],
        ),
      }));
    } finally {
      clock.mockRestore();
    }

    expect(kept.length).toBeGreaterThan(0);
    for (const topic of kept)
      expect({
        ...topic,
        withinAnEighthMore: topic.keptDays <= topic.retentionDays * 1.125 + 10 / (24 * 60),
      }).toEqual({
        ...topic,
        withinAnEighthMore: true,
      });
  });
});
