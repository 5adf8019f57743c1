/**
 * `npm run bench:kafka`: 1 KiB messages through one kafkajs producer and one consumer group on
 * the embedded broker over loopback. Phase 1 measures throughput (produce as fast as acks allow,
 * consume concurrently); phase 2 measures produce-to-consume latency at a steady rate.
 * KAFKA_BROKERS=host:port runs it against another broker instead.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as hdr from 'hdr-histogram-js';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import { spawn } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import pino from 'pino';
import { startBroker } from '../src/broker';

const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 200_000);
const SIZE = 1024;
const BATCH = Number(process.env.BENCH_BATCH ?? 1000);
const IN_FLIGHT = Number(process.env.BENCH_IN_FLIGHT ?? 8);
const PARTITIONS = Number(process.env.BENCH_PARTITIONS ?? 4);
const LATENCY_RATE = Number(process.env.BENCH_LATENCY_RATE ?? 5000); // msg/s in the latency phase
// The idempotent producer is what libs/kafka uses; BENCH_IDEMPOTENT=0 measures the plain one.
const IDEMPOTENT = process.env.BENCH_IDEMPOTENT !== '0';
const LATENCY_SECONDS = Number(process.env.BENCH_LATENCY_SECONDS ?? 5);

async function main() {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-kafka-bench-'));
  const external = process.env.KAFKA_BROKERS;
  // The broker runs in its own process by default (as in the fleet); BENCH_BROKER=inproc shares this one.
  const mode = external ? 'external' : process.env.BENCH_BROKER === 'inproc' ? 'inproc' : 'process';
  const broker =
    mode === 'inproc'
      ? await startBroker({ dataDir, logger: pino({ level: 'warn' }), fsync: 'interval' })
      : mode === 'process'
        ? await spawnBroker(dataDir)
        : undefined;
  const brokers = external ? external.split(',') : [broker!.address];
  const kafka = new Kafka({ clientId: 'bench', brokers, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  const topic = `bench-${Date.now()}`;
  const latencyTopic = `${topic}-latency`;
  await admin.createTopics({
    waitForLeaders: true,
    topics: [
      { topic, numPartitions: PARTITIONS },
      { topic: latencyTopic, numPartitions: PARTITIONS },
    ],
  });
  const producer = kafka.producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    idempotent: IDEMPOTENT,
    maxInFlightRequests: IN_FLIGHT,
  });
  await producer.connect();

  // The consumer group member runs on its own thread (its own event loop, as a separate service would).
  const consumer = startConsumer(brokers, [topic, latencyTopic], latencyTopic);
  await consumer.ready;
  let consumed = 0;
  let latencyConsumed = 0;
  let firstConsumed = 0;
  let lastConsumed = 0;
  consumer.worker.on('message', (m: { consumed: number; latency: number; first: number; last: number }) => {
    if (typeof m !== 'object' || m.consumed === undefined) return;
    consumed = m.consumed;
    latencyConsumed = m.latency;
    firstConsumed = m.first;
    lastConsumed = m.last;
  });
  await new Promise((r) => setTimeout(r, 500)); // let the group settle

  // Phase 1: throughput.
  const payload = Buffer.alloc(SIZE, 'x');
  const started = Date.now();
  let sent = 0;
  const sendLoop = async () => {
    while (sent < MESSAGES) {
      const n = Math.min(BATCH, MESSAGES - sent);
      sent += n;
      const messages = new Array(n);
      for (let i = 0; i < n; i++) messages[i] = { key: String((sent + i) % 1024), value: payload };
      await producer.send({ topic, acks: -1, messages });
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, sendLoop));
  const produced = Date.now();
  while (consumed < MESSAGES) await new Promise((r) => setTimeout(r, 5));
  const done = Date.now();
  const produceRate = MESSAGES / ((produced - started) / 1000);
  const endToEndRate = MESSAGES / ((done - started) / 1000);

  // Phase 2: latency at a steady rate, in small batches (every 10 ms).
  const perTick = Math.max(1, Math.round(LATENCY_RATE / 100));
  const ticks = LATENCY_SECONDS * 100;
  let latencySent = 0;
  for (let t = 0; t < ticks; t++) {
    const tickStart = Date.now();
    const messages = Array.from({ length: perTick }, (_, i) => {
      const value = Buffer.alloc(SIZE, 'y');
      value.writeBigUInt64BE(process.hrtime.bigint(), 0);
      return { key: String(i), value };
    });
    await producer.send({ topic: latencyTopic, acks: -1, messages });
    latencySent += perTick;
    const wait = 10 - (Date.now() - tickStart);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  while (latencyConsumed < latencySent) await new Promise((r) => setTimeout(r, 5));

  const histogram = await consumer.histogram();
  const ms = (us: number) => (us / 1000).toFixed(2);
  const lines = [
    `kafka bench (${external ? `brokers ${external}` : `embedded broker (${mode === 'process' ? 'own process, npm run broker' : 'in this process'}), fsync=interval, data on disk`}; kafkajs 2.2.4; ${os.cpus().length} CPUs)`,
    `  throughput: ${MESSAGES} x ${SIZE} B, batches of ${BATCH}, ${IN_FLIGHT} in flight, ${PARTITIONS} partitions, acks=all, ${IDEMPOTENT ? 'idempotent' : 'plain'} producer`,
    `    produce:              ${Math.round(produceRate).toLocaleString('en-US')} msg/s (${((produceRate * SIZE) / 1048576).toFixed(1)} MiB/s)`,
    `    produce+consume:      ${Math.round(endToEndRate).toLocaleString('en-US')} msg/s (first consumed after ${firstConsumed - started} ms, last ${lastConsumed - started} ms)`,
    `  latency: ${latencySent} x ${SIZE} B at ${LATENCY_RATE} msg/s, produce-to-consume`,
    `    p50 ${ms(histogram.getValueAtPercentile(50))} ms  p99 ${ms(histogram.getValueAtPercentile(99))} ms  p99.9 ${ms(histogram.getValueAtPercentile(99.9))} ms  max ${ms(histogram.maxValue)} ms`,
  ];
  console.log(lines.join('\n'));

  await consumer.stop();
  await producer.disconnect();
  await admin.disconnect();
  await broker?.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
}

const CONSUMER_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { Kafka, logLevel } = require(workerData.kafkajs);
const kafka = new Kafka({ clientId: 'bench-consumer', brokers: workerData.brokers, logLevel: logLevel.NOTHING });
const consumer = kafka.consumer({ groupId: 'bench-' + Date.now(), heartbeatInterval: 500, maxWaitTimeInMs: 100, sessionTimeout: 10000, maxBytesPerPartition: 4 * 1024 * 1024 });
const latencies = [];
const state = { consumed: 0, latency: 0, first: 0, last: 0 };
let timer;
const report = () => { timer = undefined; parentPort.postMessage(state); };
parentPort.on('message', async (m) => {
  if (m === 'histogram') parentPort.postMessage({ latencies });
  if (m === 'stop') { await consumer.disconnect(); process.exit(0); }
});
(async () => {
  await consumer.connect();
  await consumer.subscribe({ topics: workerData.topics, fromBeginning: true });
  consumer.on(consumer.events.GROUP_JOIN, () => parentPort.postMessage('ready'));
  await consumer.run({
    partitionsConsumedConcurrently: 4,
    eachBatch: async ({ batch }) => {
      const now = process.hrtime.bigint();
      if (batch.topic === workerData.latencyTopic) {
        for (const m of batch.messages) latencies.push(Number(now - m.value.readBigUInt64BE(0)) / 1000);
        state.latency += batch.messages.length;
      } else {
        if (!state.first) state.first = Date.now();
        state.consumed += batch.messages.length;
        state.last = Date.now();
      }
      if (!timer) timer = setTimeout(report, 2);
    },
  });
})();
`;

function startConsumer(brokers: string[], topics: string[], latencyTopic: string) {
  const worker = new Worker(CONSUMER_WORKER, {
    eval: true,
    workerData: { brokers, topics, latencyTopic, kafkajs: require.resolve('kafkajs') },
  });
  const ready = new Promise<void>((resolve) => worker.on('message', (m) => m === 'ready' && resolve()));
  return {
    worker,
    ready,
    histogram: () =>
      new Promise<hdr.Histogram>((resolve) => {
        const onMessage = (m: { latencies?: number[] }) => {
          if (!m.latencies) return;
          worker.off('message', onMessage);
          const h = hdr.build({
            lowestDiscernibleValue: 1,
            highestTrackableValue: 60_000_000,
            numberOfSignificantValueDigits: 3,
          });
          for (const us of m.latencies) h.recordValue(Math.max(1, Math.round(us)));
          resolve(h);
        };
        worker.on('message', onMessage);
        worker.postMessage('histogram');
      }),
    stop: () =>
      new Promise<void>((resolve) => {
        worker.once('exit', () => resolve());
        worker.postMessage('stop');
      }),
  };
}

/** The broker CLI in a child process; resolves once it prints its address. */
function spawnBroker(dataDir: string): Promise<{ address: string; stop(): Promise<void> }> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(__dirname, '../src/broker/cli.ts'), '--port', '0', '--data', dataDir],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, LOG_LEVEL: 'warn' },
    },
  );
  process.once('exit', () => child.kill('SIGKILL')); // never leave the broker behind
  return new Promise((resolve, reject) => {
    let out = '';
    child.once('exit', (code) => reject(new Error(`broker exited with ${code}`)));
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /kafka broker ready (\S+)/.exec(out);
      if (m) {
        child.removeAllListeners('exit');
        resolve({
          address: m[1],
          stop: () =>
            new Promise<void>((done) => {
              child.once('exit', () => done());
              child.kill('SIGTERM');
            }),
        });
      }
    });
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
