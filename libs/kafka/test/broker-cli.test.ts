import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import { waitFor } from '@parley/test-kit';

const ROOT = path.resolve(__dirname, '../../..');
const CLI = path.join(ROOT, 'libs/kafka/src/broker/cli.ts');

interface CliBroker {
  address: string;
  child: ChildProcess;
  /** Sends SIGTERM and resolves with how the process ended. */
  terminate(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const children: ChildProcess[] = [];
const dirs: string[] = [];

/** `npm run broker -- --port 0 --data <dir>` without npm: resolves once it prints its ready line. */
function startCli(dataDir: string): Promise<CliBroker> {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, '--port', '0', '--data', dataDir], {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  let output = '';
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  return new Promise((resolve, reject) => {
    void exited.then(({ code }) =>
      reject(new Error(`the broker exited with ${code} before it was ready\n${output}`)),
    );
    child.stdout!.on('data', (d: Buffer) => {
      output += d.toString();
      const ready = /kafka broker ready (\S+)\n/.exec(output);
      if (ready)
        resolve({
          address: ready[1],
          child,
          terminate: () => {
            child.kill('SIGTERM');
            return exited;
          },
        });
    });
  });
}

const kafkaAt = (address: string) =>
  new Kafka({ clientId: 'cli-test', brokers: [address], logLevel: logLevel.NOTHING });

/** The values of `topic` from the beginning, read by a fresh consumer group. */
async function readValues(address: string, topic: string, count: number): Promise<string[]> {
  const consumer = kafkaAt(address).consumer({
    groupId: `cli-${Date.now()}`,
    heartbeatInterval: 200,
    maxWaitTimeInMs: 250,
  });
  const values: string[] = [];
  try {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({ eachMessage: async ({ message }) => void values.push(String(message.value)) });
    await waitFor(() => values.length >= count, 15_000, `${count} records on ${topic}`);
  } finally {
    await consumer.disconnect();
  }
  return values;
}

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

test('npm run broker: prints its address, serves kafkajs, exits 0 on SIGTERM and keeps its data', async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-broker-cli-'));
  dirs.push(dataDir);
  const first = await startCli(dataDir);
  expect(first.address).toMatch(/^127\.0\.0\.1:[1-9]\d*$/); // --port 0 picked a free port

  const producer = kafkaAt(first.address).producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: true,
  });
  await producer.connect();
  await producer.send({ topic: 'cli', acks: -1, messages: [{ key: 'k', value: 'hello' }] });
  await producer.disconnect();
  expect(await readValues(first.address, 'cli', 1)).toEqual(['hello']);
  expect(await first.terminate()).toEqual({ code: 0, signal: null });

  // Started again on the same --data, it still has the record.
  const second = await startCli(dataDir);
  expect(await readValues(second.address, 'cli', 1)).toEqual(['hello']);
  expect(await second.terminate()).toEqual({ code: 0, signal: null });
}, 60_000);
